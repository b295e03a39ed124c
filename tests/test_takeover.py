"""A night that outlives its controller, without a pool: what a new controller does with the
jobs a dead one left (abflow.run.takeover), the lineage of crashed runs in the lock, memory retries,
the submission record, the console log of a closed terminal, and atomic downloads.

The same behaviour on a live pool: tests/test_outlive.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import pytest
from htcondor2 import JobStatus

from abflow.run.takeover import Action, Decision, MemoryPolicy, Takeover, decide, is_memory_hold
from abflow.state.layout import JobId, StateLayout, Step
from abflow.state.schedd import JobState, run_constraint

A = "process_ab/A.ab"
B = "process_ab/B.ab"
STATUS = {s.name.lower(): s for s in JobStatus}
NOW = 5000.0  # when the controller started


def queued(cluster: int, job: str, status: str = "running", command: str = "cmd") -> JobState:
    return JobState(cluster, STATUS[status], job=job, command=command, since=1000.0 + cluster)


def ended(
    cluster: int, job: str, code: int | None, command: str = "cmd", at: float = 0
) -> JobState:
    return JobState(
        cluster,
        JobStatus.COMPLETED,
        job=job,
        command=command,
        exit_code=code,
        signal=9 if code is None else None,
        completed=at or 2000.0 + cluster,
    )


# ----------------------------------------------------------------------------- adoption
def test_a_queued_job_with_the_same_command_is_adopted_not_submitted() -> None:
    takeover = Takeover.of([queued(7, A, "running"), queued(8, B, "idle")])
    assert takeover.decide(A, "cmd", None, NOW) == Decision(Action.ADOPT, 7, "running")
    assert takeover.decide(B, "cmd", None, NOW).action is Action.ADOPT
    assert takeover.decide("process_ab/C.ab", "cmd", None, NOW).action is Action.SUBMIT


def test_a_job_is_decided_once_a_retry_of_it_is_submitted() -> None:
    takeover = Takeover.of([queued(7, A)])
    assert takeover.decide(A, "cmd", None, NOW).action is Action.ADOPT
    assert takeover.decide(A, "cmd", None, NOW).action is Action.SUBMIT  # Snakemake's retry


def test_a_queued_job_with_another_command_is_removed_first_so_no_ab_runs_twice() -> None:
    decision = Takeover.of([queued(7, A, command="old")]).decide(A, "new", None, NOW)
    assert decision == Decision(Action.SUBMIT, remove=(7,))


def test_of_several_queued_jobs_of_an_ab_the_running_one_is_adopted_the_rest_removed() -> None:
    jobs = [queued(5, A, "idle"), queued(6, A, "running"), queued(9, A, "held"),
            queued(4, A, "running", command="old")]  # fmt: skip
    decision = Takeover.of(jobs).decide(A, "cmd", None, NOW)
    assert decision.action is Action.ADOPT and decision.cluster == 6
    assert sorted(decision.remove) == [4, 5, 9]


def test_a_job_that_failed_while_no_controller_ran_is_taken_as_failed() -> None:
    takeover = Takeover.of([], [ended(3, A, 0, at=10), ended(4, A, 3, at=20), ended(5, B, None)])
    decision = takeover.decide(A, "cmd", None, NOW)
    assert decision.action is Action.FAILED and decision.cluster == 4
    assert "exit 3" in decision.reason and "no controller ran" in decision.reason
    assert "killed by signal 9" in takeover.decide(B, "cmd", None, NOW).reason


@pytest.mark.parametrize(
    ("recorded", "action"),
    [
        (NOW + 1, Action.SUCCEEDED),
        (NOW, Action.SUCCEEDED),
        (NOW - 1, Action.SUBMIT),
        (None, Action.SUBMIT),
    ],
)
def test_a_success_meanwhile_counts_only_with_a_record_written_since_the_start(
    recorded, action
) -> None:
    """Its record written since this controller started: taken as succeeded. An older record
    is the night's earlier result, which this run asks for again; no record: run it."""
    takeover = Takeover.of([], [ended(4, A, 3, at=20), ended(5, A, 0, at=30)])
    decision = takeover.decide(A, "cmd", recorded, NOW)
    assert decision.action is action
    assert decide("cmd", [], ended(6, B, 1, command="old"), None, NOW).action is Action.SUBMIT


def test_a_job_leaving_the_queue_completed_is_adopted() -> None:
    decision = Takeover.of([queued(7, A, "completed")]).decide(A, "cmd", None, NOW)
    assert decision.action is Action.ADOPT


