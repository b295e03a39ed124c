"""abflow's HTCondor executor (``--executor abflow-htcondor``; profiles/condor selects it).

It is the HTCondor executor of ``snakemake-executor-plugin-htcondor``, which submits every job,
follows it through the job event log and removes the active jobs on Ctrl-C, plus what a night
needs of a controller that may die (abflow.run.takeover says what and why):

* a job of the night that a dead controller left in the queue is **adopted** (not submitted
  again); queued jobs of the same AB with another command are removed, and the new job is
  submitted once they have left the queue (no removal blocks the scheduler, and the old and
  the new job never run together);
* a job that ended while no controller ran is **taken** as it ended (failed, or succeeded with
  its record written since this controller started), not run again;
* a job HTCondor **holds for exceeding its memory** is released with more (``memory_retry``),
  or fails with the hold reason at the cap;
* the console hears of each submission, adoption, removal and memory retry as a
  :class:`abflow.views.events.PoolEvent`.

The executor owns its inputs: the night store from the first job's ``AbflowRun`` tag, and from
this controller's lock there (abflow.state.runstate.run_of) the runs it took over and the run's
configuration (``memory_retry``); the schedd (abflow.state.schedd) is asked at most once per
status check, for all of this executor's own concerns together.

Only public parts are used: the executor interface's ``run_job``, ``check_active_jobs`` and
``report_job_*`` methods (overridden or called), the htcondor plugin's ``Executor``,
``ExecutorSettings`` and ``common_settings`` (subclassed or reused; the versions are pinned in
pyproject.toml and checked by tests/test_upstream.py), and the HTCondor bindings.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

from snakemake_executor_plugin_htcondor import Executor as HTCondorExecutor
from snakemake_executor_plugin_htcondor import ExecutorSettings as HTCondorSettings
from snakemake_executor_plugin_htcondor import common_settings as htcondor_common_settings
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo

from abflow.run.takeover import Action, MemoryPolicy, Takeover, held_for, is_memory_hold
from abflow.state import notes, schedd
from abflow.state.fsutil import read_json_object
from abflow.state.layout import JobId, StateLayout
from abflow.state.runstate import owner_id, run_of
from abflow.upstream.htcondor_plugin import CLASSAD_PREFIX
from abflow.views.events import POOL_ATTR, PoolEvent


@dataclasses.dataclass
class ExecutorSettings(HTCondorSettings):
    """The htcondor plugin's settings (``--abflow-htcondor-jobdir``, ``-held-timeout``,
    ``-shared-fs-prefixes``)."""


# The interface starts the status thread before the executor's __post_init__ has run, and the
# htcondor plugin asks for no delay before the first status check: on a busy submit host that
# check found the executor half set up ('Executor' object has no attribute '_event_logs') and
# failed the run. One second is nothing against the profile's 2 s between checks.
common_settings = dataclasses.replace(htcondor_common_settings, init_seconds_before_status_checks=1)

# an adopted job that has left the queue but is not in the history yet: checks before giving up
VANISHED_AFTER = 30


@dataclasses.dataclass
class NightSide:
    """What the executor knows of its night: its store, memory policy, start and take-over."""

    state_dir: str
    memory: MemoryPolicy
    started: float  # when this controller started (epoch seconds): newer records are its own
    takeover: Takeover

    @classmethod
    def of(
        cls, state_dir: str, sd: schedd.ScheddLike | None, warn: Callable[[str], None]
    ) -> NightSide:
        """The night of the store ``state_dir``, from this controller's lock there and (``sd``)
        the schedd's queue and history."""
        lock = run_of(state_dir, owner_id()) or {}
        config = read_json_object(str(lock.get("config") or "")) or {}
        memory = MemoryPolicy.of(config.get("memory_retry"))
        started = float(lock.get("proc_start") or time.time())
        lineage = [str(o) for o in lock.get("lineage") or ()]
        takeover = Takeover()
        if sd is not None:
            try:
                queued = schedd.queued(sd, state_dir, with_command=True)
                since = float(lock.get("lineage_since") or started)
                takeover = Takeover.of(queued, schedd.ended(sd, state_dir, lineage, since))
            except Exception as exc:  # no schedd: jobs are submitted, and it says why not
                warn(f"abflow: could not ask the HTCondor schedd for earlier runs' jobs: {exc}")
            if takeover.queued:
                warn(
                    f"abflow: {len(takeover.queued)} HTCondor job(s) of this night store are in "
                    "the queue: each is adopted if this run needs it (not submitted again)"
                )
        return cls(state_dir, memory, started, takeover)


