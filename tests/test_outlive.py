"""A night that outlives its terminal, on a live HTCondor pool: ``abflow submit``, a closed
terminal, a controller killed mid-night (interactive and submitted), a reboot of the pool, and
jobs held for exceeding their memory.

Real schedd, real executor plugin, real jobs (stand-in recipes long enough to be killed
mid-run); the controller dies by SIGKILL of its process, the terminal by ``tmux kill-session``.
The logic behind it is unit-tested in tests/test_takeover.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DATE, records
from test_condor import (
    BIN,
    history,
    on_pool,
    queue,
    snakemake_cmd,
    spans,
    standin_config,
    start_on_pool,
    user_env,
    wait_for,
)

from abflow.example.generate import ABSpec, ab_name, fan_cascade, make_dfo_tree, write_night
from abflow.state.layout import StateLayout

pytestmark = [pytest.mark.pool, pytest.mark.slow]
BATCH = f"CALIB_{DATE}"
# read before the tests hide the caller's ABFLOW_* variables (conftest._isolate_env)
POOL_SH = os.environ.get("ABFLOW_POOL_SH", "")
REQUIRE_POOL = os.environ.get("ABFLOW_REQUIRE_POOL") == "1"


def abflow(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN / "abflow"), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(
            f"abflow {args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def night(base: Path, specs: list[ABSpec], seconds: float, **kw) -> tuple[Path, str]:
    """A night of stand-in recipes in a DFOS tree under ``base``: its config and state dir."""
    dfo = make_dfo_tree(base / "dfo")
    write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
    return standin_config(base, dfo, seconds, **kw), os.path.join(dfo["job_dir"], "abflow")


def lock(state: str) -> dict | None:
    path = Path(StateLayout(state).lock(BATCH))
    return json.loads(path.read_text()) if path.exists() else None


def controller_pid(state: str) -> int:
    """The pid of the night's live controller (its lock names it)."""
    wait_for(lambda: lock(state) is not None, 120, "the controller's lock")
    return int(lock(state)["pid"])  # type: ignore[index]


def console(state: str) -> str:
    path = Path(StateLayout(state).console_log(BATCH))
    return path.read_text() if path.exists() else ""


def controller_ended(state: str, timeout: float) -> None:
    """Wait for a submitted night's controller to leave the queue for good."""
    from abflow.state.submission import controller_state, read_submission

    sub = read_submission(StateLayout(state), BATCH)
    assert sub is not None
    wait_for(lambda: not controller_state(sub).alive, timeout, "the controller to end")


def once_each(log: Path, names: list[str]) -> None:
    """Every AB's recipe ran exactly once, to its end (none ended, restarted or run twice)."""
    runs = spans(log)
    assert sorted(runs) == sorted(names)
    for ab, ab_runs in runs.items():
        assert [how for _s, _e, how in ab_runs] == ["end"], (ab, ab_runs)


def submitted_once(state: str, names: list[str]) -> None:
    """The schedd ran one job per AB: nothing was submitted twice."""
    done = history(state, len(names))
    assert sorted(ad["AbflowJob"] for ad in done) == sorted(f"process_ab/{n}" for n in names)


@pytest.fixture
def pool_config(pool) -> Iterator[Path]:
    """The pool's own configuration directory (config.d); what a test puts there is removed
    afterwards, and the daemons told both times."""
    import htcondor2

    directory = Path(htcondor2.param["LOCAL_CONFIG_DIR"])
    before = set(directory.iterdir())
    yield directory
    for path in set(directory.iterdir()) - before:
        path.unlink()
    reconfig()


def reconfig() -> None:
    import htcondor2

    master = htcondor2.Collector().locate(htcondor2.DaemonType.Master)
    htcondor2.send_command(master, htcondor2.DaemonCommand.Reconfig)
    time.sleep(2)


