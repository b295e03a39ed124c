"""State of a running night: who runs it (the run lock), which jobs run, whether to stop.

The workflow's ``onstart`` handler takes the lock of every batch (``<MODE>_<DATE>``) of the run:
``<state_dir>/runs/<batch>.json`` names the Snakemake process (pid, host, start, command),
created exclusively, so a second run of the same date is refused while the first is alive, from
whatever working directory. ``onsuccess``/``onerror`` release it. A lock whose process is gone
(a crash, SIGKILL, a reboot) is stale: a run on the same host takes it over and first ends the
crashed run's orphaned jobs; a lock held from another host is cleared with ``abflow unlock``.

Every job marks itself in ``<state_dir>/running/`` while its command runs (pid of the job and
process group of its command). ``abflow stop`` writes ``<state_dir>/STOP``: jobs that have not
started yet then end at once without running their command (their ABs are not marked done),
running ones finish, and Snakemake ends when nothing is left; the next run removes the flag.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from abflow.fsutil import atomic_write_json, iter_json_objects, read_json_object


class RunLocked(RuntimeError):
    """Another live run holds the lock of a batch of this run."""


def run_file(state_dir: str, batch: str) -> str:
    """The lock of ``batch``: where the Snakemake process running it is registered."""
    return os.path.join(state_dir, "runs", f"{batch}.json")


def stop_file(state_dir: str) -> str:
    """The flag ``abflow stop`` writes."""
    return os.path.join(state_dir, "STOP")


def running_dir(state_dir: str) -> str:
    """Markers of the jobs whose command is running."""
    return os.path.join(state_dir, "running")


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_start(pid: int) -> str | None:
    """When ``pid`` started (clock ticks since boot), to tell it from a later reuse of the pid."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def describe_run(info: dict[str, Any]) -> str:
    """``pid P on HOST since START (command)`` for messages."""
    command = str(info.get("command", ""))
    short = command if len(command) <= 120 else command[:117] + "..."
    return f"pid {info.get('pid')} on {info.get('host')} since {info.get('start', '?')}" + (
        f" ({short})" if short else ""
    )


def _locked_message(batch: str, info: dict[str, Any], path: str) -> str:
    date = batch.split("_", 1)[-1]
    here = info.get("host") == socket.gethostname()
    return (
        f"{batch} is being processed by {describe_run(info)}: refusing a second run of the "
        f"same date. Wait for it, or stop it: abflow stop -d {date}. "
        + (
            ""
            if here
            else "It runs on another host, so abflow cannot tell whether it is still alive; "
        )
        + f"if that run crashed, clear its lock with: abflow unlock -d {date} (or remove {path})"
    )


def register_run(
    state_dir: str,
    batches: list[str] | str,
    argv: list[str] | None = None,
    executor: str = "local",
) -> dict[str, Any]:
    """Take the lock of every batch of this run and clear a stale STOP flag.

    Raises RunLocked (taking nothing) if a live run holds one of them. A stale lock (its
    process gone, on this host) is taken over; the returned info lists such crashed runs under
    ``replaced`` so the caller can say so and end their orphaned jobs.
    """
    batches = [batches] if isinstance(batches, str) else list(batches)
    pid = os.getpid()
    info: dict[str, Any] = {
        "pid": pid,
        "host": socket.gethostname(),
        "start": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "proc_start": process_start(pid),
        "batches": batches,
        "command": " ".join(argv if argv is not None else sys.argv),
        "executor": executor,
        "owner": f"{socket.gethostname()}:{pid}",  # AbflowOwner of its HTCondor jobs
    }
    replaced: list[dict[str, Any]] = []
    taken: list[str] = []
    try:
        for batch in batches:
            _take_lock(run_file(state_dir, batch), batch, info, replaced)
            taken.append(batch)
    except BaseException:
        for batch in taken:
            with suppress(FileNotFoundError):
                os.unlink(run_file(state_dir, batch))
        raise
    with suppress(FileNotFoundError):
        os.unlink(stop_file(state_dir))
    return {**info, "replaced": replaced}


def _take_lock(path: str, batch: str, info: dict[str, Any], replaced: list) -> None:
    """Create the lock file ``path`` exclusively (write a temporary file, hard-link it)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    atomic_write_json(tmp, {**info, "batch": batch})
    try:
        for _attempt in range(3):
            try:
                os.link(tmp, path)
                return
            except FileExistsError:
                held = read_json_object(path)
                if held is None:  # being written this instant, or torn: look again
                    time.sleep(0.05)
                    held = read_json_object(path)
                if held is not None and process_alive(held):
                    raise RunLocked(_locked_message(batch, held, path)) from None
                if held is not None:
                    replaced.append({**held, "batch": batch})
                with suppress(FileNotFoundError):
                    os.unlink(path)
        raise RunLocked(f"could not take the lock {path}: another run keeps taking it")
    finally:
        with suppress(FileNotFoundError):
            os.unlink(tmp)


def unregister_run(state_dir: str, batches: list[str] | str) -> None:
    """Release this process's locks (only those it holds)."""
    for batch in [batches] if isinstance(batches, str) else batches:
        info = read_run(state_dir, batch)
        if info and info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
            with suppress(FileNotFoundError):
                os.unlink(run_file(state_dir, batch))


