"""State of a running night: who runs it, which jobs are running, whether it should stop.

The workflow's ``onstart`` handler registers the Snakemake process in ``<state_dir>/run.json``
and its ``onsuccess``/``onerror`` handlers remove it. Every job marks itself in
``<state_dir>/running/`` while its command runs. ``abflow stop`` writes ``<state_dir>/STOP``:
jobs that have not started yet then end at once without running their command (their ABs are
not marked done), running ones finish, and Snakemake ends when nothing is left; the next run
removes the flag when it starts.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from abflow.fsutil import atomic_write_json


def run_file(state_dir: str) -> str:
    """Where the running night's Snakemake process is registered."""
    return os.path.join(state_dir, "run.json")


def stop_file(state_dir: str) -> str:
    """The flag ``abflow stop`` writes."""
    return os.path.join(state_dir, "STOP")


def running_dir(state_dir: str) -> str:
    """Markers of the jobs whose command is running."""
    return os.path.join(state_dir, "running")


def register_run(state_dir: str, batch: str, argv: list[str] | None = None) -> dict[str, Any]:
    """Record this process as the one running the night; clear a stale STOP flag."""
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "start": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "batch": batch,
        "command": " ".join(argv if argv is not None else sys.argv),
    }
    atomic_write_json(run_file(state_dir), info)
    with suppress(FileNotFoundError):
        os.unlink(stop_file(state_dir))
    return info


def unregister_run(state_dir: str) -> None:
    """Forget this process (only if it is the one registered)."""
    info = read_run(state_dir)
    if info and info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
        with suppress(FileNotFoundError):
            os.unlink(run_file(state_dir))


def read_run(state_dir: str) -> dict[str, Any] | None:
    """The registered run, or None."""
    try:
        with open(run_file(state_dir), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def process_alive(info: dict[str, Any]) -> bool:
    """True if the registered process runs (on this host; other hosts count as alive)."""
    if info.get("host") != socket.gethostname():
        return True
    try:
        pid = int(info["pid"])
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError, TypeError):
        return True
    try:  # an ended process its parent has not reaped yet is a zombie: not running
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def stop_requested(state_dir: str) -> bool:
    """True if ``abflow stop`` asked the night to stop."""
    return os.path.exists(stop_file(state_dir))


def request_stop(state_dir: str, reason: str = "abflow stop") -> None:
    """Ask the running night to start no new job."""
    atomic_write_json(stop_file(state_dir), {"reason": reason, "time": time.time()})


def interrupt(info: dict[str, Any]) -> bool:
    """Send SIGINT to the registered Snakemake process (it then cancels its jobs)."""
    if info.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(info["pid"]), signal.SIGINT)
    except ProcessLookupError:
        return False
    return True


@dataclass(frozen=True)
class RunningJob:
    """A job whose command is running."""

    name: str
    host: str
    pid: int
    start: float


@contextmanager
def running_marker(state_dir: str, name: str) -> Iterator[None]:
    """Mark the job ``name`` as running for the duration of the ``with`` block."""
    path = os.path.join(running_dir(state_dir), name + ".json")
    atomic_write_json(
        path, {"name": name, "host": socket.gethostname(), "pid": os.getpid(), "start": time.time()}
    )
    try:
        yield
    finally:
        with suppress(FileNotFoundError):
            os.unlink(path)


def running_jobs(state_dir: str) -> list[RunningJob]:
    """The jobs marked as running, oldest first."""
    out = []
    directory = running_dir(state_dir)
    for root, _dirs, files in os.walk(directory):
        for name in files:
            if not name.endswith(".json"):
                continue
            try:
                with open(os.path.join(root, name), encoding="utf-8") as fh:
                    data = json.load(fh)
                out.append(
                    RunningJob(data["name"], data["host"], int(data["pid"]), float(data["start"]))
                )
            except (OSError, ValueError, KeyError):
                continue
    return sorted(out, key=lambda j: j.start)