# ----------------------------------------------------------------------------- abflow submit
def test_condor_arguments_keep_words_with_spaces_and_quotes(pool, tmp_path) -> None:
    """How abflow submit hands the controller its command line (a record path may hold
    spaces): a real job on the pool gets every word as given."""
    import htcondor2

    from abflow.run.controller import condor_arguments

    words = ["a b", "it's", 'say "hi"', "", "x"]
    out = tmp_path / "args.json"
    program = "import json, sys; print(json.dumps(sys.argv[1:]))"
    args = condor_arguments([sys.executable, "-c", program, *words])
    job = htcondor2.Submit({"executable": "/usr/bin/env", "arguments": args, "output": str(out),
                            "universe": "scheduler"})  # fmt: skip
    cluster = htcondor2.Schedd().submit(job).cluster()
    wait_for(lambda: out.exists() and out.read_text().strip(), 60, f"job {cluster}")
    assert json.loads(out.read_text()) == words


def test_submit_hands_the_night_to_htcondor_and_wait_follows_it(pool, tmp_path) -> None:
    """From a directory of its own: the controller is an HTCondor job (scheduler universe);
    the command says the job, the log and how to watch and stop; --wait follows the console
    and exits with the night's status; a second submit is refused; watch follows the console
    to the end; the page shows the controller."""
    specs = fan_cascade([1, 3])
    cfg, state = night(tmp_path, specs, 3)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    waiting = subprocess.Popen(
        [str(BIN / "abflow"), "submit", "--wait", "--configfile", str(cfg), "-d", DATE],
        cwd=elsewhere, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    controller_pid(state)
    again = abflow("submit", "--configfile", str(cfg), "-d", DATE, cwd=elsewhere, check=False)
    assert again.returncode == 1 and "being processed" in again.stderr + again.stdout
    watch = subprocess.Popen(
        [str(BIN / "abflow"), "watch", "-d", DATE, "--configfile", str(cfg)],
        cwd=elsewhere, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    abflow("status", "--configfile", str(cfg))
    page = Path(tmp_path / "dfo" / "mon" / f"status_{DATE}.html").read_text()
    said, _ = waiting.communicate(timeout=300)
    watched, _ = watch.communicate(timeout=120)
    assert waiting.returncode == 0, said
    cluster = int(said.split("handed to HTCondor as job ", 1)[1].split()[0])
    log = StateLayout(state).console_log(BATCH)
    assert f"  console: {log}" in said and f"abflow watch -d {DATE}" in said
    assert f"abflow stop -d {DATE}" in said
    assert "4 of 4 ABs succeeded" in said and said.rstrip().endswith("has ended (exit 0)")
    assert "4 of 4 ABs succeeded" in watched and "the run has ended: 4 of 4" in watched
    assert f"HTCondor job {cluster}" in page and 'id="controller"' in page
    (ad,) = _controller_history(cluster)
    assert ad["JobUniverse"] == 7 and ad["ExitCode"] == 0  # the scheduler universe
    once_each(tmp_path / "jobs.log", [s.name for s in specs])
    assert lock(state) is None


def _controller_history(cluster: int) -> list[dict]:
    import htcondor2

    deadline = time.monotonic() + 30
    while True:
        found = htcondor2.Schedd().history(
            constraint=f"ClusterId == {cluster}", projection=["JobUniverse", "ExitCode"]
        )
        ads = [dict(a) for a in found]
        if ads or time.monotonic() > deadline:
            return ads
        time.sleep(1)


def test_stop_now_ends_a_submitted_night_and_its_controller(pool, tmp_path) -> None:
    """abflow stop --now on a submitted night: the controller job is removed (HTCondor sends it
    SIGINT, as Ctrl-C), the running recipes are ended, nothing of the night stays in the
    queue, and HTCondor does not start the controller again."""
    specs = fan_cascade([2])
    cfg, state = night(tmp_path, specs, 120)
    abflow("submit", "--configfile", str(cfg), "-d", DATE)
    log = tmp_path / "jobs.log"
    wait_for(lambda: log.exists() and log.read_text().count("start ") == 2, 180, "the recipes")
    stop = abflow("stop", "--now", "--wait", "120", "--configfile", str(cfg), "-d", DATE)
    assert "interrupted it" in stop.stdout and "it has ended" in stop.stdout, stop.stdout
    controller_ended(state, 60)
    wait_for(lambda: queue(state) == [], 60, "the night's jobs to leave the queue")
    assert all(r[-1][2] == "killed" for r in spans(log).values())
    assert records(state) == {}
    assert "(interrupted)" in console(state)
    runs = json.loads(Path(StateLayout(state).run_history(BATCH)).read_text())
    assert [r.get("ended") for r in runs] == ["interrupted"]


def test_a_killed_controller_is_started_again_by_htcondor_and_adopts_its_jobs(pool, tmp_path):
    """abflow submit; the controller SIGKILLed while three flats run on the pool: HTCondor
    starts it again, it adopts the three jobs (no second submission, no slot held to wait)
    and the night completes with no command typed; nothing ran twice."""
    bias = ab_name(0)
    specs = fan_cascade([1, 3, 2])
    cfg, state = night(tmp_path, specs, 12, quick=bias)
    abflow("submit", "--configfile", str(cfg), "-d", DATE)
    log = tmp_path / "jobs.log"
    flats = [s.name for s in specs[1:4]]
    wait_for(lambda: log.exists() and all(f"start {f}" in log.read_text() for f in flats), 180,
             "the three flats to run")  # fmt: skip
    os.kill(controller_pid(state), signal.SIGKILL)
    killed = time.time()
    controller_ended(state, 300)
    said = console(state)
    assert "start 2: the controller before it died" in said
    for flat in flats:
        assert f"{flat}  flat adopted (HTCondor job" in said, said[-3000:]
    once_each(log, [s.name for s in specs])
    submitted_once(state, [s.name for s in specs])
    assert set(records(state)) == {s.name for s in specs}
    first_adopted = min(e for ab, runs in spans(log).items() if ab in flats for _s, e, _h in runs)
    assert first_adopted > killed  # their results were taken after the restart
    runs = json.loads(Path(StateLayout(state).run_history(BATCH)).read_text())
    assert [r.get("ended") for r in runs] == ["crashed", "succeeded"]


# ----------------------------------------------------------------------------- the same command
def test_the_same_command_after_a_killed_controller_adopts_and_keeps_what_ended_meanwhile(
    pool, tmp_path
) -> None:
    """The interactive run SIGKILLed; while no controller runs one job succeeds and one fails;
    the same command again: the running jobs are adopted, the success is kept and the failure
    taken as such (not run again); nothing ran twice, no AB was submitted twice."""
    quick, slow, short, failing = (ABSpec(ab_name(i)) for i in range(4))
    slow.parents = [quick.name]
    child = ABSpec(ab_name(4), parents=[slow.name])
    specs = [quick, slow, short, failing, child]
    cfg, state = night(tmp_path, specs, 20, quick=quick.name, fail_if="T00:00:03",
                       seconds_if={short.name: 4, failing.name: 4})  # fmt: skip
    run = start_on_pool(tmp_path, cfg, "--config", f"date={DATE}")
    log = tmp_path / "jobs.log"
    three = (slow, short, failing)
    wait_for(lambda: log.exists() and all(f"start {s.name}" in log.read_text() for s in three),
             180, "three recipes")  # fmt: skip
    run.send_signal(signal.SIGKILL)
    run.wait()
    wait_for(lambda: all(f"end {s.name}" in log.read_text() for s in (short, failing)), 60,
             "the short ones to end while no controller runs")  # fmt: skip
    assert {j["AbflowJob"] for j in queue(state)} == {f"process_ab/{slow.name}"}
    proc = on_pool(tmp_path, cfg, "--config", f"date={DATE}", check=False)
    assert proc.returncode != 0  # one AB failed
    assert f"{slow.name}  bias adopted (HTCondor job" in proc.stdout, proc.stdout
    assert f"{failing.name}  bias adopted (HTCondor job" in proc.stdout
    assert "failed while no controller ran)" in proc.stdout
    assert f"{failing.name} (process_ab): command exited 3" in proc.stdout  # the summary
    assert set(records(state)) == {quick.name, slow.name, short.name, child.name}
    once_each(log, [s.name for s in specs])
    submitted_once(state, [s.name for s in specs])
    assert queue(state) == []


# ----------------------------------------------------------------------------- a closed terminal
def test_a_closed_terminal_does_not_end_a_night_on_the_pool(pool, tmp_path) -> None:
    """The mission's command in tmux; the session killed (the ssh session drops) while the
    flats run: the night goes on to its end, its console continues in the night's log, the
    lock is released."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    specs = fan_cascade([1, 3, 6])
    cfg, state = night(tmp_path, specs, 4)
    command = " ".join(f"'{w}'" for w in snakemake_cmd(tmp_path, cfg, "--config", f"date={DATE}"))
    session = f"abflow-hup-{os.getpid()}"
    env = {k: v for k, v in user_env().items() if not k.startswith("TMUX")}
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "200", "-y", "50",
                    f"cd '{Path(__file__).parents[1]}' && {command}; sleep 600"], env=env,
                   check=True)  # fmt: skip
    log = tmp_path / "jobs.log"
    try:
        wait_for(lambda: log.exists() and f"start {specs[1].name}" in log.read_text(), 180,
                 "the flats to run")  # fmt: skip
        pid = controller_pid(state)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)
    wait_for(lambda: lock(state) is None, 300, "the night to end")
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 60, "the controller to exit")
    said = console(state)
    assert said.startswith("abflow: the terminal closed (SIGHUP)"), said[:500]
    assert "10 of 10 ABs succeeded" in said and f"{specs[-1].name}  science succeeded" in said
    once_each(log, [s.name for s in specs])
    runs = json.loads(Path(StateLayout(state).run_history(BATCH)).read_text())
    assert runs[-1]["ended"] == "succeeded"


# ----------------------------------------------------------------------------- a reboot
def test_a_reboot_of_the_pool_does_not_end_a_submitted_night(pool_config, tmp_path) -> None:
    """The pool stopped and started again (pool.sh stop and start on its directory: every
    daemon, the controller and the running jobs die) while a submitted night runs: it resumes
    without a command and completes; finished ABs are kept. The personal pool's execute node
    dies with it, so the jobs that ran are run again once their lease has expired: the test
    pool's lease is 20 s (a site's default, 40 min, lets jobs on other machines survive)."""
    pool_sh = POOL_SH
    if not pool_sh:
        if REQUIRE_POOL:
            pytest.fail("ABFLOW_POOL_SH must name the pool's pool.sh to restart it")
        pytest.skip("ABFLOW_POOL_SH does not name the pool's pool.sh (to stop and start it)")
    (pool_config / "50-abflow-test-lease.conf").write_text("JOB_DEFAULT_LEASE_DURATION = 20\n")
    reconfig()
    specs = fan_cascade([1, 2])
    cfg, state = night(tmp_path, specs, 8, quick=ab_name(0))
    abflow("submit", "--configfile", str(cfg), "-d", DATE)
    log = tmp_path / "jobs.log"
    wait_for(lambda: log.exists() and f"start {specs[2].name}" in log.read_text(), 180,
             "the flats to run")  # fmt: skip
    bias_record = Path(state, "records", f"{specs[0].name}.json")
    kept = bias_record.stat().st_mtime_ns
    directory = str(Path(os.environ["CONDOR_CONFIG"]).parent)
    subprocess.run(["bash", pool_sh, "stop", directory], check=True, timeout=120)
    subprocess.run(["bash", pool_sh, "start", directory], check=True, timeout=300,
                   capture_output=True)  # fmt: skip
    controller_ended(state, 400)
    assert set(records(state)) == {s.name for s in specs}
    assert bias_record.stat().st_mtime_ns == kept
    runs = spans(log)
    assert len(runs[specs[0].name]) == 1  # finished before the reboot: kept
    for flat in specs[1:]:  # running on the execute node that died with the pool: run again
        assert runs[flat.name][-1][2] == "end" and len(runs[flat.name]) == 2
    assert console(state).count("=== abflow: controller of") == 2


# ----------------------------------------------------------------------------- memory
def test_jobs_held_for_memory_run_again_with_more_or_fail_at_the_cap(pool_config, tmp_path):
    """A pool policy holds jobs whose memory use exceeds their request. One AB (200 MB, asks
    100) runs again with more and succeeds; one (700 MB) reaches memory_retry.max_mb (500)
    and fails with the hold reason. The console, the page and the summary say so."""
    (pool_config / "50-abflow-test-memory.conf").write_text(
        "SYSTEM_PERIODIC_HOLD = (JobUniverse == 5) && (MemoryUsage =!= undefined) && "
        "(MemoryUsage > RequestMemory)\n"
        'SYSTEM_PERIODIC_HOLD_REASON = strcat("memory usage ", MemoryUsage, " MB exceeded '
        'request_memory ", RequestMemory, " MB")\n'
        "SYSTEM_PERIODIC_HOLD_SUBCODE = 102\nPERIODIC_EXPR_INTERVAL = 2\n"
    )
    reconfig()
    small, big = ABSpec(ab_name(0)), ABSpec(ab_name(1))
    cfg, state = night(tmp_path, [small, big], 25, memory_retry={"factor": 2, "max_mb": 500})
    cfg.write_text(cfg.read_text().replace(
        "--seconds 25", f"--seconds 25 --memory-mb 200 --memory-mb-if {big.name}=700"))  # fmt: skip
    proc = on_pool(tmp_path, cfg, "--config", f"date={DATE}", "--set-resources",
                   "process_ab:request_memory=100", check=False, timeout=600)  # fmt: skip
    said = proc.stdout
    assert proc.returncode != 0, said[-3000:]  # the big AB failed
    # the console: released with more memory, then succeeded saying so; the big one failed
    assert f"{small.name}  bias held for memory (memory usage" in said, said[-3000:]
    assert f"{small.name}  bias succeeded" in said and "(memory raised to " in said
    assert f"{big.name}  bias FAILED" in said
    assert "the cap memory_retry.max_mb is 500 MB" in said
    # the records, notes and the end summary
    assert set(records(state)) == {small.name}
    note = json.loads(Path(state, "failed", f"{big.name}.json").read_text())
    assert "held: memory usage" in note["reason"] and "max_mb is 500 MB" in note["reason"]
    retries = json.loads(Path(state, "retries", "process_ab", f"{small.name}.json").read_text())
    (retry,) = retries["retries"]
    assert retry["from_mb"] == 100 and retry["to_mb"] >= 2 * retry["used_mb"] > 200
    summary = said[said.index("abflow: 1 AB failed") :]
    assert "ran again on the pool with more memory" in summary
    assert f"{small.name}: memory raised 100 -> {retry['to_mb']} MB" in summary
    # the page
    abflow("status", "--configfile", str(cfg))
    page = Path(tmp_path / "dfo" / "mon" / f"status_{DATE}.html").read_text()
    assert f"memory raised 100 -&gt; {retry['to_mb']} MB" in page
    # the recipe ran twice: killed when held, then to its end with more memory
    runs = spans(tmp_path / "jobs.log")
    assert [how for _s, _e, how in runs[small.name]] == ["killed", "end"]
    assert queue(state) == []
