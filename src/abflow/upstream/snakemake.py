"""Every place abflow uses Snakemake beyond its plugin interfaces and the Snakefile language.

Snakemake has no public API for what a Snakefile sees of the command line that runs it, for
registering a global resource from a Snakefile, or for precomputed input-function signatures.
abflow needs all three, so they live here, and nowhere else: each function names the Snakemake
symbol it uses, ``tests/test_upstream.py`` checks every one of them against the installed
Snakemake (a canary per symbol), and pyproject.toml pins Snakemake to the versions in
:data:`CHECKED`. An upgrade outside them fails that test, with the symbol named, instead of
changing a night quietly. docs/upstream.md lists what abflow relies on and why.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The Snakemake releases these reaches were checked with (pyproject.toml: snakemake~=9.27).
CHECKED = "9.27"


@dataclass(frozen=True)
class CommandLine:
    """What the running ``snakemake`` command line says that matters to abflow, as Snakemake's
    own parser read it (abbreviations such as ``--prof`` included)."""

    profiles: tuple[str, ...] = ()  # the profile directories, in the order given
    profile_config: dict[str, Any] = field(default_factory=dict)  # their ``config:`` entries
    config: dict[str, Any] = field(default_factory=dict)  # the command line's own ``--config``
    executor: str = ""  # the executor Snakemake will use (the command line's, else a profile's)
    configfiles: tuple[str, ...] = ()  # --configfile (a profile's too), absolute, in order


def running_argv(argv: Sequence[str] | None = None) -> list[str] | None:
    """The arguments of the running ``snakemake`` command, or None if this process is not one
    (e.g. Snakemake called through its Python API, or a test)."""
    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return None
    program = argv[0].replace("\\", "/")
    if program.rsplit("/", 1)[-1] == "snakemake" or program.endswith("snakemake/__main__.py"):
        return argv[1:]
    return None


def command_line(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> CommandLine:
    """The command line of the running ``snakemake`` (``argv`` including the program), parsed by
    ``snakemake.cli.parse_args``, which also applies the profiles as Snakemake does (a later
    profile wins; ``$SNAKEMAKE_PROFILE``; the workflow profile ``profiles/default``).

    Relative profile paths are taken from the directory the command was started in ($PWD):
    Snakemake has changed into ``--directory`` by the time it reads the Snakefile. Outside a
    ``snakemake`` command everything is empty.
    """
    from snakemake.cli import get_argument_parser, parse_args

    args = running_argv(argv)
    if args is None:
        return CommandLine()
    environ = os.environ if environ is None else environ
    started_in = environ.get("PWD") or os.getcwd()
    try:
        with _quiet_in(started_in, environ):
            plain = get_argument_parser().parse_args(args)  # the command line alone
            _, merged = parse_args(args)  # with the profiles' defaults
            found = [_profile_yaml(str(p)) for p in (merged.profile or ())]
    except SystemExit:  # not a command line Snakemake takes: it says so itself
        return CommandLine()
    paths = tuple(str(f.parent) for f in found if f is not None)
    profile_config: dict[str, Any] = {}
    for path in found:
        if path is not None:
            profile_config = _profile_config(path) or profile_config  # a later list replaces it
    given = _parse_entries(plain.config or [])
    files = tuple(os.path.join(started_in, str(f)) for f in merged.configfile or ())
    return CommandLine(paths, profile_config, given, str(merged.executor or ""), files)


@contextlib.contextmanager
def _quiet_in(directory: str, environ: Mapping[str, str]) -> Any:
    """Parse in ``directory`` with ``environ`` (its $SNAKEMAKE_PROFILE), without the parser's
    "Using profile ..." line (Snakemake prints it itself)."""
    saved = os.environ.get("SNAKEMAKE_PROFILE")
    wanted = environ.get("SNAKEMAKE_PROFILE")
    try:
        if wanted is None:
            os.environ.pop("SNAKEMAKE_PROFILE", None)
        else:
            os.environ["SNAKEMAKE_PROFILE"] = wanted
        with contextlib.chdir(directory), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        if saved is None:
            os.environ.pop("SNAKEMAKE_PROFILE", None)
        else:
            os.environ["SNAKEMAKE_PROFILE"] = saved


def _profile_yaml(profile: str) -> Path | None:
    """The YAML file of a profile as Snakemake found it (``snakemake.cli.get_profile_dir``),
    as an absolute path."""
    from snakemake.cli import get_profile_dir

    found = get_profile_dir(profile)
    return Path(found[1]).absolute() if found else None


def _profile_config(path: Path) -> dict[str, Any]:
    """A profile's ``config:`` entries (a list of ``key=value``, or a mapping), parsed exactly
    as Snakemake parses ``--config`` (``snakemake.cli.parse_config``)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return {}  # Snakemake reports an unreadable profile itself
    value = data.get("config") if isinstance(data, dict) else None
    if isinstance(value, Mapping):
        return _parse_entries([f"{k}={v}" for k, v in value.items()])
    return _parse_entries([value] if isinstance(value, str) else [str(v) for v in value or ()])


