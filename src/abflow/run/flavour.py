"""Which DRS_TYPE flavour a run has: the profile decides, the command line may only agree.

abflow's profiles select the execution flavour (docs/dfos.md §7): ``profiles/local`` CPL,
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

The command line is read by Snakemake's own parser (abflow.upstream.snakemake.command_line),
so that what Snakemake accepts (``--prof profiles/condor``, ``$SNAKEMAKE_PROFILE``, a workflow
profile) is what abflow sees.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from abflow.upstream.snakemake import CommandLine

# Executors that run jobs on this machine (all else submits them elsewhere, e.g. htcondor).
LOCAL_EXECUTORS = ("local", "dryrun", "touch")


@dataclass(frozen=True)
class Flavour:
    """The outcome: the configuration to use and what to say about it."""

    config: dict[str, Any]
    warnings: tuple[str, ...] = ()
    problem: str = ""
    source: str = "default"  # where drs_type came from


def _profile_names(line: CommandLine) -> str:
    return ", ".join(os.path.basename(p) or p for p in line.profiles) or "the profile"


def decide(config: Mapping[str, Any], line: CommandLine) -> Flavour:
    """Apply the profiles' ``config:`` entries beneath the command line's ``--config``.

    ``config`` is Snakemake's merged configuration (config files, then the ``--config`` of the
    command line, or the profile's own when there was none).
    """
    command_line = line.config
    out = dict(config)
    configured_drs_type = None if "drs_type" in command_line else config.get("drs_type")
    warnings: list[str] = []
    wanted = line.profile_config.get("drs_type")
    for key, value in line.profile_config.items():
        if key not in command_line:
            out[key] = value
    where = _profile_names(line)
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
