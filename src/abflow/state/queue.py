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

CLASSAD = "AbflowRun"  # the night store a job writes into
OWNER = "AbflowOwner"  # <host>:<pid> of the Snakemake that submitted it
JOB = "AbflowJob"  # <step>/<AB>[.<det>]
PROJECTION = [
    "ClusterId", "JobStatus", "HoldReason", "EnteredCurrentStatus", CLASSAD, OWNER, JOB,
    "RemoteHost", "JobStartDate",
]  # fmt: skip
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


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def run_constraint(state_dir: str, owner: str | None = None) -> str:
    """ClassAd constraint selecting the jobs of the night store ``state_dir`` (of one
    submitting run ``owner``, if given)."""
    text = f"{CLASSAD} == {_quoted(state_dir)}"
    return text + (f" && {OWNER} == {_quoted(owner)}" if owner else "")


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

    @property
    def step(self) -> str:
        """The job's step (process_ab, process_ab_det, process_qc)."""
        return self.job.partition("/")[0]

    @property
    def target(self) -> str:
        """``<AB>`` or ``<AB>.<det>``: what the job processes."""
        return self.job.partition("/")[2]


def _job(ad: Mapping[str, Any]) -> QueuedJob:
    host = str(ad.get("RemoteHost", "") or "")
    return QueuedJob(
        int(ad.get("ClusterId", 0)),
        str(ad.get(JOB, "") or ""),
        JOB_STATUS.get(int(ad.get("JobStatus", 0)), "unknown"),
        str(ad.get("HoldReason", "") or ""),
        str(ad.get(OWNER, "") or ""),
        float(ad.get("EnteredCurrentStatus", 0) or 0),
        host.rpartition("@")[2],
    )


def queued_jobs(sd: ScheddLike, state_dir: str, owner: str | None = None) -> list[QueuedJob]:
    """The jobs of the night store ``state_dir`` (of run ``owner``) in the queue of ``sd``."""
    ads = sd.query(constraint=run_constraint(state_dir, owner), projection=PROJECTION)
    return sorted((_job(ad) for ad in ads), key=lambda j: j.cluster)


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
        target = job.target
        out.setdefault(target, []).append(job)
        if "." in target and not target.endswith(".ab"):  # <AB>.<det>
            out.setdefault(target.rsplit(".", 1)[0], []).append(job)
    return out


def night_queue(state_dir: str, schedd_name: str | None = None) -> list[QueuedJob] | None:
    """abflow's jobs of the night store ``state_dir`` in the queue, or None where no pool is
    configured (nothing to ask). Raises when a configured pool does not answer."""
    if not (schedd_name or pool_configured()):
        return None
    return queued_jobs(schedd(schedd_name), state_dir)