def _parse_entries(entries: list[str]) -> dict[str, Any]:
    """``key=value`` entries parsed exactly as Snakemake parses ``--config``
    (``snakemake.cli.parse_config``)."""
    from snakemake.cli import parse_config

    return dict(parse_config(entries)) if entries else {}


def precomputed_signature(func: Callable[..., Any], of: Callable[..., Any]) -> None:
    """Give ``func`` the parameters of ``of`` as the signature Snakemake reads
    (``snakemake.common.overwrite_function_params``). Snakemake looks up the signature of every
    input, params and priority callable once per job (``inspect.signature``, about 60 us each:
    a third of the DAG-building time of a large night, bench/dryrun.py)."""
    import inspect

    from snakemake.common import overwrite_function_params

    overwrite_function_params(func, inspect.signature(of).parameters)  # type: ignore[arg-type]


def cores(workflow: Any) -> int | None:
    """The ``--cores`` of the run (None: not given, as for a remote executor)."""
    return workflow.resource_settings.cores


def nodes(workflow: Any) -> int | None:
    """The ``--jobs`` of the run (None: not given)."""
    return workflow.resource_settings.nodes


def register_resource(workflow: Any, name: str, value: int) -> None:
    """Make ``name`` a global resource of ``value`` units unless the command line's
    ``--resources`` gave it (``Workflow.global_resources`` and ``Workflow.register_resource``)."""
    if name not in workflow.global_resources:
        workflow.register_resource(name, value)


def executor_name(workflow: Any) -> str:
    """The executor the run uses, once the run starts (``Workflow.executor_plugin``; None
    while the Snakefile is read)."""
    plugin = workflow.executor_plugin
    return str(plugin.name) if plugin is not None else ""


def executor_setting(workflow: Any, name: str) -> Any:
    """A setting of the run's executor plugin (e.g. the htcondor plugin's ``jobdir``), or None
    (``Workflow.executor_settings``)."""
    return getattr(workflow.executor_settings, name, None)


def snakemake_console_handler(settings: Any, stream: Any) -> Any:
    """Snakemake's own console handler, as Snakemake builds it without a logger plugin
    (``snakemake.logging.ColorizingTextHandler``, ``DefaultFilter``, ``DefaultFormatter``):
    what ``--logger-abflow-snakemake`` and ``--verbose`` show."""
    from snakemake.logging import ColorizingTextHandler, DefaultFilter, DefaultFormatter

    handler = ColorizingTextHandler(
        nocolor=bool(getattr(settings, "nocolor", False)), stream=stream
    )
    handler.addFilter(
        DefaultFilter(
            getattr(settings, "quiet", None),
            bool(getattr(settings, "debug_dag", False)),
            bool(getattr(settings, "verbose", False)),
            bool(getattr(settings, "dryrun", False)),
            bool(getattr(settings, "printshellcmds", False)),
        )
    )
    handler.setFormatter(
        DefaultFormatter(
            getattr(settings, "quiet", None), bool(getattr(settings, "show_failed_logs", False))
        )
    )
    return handler