def test_a_queued_job_wins_over_an_earlier_failure_and_removed_jobs_are_not_adopted() -> None:
    takeover = Takeover.of([queued(8, A), queued(9, B, "removed")], [ended(4, A, 3)])
    assert takeover.decide(A, "cmd", None, NOW).action is Action.ADOPT
    assert takeover.decide(B, "cmd", None, NOW) == Decision(Action.SUBMIT)


def test_decisions_and_statuses_are_the_words_the_files_say() -> None:
    assert [str(a) for a in Action] == ["submit", "adopt", "succeeded", "failed"]
    assert queued(7, A, "held").word == "held" and queued(7, A, "held").active
    assert not queued(7, A, "completed").active
    assert ended(7, A, 0).outcome() == "succeeded" and ended(7, A, 2).failed
    removed = JobState(7, JobStatus.REMOVED, remove_reason="by hand")
    assert removed.outcome() == "removed: by hand" and removed.failed


def test_a_constraint_on_several_owners() -> None:
    one = run_constraint("/night", "vm:1")
    assert one == 'AbflowRun == "/night" && AbflowOwner == "vm:1"'
    assert run_constraint("/night", ["vm:2", "vm:1"]) == (
        'AbflowRun == "/night" && (AbflowOwner == "vm:1" || AbflowOwner == "vm:2")'
    )


# ----------------------------------------------------------------------------- memory
def test_memory_is_raised_by_the_factor_from_the_larger_of_request_and_use() -> None:
    policy = MemoryPolicy(factor=2, max_mb=4096)
    assert policy.next_request(1000, 300) == 2000
    assert policy.next_request(1000, 1500) == 3000  # it used more than it asked for
    assert policy.next_request(3000, 3100) == 4096  # capped
    assert policy.next_request(4096, 5000) is None  # at the cap: no retry
    assert MemoryPolicy(factor=1).next_request(1000, 2000) is None  # retries off
    assert MemoryPolicy.of({"factor": 1.5, "max_mb": 10}) == MemoryPolicy(1.5, 10)
    assert MemoryPolicy.of(None) == MemoryPolicy()


@pytest.mark.parametrize(
    ("code", "subcode", "reason", "memory"),
    [
        (34, 102, "Job has gone over cgroup memory limit of 100 megabytes", True),
        (34, 104, "disk usage exceeded request_disk", False),
        (34, None, "usage exceeded the provisioned limit", True),
        (26, 102, "pool policy", True),  # SYSTEM_PERIODIC_HOLD with the memory sub-code
        (26, 0, "memory usage 231 MB exceeded request_memory 100 MB", True),
        (3, 0, "job policy: MemoryUsage > RequestMemory", True),
        (26, 0, "ran too long", False),
        (1, 0, "held by the operator: check memory", False),  # a person's condor_hold
        (13, 0, "transfer of input failed: memory.dat", False),
    ],
)
def test_which_holds_are_for_memory(code, subcode, reason, memory) -> None:
    held = JobState(7, JobStatus.HELD, hold_code=code, hold_subcode=subcode, hold_reason=reason)
    assert is_memory_hold(held) is memory
    assert not is_memory_hold(JobState(7, JobStatus.RUNNING, hold_subcode=102))


# ----------------------------------------------------------------------------- the lock's lineage
def test_a_run_taking_over_from_crashed_runs_carries_their_lineage(tmp_path) -> None:
    from abflow.state.runstate import read_run, register_run, unregister_run

    state = str(tmp_path / "state")
    layout = StateLayout(state)
    os.makedirs(os.path.dirname(layout.lock("CALIB_D")))
    dead = {"pid": 999999, "host": os.uname().nodename, "start": "x", "proc_start": 100.0,
            "owner": "vm:999999", "lineage": ["vm:888888"], "lineage_since": 50.0}  # fmt: skip
    layout_lock = Path(layout.lock("CALIB_D"))
    layout_lock.write_text(json.dumps(dead))
    run = register_run(state, ["CALIB_D"])
    assert run["lineage"] == ["vm:888888", "vm:999999"]
    assert run["lineage_since"] == 50.0 and run["lineage_start"]
    assert read_run(state, "CALIB_D")["lineage"] == ["vm:888888", "vm:999999"]  # for its successor
    unregister_run(state, ["CALIB_D"], "succeeded")
    history = json.loads(Path(layout.run_history("CALIB_D")).read_text())
    assert [h.get("ended") for h in history] == ["succeeded"]
    fresh = register_run(state, ["CALIB_D"])
    assert fresh["lineage"] == [] and fresh["replaced"] == []


