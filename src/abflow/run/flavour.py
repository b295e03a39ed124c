"""Which DRS_TYPE flavour a run has: the profile decides, the command line may only agree.

abflow's profiles select the execution flavour (dfos-reference.md §7): ``profiles/local`` CPL,
``profiles/int`` INT, ``profiles/condor`` CON. A profile says so in its ``config:`` entries
(``drs_type=CON``). Snakemake itself drops *all* of a profile's ``config:`` entries as soon as
the command line has a ``--config`` (``--config date=2024-07-12``), which silently turned a
condor night into a serial CPL night. abflow therefore reads the active profiles' ``config:``
entries back in, as defaults beneath the command line's ``--config``:

    schema defaults < DFOS config files < --configfile < profile ``config:`` < ``--config``

and checks the outcome against the executor before anything runs:

* a command-line ``drs_type`` that contradicts the profile's is refused;
* a configuration file's ``drs_type`` that differs from the profile's is overruled, with a
  warning;
* a DRS_TYPE other than CON with an executor that submits jobs elsewhere (htcondor) is refused:
  never a serial night on a pool.

The active profiles are found the way Snakemake finds them: every ``--profile`` of the command
line (``--profile X`` or ``--profile=X``, repeatable), else ``$SNAKEMAKE_PROFILE``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# Executors that run jobs on this machine (all else submits them elsewhere, e.g. htcondor).
LOCAL_EXECUTORS = ("local", "dryrun", "touch")


@dataclass(frozen=True)
class ProfileSettings:
    """What the active Snakemake profiles say that matters to abflow."""

    paths: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)
    executor: str = ""


def _option_values(argv: Sequence[str], names: Sequence[str]) -> list[str]:
    """Values of an option given as ``NAME VALUE`` or ``NAME=VALUE`` (every occurrence)."""
    out = []
    for i, word in enumerate(argv):
        if word == "--":
            break
        for name in names:
            if word == name and i + 1 < len(argv):
                out.append(argv[i + 1])
            elif word.startswith(name + "=") and name.startswith("--"):
                out.append(word[len(name) + 1 :])
    return out


def snakemake_argv(argv: Sequence[str] | None = None) -> list[str] | None:
    """The arguments of the running ``snakemake`` command, or None if this process is not one
    (e.g. Snakemake called through its Python API)."""
    import sys

    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return None
    program = argv[0].replace("\\", "/")
    if program.rsplit("/", 1)[-1] == "snakemake" or program.endswith("snakemake/__main__.py"):
        return argv[1:]
    return None


def _profile_file(profile: str, environ: Mapping[str, str]) -> Path | None:
    """The YAML file of ``profile`` as Snakemake finds it. A relative path is taken from the
    directory the command was started in ($PWD): Snakemake has already changed into
    ``--directory`` when the Snakefile is read."""
    from snakemake.cli import get_profile_dir

    started_in = environ.get("PWD", "")
    if (
        not os.path.isabs(profile)
        and started_in
        and os.path.exists(os.path.join(started_in, profile))
    ):
        profile = os.path.join(started_in, profile)
    found = get_profile_dir(profile)
    return found[1] if found else None


def _entries(value: Any) -> list[str]:
    """A profile's ``config:`` value (a list of ``key=value``, or a mapping) as entries."""
    if isinstance(value, Mapping):
        return [f"{k}={v}" for k, v in value.items()]
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value or ()]


