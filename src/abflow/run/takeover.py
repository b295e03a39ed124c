"""The take-over policy: what a night's controller does with the pool jobs a dead controller of
the same night left, and with jobs HTCondor holds for memory.

The controller is the Snakemake process that runs the night. It can die (SIGKILL, out of memory,
a reboot of the submit host) while its jobs go on in the HTCondor queue. The next controller of
the same night (the same command again, or HTCondor restarting a night handed over with
``abflow submit``) takes them over instead of removing them; :func:`decide` says, for each job
it is about to submit:

* **adopt** a job of that name still in the queue (idle, running or held) that runs the very
  command this controller would submit: it is not submitted again, its result is taken when it
  ends. Queued jobs of the same name with another command (the AB or the configuration
  changed) are removed first; the new job is submitted only once they have left the queue, so
  the old and the new job of an AB never run together;
* **succeeded**: a dead controller's job with that command ended well while this controller was
  starting (after Snakemake looked for its record) and its record is there, written since this
  controller started: taken as succeeded, not run again (a record older than that is the
  night's earlier result, which this run asks for again: **submit**);
* **failed**: it failed while no controller ran: taken as failed in this run, as the dead
  controller would have; the next run of the night retries it;
* **submit** otherwise.

A job HTCondor holds for exceeding its memory request is released with more memory
(``memory_retry``: the request times ``factor``, at most ``max_mb``), like Rubin BPS's
memoryMultiplier; at the cap it fails with the hold reason.

Everything here decides; nothing asks HTCondor (abflow.state.schedd does) or Snakemake (the
executor, snakemake_executor_plugin_abflow_htcondor, does).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from abflow.state.schedd import JobState

# HTCondor's hold for a job that used more than it asked for (JobOutOfResources); its sub-code
# says which resource: 102 memory (104 disk). A pool's own policy (SYSTEM_PERIODIC_HOLD, code
# 26; a job's periodic_hold, code 3) should give the sub-code 102 for memory; a hold reason that
# speaks of memory counts too.
OUT_OF_RESOURCES = 34
MEMORY_SUBCODE = 102
POLICY_HOLDS = (3, 26)  # a job's periodic_hold, the pool's SYSTEM_PERIODIC_HOLD


def is_memory_hold(job: JobState) -> bool:
    """True if HTCondor holds ``job`` for exceeding its memory request."""
    code, subcode, reason = job.hold_code, job.hold_subcode, job.hold_reason
    if not job.held:
        return False
    if subcode == MEMORY_SUBCODE:
        return True
    if code == OUT_OF_RESOURCES:
        return subcode in (None, 0) and "disk" not in reason.lower()
    return code in POLICY_HOLDS and "memory" in reason.lower()


@dataclass(frozen=True)
class MemoryPolicy:
    """How a job held for memory is retried (configuration ``memory_retry``)."""

    factor: float = 2.0  # the new request is the old one times this (<= 1: no retries)
    max_mb: int = 65536  # never ask for more than this (MB)

    def next_request(self, requested_mb: int, used_mb: int = 0) -> int | None:
        """The memory (MB) to retry a job with that asked for ``requested_mb`` and used
        ``used_mb``: the larger of the two times the factor, at most the cap; None if it may
        not ask for more (the cap is reached, or retries are off)."""
        if self.factor <= 1 or requested_mb <= 0:
            return None
        new = min(math.ceil(max(requested_mb, used_mb) * self.factor), self.max_mb)
        return new if new > requested_mb else None

    def capped(self, job: JobState) -> str:
        """Why a job held for memory that may not ask for more fails."""
        limit = (
            f"the cap memory_retry.max_mb is {self.max_mb} MB"
            if self.factor > 1
            else "memory retries are off (memory_retry.factor <= 1)"
        )
        return (
            f"HTCondor job {job.cluster} held: {job.hold_reason}; not retried: it asked for "
            f"{job.request_mb} MB, {limit}"
        )

    @classmethod
    def of(cls, raw: Mapping[str, Any] | None) -> MemoryPolicy:
        """The policy of the configuration's ``memory_retry`` mapping."""
        raw = raw or {}
        return cls(float(raw.get("factor", cls.factor)), int(raw.get("max_mb", cls.max_mb)))