# ----------------------------------------------------------------------------- orphans
def test_a_takeover_ends_only_the_crashed_runs_local_jobs(tmp_path) -> None:
    """By owner id: a pool job is adopted, not ended; a job of another live night (same
    state directory, same file) is never touched."""
    from abflow.state.fsutil import atomic_write_json
    from abflow.state.runstate import end_orphans

    state = str(tmp_path / "state")
    layout = StateLayout(state)
    here = os.uname().nodename
    procs = [subprocess.Popen(["sleep", "60"], start_new_session=True) for _ in range(3)]
    crashed, other = f"{here}:1:1", f"{here}:2:2"
    try:
        marked = [(JobId(Step.PROCESS_AB, "A.ab"), procs[0], {"owner": crashed}),
                  (JobId(Step.PROCESS_AB, "B.ab"), procs[1], {"cluster": 17}),
                  (JobId(Step.DOWNLOAD_RAW, "D/X.fits"), procs[2], {"owner": other})]  # fmt: skip
        for job, proc, extra in marked:
            atomic_write_json(layout.marker(job), {
                "name": job.name, "host": here, "pid": proc.pid,
                "start": time.time(), "pgid": proc.pid, "path": layout.marker(job), **extra,
            })  # fmt: skip
        ended_ = end_orphans(state, [crashed], grace=2)
        assert [j.name for j in ended_] == ["process_ab/A.ab"]
        assert procs[0].wait(timeout=10) == -signal.SIGTERM
        assert procs[1].poll() is None  # the pool's job goes on, to be adopted
        assert procs[2].poll() is None  # another night's download is not the crashed run's
        assert os.path.exists(layout.marker(marked[2][0]))
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


# ----------------------------------------------------------------------------- downloads
def test_a_download_lands_under_its_name_only_once_complete(tmp_path) -> None:
    """The command writes {dest} in a staging directory; the file is renamed into place when
    the command succeeded, so a crash mid-download leaves nothing under the final name."""
    from abflow.job.command import JobCommand
    from abflow.job.download import DownloadFailed, run_download, staging_path

    dest = tmp_path / "raw" / "2013-02-12" / "X.fits"
    staged = staging_path(str(dest), "host:1:2")
    assert os.path.dirname(os.path.dirname(staged)) == str(dest.parent)
    seen = tmp_path / "seen"

    def command(run: str) -> JobCommand:
        return JobCommand(JobId(Step.DOWNLOAD_RAW, "2013-02-12/X.fits"), config="c",
                          state_dir=str(tmp_path / "state"), shell=run, dest=str(dest),
                          staged=staged, log=str(tmp_path / "state" / "x.log"),
                          env=[("DFO_RAW_DIR", str(tmp_path / "raw"))])  # fmt: skip

    writes = (
        f"printf half > {staged}; test -e {dest} && echo early > {seen}; printf full >> {staged}"
    )
    assert run_download(command(writes)) == len("halffull")
    assert dest.read_text() == "halffull" and not seen.exists()
    assert not os.path.exists(os.path.dirname(staged))  # the staging directory is gone
    dest.unlink()
    with pytest.raises(DownloadFailed):
        run_download(command(f"printf half > {staged}; exit 1"))
    assert not dest.exists() and not os.path.exists(os.path.dirname(staged))


# ----------------------------------------------------------------------------- submission
def test_a_submission_record_round_trips_and_a_detached_controller_is_followed(tmp_path) -> None:
    from abflow.state.runstate import process_start
    from abflow.state.submission import (
        Submission,
        controller_state,
        read_submission,
        write_submission,
    )  # fmt: skip

    layout = StateLayout(str(tmp_path))
    proc = subprocess.Popen(["sleep", "30"])
    try:
        sub = Submission("CALIB_D", ["snakemake"], str(tmp_path), str(tmp_path / "log"),
                         pid=proc.pid, proc_start=process_start(proc.pid) or 0.0,
                         host=os.uname().nodename)  # fmt: skip
        write_submission(layout, sub)
        again = read_submission(layout, "CALIB_D")
        assert again == sub and again.where == f"pid {proc.pid} on {os.uname().nodename}"
        assert controller_state(again).alive
    finally:
        proc.kill()
        proc.wait()
    assert controller_state(again).status == "ended"
    reused = Submission("CALIB_D", [], "", "", pid=os.getpid(), proc_start=1.0,
                        host=os.uname().nodename)  # fmt: skip
    assert not controller_state(reused).alive  # a pid now used by a later process is not it


