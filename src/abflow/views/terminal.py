"""The terminal a night runs from: whether the run was interrupted (SIGINT: Ctrl-C, ``abflow
stop --now``, ``condor_rm`` of a submitted night), and the console going on in the night's log
when the terminal hangs up (SIGHUP).

The workflow's start (abflow.run.lifecycle) installs the signal handlers and calls this module;
abflow's console (abflow.views.console) asks :func:`was_interrupted` and hears of a hang-up
through :func:`on_hangup`. Both are safe in a signal handler: they set flags and move file
descriptors.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

from abflow.state.units import now_iso

_interrupted = False  # the run was interrupted (note_interrupt)
_continued: set[str] = set()  # the logs this process's terminal output went to (continue_in)
_listeners: list[Callable[[], None]] = []  # told when the terminal is gone (on_hangup)


def note_interrupt() -> None:
    """The run was interrupted (SIGINT): the consoles say so, once, with the next record they
    take. Safe in a signal handler (it only sets a flag)."""
    global _interrupted
    _interrupted = True


def was_interrupted() -> bool:
    """True once the run was interrupted (:func:`note_interrupt`)."""
    return _interrupted


def on_hangup(listener: Callable[[], None]) -> None:
    """Call ``listener`` when the terminal is gone (:func:`continue_in`): a console stops
    redrawing lines in place."""
    _listeners.append(listener)


def terminal_streams() -> tuple[int, ...]:
    """This process's standard streams that are a terminal now (ask while it is there: a
    terminal that has hung up no longer says it is one)."""
    return tuple(n for n in (0, 1, 2) if _isatty(n))


def continue_in(log: str, ttys: tuple[int, ...]) -> None:
    """The terminal is gone (SIGHUP): say so on it while it may still take a line, then send
    everything this process writes to the terminal (``ttys``: its standard streams that were
    one; abflow's console, Snakemake's messages) to ``log`` instead, appended, and read nothing
    from it any more. Standard streams that are not a terminal (a file, a pipe) stay as they
    are."""
    if log in _continued:  # a second hang-up (the session's): the console is there already
        return
    _continued.add(log)
    os.makedirs(os.path.dirname(log), exist_ok=True)
    when = now_iso("seconds")
    text = (
        f"abflow: the terminal closed (SIGHUP) at {when}: the night goes on; its console "
        f"continues in {log}\n"
    ).encode()
    out = [n for n in ttys if n in (1, 2)]
    for n in out[:1]:
        with contextlib.suppress(OSError):  # it is gone already
            os.write(n, b"\r\x1b[K" + text)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for n in out:
            os.dup2(fd, n)
        os.write(fd, text)
        if 0 in ttys:
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)
    finally:
        os.close(fd)
    for listener in list(_listeners):
        listener()


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False
