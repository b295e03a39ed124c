"""State of a running night: who runs it (the run lock), which jobs run, whether to stop.

The workflow's ``onstart`` handler takes the locks of every batch (``<MODE>_<DATE>``) of the
run, naming the Snakemake process (pid, host, start, command, owner id): the night's own lock
beside its AB list (``<mon_dir>/.abflow/<batch>.run.json``: one per night, whatever state
directory a run uses) and the state directory's (abflow.state.layout: ``runs/<batch>.json``,
what the readers read). A second run of the same night is refused while the first is alive,
from whatever working or state directory. ``onsuccess``/``onerror`` release them. A lock whose
process is gone (a crash, SIGKILL, a reboot) is stale: a run on the same host takes it over and
first ends the crashed run's orphaned jobs; a lock held from another host is cleared with
``abflow unlock``. Reading and replacing a lock happens under an exclusive ``flock`` of its
``.guard`` file, so of two runs taking over the same stale lock exactly one gets it.

Every job marks itself (``running/<job name>.json``) while its command runs: its pid, its start,
the process group of its command and the owner id of the run it belongs to; a take-over ends
only the jobs of the runs it replaces (by owner id and start time, never by file name).
``abflow stop`` writes the night's stop flag (``stop/<batch>.json``, for every date of the run
holding it): jobs of that run that have not started yet then end at once without running their
command (their ABs are not marked done), running ones finish, and Snakemake ends when nothing
is left; the next run of that night removes its flags, and no other night's.

Processes are inspected with psutil, by the readers only (the Snakemake process, the ``abflow``
commands): a job writes its marker without importing it.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from abflow.state.fsutil import (
    atomic_write_json,
    iter_json_objects,
    read_json_checked,
    read_json_object,
)
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
    """``pid P on HOST since START (command)`` for messages (what the lock says, made inert)."""
    from abflow.state.text import inert

    command = str(info.get("command", ""))
    short = command if len(command) <= 120 else command[:117] + "..."
    text = f"pid {info.get('pid')} on {info.get('host')} since {info.get('start', '?')}" + (
        f" ({short})" if short else ""
    )
    return inert(text, line=True)


def _locked_message(batch: str, info: dict[str, Any], path: str) -> str:
    date = batch.split("_", 1)[-1]
    here = info.get("host") == socket.gethostname()
    elsewhere = f" with the state directory {info['state_dir']}" if info.get("state_dir") else ""
    return (
        f"{batch} is being processed by {describe_run(info)}{elsewhere}: refusing a second "
        f"run of the same night. Wait for it, or stop it: abflow stop -d {date}. "
        + (
            ""
            if here
            else "It runs on another host, so abflow cannot tell whether it is still alive; "
        )
        + f"if that run crashed, clear its lock with: abflow unlock -d {date} (or remove {path})"
    )


_owners: dict[int, str] = {}  # pid -> owner id (a forked child is another process)


def owner_id() -> str:
    """``<host>:<pid>:<start>`` of this process (``start``: when it started, whole seconds
    since the epoch, so that a reused pid is another owner): the AbflowOwner tag of the
    HTCondor jobs of the run it holds (abflow.run.pool_job), the ``owner`` of its lock and of
    the markers of the jobs it runs in its threads."""
    pid = os.getpid()
    owner = _owners.get(pid)
    if owner is None:
        owner = _owners[pid] = f"{socket.gethostname()}:{pid}:{int(process_start(pid) or 0)}"
    return owner


def night_lock(mon_dir: str, batch: str) -> str:
    """The lock of the night ``batch`` whatever state directory its run uses: beside its AB
    list (``<mon_dir>/.abflow/<batch>.run.json``)."""
    return os.path.join(mon_dir, ".abflow", f"{batch}.run.json")


def register_run(
    state_dir: str,
    batches: list[str] | str,
    argv: list[str] | None = None,
    executor: str = "local",
    mon_dir: str = "",
    config: str = "",
) -> dict[str, Any]:
    """Take the locks of every batch of this run (the night's, in ``mon_dir``, and the state
    directory's) and clear this night's stop flags. The lock names the run's configuration
    (``config``: what its executor reads, abflow.run.takeover).

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
        "state_dir": state_dir,
        "config": config,  # the run's configuration file
    }
    replaced = _take_locks(layout, batches, info, mon_dir)
    try:
        return _started(layout, batches, info, replaced)
    except BaseException:  # (a full disk): nothing of the run stays locked
        for path in [layout.lock(b) for b in batches] + [
            night_lock(mon_dir, b) for b in batches if mon_dir
        ]:
            with suppress(OSError):
                _release(path, info)
        raise


