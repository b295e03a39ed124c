"""abflow's console (the Snakemake logger plugin), read in a real terminal.

Each test starts a tmux server of its own, types the README's run command (``snakemake
--profile profiles/local``, with the test night's config) into a shell in a tmux pane, and
reads the screen (``capture-pane``) as a QC scientist sees it: one line per AB, the download
progress redrawn in place, a failure with its reason and log, a stop or Ctrl-C said once, the
end-of-night summary. The recipes are stand-ins (tests/standins/standin_job.py, a test double
for a pipeline recipe); Snakemake, the logger plugin and the terminal are real.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import DATE, ROOT, SNAKEFILE, write_config

from abflow.example.generate import fan_cascade, write_night

pytestmark = pytest.mark.slow

STANDIN = f"{sys.executable} {ROOT / 'tests' / 'standins' / 'standin_job.py'}"
BIN = Path(sys.executable).parent


class Pane:
    """A shell in a tmux pane of a private tmux server (its own socket)."""

    def __init__(self, cwd: Path, width: int = 200, height: int = 60) -> None:
        if shutil.which("tmux") is None:
            pytest.fail("tmux is needed (apt-get install tmux)", pytrace=False)
        self.socket = f"abflow-test-{os.getpid()}-{time.monotonic_ns()}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TMUX")}
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        env.pop("CONDOR_CONFIG", None)  # a machine without a pool
        env.pop("PYTHONWARNINGS", None)
        env["TERM"] = "xterm-256color"
        subprocess.run(["tmux", "-L", self.socket, "new-session", "-d", "-x", str(width),
                        "-y", str(height), "-c", str(cwd), "bash --norc --noprofile"],
                       env=env, check=True)  # fmt: skip
        self.tmux("set-option", "-g", "history-limit", "5000")

    def tmux(self, *args: str) -> str:
        """Run a tmux command against this pane's server."""
        out = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True,
                             text=True, check=True)  # fmt: skip
        return out.stdout

    def type(self, line: str) -> None:
        """Type ``line`` and Enter."""
        self.tmux("send-keys", "-t", "0", line, "Enter")

    def keys(self, *keys: str) -> None:
        """Press keys (``C-c``)."""
        self.tmux("send-keys", "-t", "0", *keys)

    def screen(self) -> str:
        """Everything the pane shows, scrollback included, as rendered by the terminal."""
        return self.tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "0")

    def wait_for(self, pattern: str, timeout: float = 120.0) -> str:
        """The screen once ``pattern`` (a regex) is on it."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if re.search(pattern, text, re.M):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {pattern!r}; the screen:\n{text}")
            time.sleep(0.2)

    def close(self) -> None:
        """End the tmux server."""
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       check=False)  # fmt: skip


@pytest.fixture
def pane(tmp_path: Path):
    p = Pane(tmp_path)
    yield p
    p.close()


def run_command(cfg: Path, extra: str = "") -> str:
    """The README's run command for the test night, then its exit code on a line of its own."""
    return (f"snakemake -s {shlex.quote(str(SNAKEFILE))} --profile "
            f"{shlex.quote(str(ROOT / 'profiles' / 'local'))} --configfile {shlex.quote(str(cfg))} "
            f"--config drs_type=CON --cores 2 {extra}; echo \"EXIT $?\"")  # fmt: skip


def night(tmp_path: Path, dfo: dict[str, str], seconds: float, fail: int | None = None):
    """bias -> 3 flats -> 6 science ABs of ``seconds`` stand-in jobs, each with 3 raw files to
    download; AB ``fail`` (an index) fails."""
    names = write_night(fan_cascade([1, 3, 6]), dfo["ab_dir"], dfo["mon_dir"], DATE)
    job = f"{STANDIN} {tmp_path / 'jobs.log'} {{ab_file}} --seconds {seconds}"
    if fail is not None:
        job += f" --fail-if {names[fail]}"
    cfg = write_config(tmp_path / "config.yaml", dfo, commands={"process_ab": job})
    return names, cfg


def ab_lines(screen: str, what: str) -> list[str]:
    """The AB names of the ``[k/n] <AB>  <kind> <what>`` lines."""
    return re.findall(rf"^\[\s*\d+/\d+\] (\S+)\s+\w+ {what}", screen, re.M)


SNAKEMAKE_NOISE = ("Error in rule", "RuleException", "CalledProcessError", "Traceback",
                   "Select jobs to execute", "Finished jobid", "WorkflowError", "jobid:",
                   "CONDOR_CONFIG", "Exiting because a job execution failed")  # fmt: skip


