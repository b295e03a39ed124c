"""abflow's HTCondor executor without a pool: every branch of abflow's own code, driven by a
test double of the schedd (FakeSchedd: the bindings' Schedd interface, with ClassAds and their
constraints evaluated by the bindings' own classad2).

Covered here: submit, adopt (followed to its end), taken as succeeded, taken as failed, a stale
job removed first with the new one submitted only once it left the queue (never blocking),
held for memory raised and capped, removed, killed by a signal, vanished, held too long; and
that abflow's code asks the schedd at most once per status check. The htcondor plugin's own
submission and event-log following (replaced by a stand-in submission here) are covered by the
live-pool tests (tests/test_condor.py, tests/test_outlive.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import classad2
import htcondor2
import pytest
from snakemake_executor_plugin_htcondor import Executor as HTCondorExecutor
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo

import snakemake_executor_plugin_abflow_htcondor as plugin
from abflow.state.fsutil import atomic_write_json
from abflow.state.layout import JobId, StateLayout
from abflow.state.runstate import owner_id, process_start

A, B = "process_ab/A.ab", "process_ab/B.ab"


class FakeSchedd:
    """A test double for ``htcondor2.Schedd``: a queue and a history of ClassAds; queries and
    history asks evaluate their constraints with classad2; Remove and Release act as the schedd
    does (a removed job moves to the history)."""

    def __init__(self) -> None:
        self.queue: dict[int, classad2.ClassAd] = {}
        self.past: dict[int, classad2.ClassAd] = {}
        self.asks = 0  # queries and history asks
        self.acts: list[tuple[str, list[int]]] = []
        self.next = 100

    def add(self, cluster: int, where: str = "queue", **attrs: Any) -> None:
        ad = classad2.ClassAd({"ClusterId": cluster, "JobStatus": 2, **attrs})
        (self.queue if where == "queue" else self.past)[cluster] = ad

    def end(self, cluster: int, **attrs: Any) -> None:
        """The job leaves the queue (completed, unless ``attrs`` say otherwise)."""
        ad = self.queue.pop(cluster)
        for key, value in {"JobStatus": 4, **attrs}.items():
            ad[key] = value
        self.past[cluster] = ad

    def _matching(self, ads: dict, constraint: str) -> list:
        return [ad for ad in ads.values() if classad2.ExprTree(constraint).eval(ad) is True]

    def query(self, constraint: str = "true", projection: list[str] = ()) -> list:
        self.asks += 1
        return self._matching(self.queue, constraint)

    def history(self, constraint: str, projection: list[str], match: int = -1, since: Any = None):
        self.asks += 1
        return self._matching(self.past, constraint)

    def act(self, action: Any, job_spec: list[str], reason: str | None = None) -> None:
        clusters = [int(spec.split(".")[0]) for spec in job_spec]
        self.acts.append((action.name, clusters))
        for cluster in clusters:
            if action is htcondor2.JobAction.Remove and cluster in self.queue:
                self.end(cluster, JobStatus=3, RemoveReason=reason or "")
            elif action is htcondor2.JobAction.Release and cluster in self.queue:
                self.queue[cluster]["JobStatus"] = 1

    def edit(self, job_spec: str, attr: str, value: str) -> None:
        self.queue[int(job_spec.split(".")[0])][attr] = int(value)

    def submit(self, name: str, command: str, state_dir: str) -> int:
        """A job as the htcondor plugin would submit it (its stand-in here)."""
        self.next += 1
        self.add(
            self.next,
            JobStatus=1,
            AbflowJob=name,
            AbflowCommand=command,
            AbflowRun=state_dir,
            AbflowOwner=owner_id(),
        )
        return self.next


class Recorder:
    """Snakemake's scheduler, as the executor reports to it."""

    def __init__(self) -> None:
        self.submitted: list[Any] = []
        self.succeeded: list[Any] = []
        self.failed: list[Any] = []

    def submit_callback(self, job: Any) -> None:
        self.submitted.append(job)

    def finish_callback(self, job: Any) -> None:
        self.succeeded.append(job)

    def error_callback(self, job: Any) -> None:
        self.failed.append(job)


