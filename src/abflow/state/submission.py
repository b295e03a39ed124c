"""A night handed over with ``abflow submit``: how, and whether its controller still runs.

``abflow submit`` writes ``runs/<batch>.submit.json`` (abflow.state.layout): the Snakemake
command line of the night's controller, its working directory, the console log it writes, and
where it runs: as an HTCondor job of the submit host (scheduler universe; ``cluster``, which the
schedd restarts when the controller dies and after a reboot of the pool) or, without a pool, as
a process detached from the terminal (``pid``). ``abflow watch``, ``stop`` and the AB monitor
page read it; :func:`controller_state` says whether the controller runs, waits to be started
again, or has ended (and how).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from abflow.state.fsutil import atomic_write_json, json_kind, read_json_checked
from abflow.state.layout import StateLayout


@dataclass
class Submission:
    """How a night's controller was started by ``abflow submit``."""

    batch: str  # BATCH_ID
    argv: list[str]  # the controller's command line (snakemake ...)
    cwd: str  # its working directory
    log: str  # its console
    offset: int = 0  # where this submission's lines start in the console log
    pool: bool = False  # an HTCondor job (else a detached process)
    cluster: int = 0  # the HTCondor job
    schedd: str = ""  # the schedd it was submitted to ("": the local one)
    pid: int = 0  # the detached process
    proc_start: float = 0.0  # when it started (a pid used again later is not it)
    host: str = ""
    submitted: str = ""  # ISO time
    profile: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> str:
        """``HTCondor job 123`` or ``pid 4711 on host``."""
        return f"HTCondor job {self.cluster}" if self.pool else f"pid {self.pid} on {self.host}"


def write_submission(layout: StateLayout, sub: Submission) -> str:
    """Record ``sub`` (atomically); return the record's path."""
    path = layout.submission(sub.batch)
    atomic_write_json(path, asdict(sub))
    return path


def read_submission(layout: StateLayout, batch: str) -> Submission | None:
    """The last submission of ``batch``, or None (also if its record cannot be read:
    :func:`submission_problem` says why)."""
    return _read(layout, batch)[0]


def submission_problem(layout: StateLayout, batch: str) -> str:
    """What is wrong with the submission record of ``batch`` ("" if it is fine or absent)."""
    problem = _read(layout, batch)[1]
    if not problem:
        return ""
    return f"the submission record {layout.submission(batch)} is unreadable ({problem})"


# the type each field of a submission record must have (an int is fine where a float is)
_TYPES: dict[str, type | tuple[type, ...]] = {
    "batch": str, "argv": list, "cwd": str, "log": str, "offset": int, "pool": bool,
    "cluster": int, "schedd": str, "pid": int, "proc_start": (int, float), "host": str,
    "submitted": str, "profile": str, "extra": dict,
}  # fmt: skip


def _read(layout: StateLayout, batch: str) -> tuple[Submission | None, str]:
    data, problem = read_json_checked(layout.submission(batch))
    if data is None:
        return None, problem
    known = {k: v for k, v in data.items() if k in _TYPES}
    for key, value in known.items():
        wrong = isinstance(value, bool) and _TYPES[key] is not bool
        if wrong or not isinstance(value, _TYPES[key]):
            return None, f"{key} is {json_kind(value)}"
    if not all(isinstance(a, str) for a in known.get("argv", ())):
        return None, "argv is not a list of strings"
    try:
        return Submission(**known), ""
    except TypeError as exc:  # a field it needs is missing
        return None, str(exc).removeprefix("Submission.__init__() ")


@dataclass(frozen=True)
class ControllerState:
    """Where a submitted night's controller is."""

    alive: bool  # it runs, or HTCondor will start it (again)
    status: str  # running, idle (waiting to start or restart), held, ended, removed, unknown
    exit_code: int | None = None  # how it ended (None: not ended, or not known)
    detail: str = ""  # a hold reason, or how it ended

    def describe(self) -> str:
        """``running``, ``waiting to be started again (idle)``, ``ended (exit 0)``..."""
        text = {
            "idle": "waiting to be started (again) by HTCondor",
            "held": "held by HTCondor",
            "ended": "ended" + (f" (exit {self.exit_code})" if self.exit_code is not None else ""),
        }.get(self.status, self.status)
        return text + (f": {self.detail}" if self.detail else "")


def controller_state(sub: Submission) -> ControllerState:
    """Ask the schedd (or this host's processes) where the controller of ``sub`` is."""
    if not sub.pool:
        return _process_state(sub)
    from abflow.state import schedd

    try:
        sd = schedd.schedd(sub.schedd or None)
        job = schedd.in_queue(sd, [sub.cluster]).get(sub.cluster)
        if job is None:
            job = schedd.in_history(sd, [sub.cluster]).get(sub.cluster)
    except Exception as exc:
        return ControllerState(False, "unknown", detail=f"the schedd did not answer: {exc}")
    return _controller_of(job)


def _controller_of(job: Any) -> ControllerState:
    """The controller's state from its HTCondor job (None: neither in the queue nor in the
    history), abflow.state.schedd.JobState."""
    if job is None:
        return ControllerState(False, "ended", detail="no longer in the queue or its history")
    if job.active:
        return ControllerState(not job.held, job.word, detail=job.hold_reason)
    if job.word == "removed":
        return ControllerState(False, "removed", 1, job.remove_reason)
    return ControllerState(False, "ended", job.exit_code)


def _process_state(sub: Submission) -> ControllerState:
    import socket

    from abflow.state.runstate import process_alive

    if sub.host and sub.host != socket.gethostname():
        return ControllerState(True, "running", detail=f"on {sub.host}: cannot be checked here")
    info = {"pid": sub.pid, "host": sub.host, "proc_start": sub.proc_start or None}
    if sub.pid and process_alive(info):
        return ControllerState(True, "running")
    return ControllerState(False, "ended")


def log_size(path: str) -> int:
    """The size of a console log (0 if there is none yet)."""
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