def read_profiles(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> ProfileSettings:
    """The ``config:`` entries and ``executor`` of the profiles the running snakemake uses.

    Later profiles win over earlier ones, as in Snakemake. Outside a ``snakemake`` command
    (``argv`` None), or without profiles, everything is empty.
    """
    args = snakemake_argv(argv)
    if args is None:
        return ProfileSettings()
    environ = os.environ if environ is None else environ
    names = _option_values(args, ["--profile"])
    if not names and environ.get("SNAKEMAKE_PROFILE"):
        names = [environ["SNAKEMAKE_PROFILE"]]
    paths: list[str] = []
    entries: list[str] = []
    executor = ""
    for name in names:
        if name == "none":
            continue
        path = _profile_file(name, environ)
        if path is None:
            continue
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue  # Snakemake reports an unreadable profile itself
        if not isinstance(data, dict):
            continue
        paths.append(str(path.parent))
        if "config" in data:
            entries = _entries(data["config"])  # a later profile's list replaces it
        executor = str(data.get("executor") or executor)
    given = _option_values(args, ["--executor", "-e"])
    return ProfileSettings(tuple(paths), _parse_entries(entries), given[-1] if given else executor)


def _parse_entries(entries: list[str]) -> dict[str, Any]:
    """``key=value`` entries parsed exactly as Snakemake parses ``--config``."""
    if not entries:
        return {}
    from snakemake.cli import parse_config

    return dict(parse_config(entries))


@dataclass(frozen=True)
class Flavour:
    """The outcome: the configuration to use and what to say about it."""

    config: dict[str, Any]
    warnings: tuple[str, ...] = ()
    problem: str = ""
    source: str = "default"  # where drs_type came from


def _profile_names(profiles: ProfileSettings) -> str:
    return ", ".join(os.path.basename(p) or p for p in profiles.paths) or "the profile"


def decide(
    config: Mapping[str, Any], command_line: Mapping[str, Any], profiles: ProfileSettings
) -> Flavour:
    """Apply the profiles' ``config:`` entries beneath the command line's ``--config``.

    ``config`` is Snakemake's merged configuration (config files, then ``command_line``: the
    ``--config`` of the command line, or the profile's own when there was none).
    """
    out = dict(config)
    configured_drs_type = None if "drs_type" in command_line else config.get("drs_type")
    warnings: list[str] = []
    wanted = profiles.config.get("drs_type")
    for key, value in profiles.config.items():
        if key not in command_line:
            out[key] = value
    where = _profile_names(profiles)
    asked = command_line.get("drs_type")
    if wanted and asked and str(asked) != str(wanted):
        return Flavour(
            out,
            problem=f"--config drs_type={asked} contradicts {where}, which runs DRS_TYPE "
            f"{wanted}: choose the profile of the flavour you want (profiles/local: CPL, or "
            "CON with --config drs_type=CON; profiles/int: INT; profiles/condor: CON on "
            "HTCondor) and leave drs_type out",
        )
    if wanted and configured_drs_type and str(configured_drs_type) != str(wanted):
        warnings.append(
            f"the configuration says drs_type {configured_drs_type}, {where} runs DRS_TYPE "
            f"{wanted}: using {wanted} (the profile decides the flavour)"
        )
    if wanted:
        source = f"profile {where}"
    elif asked:
        source = "--config"
    elif configured_drs_type:
        source = "the configuration"
    else:
        source = "default"
    return Flavour(out, tuple(warnings), source=source)


def is_remote(executor: str) -> bool:
    """True for an executor that runs the jobs elsewhere (e.g. htcondor)."""
    return bool(executor) and executor not in LOCAL_EXECUTORS


def describe(
    drs_type: str, source: str, job_cap: int, cores: int | None, nodes: int | None, executor: str
) -> str:
    """One line saying how the run's AB jobs run, and why (printed at the start of a run)."""
    if drs_type == "CPL":
        how = "one AB at a time, in cascade order"
    elif drs_type == "INT":
        how = f"one AB at a time, each given all {cores or 1} cores"
    elif job_cap:
        how = f"up to {job_cap} AB jobs at once (limits.jobs)"
    elif is_remote(executor):
        how = f"as many AB jobs at once as the cascade and --jobs {nodes} allow, on {executor}"
    else:
        how = f"as many AB jobs at once as the cascade and {cores or 1} cores allow"
    return f"DRS_TYPE {drs_type} (from {source}): {how}"


def executor_problem(drs_type: str, executor: str) -> str:
    """Why ``drs_type`` cannot run with ``executor`` ("" if it can)."""
    if not is_remote(executor) or drs_type == "CON":
        return ""
    how = {"CPL": "one AB at a time", "INT": "one AB at a time, each given all cores"}[drs_type]
    return (
        f"drs_type {drs_type} runs {how}; with the {executor} executor that would be a serial "
        f"night on the pool. Run DRS_TYPE {drs_type} with profiles/"
        f"{'local' if drs_type == 'CPL' else 'int'}, or drop drs_type to run CON"
    )
