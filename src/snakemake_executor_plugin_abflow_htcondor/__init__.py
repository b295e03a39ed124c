"""abflow's HTCondor executor (``--executor abflow-htcondor``; profiles/condor selects it).

It is the HTCondor executor of ``snakemake-executor-plugin-htcondor``, which submits every job,
follows it through the job event log and removes the active jobs on Ctrl-C, plus what a night
needs of a controller that may die (abflow.run.pool says what and why):

* a job of the night that a dead controller left in the queue is **adopted** (not submitted
  again), or **removed** first where its command is no longer this night's;
* a job that failed while no controller ran is **taken as failed**, not run again;
* a job HTCondor **holds for exceeding its memory** is released with more (``memory_retry``),
  or fails with the hold reason at the cap;
* a job's submission and adoption are told to abflow's console as records carrying
  :data:`abflow.views.console.POOL_ATTR`.

Only public parts are used: the executor interface's ``run_job``, ``check_active_jobs`` and
``report_job_*`` methods (overridden or called), the htcondor plugin's ``Executor``,
``ExecutorSettings`` and ``common_settings`` (subclassed or reused; the versions are pinned in
pyproject.toml and checked by tests/test_upstream.py), and the HTCondor bindings.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import AsyncGenerator
from typing import Any

from snakemake_executor_plugin_htcondor import Executor as HTCondorExecutor
from snakemake_executor_plugin_htcondor import ExecutorSettings as HTCondorSettings
from snakemake_executor_plugin_htcondor import common_settings as htcondor_common_settings
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo

from abflow.run import pool
from abflow.state import notes, queue
from abflow.state.fsutil import read_json_object
from abflow.state.layout import JobId, StateLayout
from abflow.upstream.htcondor_plugin import CLASSAD_PREFIX
from abflow.views.console import POOL_ATTR


@dataclasses.dataclass
class ExecutorSettings(HTCondorSettings):
    """The htcondor plugin's settings (``--abflow-htcondor-jobdir``, ``-held-timeout``,
    ``-shared-fs-prefixes``)."""


# The interface starts the status thread before the executor's __post_init__ has run, and the
# htcondor plugin asks for no delay before the first status check: on a busy submit host that
# check found the executor half set up ('Executor' object has no attribute '_event_logs') and
# failed the run. One second is nothing against the profile's 2 s between checks.
common_settings = dataclasses.replace(htcondor_common_settings, init_seconds_before_status_checks=1)

# a job that has left the queue but is not in the history yet: checks before giving up on it
VANISHED_AFTER = 30


class Executor(HTCondorExecutor):
    """The htcondor plugin's executor, with adoption and memory retries (see the module)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.night = pool.current()
        self.adopted: dict[int, str] = {}  # cluster -> AbflowJob, jobs this executor adopted
        self.capped: dict[int, str] = {}  # cluster -> why it fails (held for memory at the cap)
        self.missing: dict[int, int] = {}  # cluster -> checks an adopted job was nowhere seen

    # ----- submitting --------------------------------------------------------------------
    def run_job(self, job: Any) -> None:
        """Submit ``job``, unless a dead controller's job already does (or did) its work."""
        night, name = self.night, job.resources.get(f"{CLASSAD_PREFIX}{queue.JOB}")
        if night is None or not name:
            super().run_job(job)
            return
        name = str(name)
        decision = night.decide(name, str(job.resources.get(f"{CLASSAD_PREFIX}{queue.COMMAND}")))
        if decision.remove:
            self._remove(decision.remove, f"{name}: its command is not this run's")
        info = SubmittedJobInfo(job=job, external_jobid=decision.cluster or None)
        layout, job_id = StateLayout(night.state_dir), JobId.parse(name)
        if decision.action == "succeeded" and not self._recorded_since(job, night.started):
            decision = pool.SUBMIT  # its record is older: this run asks for the job again
        if decision.action == "succeeded":  # it ended while this controller was starting
            self._tell("adopted", name, decision.cluster, "succeeded")
            self.report_job_success(info)
        elif decision.action == "adopt":
            self.adopted[decision.cluster] = name
            super().report_job_submission(info)  # an active job, followed from now on
            self._tell("adopted", name, decision.cluster, decision.status)
        elif decision.action == "failed":  # not an active job: nothing to follow
            self._tell("adopted", name, decision.cluster, "failed")
            why = (read_json_object(layout.failure(job_id)) or {}).get("reason")
            message = f"{why} ({decision.reason})" if why else decision.reason
            self.report_job_error(info, msg=message)
        else:
            notes.clear_retries(layout, job_id)
            super().run_job(job)

    @staticmethod
    def _recorded_since(job: Any, since: float) -> bool:
        """True if the job's completion record (its output) was written at or after ``since``
        (epoch seconds)."""
        try:
            return all(os.path.getmtime(str(out)) >= since for out in job.output)
        except OSError:
            return False

    def report_job_submission(self, job_info: SubmittedJobInfo, register_job: bool = True) -> None:
        """Register the job, and tell the console what became of it on the pool."""
        super().report_job_submission(job_info, register_job=register_job)
        name = job_info.job.resources.get(f"{CLASSAD_PREFIX}{queue.JOB}")
        if self.night is not None and name:
            self._tell("submitted", str(name), job_info.external_jobid)

    def _tell(self, what: str, name: str, cluster: int, status: str = "") -> None:
        """Tell the console that job ``name`` was submitted as, or adopted from, ``cluster``
        (in state ``status``)."""
        self.logger.info(
            f"abflow: {name} {what} (HTCondor job {cluster})",
            extra={POOL_ATTR: {"what": what, "job": name, "cluster": cluster, "status": status}},
        )

    def _remove(self, clusters: tuple[int, ...], why: str) -> None:
        """Remove jobs from the queue and wait (up to a minute) until they have left it."""
        sd = queue.schedd()
        jobs = [queue.QueuedJob(c, "", "idle") for c in clusters]
        queue.remove_jobs(sd, jobs, f"abflow: {why}", wait=60.0)
        self.logger.warning(
            f"abflow: removed HTCondor job(s) {', '.join(map(str, clusters))} ({why})",
            extra={POOL_ATTR: {"what": "removed", "clusters": list(clusters), "why": why}},
        )

    # ----- following ---------------------------------------------------------------------
    async def check_active_jobs(
        self, active_jobs: list[SubmittedJobInfo]
    ) -> AsyncGenerator[SubmittedJobInfo, None]:
        """Check the active jobs: memory holds first, adopted jobs here, the rest as the htcondor
        plugin does."""
        if self.night is None or not active_jobs:
            async for job_info in super().check_active_jobs(active_jobs):
                yield job_info
            return
        clusters = {j.external_jobid for j in active_jobs}
        try:
            ads = queue.job_ads(queue.schedd(), self.night.state_dir, set(self.adopted) & clusters)
        except Exception as exc:  # the schedd did not answer: the plugin's own checks go on
            self.logger.debug(f"abflow: could not ask the schedd: {exc}")
            ads = None
        if ads is not None:
            self._memory_holds(ads, active_jobs)
        mine = [j for j in active_jobs if j.external_jobid in self.adopted]
        others = [j for j in active_jobs if j.external_jobid not in self.adopted]
        for job_info in mine:
            if ads is None or self._still_active(job_info, ads):
                yield job_info
        async for job_info in super().check_active_jobs(others):
            why = self.capped.pop(job_info.external_jobid, None)
            if why is None:
                yield job_info
            else:
                self.report_job_error(job_info, msg=why)

    def _memory_holds(self, ads: dict[int, dict], active_jobs: list[SubmittedJobInfo]) -> None:
        """Release each active job held for memory with more, or note it as failing (the cap)."""
        assert self.night is not None
        by_cluster = {j.external_jobid: j for j in active_jobs}
        for cluster, ad in ads.items():
            held = queue.status_name(int(ad.get("JobStatus") or 0)) == "held"
            if not held or cluster not in by_cluster or cluster in self.capped:
                continue
            reason = str(ad.get("HoldReason") or "")
            if not pool.is_memory_hold(ad.get("HoldReasonCode"), ad.get("HoldReasonSubCode"),
                                       reason):  # fmt: skip
                continue
            asked, used = int(ad.get("RequestMemory") or 0), int(ad.get("MemoryUsage") or 0)
            name = str(ad.get(queue.JOB) or "")
            new = self.night.memory.next_request(asked, used)
            if new is None:
                self.capped[cluster] = self._capped(cluster, name, reason, asked)
                continue
            queue.raise_memory(queue.schedd(), cluster, new)
            layout = StateLayout(self.night.state_dir)
            retries = notes.add_retry(layout, JobId.parse(name), cluster=cluster, from_mb=asked,
                                      to_mb=new, used_mb=used, reason=reason)  # fmt: skip
            self.logger.warning(
                f"abflow: {name} held for memory ({reason}): released with {new} MB",
                extra={POOL_ATTR: {"what": "memory", "job": name, "cluster": cluster,
                                   "from_mb": asked, "to_mb": new, "used_mb": used,
                                   "reason": reason, "retry": len(retries)}},
            )  # fmt: skip

    def _capped(self, cluster: int, name: str, reason: str, asked: int) -> str:
        """A job held for memory that may not ask for more: its failure note, its removal from
        the queue, and the reason its AB fails with."""
        assert self.night is not None
        limit = self.night.memory
        why = (
            f"HTCondor job {cluster} held: {reason}; not retried: it asked for {asked} MB, "
            + (f"the cap memory_retry.max_mb is {limit.max_mb} MB" if limit.factor > 1
               else "memory retries are off (memory_retry.factor <= 1)")
        )  # fmt: skip
        notes.write_failure(StateLayout(self.night.state_dir), JobId.parse(name), why,
                            cluster=cluster)  # fmt: skip
        queue.remove_jobs(queue.schedd(), [queue.QueuedJob(cluster, name, "held")], why)
        return why

    def _still_active(self, job_info: SubmittedJobInfo, ads: dict[int, dict]) -> bool:
        """Follow an adopted job through the schedd (its events may be in another controller's
        event log): True while it runs or waits; its result is reported when it has ended."""
        cluster = job_info.external_jobid
        if cluster in self.capped:
            self.adopted.pop(cluster, None)
            self.report_job_error(job_info, msg=self.capped.pop(cluster))
            return False
        ad = ads.get(cluster)
        status = queue.status_name(int(ad.get("JobStatus") or 0)) if ad else None
        if status in ("idle", "running", "transferring_output", "suspended"):
            return True
        if status == "held":
            held = float(ad.get("EnteredCurrentStatus") or time.time())  # type: ignore[union-attr]
            timeout = self.workflow.executor_settings.held_timeout or 0
            if not pool.held_for(timeout, held):
                return True
            return self._ended(job_info, f"HTCondor job {cluster} held: {ad.get('HoldReason')}")  # type: ignore[union-attr]
        ended = queue.ended_ads(queue.schedd(), [cluster]).get(cluster)
        if ended is None:
            self.missing[cluster] = self.missing.get(cluster, 0) + 1
            if self.missing[cluster] < VANISHED_AFTER:
                return True
            return self._ended(job_info, f"HTCondor job {cluster} left the queue unseen")
        if queue.status_name(int(ended.get("JobStatus") or 0)) == "removed":
            return self._ended(job_info, f"HTCondor job {cluster} was removed: "
                               f"{ended.get('RemoveReason') or 'no reason given'}")  # fmt: skip
        if ended.get("ExitBySignal"):
            return self._ended(job_info, f"HTCondor job {cluster} was killed by signal "
                               f"{ended.get('ExitSignal')}")  # fmt: skip
        code = ended.get("ExitCode")
        if code == 0:
            self.adopted.pop(cluster, None)
            self.report_job_success(job_info)
            return False
        return self._ended(job_info, f"HTCondor job {cluster} exited {code}")

    def _ended(self, job_info: SubmittedJobInfo, why: str) -> bool:
        self.adopted.pop(job_info.external_jobid, None)
        self.report_job_error(job_info, msg=why)
        return False