def _started(
    layout: StateLayout, batches: list[str], info: dict[str, Any], replaced: list
) -> dict[str, Any]:
    """With the locks taken: the night's stop flags cleared, the lineage in the locks, the run
    in the history; the run's info (see register_run)."""
    for batch in batches:
        with suppress(FileNotFoundError):
            os.unlink(layout.stop_flag(batch))
    lineage = _lineage(replaced)
    if lineage["lineage"]:
        info.update(lineage)
        for batch in batches:  # the lock says what this run took over (for its successor)
            atomic_write_json(layout.lock(batch), {**info, "batch": batch})
    notes = [n for b in batches if (n := keep_unreadable_history(layout, b))]
    for batch in batches:
        _note_start(layout, batch, info, replaced)
    return {
        "lineage": [],
        "lineage_since": 0.0,
        "lineage_start": "",
        **info,
        "replaced": replaced,
        "notes": notes,
    }


def _take_locks(
    layout: StateLayout, batches: list[str], info: dict[str, Any], mon_dir: str
) -> list[dict[str, Any]]:
    """Take the night's and the state directory's lock of every batch, or none (RunLocked);
    return the crashed runs whose locks were taken over (each once; a night's run that used
    another state directory names it)."""
    replaced: list[dict[str, Any]] = []
    locks = [night_lock(mon_dir, b) for b in batches] if mon_dir else []
    locks += [layout.lock(b) for b in batches]
    taken: list[str] = []
    try:
        for path in locks:
            batch = os.path.basename(path).removesuffix(".json").removesuffix(".run")
            _take_lock(path, batch, info, replaced)
            taken.append(path)
    except BaseException:
        for path in taken:
            _release(path, info)
        raise
    unique: dict[tuple[Any, ...], dict[str, Any]] = {}
    for run in replaced:  # (the same crashed run held both locks of a date)
        unique.setdefault(
            (
                run.get("pid"),
                run.get("host"),
                run.get("start"),
                run["batch"],
                run.get("unreadable"),
            ),
            run,
        )
    return list(unique.values())


def _lineage(replaced: list[dict[str, Any]]) -> dict[str, Any]:
    """The crashed runs (and the runs they had taken over) a run takes over from."""
    owners: set[str] = set()
    starts: list[float] = []
    for run in replaced:
        owners.update(str(o) for o in [run.get("owner"), *run.get("lineage", ())] if o)
        starts += [
            float(t)
            for t in (run.get("proc_start"), run.get("lineage_since"))
            if isinstance(t, int | float) and t
        ]
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
    history.append(
        {
            **{k: info[k] for k in ("pid", "host", "start", "executor", "command")},
            "since": now,
            "end": None,
        }
    )
    atomic_write_json(path, history)


def run_history_of(layout: StateLayout, batch: str) -> list[dict[str, Any]]:
    """The runs of ``batch`` (``since`` and ``end`` ISO times; ``end`` None: running or
    crashed), oldest first; [] before the first (or if it cannot be read)."""
    history, _problem = read_json_checked(layout.run_history(batch), list)
    return [e for e in history or () if isinstance(e, dict)]


