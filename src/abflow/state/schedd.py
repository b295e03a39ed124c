"""The schedd client: abflow's jobs in the HTCondor queue and its history, as one typed state.

Every job abflow submits carries ClassAd tags (abflow.run.pool_job): the night store it writes
into (``AbflowRun``), the run that submitted it (``AbflowOwner``), the job (``AbflowJob``:
``<step>/<AB>[.<det>]``) and its command line (``AbflowCommand``). Here they are found, read
into :class:`JobState` (the job's status as the bindings' ``JobStatus``, its exit code or
signal, its hold and remove reasons), removed and released.

A :class:`JobState` answers the two questions everything else asks of a job: is it still in the
queue doing or waiting for its work (:attr:`JobState.active`), and how did it end
(:meth:`JobState.outcome`). The schedd is asked through :class:`ScheddLike`, the part of
``htcondor2.Schedd`` abflow uses (a test passes its own). The bindings are imported only when
a pool is asked.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from abflow.state.layout import JobId

TYPE_CHECKING = False
if TYPE_CHECKING:
    from htcondor2 import JobStatus

CLASSAD = "AbflowRun"  # the night store a job writes into
OWNER = "AbflowOwner"  # the owner id of the Snakemake that submitted it (runstate.owner_id)
JOB = "AbflowJob"  # <step>/<AB>[.<det>]
COMMAND = "AbflowCommand"  # the job's command line (abflow.run.pool_job)
# what is read of a job, in the queue and in the history
PROJECTION = [
    "ClusterId", "JobStatus", CLASSAD, OWNER, JOB, "RemoteHost", "LastRemoteHost",
    "EnteredCurrentStatus", "HoldReason", "HoldReasonCode", "HoldReasonSubCode",
    "RequestMemory", "MemoryUsage", "ExitCode", "ExitBySignal", "ExitSignal", "RemoveReason",
    "CompletionDate",
]  # fmt: skip


class ScheddLike(Protocol):
    """The part of ``htcondor2.Schedd`` abflow uses."""

    def query(self, constraint: str = ..., projection: list[str] = ...) -> Iterable[Any]: ...

    def history(
        self, constraint: str, projection: list[str], match: int = ..., since: Any = ...
    ) -> Iterable[Any]: ...

    def act(self, action: Any, job_spec: Any, reason: str | None = ...) -> Any: ...

    def edit(self, job_spec: Any, attr: str, value: str) -> Any: ...


def job_status(code: object) -> JobStatus:
    """The bindings' ``JobStatus`` of a JobStatus attribute (a missing or unknown code counts
    as ``REMOVED``: a job that is not doing its work)."""
    from htcondor2 import JobStatus

    try:
        return JobStatus(int(code))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return JobStatus.REMOVED


def status_word(status: JobStatus) -> str:
    """A status as the page and the JSON files say it: ``idle``, ``running``, ``held``, ..."""
    return status.name.lower()


@dataclass(frozen=True)
class JobState:
    """One of abflow's HTCondor jobs, as the queue or the history knows it."""

    cluster: int
    status: JobStatus
    job: str = ""  # AbflowJob
    owner: str = ""  # AbflowOwner
    command: str = ""  # AbflowCommand (asked for only where it is compared)
    host: str = ""  # where it runs (or last ran)
    since: float = 0.0  # when it entered its status (epoch seconds)
    hold_reason: str = ""
    hold_code: int | None = None
    hold_subcode: int | None = None
    request_mb: int = 0  # RequestMemory (MB)
    used_mb: int = 0  # MemoryUsage (MB)
    exit_code: int | None = None
    signal: int | None = None  # set where it ended by a signal
    remove_reason: str = ""
    completed: float = 0.0  # CompletionDate (epoch seconds)

    @property
    def word(self) -> str:
        """Its status as a word (``idle``, ``running``, ``held``, ``completed``, ...)."""
        return status_word(self.status)

    @property
    def active(self) -> bool:
        """True while it is in the queue doing or waiting for its work (held included)."""
        return self.word in ("idle", "running", "held", "transferring_output", "suspended")

    @property
    def held(self) -> bool:
        """True while HTCondor holds it."""
        return self.word == "held"

    @property
    def job_id(self) -> JobId | None:
        """The job (None for a name that is not one of abflow's)."""
        try:
            return JobId.parse(self.job)
        except ValueError:
            return None

    def outcome(self) -> str:
        """How it ended: ``succeeded``, or why it did not (``exit 3``, ``killed by signal 9``,
        ``removed: <reason>``); "" while it is active."""
        if self.active:
            return ""
        if self.word == "removed":
            return f"removed: {self.remove_reason or 'no reason given'}"
        if self.signal is not None:
            return f"killed by signal {self.signal}"
        return "succeeded" if self.exit_code == 0 else f"exit {self.exit_code}"

    @property
    def failed(self) -> bool:
        """True if it ended and not with exit 0."""
        return not self.active and self.outcome() != "succeeded"


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