def test_a_night_with_a_failing_ab_reads_as_one_line_per_ab(pane, tmp_path, dfo) -> None:
    names, cfg = night(tmp_path, dfo, 0.5, fail=2)
    pane.type(run_command(cfg))
    screen = pane.wait_for(r"^EXIT \d+")
    failed, blocked = names[2], [names[6], names[7]]  # the failing flat feeds science 6 and 7
    ran = [n for n in names if n not in (failed, *blocked)]
    assert sorted(ab_lines(screen, "started")) == sorted([*ran, failed])
    assert sorted(ab_lines(screen, "succeeded")) == sorted(ran)
    assert ab_lines(screen, "FAILED") == [failed]
    line = next(ln for ln in screen.splitlines() if failed in ln and "FAILED" in ln)
    assert re.search(r"flat FAILED \d+\.\d s: command exited 3$", line), line
    log = Path(dfo["job_dir"], "abflow", "logs", "process_ab", f"{failed}.log")
    assert f"log: {log}" in screen and log.exists()
    # the summary names the failed AB and each AB that did not run, then the count line
    summary = screen[screen.index("abflow: 1 AB failed in this run") :]
    assert all(b in summary for b in blocked), summary
    assert "abflow: 2 ABs did not run" in summary
    assert re.search(r"CALIB_\S+: 7 of 10 ABs succeeded, 1 failed, 2 did not run, in ", summary)
    for noise in SNAKEMAKE_NOISE:
        assert noise not in screen, noise
    # 30 downloads: one progress line, redrawn in place (a single line on the screen), and
    # plain lines in the downloads log
    progress = [ln for ln in screen.splitlines() if ln.startswith("downloads:")]
    fetched = sum(p.stat().st_size for p in Path(dfo["raw_dir"]).rglob("*") if p.is_file())
    assert len(progress) == 1, progress
    assert progress[0].startswith(f"downloads: 30/30 files, {fetched} B"), progress
    assert "done in" in progress[0]
    plain = Path(dfo["job_dir"], "abflow", "logs", "downloads.log").read_text().splitlines()
    assert len(plain) == 30 and plain[-1].split(" ", 1)[1].startswith("[downloads] 30/30 files")
    assert len(screen.strip().splitlines()) < 45  # not ~100 job blocks


