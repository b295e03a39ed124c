"""What a night's controller does with its pool jobs beyond submitting them.

The controller is the Snakemake process that runs the night. It can die (SIGKILL, out of memory,
a reboot of the submit host) while its jobs go on in the HTCondor queue. The next controller of
the same night (the same command again, or HTCondor restarting a night handed over with
``abflow submit``) takes them over instead of removing them:

* **Adoption.** A job of the night that is still in the queue (idle, running or held) and runs
  the very command this controller would submit is adopted: it is not submitted again, its
  result (success, failure, hold with its reason) is taken when it ends, and no second pool
  slot is held to wait for it. A queued job of the same AB with another command (the AB or the
  configuration changed) is removed first, so that no AB runs twice at once.
* **Results that came while no controller ran.** A job that succeeded meanwhile left its
  completion record, so the night does not run it again (the profiles set
  ``ignore-incomplete``: abflow's records are written atomically by their jobs, and Snakemake's
  own marks only say that the dead controller did not see the job end); one that succeeded
  while this controller was starting (after Snakemake looked for its record) is taken as
  succeeded when its record is there. A job of a dead controller that failed meanwhile is taken
  as failed in this run, as the dead controller would have; the next run of the night retries
  it.
* **Memory.** A job that HTCondor holds for exceeding its memory request is released with more
  memory (``memory_retry``: the request times ``factor``, at most ``max_mb``), like Rubin BPS's
  memoryMultiplier. A job held for memory at the cap fails with the hold reason.

The workflow configures the night's :class:`PoolRun` while the Snakefile is read
(:func:`configure`) and gives it the takeover when the run starts (``onstart``); the executor
plugin (``snakemake_executor_plugin_abflow_htcondor``) asks it, through :func:`current`, what
to do with each job. Everything here that decides is plain Python, tested without a pool; the
schedd is asked through abflow.state.queue.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from abflow.state.queue import EndedJob, QueuedJob

# HTCondor's hold for a job that used more than it asked for (JobOutOfResources); its sub-code
# says which resource: 102 memory (104 disk). A pool's own policy (SYSTEM_PERIODIC_HOLD, code
# 26; a job's periodic_hold, code 3) should give the sub-code 102 for memory; a hold reason that
# speaks of memory counts too.
OUT_OF_RESOURCES = 34
MEMORY_SUBCODE = 102
POLICY_HOLDS = (3, 26)  # a job's periodic_hold, the pool's SYSTEM_PERIODIC_HOLD
# states of a queued job that can be adopted ("completed": it is leaving the queue; its result
# is taken from the schedd's history)
ACTIVE = ("idle", "running", "held", "transferring_output", "suspended", "completed")


def is_memory_hold(code: int | None, subcode: int | None, reason: str = "") -> bool:
    """True if a hold (HoldReasonCode, HoldReasonSubCode, HoldReason) is for exceeding the
    job's memory request."""
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

    @classmethod
    def of(cls, raw: Mapping[str, Any] | None) -> MemoryPolicy:
        """The policy of the configuration's ``memory_retry`` mapping."""
        raw = raw or {}
        return cls(float(raw.get("factor", cls.factor)), int(raw.get("max_mb", cls.max_mb)))


@dataclass(frozen=True)
class Decision:
    """What the controller does with one job it is about to run on the pool."""

    # "submit"; "adopt" (a job in the queue); "failed" or "succeeded" (it ended meanwhile)
    action: str
    cluster: int = 0
    status: str = ""  # the adopted job's state: idle, running, held
    since: float = 0.0  # since when it is in that state (epoch seconds)
    reason: str = ""  # why a job "failed"
    remove: tuple[int, ...] = ()  # queued jobs of the same AB to remove first (stale commands)


SUBMIT = Decision("submit")


def _preferred(jobs: Sequence[QueuedJob]) -> QueuedJob:
    """The job to adopt among several running the same command: running, then held, then idle;
    the newest of those."""
    rank = {"running": 0, "transferring_output": 0, "suspended": 1, "held": 2, "idle": 3}
    return min(jobs, key=lambda j: (rank.get(j.status, 4), -j.cluster))


@dataclass
class Takeover:
    """The jobs a dead controller of this night left, and what the new controller does with
    them: each job name is decided once (:meth:`decide`); a later run of the same job (a retry)
    is submitted."""

    queued: dict[str, list[QueuedJob]] = field(default_factory=dict)  # by AbflowJob
    ended: dict[str, EndedJob] = field(default_factory=dict)  # the latest end, by AbflowJob
    decided: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, queued: Iterable[QueuedJob], ended: Iterable[EndedJob] = ()) -> Takeover:
        """From the night's jobs in the queue and its dead controllers' jobs that ended (any
        order)."""
        by_name: dict[str, list[QueuedJob]] = {}
        for job in queued:
            if job.job and job.status in ACTIVE:
                by_name.setdefault(job.job, []).append(job)
        last: dict[str, EndedJob] = {}
        for end in ended:
            if end.job and (end.job not in last or end.completed > last[end.job].completed):
                last[end.job] = end
        return cls(by_name, last)

    def __len__(self) -> int:
        return len(self.queued) + len(self.ended)

    def decide(self, name: str, command: str) -> Decision:
        """What to do with job ``name`` (its AbflowJob) whose command would be ``command``."""
        if name in self.decided:
            return SUBMIT
        self.decided.add(name)
        candidates = self.queued.get(name, [])
        same = [j for j in candidates if j.command == command]
        if same:
            keep = _preferred(same)
            stale = tuple(j.cluster for j in candidates if j is not keep)
            return Decision("adopt", keep.cluster, keep.status, keep.since, remove=stale)
        stale = tuple(j.cluster for j in candidates)
        end = self.ended.get(name)
        if end is not None and end.command == command:
            how = "failed" if end.failed else "succeeded"
            return Decision(
                how, end.cluster, reason=f"HTCondor job {end.cluster}, {end.describe()}, "
                "ended while no controller ran the night", remove=stale,
            )  # fmt: skip
        return Decision("submit", remove=stale)

    def leftovers(self) -> list[int]:
        """Clusters of queued jobs no decision took over (the run did not need them)."""
        taken: set[int] = set()
        for name in self.decided:
            taken.update(j.cluster for j in self.queued.get(name, []))
        return sorted(j.cluster for jobs in self.queued.values() for j in jobs
                      if j.cluster not in taken)  # fmt: skip


@dataclass
class PoolRun:
    """The night's pool side for the executor plugin: its night store, memory policy and the
    takeover of a dead controller's jobs."""

    state_dir: str
    memory: MemoryPolicy = field(default_factory=MemoryPolicy)
    started: float = field(default_factory=time.time)  # before Snakemake built the DAG
    takeover: Takeover = field(default_factory=Takeover)
    owners: tuple[str, ...] = ()  # AbflowOwner of this run and of the dead runs it took over

    def decide(self, name: str, command: str) -> Decision:
        """What to do with job ``name`` (see :meth:`Takeover.decide`)."""
        return self.takeover.decide(name, command)


_CURRENT: PoolRun | None = None


def configure(run: PoolRun | None) -> None:
    """Make ``run`` the pool side of this process's night (the workflow does, once)."""
    global _CURRENT
    _CURRENT = run


def current() -> PoolRun | None:
    """The pool side of this process's night, if the workflow configured one."""
    return _CURRENT


def held_for(seconds: float, since: float, now: float | None = None) -> bool:
    """True if a job held since ``since`` (epoch seconds) has been held ``seconds`` or longer."""
    return ((now or time.time()) - since) >= seconds
