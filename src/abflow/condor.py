"""HTCondor side of abflow: the job wrapper, and finding or removing a night's jobs.

On a pool, the htcondor executor plugin submits each Snakemake job with ``getenv = False``;
the job then runs as an ordinary user with a bare environment (no PATH, maybe no HOME), where
neither ``abflow`` nor Snakemake's scheduler work. The workflow therefore writes, for each run,
a small job wrapper (the plugin's ``job_wrapper`` resource) that sets PATH, HOME and the
``$DFO_*`` directories of the night and runs Snakemake with the submitting Python.

Every job of a night carries the ClassAd attribute ``AbflowRun = "<state_dir>"`` (resource
``classad_AbflowRun``), so ``abflow watch`` and ``abflow stop`` find exactly that night's jobs.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from abflow.config import Settings
from abflow.fsutil import atomic_write_text

CLASSAD = "AbflowRun"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# HTCondor JobStatus codes
JOB_STATUS = {
    1: "idle",
    2: "running",
    3: "removed",
    4: "completed",
    5: "held",
    6: "transferring",
    7: "suspended",
}


def wrapper_path(settings: Settings) -> str:
    """Where the run's job wrapper is written."""
    return os.path.join(settings.state_dir, "condor", "job-wrapper.sh")


def wrapper_text(settings: Settings, python: str | None = None) -> str:
    """The job wrapper script: environment of the night, then ``python -m snakemake "$@"``."""
    python = python or sys.executable
    env: dict[str, str] = dict(settings.variables)
    env["ABFLOW_PYTHON"] = python
    # the job imports the htcondor bindings (Snakemake loads every executor plugin), which warn
    # on an execute node without a condor_config of its own
    env["PYTHONWARNINGS"] = "ignore::UserWarning:htcondor2"
    lines = [
        "#!/bin/sh",
        "# abflow HTCondor job wrapper, written by the workflow for this night; do not edit.",
        "# The pool starts jobs with a bare environment (no PATH, maybe no HOME): give the job",
        "# abflow's Python environment and the night's $DFO_* directories, then run Snakemake's",
        "# job command (the plugin passes the arguments of `python -m snakemake ...`).",
        "set -eu",
        f"PATH={shlex.quote(os.path.dirname(python))}:${{PATH:-{SYSTEM_PATH}}}",
        f'HOME="${{HOME:-${{_CONDOR_SCRATCH_DIR:-{shlex.quote(settings.state_dir)}}}}}"',
        "export PATH HOME",
    ]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in sorted(env.items())]
    lines += [
        "# The plugin passes Snakemake's job command, `<python> -m snakemake ARGS`, and strips",
        "# that prefix only where it is spelled `python -m snakemake`: drop what is left of it.",
        'case "${1:-}" in -*) ;; ?*) shift ;; esac',
        'if [ "${1:-}" = -m ] && [ "${2:-}" = snakemake ]; then shift 2; fi',
        f'exec {shlex.quote(python)} -m snakemake "$@"',
    ]
    return "\n".join(lines) + "\n"


def write_wrapper(settings: Settings, python: str | None = None) -> str:
    """Write the job wrapper (only if its content changed); return its path."""
    path = wrapper_path(settings)
    text = wrapper_text(settings, python)
    try:
        with open(path, encoding="utf-8") as fh:
            if fh.read() == text and os.access(path, os.X_OK):
                return path
    except OSError:
        pass
    atomic_write_text(path, text, mode=0o755)
    return path


def run_constraint(state_dir: str) -> str:
    """ClassAd constraint selecting the jobs of the night kept in ``state_dir``."""
    escaped = state_dir.replace("\\", "\\\\").replace('"', '\\"')
    return f'{CLASSAD} == "{escaped}"'


class ScheddLike(Protocol):
    """The part of ``htcondor2.Schedd`` abflow uses."""

    def query(self, constraint: str = ..., projection: list[str] = ...) -> Iterable[Any]: ...

    def act(self, action: Any, job_spec: Any) -> Any: ...


def schedd(name: str | None = None) -> ScheddLike:
    """The local schedd, or the one named ``name`` (e.g. ``user@host``) via the collector."""
    import htcondor2

    if not name:
        return htcondor2.Schedd()
    ad = htcondor2.Collector().locate(htcondor2.DaemonType.Schedd, name)
    return htcondor2.Schedd(ad)


@dataclass(frozen=True)
class QueuedJob:
    """One job of the night in the HTCondor queue."""

    cluster: int
    batch: str
    status: str
    hold_reason: str


def queued_jobs(sd: ScheddLike, state_dir: str) -> list[QueuedJob]:
    """The night's jobs in the queue of ``sd``."""
    ads = sd.query(
        constraint=run_constraint(state_dir),
        projection=["ClusterId", "JobBatchName", "JobStatus", "HoldReason"],
    )
    out = []
    for ad in ads:
        out.append(
            QueuedJob(
                int(ad.get("ClusterId", 0)),
                str(ad.get("JobBatchName", "")),
                JOB_STATUS.get(int(ad.get("JobStatus", 0)), "unknown"),
                str(ad.get("HoldReason", "") or ""),
            )
        )
    return sorted(out, key=lambda j: j.cluster)


def remove_jobs(sd: ScheddLike, state_dir: str) -> int:
    """Remove the night's jobs from the queue (held ones included); return how many."""
    import htcondor2

    jobs = queued_jobs(sd, state_dir)
    if jobs:
        sd.act(htcondor2.JobAction.Remove, run_constraint(state_dir))
    return len(jobs)


def queue_summary(jobs: Iterable[QueuedJob]) -> Mapping[str, int]:
    """Jobs per status."""
    return Counter(j.status for j in jobs)