def keep_unreadable_history(layout: StateLayout, batch: str) -> str:
    """Move a run history that cannot be read aside (``<history>.unreadable``, the previous
    one replaced), so that the next run starts a new one without losing it; what was done
    ("" if it was readable or absent)."""
    path = layout.run_history(batch)
    _history, problem = read_json_checked(path, list)
    if not problem or not os.path.isfile(path):
        return ""
    os.replace(path, path + ".unreadable")
    return f"the run history {path} was unreadable ({problem}): kept as {path}.unreadable"


@contextmanager
def _guarded(path: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` of ``<path>.guard`` (created if needed) meanwhile: a lock
    is read and replaced by one process at a time."""
    import fcntl

    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(f"{path}.guard", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # (releases the flock)


def _take_lock(path: str, batch: str, info: dict[str, Any], replaced: list) -> None:
    """Write the lock file ``path`` unless a live run holds it (RunLocked); a stale one is
    replaced (and noted in ``replaced``). Atomic: under the lock's guard."""
    with _guarded(path):
        if os.path.lexists(path) and not os.path.isfile(path):
            raise RunLocked(
                f"{path} is not a lock file (a directory, a link or a device): "
                "remove it, then start the night again"
            )
        held, problem = read_json_checked(path)
        if held is not None and not _same_run(held, info) and process_alive(held):
            raise RunLocked(_locked_message(batch, held, path))
        if held is not None and not _same_run(held, info):
            replaced.append({**held, "batch": batch})
        elif problem:  # a lock nobody can read holds nothing: taken, and said so
            replaced.append({"batch": batch, "unreadable": f"{path} ({problem})"})
        atomic_write_json(path, {**info, "batch": batch})


def _release(path: str, info: dict[str, Any]) -> bool:
    """Remove the lock file ``path`` if the run ``info`` holds it; True if it did."""
    with _guarded(path):
        held = read_json_object(path)
        if held is None or not _same_run(held, info):
            return False
        with suppress(FileNotFoundError):
            os.unlink(path)
    return True


OUTCOMES = ("succeeded", "failed", "stopped", "interrupted")  # how a run ended ("crashed" too)


def unregister_run(
    state_dir: str, batches: list[str] | str, outcome: str = "", mon_dir: str = ""
) -> list[str]:
    """Release this process's locks (only those it holds), noting in the run history when the
    run ended and how (one of OUTCOMES); what could not be noted (a full disk: the locks are
    released all the same)."""
    problems = []
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
            try:
                if history:
                    atomic_write_json(layout.run_history(batch), history)
            except OSError as exc:
                problems.append(f"could not note the end of the run in the run history: {exc}")
            if mon_dir:
                _release(night_lock(mon_dir, batch), info)
            _release(layout.lock(batch), info)
    return problems


def run_of(state_dir: str, owner: str) -> dict[str, Any] | None:
    """The lock of a date that the run ``owner`` (its owner id) holds in ``state_dir``, or None
    (how that run's executor finds what its run took over)."""
    for _path, lock in iter_json_objects(StateLayout(state_dir).runs_dir):
        if lock.get("owner") == owner and "batch" in lock:
            return lock
    return None


def read_run(state_dir: str, batch: str) -> dict[str, Any] | None:
    """The run holding the lock of ``batch``, or None."""
    return read_json_object(StateLayout(state_dir).lock(batch))


def read_run_file(path: str) -> dict[str, Any] | None:
    """The run a lock file names (None: absent or unreadable)."""
    return read_json_object(path) if os.path.isfile(path) else None


def remove_lock_file(path: str) -> str:
    """Remove a lock file that names no run (unreadable), under its guard; "" or why it was
    not removed (a directory, whose content is the operator's)."""
    with _guarded(path):
        if os.path.isdir(path) and not os.path.islink(path):
            return f"{path} is a directory, not a lock: remove or move it yourself"
        with suppress(FileNotFoundError):
            os.unlink(path)
    return ""


def read_night_lock(mon_dir: str, batch: str) -> dict[str, Any] | None:
    """The run holding the night's own lock of ``batch`` (from any state directory), or None."""
    return read_json_object(night_lock(mon_dir, batch))


def remove_lock(
    state_dir: str, batch: str, mon_dir: str = "", force: bool = False
) -> dict[str, Any] | None:
    """Remove the lock of ``batch`` (``abflow unlock``): the state directory's, and the night's
    in ``mon_dir`` where it is the same run's, its process is gone or ``force``; return what
    it held."""
    info = read_run(state_dir, batch)
    night = read_night_lock(mon_dir, batch) if mon_dir else None
    if night is not None and (
        force or info is None or _same_run(night, info) or not process_alive(night)
    ):
        _release(night_lock(mon_dir, batch), night)
        info = info or night
    if info is not None:
        with _guarded(StateLayout(state_dir).lock(batch)), suppress(FileNotFoundError):
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
    pid = info.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False  # no process has such a pid (a damaged lock or marker)
    try:
        proc = psutil.Process(pid)
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


def request_stop(state_dir: str, batches: list[str], reason: str = "abflow stop") -> None:
    """Ask the run holding ``batches`` (every date of it) to start no new job."""
    for batch in batches:
        atomic_write_json(
            StateLayout(state_dir).stop_flag(batch),
            {"reason": reason, "time": time.time(), "batch": batch},
        )


def stop_requested(state_dir: str, batches: list[str]) -> bool:
    """True if ``abflow stop`` asked the run holding ``batches`` to stop."""
    layout = StateLayout(state_dir)
    return any(os.path.exists(layout.stop_flag(b)) for b in batches)


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
    owner: str = ""  # the owner id of the run it belongs to (abflow.state.runstate.owner_id)

    def owned_by(self, owners: Collection[str]) -> bool:
        """True if the job belongs to one of the runs ``owners``: by owner id, or (a marker
        written before markers named their owner) by the run's host and pid."""
        if self.owner:
            return self.owner in owners
        return any(o.split(":")[:2] == [self.host, str(self.pid)] for o in owners)

    @property
    def name(self) -> str:
        """The job's name (``<step>/<AB>[.<det>]``)."""
        return self.job.name


def end_orphans(state_dir: str, owners: Collection[str], grace: float = 10.0) -> list[RunningJob]:
    """End the jobs that the crashed runs ``owners`` (owner ids: the lineage a run took over)
    left running on this host; return them.

    Only their jobs: other nights running from the same state directory, and jobs of the
    same file or AB started by another run, are never touched. Each orphan's command process
    group gets SIGTERM, then SIGKILL after ``grace`` seconds; the job process itself too, each
    only while it is still the process the marker names (its start time). Markers are removed.
    Jobs that run on an HTCondor pool (their marker names their cluster) are not orphans: the
    pool runs them, and the new run adopts them.
    """
    here = socket.gethostname()
    orphans = []
    for job in running_jobs(state_dir):
        if job.host != here or job.cluster or not job.owned_by(owners):
            continue
        info = {"pid": job.pid, "host": job.host, "start": job.start}
        if process_alive(info) or job.pgid:
            orphans.append(job)
    alive = {
        job.name
        for job in orphans
        if process_alive({"pid": job.pid, "host": job.host, "start": job.start})
    }
    groups = {
        job.name
        for job in orphans
        if job.pgid and process_alive({"pid": job.pgid, "host": job.host, "start": job.start})
    }
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for job in orphans:
            # the command's group and the job's own process, while they are still those
            targets = (
                (os.killpg, job.pgid if job.name in groups else None),
                (os.kill, job.pid if job.name in alive else None),
            )
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
                    str(data.get("owner") or ""),
                )
            )
        except (ValueError, KeyError, TypeError):
            continue
    return sorted(out, key=lambda j: j.start)
