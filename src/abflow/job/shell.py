"""Run one shell command line the way every job does: in its own process group, in a given
working directory, with its output appended to the job's log; and end it as a whole.

Built on ``os.posix_spawn`` rather than ``subprocess`` (whose import alone costs a job more CPU
than everything else it does), and used by both kinds of job: an AB step (abflow.job.runner)
and a download (abflow.job.download).
"""

from __future__ import annotations

# _signal: the C half of the signal module; the Python half builds enums (of signal names),
# an import a job would pay 13 ms of CPU for (bench/fanout.py). Numbers and calls are the same.
import _signal as signal
import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

SHELL = "/bin/sh"


def now_iso() -> str:
    """The current time, local, ISO 8601 with milliseconds and the UTC offset
    (``2026-12-02T15:04:05.123+01:00``, as ``datetime.isoformat`` writes it)."""
    now = time.time()
    local = time.localtime(now)
    zone = time.strftime("%z", local)
    millis = int(now * 1000) % 1000
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', local)}.{millis:03d}{zone[:3]}:{zone[3:]}"


def hostname() -> str:
    """This machine's name (what ``socket.gethostname`` gives, without importing socket)."""
    return os.uname().nodename


def start(command: str, cwd: str, env: dict[str, str], log_fd: int) -> int:
    """Start ``sh -c command`` in ``cwd`` as the leader of a new session (its own process
    group), stdin from /dev/null, stdout and stderr to ``log_fd``; return its pid."""
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, log_fd, 1),
        (os.POSIX_SPAWN_DUP2, log_fd, 2),
    ]
    here = os.open(".", os.O_RDONLY)
    os.chdir(cwd)  # posix_spawn has no cwd of its own: the job's is only borrowed
    try:
        return os.posix_spawn(SHELL, [SHELL, "-c", command], env, file_actions=actions, setsid=True)
    finally:
        os.fchdir(here)
        os.close(here)


def wait(pid: int) -> int:
    """The exit status of ``pid`` as subprocess gives it (negative: killed by that signal).
    If the job is interrupted meanwhile (SIGTERM, Ctrl-C), the command's process group is
    ended first and the interruption goes on."""
    try:
        _, status = os.waitpid(pid, 0)
    except BaseException:
        end_group(pid)
        raise
    return os.waitstatus_to_exitcode(status)


def end_group(pid: int, grace: float = 5.0) -> None:
    """End process ``pid`` and every process of its group: SIGTERM, SIGKILL after ``grace`` s."""
    for sig, patience in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:  # noqa: SIM105 (contextlib: one more import for every job)
            os.killpg(pid, sig)
        except OSError:
            pass  # the group is gone already
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                return
            if done:
                return
            time.sleep(0.05)


def on_terminate(handler: Callable[[int, object], None]) -> None:
    """Call ``handler`` when the job is ended with SIGTERM (by Snakemake, HTCondor or abflow)."""
    signal.signal(signal.SIGTERM, handler)


def describe_exit(code: int) -> str:
    """Why a command failed, from its exit status."""
    if code < 0:
        return f"command killed by signal {-code}"
    if code > 128:
        return f"command exited {code} (killed by signal {code - 128}?)"
    return f"command exited {code}"