# ----- Snakemake's wording ----------------------------------------------------------------------
# Where Snakemake's log records carry no structured field for what the console must know, it
# decides by their text; every such pattern is here, matched at the start of a record's message
# (:func:`says`) or inside a job's reason or an exception's text (:func:`contains`).
# tests/test_wording.py replays the records of real runs of the pinned Snakemake against them
# and finds each in the installed source: a rewording fails that test.
WORDING: dict[str, re.Pattern[str]] = {
    name: re.compile(pattern)
    for name, pattern in {
        # messages (record.msg, no LogEvent)
        "nothing_to_do": r"Nothing to be done",
        "dry_run_done": r"This was a dry-run",
        "failed_exit": r"Exiting because a job execution failed",
        "will_exit": r"Will exit after finishing currently running jobs",
        "cancelling": r"Cancelling snakemake on user request",
        "terminating": r"Terminating processes on user request",
        "complete_log": r"Complete log\(s\):",
        # the ERROR record that closes a run with a failed job (abflow's summary says it better)
        "incomplete_run": r"At least one job did not complete successfully",
        # what snakemake-interface-executor-plugins appends to every remote job's error
        "remote_error_suffix": r"For further error details see the cluster/cloud log and the "
        r"log files of the involved rule\(s\)\.",
        # the routine of a run, replaced by the console's own lines (the htcondor plugin's too;
        # a held job is not routine)
        "routine": r"(Building DAG of jobs|Using shell:|Provided (cores|remote nodes|resources)"
        r"|Rules claiming|Select jobs to execute|Execute \d+ jobs|Finished jobid|\d+ of \d+ "
        r"steps|\[\w{3} \w{3} |Assuming unrestricted shared filesystem|Conda environments: "
        r"ignored|Singularity containers: ignored|Group jobs: inactive|Job stats|Elapsed time"
        r"|Waiting (at most|for more)|Removing (temporary|output)|Touching output|Trying to "
        r"restart|Shutting down|Storing output|Write-protecting|Reasons?:|Some jobs were "
        r"triggered by provenance|localrule |rule |Job \d+:|host: |Config file .* is extended "
        r"by additional config|\d+ jobs? ha(s|ve) missing provenance|Rules with missing "
        r"metadata|Job \d+ with HTCondor Cluster ID \d+ was successful|Job \d+ submitted to "
        r"HTCondor|Requesting (memory|disk|cpus|gpus)|The logs of the HTCondor job are stored)",
        # an update() output as a job's record names it (snakemake.io.fmt.fmt_iofile): the
        # downloads' files
        "update_output": r"(?P<path>.*) \(update\)$",
        # a job's reason (JOB_INFO's ``reason``: str(snakemake.dag.Reason))
        "reason_forced": r"Forced execution",
        "reason_incomplete": r"Incomplete output files",
        "reason_params": r"Params have changed",
        "reason_missing_output": r"Missing output files",
        "reason_updated_by_job": r"Input files updated by another job",
        "reason_updated_input": r"Updated input files",
        "reason_code": r"Code has changed",
        "reason_input_set": r"Set of input files has changed",
    }.items()
}


def says(name: str, text: str) -> bool:
    """True if ``text`` (a record's message) starts with Snakemake's wording ``name``."""
    return WORDING[name].match(text) is not None


def contains(name: str, text: str) -> bool:
    """True if ``text`` (a job's reason, str of Snakemake's Reason, or an exception's text)
    contains the wording ``name``."""
    return WORDING[name].search(text) is not None
