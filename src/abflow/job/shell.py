"""Run one shell command line the way every job does: in its own process group, in a given
working directory, with its output appended to the job's log; and end it as a whole.

Built on ``os.posix_spawn`` rather than ``subprocess`` (whose import alone costs a job process
more CPU than everything else it does), and safe in threads: jobs run in threads of the
Snakemake process when it runs them on this machine, and as processes of their own on an
HTCondor pool. The commands running from this process are registered, so that the run can end
them all at once when it is interrupted (:func:`end_all`).
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
_running: dict[int, bool] = {}  # pid of a running command -> ended by end_all


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


def _quoted(path: str) -> str:
    return "'" + path.replace("'", "'\\''") + "'"


def start(command: str, cwd: str, env: dict[str, str], log_fd: int) -> int:
    """Start ``command`` (a shell command line) in ``cwd`` as the leader of a new session (its
    own process group), stdin from /dev/null, stdout and stderr to ``log_fd``; return its pid.

    The shell changes into ``cwd`` on a line of its own before the command's lines (this
    process's working directory is shared by the threads that run jobs)."""
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, log_fd, 1),
        (os.POSIX_SPAWN_DUP2, log_fd, 2),
    ]
    script = f"cd {_quoted(cwd)} || exit 125\n{command}"
    pid = os.posix_spawn(SHELL, [SHELL, "-c", script], env, file_actions=actions, setsid=True)
    _running[pid] = False
    return pid


def wait(pid: int) -> tuple[int, object, bool]:
    """(exit status as subprocess gives it, negative: killed by that signal; the resource use
    of the command and what it waited for, as ``os.wait4`` gives it; whether :func:`end_all`
    ended it). If the waiting job is
    interrupted meanwhile (SIGTERM, Ctrl-C), the command's process group is ended first."""
    try:
        _, status, usage = os.wait4(pid, 0)
    except BaseException:
        end_group(pid)
        raise
    finally:
        ended = _running.pop(pid, False)
    return os.waitstatus_to_exitcode(status), usage, ended


def end_group(pid: int, grace: float = 5.0) -> None:
    """End process ``pid`` and every process of its group: SIGTERM, SIGKILL after ``grace`` s
    (for a command this process still has to reap)."""
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


def end_all(grace: float = 5.0) -> list[int]:
    """End the process groups of every command running from this process (the run was
    interrupted): SIGTERM now, SIGKILL after ``grace`` s to those still there. Their jobs,
    waiting in other threads, reap them and report them as interrupted. Returns their pids."""
    pids = list(_running)
    for pid in pids:
        _running[pid] = True
        try:  # noqa: SIM105
            os.killpg(pid, signal.SIGTERM)
        except OSError:
            pass

    def kill_late() -> None:
        time.sleep(grace)
        for pid in pids:
            if pid in _running:
                try:  # noqa: SIM105
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass

    if pids:
        import threading

        threading.Thread(target=kill_late, name="abflow-end-jobs", daemon=True).start()
    return pids


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
