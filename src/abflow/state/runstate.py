"""State of a running night: who runs it (the run lock), which jobs run, whether to stop.

The workflow's ``onstart`` handler takes the lock of every batch (``<MODE>_<DATE>``) of the run
(abflow.state.layout: ``runs/<batch>.json``), naming the Snakemake process (pid, host, start,
command), created exclusively, so a second run of the same date is refused while the first is
alive, from whatever working directory. ``onsuccess``/``onerror`` release it. A lock whose
process is gone (a crash, SIGKILL, a reboot) is stale: a run on the same host takes it over and
first ends the crashed run's orphaned jobs; a lock held from another host is cleared with
``abflow unlock``.

Every job marks itself (``running/<job name>.json``) while its command runs: its pid, its start
and the process group of its command. ``abflow stop`` writes the STOP flag: jobs that have not
started yet then end at once without running their command (their ABs are not marked done),
running ones finish, and Snakemake ends when nothing is left; the next run removes the flag.

Processes are inspected with psutil, by the readers only (the Snakemake process, the ``abflow``
commands): a job writes its marker without importing it.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from abflow.state.fsutil import atomic_write_json, iter_json_objects, read_json_object
from abflow.state.layout import JobId, StateLayout
from abflow.state.units import iso_of, now_iso

# a pid is the same process if it started no later than this after what was recorded
START_SLACK = 2.0


class RunLocked(RuntimeError):
    """Another live run holds the lock of a batch of this run."""


def process_start(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), or None if there is no such process."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, ValueError):
        return None


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


def owner_id() -> str:
    """``<host>:<pid>`` of this process: the AbflowOwner tag of the HTCondor jobs of the run it
    holds (abflow.run.condor), and the ``owner`` of its lock."""
    return f"{socket.gethostname()}:{os.getpid()}"


def register_run(
    state_dir: str,
    batches: list[str] | str,
    argv: list[str] | None = None,
    executor: str = "local",
) -> dict[str, Any]:
    """Take the lock of every batch of this run and clear a stale STOP flag.

    Raises RunLocked (taking nothing) if a live run holds one of them. A stale lock (its
    process gone, on this host) is taken over; the returned info lists such crashed runs under
    ``replaced`` so the caller can say so and take over their jobs. The lock carries the
    ``lineage`` of the run: the AbflowOwner of every crashed run it took over (theirs included,
    so that a run that takes over from a run that took over still finds the first one's jobs),
    and when the first of them started (``lineage_since``, epoch seconds; ``lineage_start``, ISO).
    """
    layout = StateLayout(state_dir)
    batches = [batches] if isinstance(batches, str) else list(batches)
    pid = os.getpid()
    info: dict[str, Any] = {
        "pid": pid,
        "host": socket.gethostname(),
        "start": now_iso("seconds"),
        "proc_start": process_start(pid),
        "batches": batches,
        "command": " ".join(argv if argv is not None else sys.argv),
        "executor": executor,
        "owner": owner_id(),  # AbflowOwner of its HTCondor jobs
    }
    replaced: list[dict[str, Any]] = []
    taken: list[str] = []
    try:
        for batch in batches:
            _take_lock(layout.lock(batch), batch, info, replaced)
            taken.append(batch)
    except BaseException:
        for batch in taken:
            with suppress(FileNotFoundError):
                os.unlink(layout.lock(batch))
        raise
    with suppress(FileNotFoundError):
        os.unlink(layout.stop_flag)
    lineage = _lineage(replaced)
    if lineage["lineage"]:
        info.update(lineage)
        for batch in batches:  # the lock says what this run took over (for its successor)
            atomic_write_json(layout.lock(batch), {**info, "batch": batch})
    for batch in batches:
        _note_start(layout, batch, info, replaced)
    return {"lineage": [], "lineage_since": 0.0, "lineage_start": "", **info, "replaced": replaced}


def _lineage(replaced: list[dict[str, Any]]) -> dict[str, Any]:
    """The crashed runs (and the runs they had taken over) a run takes over from."""
    owners: set[str] = set()
    starts: list[float] = []
    for run in replaced:
        owners.update(str(o) for o in [run.get("owner"), *run.get("lineage", ())] if o)
        starts += [float(t) for t in (run.get("proc_start"), run.get("lineage_since"))
                   if isinstance(t, int | float) and t]  # fmt: skip
    since = min(starts, default=0.0)
    start = iso_of(since) if since else ""
    return {"lineage": sorted(owners), "lineage_since": since, "lineage_start": start}


def _same_run(entry: dict[str, Any], info: dict[str, Any]) -> bool:
    return all(entry.get(k) == info.get(k) for k in ("pid", "host", "start"))


def _note_start(layout: StateLayout, batch: str, info: dict[str, Any], replaced: list) -> None:
    """Add this run to the date's run history (a crashed predecessor ends where it starts)."""
    path = layout.run_history(batch)
    history = run_history_of(layout, batch)
    now = now_iso()
    for entry in history:
        if entry.get("end") is None and any(_same_run(entry, r) for r in replaced):
            entry["end"], entry["ended"] = now, "crashed"
    history.append({**{k: info[k] for k in ("pid", "host", "start", "executor", "command")},
                    "since": now, "end": None})  # fmt: skip
    atomic_write_json(path, history)


def run_history_of(layout: StateLayout, batch: str) -> list[dict[str, Any]]:
    """The runs of ``batch`` (``since`` and ``end`` ISO times; ``end`` None: running or
    crashed), oldest first; [] before the first."""
    import json

    try:
        with open(layout.run_history(batch), encoding="utf-8") as fh:
            history = json.load(fh)
    except (OSError, ValueError):
        return []
    return [e for e in history if isinstance(e, dict)] if isinstance(history, list) else []


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


OUTCOMES = ("succeeded", "failed", "stopped", "interrupted")  # how a run ended ("crashed" too)


def unregister_run(state_dir: str, batches: list[str] | str, outcome: str = "") -> None:
    """Release this process's locks (only those it holds), noting in the run history when the
    run ended and how (one of OUTCOMES)."""
    for batch in [batches] if isinstance(batches, str) else batches:
        info = read_run(state_dir, batch)
        if info and info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
            layout = StateLayout(state_dir)
            history = run_history_of(layout, batch)
            for entry in history:
                if entry.get("end") is None and _same_run(entry, info):
                    entry["end"] = now_iso()
                    if outcome:
                        entry["ended"] = outcome
            if history:
                atomic_write_json(layout.run_history(batch), history)
            with suppress(FileNotFoundError):
                os.unlink(layout.lock(batch))


def read_run(state_dir: str, batch: str) -> dict[str, Any] | None:
    """The run holding the lock of ``batch``, or None."""
    return read_json_object(StateLayout(state_dir).lock(batch))


def remove_lock(state_dir: str, batch: str) -> dict[str, Any] | None:
    """Remove the lock of ``batch`` (``abflow unlock``); return what it held."""
    info = read_run(state_dir, batch)
    with suppress(FileNotFoundError):
        os.unlink(StateLayout(state_dir).lock(batch))
    return info


def process_alive(info: dict[str, Any]) -> bool:
    """True if the process ``info`` names runs (on this host; other hosts count as alive).

    A pid that now belongs to a process started later than recorded (``proc_start``, or the
    ``start`` time of a job marker) is not alive, nor is a zombie (ended, not reaped yet).
    """
    import psutil

    if info.get("host") != socket.gethostname():
        return True
    try:
        proc = psutil.Process(int(info["pid"]))
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        started = proc.create_time()
    except psutil.NoSuchProcess:
        return False
    except (psutil.Error, KeyError, ValueError, TypeError):
        return True
    recorded = info.get("proc_start", info.get("start"))
    if isinstance(recorded, int | float):
        return started <= float(recorded) + START_SLACK
    return True


def request_stop(state_dir: str, reason: str = "abflow stop") -> None:
    """Ask the running night to start no new job."""
    atomic_write_json(StateLayout(state_dir).stop_flag, {"reason": reason, "time": time.time()})


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

    job: JobId
    host: str
    pid: int
    start: float
    pgid: int | None = None
    path: str = ""
    cluster: int | None = None  # the HTCondor job it runs as (on a pool)

    @property
    def name(self) -> str:
        """The job's name (``<step>/<AB>[.<det>]``)."""
        return self.job.name


def end_orphans(
    state_dir: str, belongs: Callable[[JobId], bool], grace: float = 10.0
) -> list[RunningJob]:
    """End the jobs a crashed run left running on this host; return them.

    ``belongs(job)`` says whether a job belongs to this run's ABs (other dates may be running
    from the same state directory). Each orphan's command process group gets SIGTERM, then
    SIGKILL after ``grace`` seconds; the job process itself too. Markers are removed. Jobs that
    run on an HTCondor pool (their marker names their cluster) are not orphans: the pool runs
    them, and the new run adopts them.
    """
    here = socket.gethostname()
    orphans = []
    for job in running_jobs(state_dir):
        if job.host != here or job.cluster or not belongs(job.job):
            continue
        info = {"pid": job.pid, "host": job.host, "start": job.start}
        if process_alive(info) or job.pgid:
            orphans.append(job)
    alive = {job.name for job in orphans if process_alive(
        {"pid": job.pid, "host": job.host, "start": job.start})}  # fmt: skip
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for job in orphans:
            # the command's group; the job's own process only while it is still that process
            targets = ((os.killpg, job.pgid), (os.kill, job.pid if job.name in alive else None))
            for kill, target in targets:
                if target and target > 1 and target != os.getpgid(0) and target != os.getpid():
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
    if process_alive({"pid": job.pid, "host": socket.gethostname(), "start": job.start}):
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
    for path, data in iter_json_objects(StateLayout(state_dir).running_dir):
        try:
            out.append(
                RunningJob(
                    JobId.parse(str(data["name"])),
                    data["host"],
                    int(data["pid"]),
                    float(data["start"]),
                    int(data["pgid"]) if data.get("pgid") else None,
                    path,
                    int(data["cluster"]) if data.get("cluster") else None,
                )
            )
        except (ValueError, KeyError, TypeError):
            continue
    return sorted(out, key=lambda j: j.start)
