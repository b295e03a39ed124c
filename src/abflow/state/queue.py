"""A night's jobs in the HTCondor queue, as the schedd sees them: found by the ClassAd tags every
job abflow submits carries (abflow.run.condor), listed per AB, and removed.

The bindings (``htcondor2``) are imported only when a pool is asked.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from abflow.state.layout import JobId

CLASSAD = "AbflowRun"  # the night store a job writes into
OWNER = "AbflowOwner"  # <host>:<pid> of the Snakemake that submitted it
JOB = "AbflowJob"  # <step>/<AB>[.<det>]
COMMAND = "AbflowCommand"  # the job's command line (abflow.run.rules.NightRules.pool_command)
PROJECTION = [
    "ClusterId", "JobStatus", "HoldReason", "EnteredCurrentStatus", CLASSAD, OWNER, JOB,
    "RemoteHost", "JobStartDate",
]  # fmt: skip


def status_name(code: int) -> str:
    """HTCondor's JobStatus as a word (``htcondor2.JobStatus``: idle, running, held,
    transferring_output, ...)."""
    import htcondor2

    try:
        return htcondor2.JobStatus(code).name.lower()
    except ValueError:
        return "unknown"


def run_constraint(state_dir: str, owner: str | Iterable[str] | None = None) -> str:
    """ClassAd constraint selecting the jobs of the night store ``state_dir`` (of one
    submitting run ``owner``, or of any of several, if given)."""
    from classad2 import quote

    text = f"{CLASSAD} == {quote(state_dir)}"
    owners = [owner] if isinstance(owner, str) else sorted(owner or ())
    if not owners:
        return text
    either = " || ".join(f"{OWNER} == {quote(o)}" for o in owners)
    return text + (f" && {either}" if len(owners) == 1 else f" && ({either})")


class ScheddLike(Protocol):
    """The part of ``htcondor2.Schedd`` abflow uses."""

    def query(self, constraint: str = ..., projection: list[str] = ...) -> Iterable[Any]: ...

    def act(self, action: Any, job_spec: Any, reason: str | None = ...) -> Any: ...


def pool_configured() -> bool:
    """True if the HTCondor bindings have a pool to talk to (a condor_config)."""
    path = os.environ.get("CONDOR_CONFIG", "")
    if path:
        return path == "ONLY_ENV" or os.path.isfile(path)
    return os.path.isfile("/etc/condor/condor_config")


def schedd(name: str | None = None) -> ScheddLike:
    """The local schedd, or the one named ``name`` (e.g. ``user@host``) via the collector."""
    import htcondor2

    if not name:
        return htcondor2.Schedd()
    ad = htcondor2.Collector().locate(htcondor2.DaemonType.Schedd, name)
    return htcondor2.Schedd(ad)


@dataclass(frozen=True)
class QueuedJob:
    """One of abflow's jobs in the HTCondor queue."""

    cluster: int
    job: str  # <step>/<AB>[.<det>] (AbflowJob)
    status: str  # idle, running, held, ...
    hold_reason: str = ""
    owner: str = ""
    since: float = 0.0  # when it entered its current status (epoch seconds)
    host: str = ""  # where it runs
    command: str = ""  # its AbflowCommand (asked for only where it is compared)

    @property
    def job_id(self) -> JobId | None:
        """The job (None for a name that is not one of abflow's)."""
        try:
            return JobId.parse(self.job)
        except ValueError:
            return None


def _job(ad: Mapping[str, Any]) -> QueuedJob:
    host = str(ad.get("RemoteHost", "") or "")
    return QueuedJob(
        int(ad.get("ClusterId", 0)),
        str(ad.get(JOB, "") or ""),
        status_name(int(ad.get("JobStatus", 0))),
        str(ad.get("HoldReason", "") or ""),
        str(ad.get(OWNER, "") or ""),
        float(ad.get("EnteredCurrentStatus", 0) or 0),
        host.rpartition("@")[2],
        str(ad.get(COMMAND, "") or ""),
    )


def queued_jobs(
    sd: ScheddLike,
    state_dir: str,
    owner: str | Iterable[str] | None = None,
    with_command: bool = False,
) -> list[QueuedJob]:
    """The jobs of the night store ``state_dir`` (of run ``owner``, or of any of several) in the
    queue of ``sd``; ``with_command``: with their command lines (to compare them)."""
    projection = [*PROJECTION, COMMAND] if with_command else PROJECTION
    ads = sd.query(constraint=run_constraint(state_dir, owner), projection=projection)
    return sorted((_job(ad) for ad in ads), key=lambda j: j.cluster)


@dataclass(frozen=True)
class EndedJob:
    """One of abflow's jobs that has left the queue (from the schedd's history)."""

    cluster: int
    job: str  # AbflowJob
    owner: str  # AbflowOwner
    command: str  # AbflowCommand
    exit_code: int | None  # None: it ended by a signal
    signal: int | None
    completed: float  # CompletionDate (epoch seconds)

    @property
    def failed(self) -> bool:
        """True if the job's program failed (a non-zero exit, or a signal)."""
        return self.exit_code != 0

    def describe(self) -> str:
        """``exit 3`` or ``killed by signal 9``."""
        return (
            f"exit {self.exit_code}"
            if self.exit_code is not None
            else (f"killed by signal {self.signal}")
        )


ENDED_PROJECTION = ["ClusterId", JOB, OWNER, COMMAND, "ExitCode", "ExitBySignal", "ExitSignal",
                    "CompletionDate"]  # fmt: skip


