"""Run one shell command line the way every job does: in its own session (process group), in a
given working directory, with its output appended to the job's log; and end it as a whole.

Safe in threads: jobs run in threads of the Snakemake process when it runs them on this
machine, and as processes of their own on an HTCondor pool. The commands running from this
process are registered, so that the run can end them all at once when it is interrupted
(:func:`end_all`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

SHELL = "/bin/sh"
_running: dict[int, subprocess.Popen[bytes]] = {}  # running commands by pid
_ended: set[int] = set()  # pids ended by end_all


def start(command: str, cwd: str, env: dict[str, str], log_fd: int) -> int:
    """Start ``command`` (a shell command line) in ``cwd`` as the leader of a new session (its
    own process group), stdin from /dev/null, stdout and stderr to ``log_fd``; return its pid."""
    proc = subprocess.Popen(
        [SHELL, "-c", command],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log_fd,
        stderr=log_fd,
        start_new_session=True,
    )
    _running[proc.pid] = proc
    return proc.pid


def wait(pid: int) -> tuple[int, object, bool]:
    """(exit status as subprocess gives it, negative: killed by that signal; the resource use
    of the command and what it waited for, as ``os.wait4`` gives it; whether :func:`end_all`
    ended it). If the waiting job is
    interrupted meanwhile (SIGTERM, Ctrl-C), the command's process group is ended first."""
    try:
        _, status, usage = os.wait4(pid, 0)  # (Popen.wait gives no resource use)
    except BaseException:
        end_group(pid)
        raise
    finally:
        proc = _running.pop(pid, None)
        ended = pid in _ended
        _ended.discard(pid)
    code = os.waitstatus_to_exitcode(status)
    if proc is not None:
        proc.returncode = code  # reaped here: Popen must not wait for it again
    return code, usage, ended


def end_group(pid: int, grace: float = 5.0) -> None:
    """End process ``pid`` and every process of its group: SIGTERM, SIGKILL after ``grace`` s
    (for a command this process still has to reap)."""
    for sig, patience in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(OSError):  # the group is gone already
            os.killpg(pid, sig)
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                return
            if done:
                return
            time.sleep(0.05)


def end_all(grace: float = 5.0) -> list[int]:
    """End the process groups of every command running from this process (the run was
    interrupted): SIGTERM now, SIGKILL after ``grace`` s to those still there. Their jobs,
    waiting in other threads, reap them and report them as interrupted. Returns their pids."""
    pids = list(_running)
    for pid in pids:
        _ended.add(pid)
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGTERM)

    def kill_late() -> None:
        time.sleep(grace)
        for pid in pids:
            if pid in _running:
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)

    if pids:
        import threading

        threading.Thread(target=kill_late, name="abflow-end-jobs", daemon=True).start()
    return pids


def describe_exit(code: int) -> str:
    """Why a command failed, from its exit status."""
    if code < 0:
        return f"command killed by signal {-code}"
    if code > 128:
        return f"command exited {code} (killed by signal {code - 128}?)"
    return f"command exited {code}"