class Harness:
    """abflow's executor over a FakeSchedd, with the plugin's submission and event-log
    following replaced by stand-ins (see the module)."""

    def __init__(self, state_dir: str, sd: FakeSchedd, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sd, self.state_dir, self.scheduler = sd, state_dir, Recorder()
        self.errors: dict[str, str] = {}
        self.plugin_checked: list[int] = []
        ex = plugin.Executor.__new__(plugin.Executor)
        ex.workflow = SimpleNamespace(
            scheduler=self.scheduler, executor_settings=SimpleNamespace(held_timeout=3600)
        )
        ex.logger = SimpleNamespace(
            info=lambda *a, **k: None, warning=lambda *a, **k: None, debug=lambda *a, **k: None
        )
        ex.active_jobs, ex.lock = [], threading.Lock()
        ex.side, ex.adopted, ex.pending, ex.capped, ex.vanished = None, {}, {}, {}, {}
        ex.schedd = lambda: sd
        ex.print_job_error = lambda info, msg=None, **kw: self.errors.__setitem__(
            info.job.resources["classad_AbflowJob"], str(msg)
        )
        self.ex = ex
        monkeypatch.setattr("abflow.state.schedd.pool_configured", lambda: True)
        harness = self

        def submits(ex: Any, job: Any) -> None:
            harness._plugin_submits(ex, job)

        async def follows(ex: Any, active: list) -> Any:
            for info in active:  # (the plugin follows its jobs through the event log)
                harness.plugin_checked.append(info.external_jobid)
                yield info

        monkeypatch.setattr(HTCondorExecutor, "run_job", submits)
        monkeypatch.setattr(HTCondorExecutor, "check_active_jobs", follows)

    def _plugin_submits(self, ex: Any, job: Any) -> None:
        name, command = job.resources["classad_AbflowJob"], job.resources["classad_AbflowCommand"]
        cluster = self.sd.submit(name, command, self.state_dir)
        ex.report_job_submission(SubmittedJobInfo(job=job, external_jobid=cluster))

    def job(self, name: str, command: str = "cmd", record: str = "") -> Any:
        return SimpleNamespace(
            resources={
                "classad_AbflowRun": self.state_dir,
                "classad_AbflowJob": name,
                "classad_AbflowCommand": command,
            },
            output=[record or os.path.join(self.state_dir, "records", name + ".json")],
            register=lambda **_: None,  # (Snakemake's incomplete marker)
        )

    def check(self) -> list[Any]:
        """One status check; the jobs still active."""

        async def run() -> list:
            return [j async for j in self.ex.check_active_jobs(list(self.ex.active_jobs))]

        active = asyncio.run(run())
        self.ex.active_jobs = active
        return active


@pytest.fixture
def night(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Harness:
    """This controller's lock in a night store (memory_retry factor 2, cap 4000 MB), taking
    over from a dead controller ``dead:1:1``."""
    state = str(tmp_path / "state")
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"memory_retry": {"factor": 2, "max_mb": 4000}}))
    atomic_write_json(
        StateLayout(state).lock("CALIB_D"),
        {
            "batch": "CALIB_D",
            "pid": os.getpid(),
            "host": os.uname().nodename,
            "owner": owner_id(),
            "proc_start": process_start(os.getpid()),
            "config": str(config),
            "lineage": ["dead:1:1"],
            "lineage_since": 1.0,
        },
    )
    return Harness(state, FakeSchedd(), monkeypatch)


def test_a_job_nobody_left_is_submitted(night: Harness) -> None:
    night.ex.run_job(night.job(A))
    assert [j.resources["classad_AbflowJob"] for j in night.scheduler.submitted] == [A]
    assert night.sd.queue[101]["AbflowJob"] == A
    assert night.check() and night.plugin_checked == [101]  # followed by the plugin


def test_a_queued_job_with_the_same_command_is_adopted_and_followed_to_its_end(night) -> None:
    night.sd.add(
        7,
        JobStatus=2,
        AbflowJob=A,
        AbflowCommand="cmd",
        AbflowRun=night.state_dir,
        AbflowOwner="dead:1:1",
    )
    night.ex.run_job(night.job(A))
    assert night.sd.next == 100  # nothing submitted
    assert night.check() and not night.plugin_checked  # followed through the schedd
    night.sd.end(7, ExitCode=0)
    assert night.check()  # gone from the queue: its history, at the next check
    assert night.check() == [] and len(night.scheduler.succeeded) == 1


@pytest.mark.parametrize(
    ("ended", "why"),
    [
        ({"ExitCode": 3}, "HTCondor job 7 exited 3"),
        ({"ExitBySignal": True, "ExitSignal": 9}, "HTCondor job 7 was killed by signal 9"),
        ({"JobStatus": 3, "RemoveReason": "condor_rm by hand"},
         "HTCondor job 7 was removed: condor_rm by hand"),
    ],
)  # fmt: skip
def test_an_adopted_job_that_fails_fails_its_ab_with_how_it_ended(night, ended, why) -> None:
    night.sd.add(7, AbflowJob=A, AbflowCommand="cmd", AbflowRun=night.state_dir)
    night.ex.run_job(night.job(A))
    night.sd.end(7, **ended)
    night.check()
    assert night.check() == [] and night.errors[A] == why