def test_follow_prints_whole_lines_until_the_writer_has_ended(tmp_path) -> None:
    from abflow.views.follow import follow

    log = tmp_path / "console.log"
    log.write_text("before\n")
    offset = log.stat().st_size
    writes = iter(["first\nhal", "f line\n", "last\n"])
    checks = {"n": 0}

    def ended() -> bool:
        checks["n"] += 1
        text = next(writes, None)
        if text is not None:
            with open(log, "a") as fh:
                fh.write(text)
        return text is None

    out = StringIO()
    end = follow(str(log), offset, ended, out, interval=0)
    assert out.getvalue() == "first\nhalf line\nlast\n"
    assert end == log.stat().st_size and checks["n"] == 4


# ----------------------------------------------------------------------------- the closed terminal
def test_a_closed_terminal_sends_the_console_to_the_log_and_says_so_first(tmp_path) -> None:
    """A process whose output is a terminal: on SIGHUP it says where its console continues,
    on the terminal, and writes everything after to the log (the terminal gone, nothing is
    lost)."""
    import pty

    log = tmp_path / "night.log"
    program = (
        "import os, signal, sys, time\n"
        "from abflow.views.terminal import continue_in, terminal_streams\n"
        "ttys = terminal_streams()\n"
        f"signal.signal(signal.SIGHUP, lambda *a: continue_in({str(log)!r}, ttys))\n"
        "print('before', flush=True)\n"
        "sys.stdin.readline()\n"  # the test's go: it has read 'before' and sends SIGHUP
        "time.sleep(0.5)\n"
        "print('after', flush=True)\n"
        "print('error after', file=sys.stderr, flush=True)\n"
    )
    pid, master = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execv(sys.executable, [sys.executable, "-c", program])
    seen = b""
    while b"before" not in seen:
        seen += os.read(master, 1024)
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while b"continues in" not in seen and time.monotonic() < deadline:
        seen += os.read(master, 1024)
    assert b"the terminal closed (SIGHUP)" in seen and str(log).encode() in seen
    os.close(master)  # the terminal goes away
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    lines = [line for line in log.read_text().splitlines() if line]  # (a blank one, at times)
    assert lines[0].startswith("abflow: the terminal closed (SIGHUP)")
    assert lines[1:] == ["after", "error after"]


# ----------------------------------------------------------------------------- submit, no pool
@pytest.mark.slow
def test_submit_without_a_pool_detaches_the_night_from_the_terminal(tmp_path, dfo) -> None:
    """profiles/local: abflow submit starts the night in a session of its own (not this
    command's), its console in the night's log; --wait follows it and exits with its status;
    watch, started from another directory while it runs, follows it to its end."""
    from conftest import DATE, write_config

    from abflow.example.generate import fan_cascade, write_night

    write_night(fan_cascade([1, 2]), dfo["ab_dir"], dfo["mon_dir"], DATE)
    cfg = write_config(tmp_path / "config.yaml", dfo, commands={"process_ab": "sleep 2"})
    abflow = str(Path(sys.executable).parent / "abflow")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    waiting = subprocess.Popen(
        [abflow, "submit", "--wait", "--profile", "profiles/local", "--configfile", str(cfg),
         "-d", DATE, "--config", "drs_type=CON", "--", "--cores", "2"],
        cwd=elsewhere, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    layout = StateLayout(os.path.join(dfo["job_dir"], "abflow"))
    lock = Path(layout.lock(f"CALIB_{DATE}"))
    deadline = time.monotonic() + 120
    while not lock.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    controller = json.loads(lock.read_text())["pid"]
    assert os.getsid(controller) == controller != os.getsid(0)  # a session of its own
    watch = [abflow, "watch", "-d", DATE, "--configfile", str(cfg)]
    watched = subprocess.run(watch, cwd=elsewhere, capture_output=True, text=True, timeout=300)
    said, _ = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, said
    assert "to a process of its own, detached from this terminal" in said
    assert "3 of 3 ABs succeeded" in said and "3 of 3 ABs succeeded" in watched.stdout
    log = Path(layout.console_log(f"CALIB_{DATE}")).read_text()
    assert log.startswith("=== abflow: controller of CALIB_") and "3 of 3 ABs succeeded" in log
    failing = write_config(tmp_path / "failing.yaml", dfo, commands={"process_ab": "exit 3"})
    again = subprocess.run([abflow, "submit", "--wait", "--profile", "profiles/local",
                            "--configfile", str(failing), "-d", DATE, "--config",
                            "subcascade=" + fan_cascade([1, 2])[1].name],
                           cwd=elsewhere, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert again.returncode == 1 and "1 failed" in again.stdout, again.stdout