def test_a_stopped_night_says_so_once_and_lists_what_did_not_run(pane, tmp_path, dfo) -> None:
    names, cfg = night(tmp_path, dfo, 2.0)
    pane.type(run_command(cfg))
    pane.wait_for(r"^\[\s*1/10\] \S+\s+flat started")  # the bias is done, the flats run
    stop = subprocess.run([str(BIN / "abflow"), "stop", "--configfile", str(cfg)],
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert "start no new job" in stop.stdout
    screen = pane.wait_for(r"^EXIT \d+")
    assert screen.count("abflow: the night is stopping (abflow stop)") == 1
    succeeded = ab_lines(screen, "succeeded")
    assert names[0] in succeeded and len(succeeded) < 10
    not_run = [n for n in names if n not in succeeded]
    summary = screen[screen.index("did not run") :]
    assert all(n in summary for n in not_run), summary
    assert re.search(rf"{len(succeeded)} of 10 ABs succeeded, {len(not_run)} did not run, "
                     r"in .* \(stopped\)", screen)  # fmt: skip
    assert "FAILED" not in screen.replace("0 FAILED", "") and "not started" not in summary
    for noise in SNAKEMAKE_NOISE:
        assert noise not in screen, noise


def test_ctrl_c_is_reported_once_as_an_interruption(pane, tmp_path, dfo) -> None:
    _, cfg = night(tmp_path, dfo, 3.0)
    pane.type(run_command(cfg))
    pane.wait_for(r"^\[\s*1/10\] \S+\s+flat started")
    pane.keys("C-c")
    screen = pane.wait_for(r"^EXIT \d+")
    assert screen.count("abflow: interrupted (Ctrl-C)") == 1, screen
    line = next(ln for ln in screen.splitlines() if "interrupted (Ctrl-C)" in ln)
    running = [n for n in ab_lines(screen, "started") if n not in ab_lines(screen, "succeeded")]
    assert running and all(n in line for n in running), line  # which ABs it ends
    assert re.search(r"1 of 10 ABs succeeded, 9 did not run, in .* \(interrupted\)", screen)
    for noise in SNAKEMAKE_NOISE:
        assert noise not in screen, noise
    # the same command resumes the night
    pane.type("clear; " + run_command(cfg))
    again = pane.wait_for(r"^EXIT 0", timeout=180)
    assert re.search(r"9 of 9 ABs succeeded, in ", again), again


def snakemake(tmp_path: Path, cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real snakemake, through the local profile, as a user types it (no warning filter)."""
    env = {k: v for k, v in os.environ.items() if k not in ("CONDOR_CONFIG", "PYTHONWARNINGS")}
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--profile",
         str(ROOT / "profiles" / "local"), "--configfile", str(cfg), "--cores", "2", *args],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300, check=False,
    )  # fmt: skip


def test_a_dry_run_shows_the_cascade_levels_and_why_each_ab_would_run(tmp_path, dfo) -> None:
    names, cfg = night(tmp_path, dfo, 0.0)
    dry = snakemake(tmp_path, cfg, "-n")
    out = dry.stdout + dry.stderr
    assert dry.returncode == 0, out
    assert "dry-run of CALIB_" in out and "10 of 10 ABs would run, cascade of 3 levels" in out
    assert re.search(r"level 0\s+1 AB\s+\(bias 1\): 1 would run", out), out
    assert re.search(r"level 1\s+3 ABs \(flat 3\): 3 would run", out), out
    assert re.search(r"level 2\s+6 ABs \(science 6\): 6 would run", out), out
    assert all(re.search(rf"^  {re.escape(n)}\s+\w+\s+not processed yet$", out, re.M)
               for n in names), out  # fmt: skip
    assert len(out.splitlines()) < 30 and "Job stats" not in out and "rule process_ab" not in out
    assert snakemake(tmp_path, cfg).returncode == 0  # the night runs
    # an edited AB reruns with its descendants; a subcascade is a request
    ab = Path(dfo["ab_dir"], names[1])
    ab.write_text(ab.read_text() + "PARAM  edited=1\n")
    edited = snakemake(tmp_path, cfg, "-n")
    out = edited.stdout + edited.stderr
    assert re.search(rf"^  {re.escape(names[1])}\s+flat\s+its AB file changed since it ran$",
                     out, re.M), out  # fmt: skip
    for child in (names[4], names[5]):
        assert re.search(rf"^  {re.escape(child)}\s+science\s+an AB it takes calibrations from "
                         "runs first$", out, re.M), out  # fmt: skip
    assert "3 of 10 ABs would run" in out
    sub = snakemake(tmp_path, cfg, "-n", "--config", f"subcascade={names[3]}")
    out = sub.stdout + sub.stderr
    assert re.search(rf"^  {re.escape(names[3])}\s+flat\s+subcascade rerun requested$", out,
                     re.M), out  # fmt: skip
    # Snakemake's own listing stays one flag away
    full = snakemake(tmp_path, cfg, "-n", "--logger-abflow-snakemake")
    assert "rule process_ab:" in full.stdout + full.stderr and "Job stats" in full.stdout


def test_commands_without_a_pool_print_no_htcondor_warning(tmp_path, dfo) -> None:
    _, cfg = night(tmp_path, dfo, 0.0)
    home = tmp_path / "home"  # no ~/.condor there
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CONDOR_CONFIG", "PYTHONWARNINGS")}
    env["HOME"] = str(home)
    assert not any(os.path.isfile(p) for p in ("/etc/condor/condor_config",
                                               "/usr/local/etc/condor_config"))  # fmt: skip
    for cmd in (
        [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--profile",
         str(ROOT / "profiles" / "local"), "--configfile", str(cfg), "-n"],
        [str(BIN / "abflow"), "status", "--configfile", str(cfg)],
        [str(BIN / "abflow"), "watch", "--once", "--configfile", str(cfg)],
    ):  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path,
                              check=False)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert "Warning" not in proc.stderr and "CONDOR_CONFIG" not in proc.stderr, proc.stderr
    # the bindings still warn where abflow's install is not in the way: the check is real
    probe = subprocess.run([sys.executable, "-S", "-c", "import sys; sys.path[:0] = "
                            f"{[p for p in sys.path if p]!r}; import htcondor2"],
                           capture_output=True, text=True, env=env, check=False)  # fmt: skip
    assert "CONDOR_CONFIG is unset" in probe.stderr


def test_watch_follows_a_local_run_and_ends_with_its_summary(tmp_path, dfo) -> None:
    names, cfg = night(tmp_path, dfo, 1.0, fail=1)
    env = {k: v for k, v in os.environ.items() if k != "CONDOR_CONFIG"}
    run = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--profile",
         str(ROOT / "profiles" / "local"), "--configfile", str(cfg), "--cores", "2",
         "--config", "drs_type=CON"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        lock = Path(dfo["job_dir"], "abflow", "runs", f"CALIB_{DATE}.json")
        deadline = time.monotonic() + 60
        while not lock.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        watch = subprocess.Popen([str(BIN / "abflow"), "watch", "--interval", "0.5",
                                  "--configfile", str(cfg)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
        ends: dict[str, float] = {}
        while len(ends) < 2 and time.monotonic() < deadline + 120:
            for what, proc in (("run", run), ("watch", watch)):
                if what not in ends and proc.poll() is not None:
                    ends[what] = time.monotonic()
            time.sleep(0.05)
        out, _ = watch.communicate(timeout=10)
    finally:
        run.kill()
    assert run.returncode != 0 and watch.returncode == 0  # one AB failed; watch is content
    assert abs(ends["watch"] - ends["run"]) < 3  # watch ends with the run
    assert "running: snakemake pid" in out  # it saw the run going on
    tail = out[out.rindex("the run has ended") :]
    assert tail.startswith("the run has ended: 7 of 10 ABs succeeded, 1 failed")
    assert names[1] in tail and "command exited 3" in tail  # the summary names the failure
    assert all(n in tail for n in (names[4], names[5]))  # and what did not run