def ended_jobs(sd: Any, state_dir: str, owners: Iterable[str], since: float) -> list[EndedJob]:
    """The jobs of runs ``owners`` of the night store ``state_dir`` that completed since
    ``since`` (epoch seconds), newest first; [] for no owners. (Removed jobs are not among
    them: nothing of theirs is taken over.)"""
    owners = sorted(set(owners))
    if not owners:
        return []
    constraint = f"({run_constraint(state_dir, owners)}) && JobStatus == 4"
    constraint += f" && CompletionDate >= {int(since)}"
    ads = sd.history(constraint=constraint, projection=ENDED_PROJECTION, match=-1,
                     since=f"CompletionDate < {int(since)}")  # fmt: skip
    out = []
    for ad in ads:
        by_signal = bool(ad.get("ExitBySignal", False))
        out.append(EndedJob(
            int(ad.get("ClusterId", 0)), str(ad.get(JOB, "") or ""), str(ad.get(OWNER, "") or ""),
            str(ad.get(COMMAND, "") or ""),
            None if by_signal else int(ad.get("ExitCode", 0) or 0),
            int(ad.get("ExitSignal", 0) or 0) if by_signal else None,
            float(ad.get("CompletionDate", 0) or 0),
        ))  # fmt: skip
    return sorted(out, key=lambda j: j.completed, reverse=True)


def remove_jobs(
    sd: ScheddLike, jobs: Iterable[QueuedJob], reason: str = "removed by abflow", wait: float = 0.0
) -> list[QueuedJob]:
    """Remove ``jobs`` from the queue (held ones included); return those removed. With
    ``wait``, wait up to that many seconds until they have left the queue (a running job
    leaves only once its starter has ended it)."""
    import htcondor2

    todo = [j for j in jobs if j.status != "removed"]
    if todo:
        sd.act(htcondor2.JobAction.Remove, [f"{j.cluster}.0" for j in todo], reason=reason)
    ids = {j.cluster for j in jobs}
    deadline = time.monotonic() + wait
    while ids and time.monotonic() < deadline:
        ads = sd.query(constraint=" || ".join(f"ClusterId == {c}" for c in ids),
                       projection=["ClusterId"])  # fmt: skip
        if not list(ads):
            break
        time.sleep(0.5)
    return todo


def queue_summary(jobs: Iterable[QueuedJob]) -> Mapping[str, int]:
    """Jobs per status."""
    return Counter(j.status for j in jobs)


def queue_by_ab(jobs: Iterable[QueuedJob]) -> dict[str, list[QueuedJob]]:
    """The queued jobs of each AB (a multi-detector AB may have several)."""
    out: dict[str, list[QueuedJob]] = {}
    for job in jobs:
        job_id = job.job_id
        if job_id is not None:
            out.setdefault(job_id.target, []).append(job)
    return out


def night_queue(state_dir: str, schedd_name: str | None = None) -> list[QueuedJob] | None:
    """abflow's jobs of the night store ``state_dir`` in the queue, or None where no pool is
    configured (nothing to ask). Raises when a configured pool does not answer."""
    if not (schedd_name or pool_configured()):
        return None
    return queued_jobs(schedd(schedd_name), state_dir)


# what the controller reads of its jobs each status check (held ones and adopted ones)
CHECK_PROJECTION = [
    "ClusterId", "JobStatus", JOB, "HoldReason", "HoldReasonCode", "HoldReasonSubCode",
    "EnteredCurrentStatus", "RequestMemory", "MemoryUsage", "RemoteHost", "LastRemoteHost",
    "ExitCode", "ExitBySignal", "ExitSignal", "RemoveReason",
]  # fmt: skip


def _value(ad: Any, key: str) -> Any:
    """An attribute of a job ad, evaluated where it is an expression (RequestMemory can be);
    None where it is missing or undefined."""
    if key not in ad:
        return None
    value = ad[key]
    if hasattr(value, "eval") and not isinstance(value, str | int | float | bool):
        try:
            value = ad.eval(key)
        except Exception:
            return None
    return None if type(value).__name__ == "Value" else value  # classad Undefined/Error


def job_ads(sd: ScheddLike, state_dir: str, clusters: Iterable[int] = ()) -> dict[int, dict]:
    """The night store's held jobs and jobs ``clusters`` in the queue, by cluster: each as a
    dict of CHECK_PROJECTION (expressions evaluated)."""
    wanted = " || ".join(f"ClusterId == {int(c)}" for c in sorted(set(clusters)))
    constraint = f"{run_constraint(state_dir)} && (JobStatus == 5" + (
        f" || {wanted})" if wanted else ")"
    )
    ads = sd.query(constraint=constraint, projection=CHECK_PROJECTION)
    return {int(_value(ad, "ClusterId")): {k: _value(ad, k) for k in CHECK_PROJECTION}
            for ad in ads}  # fmt: skip


def ended_ads(sd: Any, clusters: Iterable[int]) -> dict[int, dict]:
    """Jobs ``clusters`` from the schedd's history, by cluster (CHECK_PROJECTION)."""
    ids = sorted({int(c) for c in clusters})
    if not ids:
        return {}
    constraint = " || ".join(f"ClusterId == {c}" for c in ids)
    ads = sd.history(constraint=constraint, projection=CHECK_PROJECTION, match=len(ids))
    return {int(_value(ad, "ClusterId")): {k: _value(ad, k) for k in CHECK_PROJECTION}
            for ad in ads}  # fmt: skip


def raise_memory(sd: ScheddLike, cluster: int, memory_mb: int) -> None:
    """Ask for ``memory_mb`` MB for held job ``cluster`` and release it (it runs again)."""
    import htcondor2

    spec = f"{int(cluster)}.0"
    sd.edit(spec, "RequestMemory", str(int(memory_mb)))  # type: ignore[attr-defined]
    sd.act(htcondor2.JobAction.Release, [spec], reason="abflow: more memory")