def test_an_adopted_job_that_vanished_fails_after_a_while(night, monkeypatch) -> None:
    monkeypatch.setattr(plugin, "VANISHED_AFTER", 3)
    night.sd.add(7, AbflowJob=A, AbflowCommand="cmd", AbflowRun=night.state_dir)
    night.ex.run_job(night.job(A))
    del night.sd.queue[7]  # in neither the queue nor the history
    for _ in range(3):
        assert night.check()
    assert night.check() == [] and "left the queue unseen" in night.errors[A]


def test_a_job_held_too_long_fails_with_the_hold_reason(night) -> None:
    night.sd.add(
        7,
        JobStatus=5,
        HoldReason="input missing",
        EnteredCurrentStatus=1,
        AbflowJob=A,
        AbflowCommand="cmd",
        AbflowRun=night.state_dir,
    )
    night.ex.run_job(night.job(A))
    assert night.check() == [] and night.errors[A] == "HTCondor job 7 held: input missing"


def test_an_ended_job_is_taken_succeeded_with_a_fresh_record_or_failed(night, tmp_path) -> None:
    for cluster, name, code in ((5, A, 0), (6, B, 2)):
        night.sd.add(
            cluster,
            "history",
            JobStatus=4,
            ExitCode=code,
            AbflowJob=name,
            AbflowCommand="cmd",
            AbflowRun=night.state_dir,
            AbflowOwner="dead:1:1",
            CompletionDate=int(time.time()),
        )
    record = tmp_path / "A.json"
    record.write_text("{}")  # written after this controller started
    night.ex.run_job(night.job(A, record=str(record)))
    night.ex.run_job(night.job(B))
    assert len(night.scheduler.succeeded) == 1 and night.sd.next == 100
    assert "HTCondor job 6, exit 2, ended while no controller ran" in night.errors[B]


def test_a_stale_job_is_removed_and_the_new_one_submitted_once_it_left(night) -> None:
    """Never blocking the scheduler, and never both at once."""
    night.sd.add(7, AbflowJob=A, AbflowCommand="old", AbflowRun=night.state_dir)
    t0 = time.monotonic()
    night.ex.run_job(night.job(A, command="new"))
    assert time.monotonic() - t0 < 0.5 and night.sd.acts == [("Remove", [7])]
    night.sd.past.pop(7)
    night.sd.add(7, AbflowJob=A, AbflowCommand="old", AbflowRun=night.state_dir)  # still there
    assert night.check() and night.sd.next == 100  # not submitted while it is in the queue
    night.sd.end(7, JobStatus=3)
    night.check()
    assert night.sd.next == 101 and night.sd.queue[101]["AbflowCommand"] == "new"


def test_a_job_held_for_memory_is_released_with_more_and_fails_at_the_cap(night, tmp_path):
    night.ex.run_job(night.job(A))
    ad = night.sd.queue[101]
    for key, value in {
        "JobStatus": 5,
        "HoldReasonCode": 34,
        "HoldReasonSubCode": 102,
        "HoldReason": "memory",
        "RequestMemory": 1500,
        "MemoryUsage": 1600,
    }.items():
        ad[key] = value
    night.check()
    assert ad["RequestMemory"] == 3200 and ad["JobStatus"] == 1  # released, with twice the use
    retries = json.loads(Path(StateLayout(night.state_dir).retries(JobId.parse(A))).read_text())
    assert retries["retries"][0]["to_mb"] == 3200
    ad["JobStatus"], ad["MemoryUsage"] = 5, 3300
    night.check()
    assert ad["RequestMemory"] == 4000 and ad["JobStatus"] == 1  # up to the cap
    ad["JobStatus"] = 5
    assert night.check() == []  # at the cap (4000 MB): fails, and leaves the queue
    assert (
        "not retried: it asked for 4000 MB, the cap memory_retry.max_mb is 4000 MB"
        in (night.errors[A])
    )
    assert 101 not in night.sd.queue


def test_abflow_asks_the_schedd_at_most_once_per_status_check(night) -> None:
    for k, name in enumerate([A, B, "process_ab/C.ab"]):
        night.sd.add(7 + k, AbflowJob=name, AbflowCommand="cmd", AbflowRun=night.state_dir)
        night.ex.run_job(night.job(name))
    for _ in range(200):
        night.ex.run_job(night.job(f"process_ab/X{_}.ab"))
    asked = night.sd.asks
    night.check()
    assert night.sd.asks - asked == 1
    night.sd.end(7, ExitCode=0)
    asked = night.sd.asks
    night.check()  # it left the queue
    night.check()  # its history
    assert night.sd.asks - asked == 2