def _number(value: Any, kind: type = int) -> Any:
    try:
        return kind(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def state_of(ad: Any) -> JobState:
    """The JobState of a job ad (from the queue or the history)."""
    get = lambda key: _value(ad, key)  # noqa: E731
    host = str(get("RemoteHost") or get("LastRemoteHost") or "")
    by_signal = bool(get("ExitBySignal"))
    return JobState(
        cluster=_number(get("ClusterId")) or 0,
        status=job_status(get("JobStatus")),
        job=str(get(JOB) or ""),
        owner=str(get(OWNER) or ""),
        command=str(get(COMMAND) or ""),
        host=host.rpartition("@")[2],
        since=_number(get("EnteredCurrentStatus"), float) or 0.0,
        hold_reason=str(get("HoldReason") or ""),
        hold_code=_number(get("HoldReasonCode")),
        hold_subcode=_number(get("HoldReasonSubCode")),
        request_mb=_number(get("RequestMemory")) or 0,
        used_mb=_number(get("MemoryUsage")) or 0,
        exit_code=None if by_signal else _number(get("ExitCode")),
        signal=(_number(get("ExitSignal")) or 0) if by_signal else None,
        remove_reason=str(get("RemoveReason") or ""),
        completed=_number(get("CompletionDate"), float) or 0.0,
    )


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
        return htcondor2.Schedd()  # type: ignore[return-value]
    ad = htcondor2.Collector().locate(htcondor2.DaemonType.Schedd, name)
    return htcondor2.Schedd(ad)  # type: ignore[return-value]


def _projection(with_command: bool) -> list[str]:
    return [*PROJECTION, COMMAND] if with_command else PROJECTION


def queued(
    sd: ScheddLike,
    state_dir: str,
    owner: str | Iterable[str] | None = None,
    with_command: bool = False,
) -> list[JobState]:
    """The jobs of the night store ``state_dir`` (of run ``owner``, or of any of several) in
    the queue of ``sd``, by cluster; ``with_command``: with their command lines."""
    ads = sd.query(
        constraint=run_constraint(state_dir, owner), projection=_projection(with_command)
    )
    return sorted((state_of(ad) for ad in ads), key=lambda j: j.cluster)


def in_queue(sd: ScheddLike, clusters: Iterable[int]) -> dict[int, JobState]:
    """The jobs ``clusters`` that are in the queue, by cluster: one query for all of them."""
    ids = sorted({int(c) for c in clusters})
    if not ids:
        return {}
    constraint = " || ".join(f"ClusterId == {c}" for c in ids)
    return {
        j.cluster: j for j in map(state_of, sd.query(constraint=constraint, projection=PROJECTION))
    }


def held_or_in(sd: ScheddLike, state_dir: str, clusters: Iterable[int]) -> dict[int, JobState]:
    """The night store's held jobs, and jobs ``clusters`` that are in the queue, by cluster:
    what a status check needs to know, in one query."""
    ids = sorted({int(c) for c in clusters})
    wanted = "".join(f" || ClusterId == {c}" for c in ids)
    constraint = f"{run_constraint(state_dir)} && (JobStatus == 5{wanted})"
    return {
        j.cluster: j for j in map(state_of, sd.query(constraint=constraint, projection=PROJECTION))
    }


def in_history(sd: ScheddLike, clusters: Iterable[int]) -> dict[int, JobState]:
    """The jobs ``clusters`` that have left the queue, from the schedd's history, by cluster."""
    ids = sorted({int(c) for c in clusters})
    if not ids:
        return {}
    constraint = " || ".join(f"ClusterId == {c}" for c in ids)
    ads = sd.history(constraint=constraint, projection=PROJECTION, match=len(ids))
    return {j.cluster: j for j in map(state_of, ads)}


def ended(sd: ScheddLike, state_dir: str, owners: Iterable[str], since: float) -> list[JobState]:
    """The jobs of runs ``owners`` of the night store ``state_dir`` that completed since
    ``since`` (epoch seconds), newest first; [] for no owners. (Removed jobs are not among
    them: nothing of theirs is taken over.)"""
    owners = sorted(set(owners))
    if not owners:
        return []
    constraint = f"({run_constraint(state_dir, owners)}) && JobStatus == 4"
    constraint += f" && CompletionDate >= {int(since)}"
    ads = sd.history(
        constraint=constraint,
        projection=_projection(True),
        match=-1,
        since=f"CompletionDate < {int(since)}",
    )
    return sorted(map(state_of, ads), key=lambda j: j.completed, reverse=True)


def remove(sd: ScheddLike, clusters: Iterable[int], reason: str = "removed by abflow") -> list[int]:
    """Ask the schedd to remove jobs ``clusters`` (held ones included); return them. A running
    job leaves the queue once its starter has ended it: see :func:`wait_gone`."""
    import htcondor2

    ids = sorted({int(c) for c in clusters})
    if ids:
        sd.act(htcondor2.JobAction.Remove, [f"{c}.0" for c in ids], reason=reason)
    return ids


def wait_gone(sd: ScheddLike, clusters: Iterable[int], seconds: float) -> bool:
    """Wait up to ``seconds`` until jobs ``clusters`` have left the queue; True if they have."""
    ids = {int(c) for c in clusters}
    deadline = time.monotonic() + seconds
    while ids:
        if not in_queue(sd, ids):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)
    return True


