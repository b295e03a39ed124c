"""abflow's Snakemake scheduler plugin: priority order, slot reservation, and never a stall."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import DATE, run_snakemake, write_config
from snakemake_interface_scheduler_plugins.tests import TestSchedulerBase

from abflow.example.generate import fan_cascade, write_night
from snakemake_scheduler_plugin_abflow import Scheduler, SchedulerSettings


class Job:
    """Test double for a Snakemake job as the scheduler sees it."""

    def __init__(self, name: str, rule: str, priority: int, **resources: Any) -> None:
        self.label, self.name, self.priority = name, rule, priority
        self.scheduler_resources = resources or {"_cores": 1, "_nodes": 1}

    def __repr__(self) -> str:
        return self.label


class Dag:
    """Test double for Snakemake's DAG interface (dependencies, finished jobs)."""

    def __init__(self, deps: dict[Job, list[Job]], never_finish: bool = False) -> None:
        self.deps, self.done, self.never_finish = deps, set(), never_finish

    def needrun_jobs(self) -> list[Job]:
        return [j for j in self.deps if j not in self.done]

    def job_dependencies(self, job: Job) -> list[Job]:
        return self.deps[job]

    def finished(self, job: Job) -> bool:
        return not self.never_finish and job in self.done


def scheduler(dag: Dag, horizon: float = 30.0) -> Scheduler:
    return Scheduler(dag, SchedulerSettings(horizon=horizon), logging.getLogger("test"))


class TestConformance(TestSchedulerBase):
    """The scheduler-plugin interface's own conformance test, run on abflow's plugin."""

    __test__ = True

    def get_scheduler_cls(self) -> type[Scheduler]:
        return Scheduler

    def get_scheduler_settings(self) -> SchedulerSettings:
        return SchedulerSettings()


def test_resources_that_are_not_global_limits_are_ignored() -> None:
    """The condor profile gives every job request_memory/request_disk (per-job HTCondor
    requests, no global limit): they must not keep a job from being selected (it hung the
    night at "Select jobs to execute..." with a capacity of 0 for them)."""
    ab = Job("ab", "process_ab", 10, _cores=1, _nodes=1, ab_jobs=1, request_memory=2048)
    download = Job("dl", "download_raw", 20, _cores=1, download=1, request_disk="4GB")
    sched = scheduler(Dag({ab: [], download: []}))
    free = {"_cores": 4, "_nodes": 200, "ab_jobs": 5, "download": 8}
    assert list(sched.select_jobs([ab, download], [ab, download], free, {})) == [download, ab]
    # a global limit still binds: no ab_jobs left, so only the download
    ab2 = Job("ab2", "process_ab", 30, _cores=1, ab_jobs=1, request_memory=2048)
    sched = scheduler(Dag({ab2: [], download: []}))
    busy = {"_cores": 4, "_nodes": 200, "ab_jobs": 0, "download": 8}
    assert list(sched.select_jobs([ab2, download], [ab2, download], busy, {})) == [download]


def test_scheduler_plugin_keeps_a_slot_for_an_imminent_critical_job() -> None:
    """The plugin against a test double of Snakemake's DAG (no Snakemake run needed)."""
    bias = Job("bias", "process_ab", 30)
    slack = Job("slack", "process_ab", 10)
    filler = Job("filler", "process_qc", 0)
    flat = Job("flat", "process_ab", 20)
    dag = Dag({bias: [], slack: [], flat: [bias], filler: []})

    sched = scheduler(dag)
    free = {"_cores": 2, "_nodes": 10}
    first = sched.select_jobs([bias, slack], [bias, slack, flat, filler], free, {})
    assert set(first) == {bias, slack}
    time.sleep(0.01)
    dag.done.add(slack)  # slack ends a moment before bias: its slot must wait for flat
    second = sched.select_jobs([filler], [flat, filler], {"_cores": 1, "_nodes": 10}, {})
    assert list(second) == []
    off = scheduler(dag, horizon=0)
    off.select_jobs([bias, slack], [bias, slack, flat, filler], free, {})
    assert list(off.select_jobs([filler], [flat, filler], {"_cores": 1, "_nodes": 10}, {})) == [
        filler
    ]
    dag.done.add(bias)  # now flat is ready and takes the slot kept for it
    assert list(
        sched.select_jobs([flat, filler], [flat, filler], {"_cores": 1, "_nodes": 10}, {})
    ) == [flat]