class Action(enum.StrEnum):
    """What the controller does with a job it is about to run on the pool."""

    SUBMIT = "submit"
    ADOPT = "adopt"  # a job in the queue does its work
    SUCCEEDED = "succeeded"  # it ended well while no controller followed it
    FAILED = "failed"  # it failed while no controller ran


@dataclass(frozen=True)
class Decision:
    """What the controller does with one job, and the queued jobs to remove first."""

    action: Action
    cluster: int = 0  # the job adopted, or the one that ended meanwhile
    status: str = ""  # the adopted job's status word (idle, running, held)
    reason: str = ""  # why a job is taken as failed
    remove: tuple[int, ...] = ()  # queued jobs of the same name (stale commands)


def _preferred(jobs: Sequence[JobState]) -> JobState:
    """The job to adopt among several running the same command: running, then held, then idle;
    the newest of those."""
    rank = {"running": 0, "transferring_output": 0, "suspended": 1, "held": 2, "idle": 3}
    return min(jobs, key=lambda j: (rank.get(j.word, 4), -j.cluster))


def adoptable(job: JobState) -> bool:
    """True for a queued job that can be adopted: active, or completed and leaving the queue
    (its result is in its ad)."""
    return job.active or job.word == "completed"


def decide(
    command: str,
    queued: Sequence[JobState],
    ended: JobState | None,
    recorded: float | None,
    started: float,
) -> Decision:
    """What to do with a job whose command would be ``command``, given the queue's jobs of its
    name (``queued``), the latest job of its name that a dead controller of the night left and
    that has ended (``ended``), when its completion record was written (``recorded``, epoch
    seconds; None: there is none) and when this controller started (``started``)."""
    same = [j for j in queued if adoptable(j) and j.command == command]
    if same:
        keep = _preferred(same)
        stale = tuple(j.cluster for j in queued if j is not keep and j.active)
        return Decision(Action.ADOPT, keep.cluster, keep.word, remove=stale)
    stale = tuple(j.cluster for j in queued if j.active)
    if ended is None or ended.command != command:
        return Decision(Action.SUBMIT, remove=stale)
    why = (
        f"HTCondor job {ended.cluster}, {ended.outcome()}, ended while no controller ran the night"
    )
    if ended.failed:
        return Decision(Action.FAILED, ended.cluster, reason=why, remove=stale)
    if recorded is not None and recorded >= started:
        return Decision(Action.SUCCEEDED, ended.cluster, remove=stale)
    return Decision(Action.SUBMIT, remove=stale)  # its record is older: asked for again


@dataclass
class Takeover:
    """The jobs dead controllers of this night left: in the queue, and ended while no
    controller ran. Each job name is decided once (a later run of the same job, a retry, is
    submitted)."""

    queued: dict[str, list[JobState]] = field(default_factory=dict)  # by AbflowJob
    ended: dict[str, JobState] = field(default_factory=dict)  # the latest end, by AbflowJob
    decided: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, queued: Iterable[JobState], ended: Iterable[JobState] = ()) -> Takeover:
        """From the night store's jobs in the queue and its dead controllers' jobs that ended
        (any order)."""
        by_name: dict[str, list[JobState]] = {}
        for job in queued:
            if job.job and adoptable(job):
                by_name.setdefault(job.job, []).append(job)
        last: dict[str, JobState] = {}
        for end in ended:
            if end.job and (end.job not in last or end.completed > last[end.job].completed):
                last[end.job] = end
        return cls(by_name, last)

    def decide(self, name: str, command: str, recorded: float | None, started: float) -> Decision:
        """What to do with job ``name`` (see :func:`decide`)."""
        if name in self.decided:
            return Decision(Action.SUBMIT)
        self.decided.add(name)
        return decide(command, self.queued.get(name, []), self.ended.get(name), recorded, started)


def held_for(seconds: float, since: float, now: float) -> bool:
    """True if a job held since ``since`` (epoch seconds) has been held ``seconds`` or longer
    at ``now``."""
    return (now - since) >= seconds