def raise_memory(sd: ScheddLike, cluster: int, memory_mb: int) -> None:
    """Ask for ``memory_mb`` MB for held job ``cluster`` and release it (it runs again)."""
    import htcondor2

    spec = f"{int(cluster)}.0"
    sd.edit(spec, "RequestMemory", str(int(memory_mb)))
    sd.act(htcondor2.JobAction.Release, [spec], reason="abflow: more memory")


def queue_summary(jobs: Iterable[JobState]) -> Mapping[str, int]:
    """Jobs per status word."""
    return Counter(j.word for j in jobs)


def queue_by_ab(jobs: Iterable[JobState]) -> dict[str, list[JobState]]:
    """The queued jobs of each AB (a multi-detector AB may have several)."""
    out: dict[str, list[JobState]] = {}
    for job in jobs:
        job_id = job.job_id
        if job_id is not None:
            out.setdefault(job_id.target, []).append(job)
    return out


def night_queue(state_dir: str, schedd_name: str | None = None) -> list[JobState] | None:
    """abflow's jobs of the night store ``state_dir`` in the queue, or None where no pool is
    configured (nothing to ask). Raises when a configured pool does not answer."""
    if not (schedd_name or pool_configured()):
        return None
    return queued(schedd(schedd_name), state_dir)