def test_a_kept_slot_goes_to_a_job_that_ends_before_it_is_wanted(monkeypatch) -> None:
    """The slots kept for a join's detector jobs are free until the join ends: a job of lower
    priority that ends by then takes one (as the plan does: 5.4 job-lengths measured with a
    32-detector night beside a 1 -> 3 -> 6 cascade at 33 slots, 4.7 with it); one that would
    end later than that does not."""
    import snakemake_scheduler_plugin_abflow as plugin

    clock = [0.0]
    monkeypatch.setattr(plugin.time, "monotonic", lambda: clock[0])
    bias, warm = Job("bias", "process_ab", 100), Job("warm", "process_ab", 1)
    join = Job("join", "process_ab", 90)
    dets = [Job(f"det{k}", "process_ab_det", 95) for k in (1, 2)]
    flat, late = Job("flat", "process_ab", 10), Job("late", "process_ab", 10)
    dag = Dag(
        {bias: [], warm: [], join: [bias], **{d: [join] for d in dets}, flat: [warm], late: [warm]}
    )
    sched = scheduler(dag)
    every = [bias, warm, join, *dets, flat, late]
    assert set(sched.select_jobs([bias, warm], every, {"_cores": 3}, {})) == {bias, warm}
    clock[0] = 10.0  # both took 10 s: a typical job is 10 s long
    dag.done |= {bias, warm}
    left = [join, *dets, flat, late]
    assert list(sched.select_jobs([join], left, {"_cores": 3}, {})) == [join]
    # join runs from t=10 to ~20, the detectors are wanted then: flat (10 s) ends by then
    clock[0] = 10.1
    assert list(sched.select_jobs([flat], left, {"_cores": 2}, {})) == [flat]
    clock[0] = 15.0  # late would end at 25, 5 s after the detectors are wanted
    assert list(sched.select_jobs([late], left, {"_cores": 1}, {})) == []


def test_scheduler_plugin_keeps_no_slot_when_the_awaited_job_failed() -> None:
    """A failed job looks running to the plugin; with nothing really running it must not wait."""
    download = Job("download", "download_raw", 40, _cores=1)
    ab = Job("ab", "process_ab", 30, _cores=1)
    other = Job("other-download", "download_raw", 20, _cores=1)
    dag = Dag({download: [], ab: [download], other: []}, never_finish=True)
    sched = scheduler(dag)
    assert list(sched.select_jobs([download], [download, ab, other], {"_cores": 1}, {})) == [
        download
    ]
    # while the download runs (the core is taken), ab is imminent: the other download waits
    assert list(sched.select_jobs([other], [ab, other], {"_cores": 0}, {})) == []
    # the download failed (its core is back, it never finished): ab will never be ready
    assert list(sched.select_jobs([other], [ab, other], {"_cores": 1}, {})) == [other]


@pytest.mark.slow
def test_condor_profile_default_resources_run_through_the_plugin_locally(tmp_path, dfo) -> None:
    """The condor profile's settings (default-resources request_memory/request_disk, abflow's
    scheduler) with the local executor: the night completes instead of hanging."""
    write_night(fan_cascade([1, 2]), dfo["ab_dir"], dfo["mon_dir"], DATE)
    cfg = write_config(tmp_path / "config.yaml", dfo)
    run_snakemake(tmp_path, cfg, "--executor", "local", cores=2, profile="condor", timeout=120)
    assert len(list(Path(dfo["job_dir"], "abflow", "records").glob("*.json"))) == 3