def read_run(state_dir: str, batch: str) -> dict[str, Any] | None:
    """The run holding the lock of ``batch``, or None."""
    return read_json_object(run_file(state_dir, batch))


def remove_lock(state_dir: str, batch: str) -> dict[str, Any] | None:
    """Remove the lock of ``batch`` (``abflow unlock``); return what it held."""
    info = read_run(state_dir, batch)
    with suppress(FileNotFoundError):
        os.unlink(run_file(state_dir, batch))
    return info


def process_alive(info: dict[str, Any]) -> bool:
    """True if the process ``info`` names runs (on this host; other hosts count as alive).

    A pid that now belongs to a later process (different start time) is not alive, nor is a
    zombie (ended, not reaped yet).
    """
    if info.get("host") != socket.gethostname():
        return True
    try:
        pid = int(info["pid"])
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError, TypeError):
        return True
    fields = _proc_stat(pid)
    if fields is None:
        return True
    if fields[0] == "Z":
        return False
    started = info.get("proc_start")
    return not (started and len(fields) > 19 and fields[19] != started)


def job_name(step: str, ab: str, det: int | str | None = None) -> str:
    """The name of one job of a night: ``<step>/<AB>`` or ``<step>/<AB>.<det>`` (its running
    marker, and the AbflowJob attribute of its HTCondor job)."""
    return f"{step}/{ab}" + (f".{det}" if det is not None else "")


def parse_job_name(name: str) -> tuple[str, str, int | None]:
    """(step, AB, detector or None) of a job name made by job_name()."""
    step, _, target = name.partition("/")
    if target.endswith(".ab"):
        return step, target, None
    ab, _, det = target.rpartition(".")
    return step, ab, int(det) if det.isdigit() else None


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
    pgid: int | None = None
    path: str = ""


@contextmanager
def running_marker(state_dir: str, name: str) -> Iterator[dict[str, Any]]:
    """Mark the job ``name`` as running for the duration of the ``with`` block.

    Yields the marker's content; :func:`note_command` adds the process group of the command.
    """
    path = os.path.join(running_dir(state_dir), name + ".json")
    content: dict[str, Any] = {
        "name": name,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "proc_start": process_start(os.getpid()),
        "start": time.time(),
        "path": path,
    }
    atomic_write_json(path, content)
    try:
        yield content
    finally:
        with suppress(FileNotFoundError):
            os.unlink(path)


def note_command(marker: dict[str, Any], pgid: int) -> None:
    """Record in the marker the process group the job's command runs in (to end orphans)."""
    marker["pgid"] = pgid
    atomic_write_json(marker["path"], marker)


def end_orphans(state_dir: str, belongs: Any, grace: float = 10.0) -> list[RunningJob]:
    """End the jobs a crashed run left running on this host; return them.

    ``belongs(name)`` says whether a job marker belongs to this run's ABs (other dates may be
    running from the same state directory). Each orphan's command process group gets SIGTERM,
    then SIGKILL after ``grace`` seconds; the job process itself too. Markers are removed.
    """
    here = socket.gethostname()
    orphans = []
    for job in running_jobs(state_dir):
        if job.host != here or not belongs(job.name):
            continue
        info = {"pid": job.pid, "host": job.host}
        if process_alive(info) or job.pgid:
            orphans.append(job)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for job in orphans:
            for kill, target in ((os.killpg, job.pgid), (os.kill, job.pid)):
                if target and target > 1 and target != os.getpgid(0):
                    with suppress(OSError):
                        kill(target, sig)
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 2.0)
        while time.monotonic() < deadline and any(_group_alive(j) for j in orphans):
            time.sleep(0.1)
    for job in orphans:
        with suppress(FileNotFoundError):
            os.unlink(job.path)
    return orphans


def _group_alive(job: RunningJob) -> bool:
    """True while the job process or any process of its command's group exists."""
    if process_alive({"pid": job.pid, "host": socket.gethostname()}):
        return True
    if job.pgid:
        try:
            os.killpg(job.pgid, 0)
        except OSError:
            return False
        return True
    return False


def running_jobs(state_dir: str) -> list[RunningJob]:
    """The jobs marked as running, oldest first."""
    out = []
    for path, data in iter_json_objects(running_dir(state_dir)):
        try:
            out.append(
                RunningJob(
                    data["name"],
                    data["host"],
                    int(data["pid"]),
                    float(data["start"]),
                    int(data["pgid"]) if data.get("pgid") else None,
                    path,
                )
            )
        except (ValueError, KeyError, TypeError):
            continue
    return sorted(out, key=lambda j: j.start)
