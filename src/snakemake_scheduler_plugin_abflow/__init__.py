"""abflow's Snakemake scheduler plugin: run the night the way ``abflow plan`` predicts.

Select with ``--scheduler abflow`` (the profiles do). It starts ready jobs in priority order
(abflow's priorities: highest level first, see abflow.model.plan.job_priorities) and, unlike the
greedy and ILP schedulers, it keeps a slot free for a higher-priority AB job that is about to become
ready: one whose remaining prerequisites are all running and expected to end within the
horizon. Jobs of equal length end a fraction of a second apart; without the reservation the
first freed slot goes to whatever job with slack is ready at that instant, and the critical
chain's job, ready 0.2 s later, finds the slots taken (bench/fanout.py). With it, the run
makes the same choices as the plan, which assumes jobs ending together free their slots
together. A job of lower priority still takes a kept slot when it is expected to end by the
time the imminent job becomes ready (within a quarter of a typical job length): it is then
done before the slot is wanted, as in the plan.
"""

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from snakemake_interface_scheduler_plugins.base import SchedulerBase
from snakemake_interface_scheduler_plugins.settings import SchedulerSettingsBase

PLAN_RULES = ("process_ab", "process_ab_det")
# a job that ends this fraction of a typical job length after an imminent job becomes ready
# still counts as done in time (equal jobs end a fraction of a second apart)
TOLERANCE = 0.25


@dataclass
class SchedulerSettings(SchedulerSettingsBase):
    """Settings of the abflow scheduler (``--scheduler-abflow-<name>``)."""

    # a real type, not a string annotation: Snakemake builds its command-line options from it
    horizon: Optional[float] = field(  # noqa: UP045
        default=30.0,
        metadata={
            "help": "Seconds: a free slot is kept for a higher-priority AB job whose running "
            "prerequisites are expected to end within this time (from the durations of the "
            "AB jobs finished so far; with none finished yet, prerequisites that are running "
            "count as about to end). 0 disables the reservation (plain priority order)."
        },
    )


def _numeric(resources: Mapping[str, Any]) -> dict[str, float]:
    return {k: v for k, v in resources.items() if isinstance(v, int | float)}


def _limited(resources: Mapping[str, Any], limits: Mapping[str, float]) -> dict[str, float]:
    """The numeric ``resources`` of a job that are global limits (in ``limits``).

    Like Snakemake's own schedulers, a resource that is not a global limit constrains nothing:
    a job's ``request_memory`` (a per-job HTCondor request of the condor profile's
    default-resources) or ``mem_mb`` is for the executor, not for the scheduler.
    """
    return {k: v for k, v in resources.items() if k in limits and isinstance(v, int | float)}


# Every job counts one of these (Snakemake's own job count, and nodes: one per job): when
# either is used up, no other job can start in this selection.
COUNTED = ("_job_count", "_nodes")