class Executor(HTCondorExecutor):
    """The htcondor plugin's executor, with adoption and memory retries (see the module)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.side: NightSide | None = None  # known from the first job of the night
        self.adopted: dict[int, str] = {}  # cluster -> AbflowJob, jobs this executor adopted
        self.pending: dict[int, tuple[Any, tuple[int, ...]]] = {}  # id(job) -> (job, stale)
        self.capped: dict[int, str] = {}  # cluster -> why it fails (held for memory at the cap)
        self.vanished: dict[int, int] = {}  # adopted cluster -> checks it was nowhere seen

    def schedd(self) -> schedd.ScheddLike:
        """The schedd this controller asks (tests give their own)."""
        return schedd.schedd()

    def _warn(self, text: str) -> None:
        self.logger.warning(text)

    def _side_of(self, job: Any) -> NightSide | None:
        """The night of ``job`` (its AbflowRun tag), read once; None for a job without it."""
        if self.side is None:
            state_dir = job.resources.get(f"{CLASSAD_PREFIX}{schedd.CLASSAD}")
            if not state_dir:
                return None
            sd = self.schedd() if schedd.pool_configured() else None
            self.side = NightSide.of(str(state_dir), sd, self._warn)
        return self.side

    # ----- submitting --------------------------------------------------------------------
    def run_job(self, job: Any) -> None:
        """Submit ``job``, unless a dead controller's job does (or did) its work."""
        side, name = self._side_of(job), job.resources.get(f"{CLASSAD_PREFIX}{schedd.JOB}")
        if side is None or not name:
            super().run_job(job)
            return
        name, command = str(name), str(job.resources.get(f"{CLASSAD_PREFIX}{schedd.COMMAND}"))
        decision = side.takeover.decide(name, command, _recorded(job), side.started)
        if decision.remove:
            schedd.remove(self.schedd(), decision.remove, f"abflow: {name}: not this run's command")
            self._tell(
                PoolEvent(
                    "removed",
                    name,
                    clusters=decision.remove,
                    why=f"{name}: its command is not this run's",
                )
            )
        info = SubmittedJobInfo(job=job, external_jobid=decision.cluster or None)
        if decision.action is Action.SUCCEEDED:  # it ended while this controller was starting
            self._tell(PoolEvent("adopted", name, decision.cluster, "succeeded"))
            self.report_job_success(info)
        elif decision.action is Action.ADOPT:
            self.adopted[decision.cluster] = name
            super().report_job_submission(info)  # an active job, followed from now on
            self._tell(PoolEvent("adopted", name, decision.cluster, decision.status))
        elif decision.action is Action.FAILED:  # not an active job: nothing to follow
            self._tell(PoolEvent("adopted", name, decision.cluster, "failed"))
            note = read_json_object(StateLayout(side.state_dir).failure(JobId.parse(name)))
            why = (note or {}).get("reason")
            self.report_job_error(
                info, msg=f"{why} ({decision.reason})" if why else decision.reason
            )
        elif decision.remove:  # submitted once the stale jobs have left the queue
            self.pending[id(job)] = (job, decision.remove)
            super().report_job_submission(info)
        else:
            notes.clear_retries(StateLayout(side.state_dir), JobId.parse(name))
            super().run_job(job)

    def report_job_submission(self, job_info: SubmittedJobInfo, register_job: bool = True) -> None:
        """Register the job, and tell the console what became of it on the pool."""
        super().report_job_submission(job_info, register_job=register_job)
        name = job_info.job.resources.get(f"{CLASSAD_PREFIX}{schedd.JOB}")
        if self.side is not None and name:
            self._tell(PoolEvent("submitted", str(name), job_info.external_jobid or 0))

    def _tell(self, event: PoolEvent) -> None:
        """Tell the console what happened on the pool."""
        level = self.logger.warning if event.what in ("removed", "memory") else self.logger.info
        level(event.text(), extra={POOL_ATTR: event})

    # ----- following ---------------------------------------------------------------------
    async def check_active_jobs(
        self, active_jobs: list[SubmittedJobInfo]
    ) -> AsyncGenerator[SubmittedJobInfo, None]:
        """Check the active jobs: this executor's own (adopted, pending, held for memory) from
        one schedd query, the rest as the htcondor plugin does."""
        if self.side is None or not active_jobs:
            async for job_info in super().check_active_jobs(active_jobs):
                yield job_info
            return
        mine = [
            j for j in active_jobs if j.external_jobid in self.adopted or id(j.job) in self.pending
        ]
        others = [j for j in active_jobs if j not in mine]
        for job_info in self._check_mine(mine, others):
            yield job_info
        async for job_info in super().check_active_jobs(others):
            why = self.capped.pop(job_info.external_jobid, None)
            if why is None:
                yield job_info
            else:
                self.report_job_error(job_info, msg=why)

    def _check_mine(
        self, mine: list[SubmittedJobInfo], others: list[SubmittedJobInfo]
    ) -> list[SubmittedJobInfo]:
        """One schedd query: the history of adopted jobs that left the queue (after the check
        that found them gone), else the night store's held jobs and the adopted and stale ones
        in the queue. Returns the jobs of ``mine`` still active."""
        try:
            if self.vanished:
                return self._from_history(mine)
            stale = {c for _job, clusters in self.pending.values() for c in clusters}
            found = schedd.held_or_in(
                self.schedd(),
                self.side.state_dir,  # type: ignore[union-attr]
                set(self.adopted) | stale,
            )
        except Exception as exc:  # the schedd did not answer: ask again at the next check
            self.logger.debug(f"abflow: could not ask the schedd: {exc}")
            return mine
        self._memory_holds(found, others + mine)
        return [j for j in mine if self._still_active(j, found)]

    def _still_active(self, job_info: SubmittedJobInfo, found: dict[int, schedd.JobState]) -> bool:
        """An adopted or pending job, from what the queue says: True while it is active."""
        pending = self.pending.get(id(job_info.job))
        if pending is not None:
            if any(c in found for c in pending[1]):
                return True  # the stale jobs have not left the queue yet
            del self.pending[id(job_info.job)]
            super().run_job(job_info.job)  # registered anew, with its cluster
            return False
        cluster = job_info.external_jobid
        if cluster in self.capped:
            return self._ended(job_info, self.capped.pop(cluster))
        state = found.get(cluster)
        if state is None:  # it left the queue: its history, at the next check
            self.vanished.setdefault(cluster, 0)
            return True
        if state.held and held_for(self._held_timeout(), state.since, time.time()):
            return self._ended(job_info, f"HTCondor job {cluster} held: {state.hold_reason}")
        if not state.active:  # completed, leaving the queue: its ad says how it ended
            return self._took(job_info, state)
        return True

    def _from_history(self, mine: list[SubmittedJobInfo]) -> list[SubmittedJobInfo]:
        """Take the result of each adopted job that left the queue from the history."""
        ended = schedd.in_history(self.schedd(), self.vanished)
        still = []
        for job_info in mine:
            cluster = job_info.external_jobid
            if cluster not in self.vanished:
                still.append(job_info)
                continue
            state = ended.get(cluster)
            if state is None:
                self.vanished[cluster] += 1
                if self.vanished[cluster] < VANISHED_AFTER:
                    still.append(job_info)
                else:
                    self._ended(job_info, f"HTCondor job {cluster} left the queue unseen")
                continue
            del self.vanished[cluster]
            self._took(job_info, state)
        return still

    def _took(self, job_info: SubmittedJobInfo, state: schedd.JobState) -> bool:
        """Report how an adopted job ended; False (it is no longer active)."""
        how = state.outcome()
        if how != "succeeded":
            return self._ended(job_info, f"HTCondor job {state.cluster} {_said(how)}")
        self.adopted.pop(state.cluster, None)
        self.vanished.pop(state.cluster, None)
        self.report_job_success(job_info)
        return False

    def _held_timeout(self) -> float:
        return float(getattr(self.workflow.executor_settings, "held_timeout", 0) or 0)

    def _ended(self, job_info: SubmittedJobInfo, why: str) -> bool:
        self.adopted.pop(job_info.external_jobid, None)
        self.vanished.pop(job_info.external_jobid, None)
        self.report_job_error(job_info, msg=why)
        return False

    # ----- memory ------------------------------------------------------------------------
    def _memory_holds(
        self, found: dict[int, schedd.JobState], active: list[SubmittedJobInfo]
    ) -> None:
        """Release each active job held for memory with more, or note it as failing (the cap)."""
        side = self.side
        assert side is not None
        clusters = {j.external_jobid for j in active}
        for cluster, state in found.items():
            if cluster not in clusters or cluster in self.capped or not is_memory_hold(state):
                continue
            new = side.memory.next_request(state.request_mb, state.used_mb)
            if new is None:
                self.capped[cluster] = self._capped(state)
                continue
            sd = self.schedd()
            schedd.raise_memory(sd, cluster, new)
            retries = notes.add_retry(
                StateLayout(side.state_dir),
                JobId.parse(state.job),
                cluster=cluster,
                from_mb=state.request_mb,
                to_mb=new,
                used_mb=state.used_mb,
                reason=state.hold_reason,
            )
            self._tell(
                PoolEvent(
                    "memory",
                    state.job,
                    cluster,
                    from_mb=state.request_mb,
                    to_mb=new,
                    used_mb=state.used_mb,
                    reason=state.hold_reason,
                    retry=len(retries),
                )
            )

    def _capped(self, state: schedd.JobState) -> str:
        """A job held for memory that may not ask for more: its failure note, its removal from
        the queue, and the reason its AB fails with."""
        side = self.side
        assert side is not None
        why = side.memory.capped(state)
        notes.write_failure(
            StateLayout(side.state_dir), JobId.parse(state.job), why, cluster=state.cluster
        )
        schedd.remove(self.schedd(), [state.cluster], why)
        return why


def _recorded(job: Any) -> float | None:
    """When the job's completion record (its output) was written, epoch seconds (None if
    there is none)."""
    try:
        return min(os.path.getmtime(str(out)) for out in job.output)
    except (OSError, ValueError):
        return None


def _said(outcome: str) -> str:
    """``exited 3``, ``was killed by signal 9``, ``was removed: <reason>``."""
    if outcome.startswith("exit "):
        return "exited " + outcome.removeprefix("exit ")
    return f"was {outcome}"