class Scheduler(SchedulerBase):
    """Priority order plus slot reservation for imminent critical jobs."""

    def __post_init__(self) -> None:
        self._children: dict[Any, list[Any]] = {}
        self._deps: dict[Any, list[Any]] = {}
        self._started: dict[Any, float] = {}
        self._running: set[Any] = set()  # started, not seen finished
        self._durations: list[float] = []
        self._finished_seen: set[Any] = set()
        self._capacity: dict[str, float] = {}
        self._needs: dict[Any, dict[str, float]] = {}  # a job's limited resources

    def dag_updated(self) -> None:
        """Index the dependencies of the jobs that need to run.

        Called by Snakemake where it supports the hook, and by select_jobs when it sees a job
        it does not know (Snakemake 9.27 does not call the hook).
        """
        jobs = list(self.dag.needrun_jobs())
        known = set(jobs)
        self._deps = {
            job: [d for d in self.dag.job_dependencies(job) if d in known] for job in jobs
        }
        self._children = {job: [] for job in jobs}
        for job, deps in self._deps.items():
            for dep in deps:
                self._children[dep].append(job)

    @staticmethod
    def _is_plan_job(job: Any) -> bool:
        return getattr(job, "name", "") in PLAN_RULES

    def _typical_duration(self) -> float | None:
        return statistics.median(self._durations) if self._durations else None

    def _note_finished(self, now: float) -> None:
        for job in [j for j in self._running if self.dag.finished(j)]:
            self._running.discard(job)
            self._finished_seen.add(job)
            if self._is_plan_job(job):
                self._durations.append(now - self._started[job])

    def _need(self, job: Any, limits: Mapping[str, float]) -> dict[str, float]:
        """The global-limit resources ``job`` takes (worked out once per job: a night asks
        for them at every selection)."""
        need = self._needs.get(job)
        if need is None:
            need = self._needs[job] = _limited(job.scheduler_resources, limits)
        return need

    def _imminent(
        self, selectable: set[Any], remaining: set[Any], now: float
    ) -> list[tuple[Any, float | None]]:
        """AB jobs not ready yet whose prerequisites are all running and about to end, with
        when they are expected to become ready (None: not known yet)."""
        horizon = (
            self.settings.horizon if self.settings and self.settings.horizon is not None else 30.0
        )
        if horizon <= 0:
            return []
        typical = self._typical_duration()
        out = []
        seen: set[Any] = set()
        for job in self._running:
            for child in self._children.get(job, ()):
                if child in seen or child in selectable or child in self._started:
                    continue
                seen.add(child)
                if child not in remaining or not self._is_plan_job(child):
                    continue
                deps = self._deps.get(child, ())
                if any(d not in self._started and not self.dag.finished(d) for d in deps):
                    continue  # something it needs has not even started
                ready_at = None
                if typical is not None:
                    ends = [
                        self._started[d] + typical
                        for d in deps
                        if d in self._started and d not in self._finished_seen
                    ]
                    if ends and max(ends) - now > horizon:
                        continue
                    ready_at = max(ends, default=now)
                out.append((child, ready_at))
        return out

    def _held(
        self,
        job: Any,
        imminent: list[tuple[Any, float | None]],
        free: Mapping[str, float],
        now: float,
    ) -> dict[str, float]:
        """The resources kept for imminent jobs of higher priority than ``job`` that become
        ready before ``job`` would end."""
        typical = self._typical_duration()
        held: dict[str, float] = {}
        for other, ready_at in imminent:
            if other.priority <= job.priority:
                continue
            if (
                typical is not None
                and ready_at is not None
                and now + typical <= ready_at + TOLERANCE * typical
            ):
                continue  # done by the time the slot is wanted
            for name, value in self._need(other, free).items():
                held[name] = held.get(name, 0) + value
        return held

    def select_jobs(
        self,
        selectable_jobs: Sequence[Any],
        remaining_jobs: Sequence[Any],
        available_resources: Mapping[str, int | str],
        input_sizes: Mapping[Any, int],
    ) -> Sequence[Any] | None:
        """Ready jobs in priority order, keeping slots for imminent higher-priority AB jobs."""
        try:
            now = time.monotonic()
            self._note_finished(now)
            free = _numeric(available_resources)
            if any(free.get(name, 1) < 1 for name in COUNTED):
                return []  # no job can start (a pool night: every slot of --jobs is taken)
            selectable = set(selectable_jobs)
            if any(job not in self._deps for job in selectable):
                self.dag_updated()
            for name, value in free.items():  # nothing runs at the first call: full capacity
                self._capacity[name] = max(self._capacity.get(name, value), value)
            # A job that failed is neither finished nor remaining, just like a running one, so
            # the dependencies taken for running may have failed. Keep slots only while some job
            # really holds resources: otherwise nothing would ever free them (a hang).
            busy = any(free[name] < self._capacity[name] for name in free)
            imminent = self._imminent(selectable, set(remaining_jobs), now) if busy else []
            return self._choose(selectable_jobs, free, imminent, now)
        except Exception as exc:  # never stall the night: fall back to Snakemake's greedy
            self.logger.warning(f"abflow scheduler: {exc!r}; using the greedy scheduler")
            return None

    def _choose(
        self,
        selectable_jobs: Sequence[Any],
        free: dict[str, float],
        imminent: list[tuple[Any, float | None]],
        now: float,
    ) -> list[Any]:
        """The ready jobs that start now, in priority order, within ``free`` less what is kept
        for ``imminent`` jobs; stops as soon as no job can start any more."""
        chosen = []
        for job in sorted(selectable_jobs, key=lambda j: -j.priority):
            need = self._need(job, free)
            held = self._held(job, imminent, free, now) if imminent else {}
            if all(need[n] + held.get(n, 0) <= free[n] for n in need):
                chosen.append(job)
                for name, value in need.items():
                    free[name] -= value
                self._started[job] = now
                self._running.add(job)
                if any(free.get(name, 1) < 1 for name in COUNTED):
                    break
        return chosen
