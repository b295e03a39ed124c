"""The state of each AB of a night, read from abflow's records, failure notes and markers.

``abflow watch`` prints it; the AB monitor page renders it. An AB is

* ``succeeded``: its completion record exists;
* ``failed``: a failure note exists (its command failed, or a download it needs);
* ``running``: one of its jobs is running (``running/`` markers, or running in the HTCondor
  queue);
* ``held``: HTCondor holds one of its jobs (the hold reason is shown);
* ``blocked``: an AB it depends on failed, so it cannot run;
* ``queued``: a run is going on and the AB waits for its parents or a free slot (``idle`` in
  the HTCondor queue once submitted);
* ``created``: nothing has happened to it yet (no run going on).

On a pool, the queue comes from the schedd (abflow.state.schedd.night_queue): the jobs' own
``AbflowJob`` attribute says which AB each one processes.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from abflow.model.night import Night
from abflow.state.fsutil import json_kind, read_json_checked
from abflow.state.layout import JobId, Step
from abflow.state.notes import retries_of_ab
from abflow.state.runstate import describe_run, process_alive, run_history_of, running_jobs
from abflow.state.text import inert
from abflow.state.units import clock_text


class ABStatus(StrEnum):
    """The state of an AB (the module's docstring says each); its value is the word the page,
    ``abflow watch`` and the page's JSON use."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RUNNING = "running"
    HELD = "held"
    BLOCKED = "blocked"
    QUEUED = "queued"
    CREATED = "created"


STATES = tuple(ABStatus)  # in the order the page counts them
# not done, not failed: waiting for a parent, a slot, a run or the pool
WAITING = (ABStatus.BLOCKED, ABStatus.QUEUED, ABStatus.CREATED, ABStatus.HELD)


class RunState(StrEnum):
    """Whether a run of the night is going on (:class:`RunStatus`)."""

    RUNNING = "running"  # its lock is held by a live process
    CRASHED = "crashed"  # held by a process that is gone, or a run that never noted its end
    ENDED = "ended"  # its end and outcome are in the run history
    NONE = "none"  # no run yet


@dataclass
class ABState:
    """What is known about one AB."""

    ab: str
    state: ABStatus
    record: dict[str, Any] | None = None
    failure: dict[str, Any] | None = None
    qc: dict[str, Any] | None = None
    qc_failure: dict[str, Any] | None = None
    running: list[str] = field(default_factory=list)
    running_since: float | None = None
    host: str = ""
    pool: str = ""  # its HTCondor jobs: "idle", "running", "held: <reason>" (empty: none)
    retries: list[dict[str, Any]] = field(default_factory=list)  # memory retries on the pool
    unreadable: list[str] = field(default_factory=list)  # its records that cannot be read
    download_failed: bool = False  # failed because a file it needs could not be downloaded

    @property
    def memory(self) -> str:
        """``memory raised 100 -> 420 MB`` if the pool ran a job of it again with more."""
        if not self.retries:
            return ""
        first, last = self.retries[0], self.retries[-1]
        return inert(f"memory raised {first.get('from_mb')} -> {last.get('to_mb')} MB", line=True)

    @property
    def problem(self) -> str:
        """``not done (record unreadable (empty): <path>)``: what of it could not be read
        ("" if all could). An AB whose record cannot be read is not done: the run reruns it."""
        if not self.unreadable:
            return ""
        done = "" if self.record is not None else "not done "
        return inert(f"{done}({'; '.join(self.unreadable)})", line=True)


# how a run ended (abflow.state.runstate.OUTCOMES), in the words of the page and abflow watch
OUTCOME_WORDS = {
    "succeeded": "succeeded",
    "failed": "ended with failures",
    "stopped": "stopped (abflow stop)",
    "interrupted": "interrupted (Ctrl-C, or abflow stop --now)",
    "crashed": "was found dead (crashed or killed)",
}


@dataclass(frozen=True)
class RunStatus:
    """Whether a run of the night is going on (``state``), and if not how the last one
    ended."""

    state: RunState
    pid: object = None
    host: str = ""
    since: str = ""
    end: str = ""
    outcome: str = ""  # succeeded, failed, stopped, interrupted ("" for older histories)
    problem: str = ""  # a run lock or run history that cannot be read, and what to do

    def describe(self) -> str:
        """One line for the page's header and ``abflow watch`` (what the lock and the run
        history say of the run shown inert)."""
        return inert(self._describe() + (f"; {self.problem}" if self.problem else ""), line=True)

    def _describe(self) -> str:
        who = f"snakemake pid {self.pid} on {self.host}"
        since, end = clock_text(self.since, "?"), clock_text(self.end, "?")
        if self.state is RunState.RUNNING:
            return f"running: {who} since {since}"
        if self.state is RunState.CRASHED:
            return (
                f"not running: the run of {who} (started {since}) ended without noting it "
                "(crashed or killed); the same command resumes the night"
            )
        if self.state is RunState.ENDED:
            how = OUTCOME_WORDS.get(self.outcome, "ended")
            return f"last run {how} at {end} ({who}, started {since})"
        return "no run yet"


def run_status(
    night: Night, lock: dict[str, Any] | None, alive: bool, problem: str = ""
) -> RunStatus:
    """The :class:`RunStatus` of ``night``: of the run holding its ``lock`` (``alive``: its
    process lives), else of its last run in the run history. ``problem``: what of its run
    state could not be read (:func:`read_lock`)."""
    s = night.settings
    problems = [problem] if problem else []
    for batch in s.batches:
        _, broken = read_json_checked(s.layout.run_history(batch), list)
        if broken:
            problems.append(
                f"the run history {s.layout.run_history(batch)} is unreadable "
                f"({broken}): the timeline misses the runs it held"
            )
    problem = "; ".join(problems)
    if lock:
        return RunStatus(
            RunState.RUNNING if alive else RunState.CRASHED,
            lock.get("pid"),
            str(lock.get("host", "")),
            str(lock.get("start", "")),
            problem=problem,
        )
    history = [e for b in s.batches for e in run_history_of(s.layout, b)]
    if not history:
        return RunStatus(RunState.NONE, problem=problem)
    last = max(history, key=lambda e: str(e.get("since") or e.get("start") or ""))
    since = str(last.get("since") or last.get("start") or "")
    if not last.get("end"):
        return RunStatus(
            RunState.CRASHED, last.get("pid"), str(last.get("host", "")), since, problem=problem
        )
    return RunStatus(
        RunState.ENDED,
        last.get("pid"),
        str(last.get("host", "")),
        since,
        str(last["end"]),
        str(last.get("ended", "")),
        problem,
    )


def read_lock(night: Night) -> tuple[dict[str, Any] | None, str]:
    """The run lock of the night's first locked date, and what is wrong with any lock that
    cannot be read ("" if none): such a lock is taken for no run."""
    s = night.settings
    found, problems = None, []
    for batch in s.batches:
        path = s.layout.lock(batch)
        lock, problem = read_json_checked(path)
        pid = lock.get("pid") if lock else None
        if lock is not None and (not isinstance(pid, int) or isinstance(pid, bool)):
            problem = "its pid is not a number"
        if problem:
            problems.append(
                f"the run lock {path} is unreadable ({problem}): shown as no run; "
                "if no run of the night is going on, remove it"
            )
        elif lock is not None and found is None:
            found = lock
    return found, "; ".join(problems)


def run_elsewhere(settings: Any) -> str:
    """Where a live run of the night keeps its state when that is another state directory
    than ``settings``' (the night's own lock beside its AB list names it; "" if not)."""
    from abflow.state.runstate import read_night_lock

    for batch in settings.batches:
        lock = read_night_lock(settings.dfo["mon_dir"], batch) or {}
        other = lock.get("state_dir")
        if isinstance(other, str) and other != settings.state_dir and process_alive(lock):
            where = inert(other, line=True)
            return (
                f"{batch} is run by {describe_run(lock)} with the state directory {where}: "
                "ask about it there (--config state_dir=...)"
            )
    return ""


def qc1_values(qc: dict[str, Any] | None) -> dict[str, str]:
    """The QC1 numbers of an AB's QC record, by name, whichever way the QC command handed them
    over: PAF files and ``QC1`` lines (``qc1``), or JSON in ``$ABFLOW_RESULTS`` (``results``:
    abflow's own processQC's ``products``, or a site's ``{"QC.MEDIAN": 201.4, ...}``)."""
    if not qc:
        return {}
    out: dict[str, str] = {}
    results = qc.get("results")
    results = {} if results is None else results
    if not isinstance(results, dict):  # $ABFLOW_RESULTS held JSON, but not an object
        out["results"] = f"unreadable ({json_kind(results)}, not an object)"
        results = {}
    products = results.get("products") or []
    if not isinstance(products, list):
        out["products"] = f"unreadable ({json_kind(products)}, not a list)"
        products = []
    for k, product in enumerate(products):
        if isinstance(product, dict):
            suffix = f" [{k + 1}]" if k else ""
            for name in ("median", "noise", "hot_pixels"):
                if name in product:
                    out[f"{name}{suffix}"] = _number_text(product[name], ".4g")
    for name, value in results.items():
        if name not in ("products", "png", "paf") and isinstance(value, str | int | float | bool):
            out[str(name)] = _number_text(value, ".6g")
    qc1 = qc.get("qc1") or {}
    for name, value in qc1.items() if isinstance(qc1, dict) else ():
        out[str(name)] = str(value)
    return {inert(k, line=True): inert(v, line=True) for k, v in out.items()}


def _number_text(value: object, spec: str) -> str:
    return format(value, spec) if isinstance(value, float) else str(value)


@dataclass
class NightState:
    """The state of every AB of a night, in cascade order."""

    night: Night
    abs: list[ABState]
    status: RunStatus  # a run going on, or how the last one ended
    queue: list[Any] | None = None  # the night's HTCondor jobs (None: no pool asked)

    @property
    def run_alive(self) -> bool:
        """True while a run of the night is going on."""
        return self.status.state is RunState.RUNNING

    def counts(self) -> dict[str, int]:
        """ABs per state (every state present, zero included), plus ``all``."""
        out = {s: 0 for s in STATES}
        for a in self.abs:
            out[a.state] += 1
        out["all"] = len(self.abs)
        return out

    def format(self) -> str:
        """A compact text view (for ``abflow watch``)."""
        s = self.night.settings
        c = self.counts()
        lines = [
            f"{s.batch_id}: {self.status.describe()}",
            f"ABs: {c['all']} | succeeded {c['succeeded']} | failed {c['failed']} | running "
            f"{c['running']} | queued {c['queued']} | blocked {c['blocked']} | created "
            f"{c['created']}",
        ]
        if self.queue is not None:
            lines[-1] += f" | held {c['held']}"
        lines += self._ab_lines()
        return "\n".join(lines)

    def _ab_lines(self) -> list[str]:
        """The ABs worth a line of their own: running, held, with QC1 numbers, failed, and
        those whose state files cannot be read. Text from outside shown escaped."""
        lines, now = [], time.time()
        for a in self.abs:
            host, pool = inert(a.host, line=True), inert(a.pool, line=True)
            if a.state is ABStatus.RUNNING:
                since = f"{now - a.running_since:.0f} s" if a.running_since else ""
                where = f"  [{pool}]" if pool else ""
                lines.append(
                    f"  running  {a.ab}  {', '.join(a.running)}  {host}  {since}{where}".rstrip()
                )
            elif a.state is ABStatus.QUEUED and pool:
                lines.append(f"  {pool:<8} {a.ab}")
            elif a.state is ABStatus.HELD:
                lines.append(f"  held     {a.ab}: {pool.removeprefix('held: ')}")
        for a in self.abs:
            qc1 = qc1_values(a.qc)
            if qc1:
                lines.append(f"  QC1      {a.ab}: " + ", ".join(f"{k}={v}" for k, v in qc1.items()))
        for a in self.abs:
            if a.state is ABStatus.FAILED and a.failure:
                lines.append(f"  failed   {a.ab}: {_field(a.failure, 'reason')}")
                lines.append(f"           log: {_field(a.failure, 'log')}")
            if a.qc_failure:
                lines.append(f"  QC failed {a.ab}: {_field(a.qc_failure, 'reason')}")
            if a.problem:
                lines.append(f"  unreadable {a.ab}: {a.problem}")
        return lines


def _field(note: dict[str, Any], key: str, missing: str = "") -> str:
    """A field of a record or note, as one line of inert text."""
    value = note.get(key)
    return inert(missing if value is None or value == "" else value, line=True)


def night_state(night: Night, queue: list[Any] | None = None) -> NightState:
    """Read the state of every AB of ``night``; ``queue``: its jobs in the HTCondor queue
    (abflow.state.schedd.JobState, as abflow.state.schedd.night_queue gives them), if asked."""
    from abflow.state.schedd import queue_by_ab

    run, problem = read_lock(night)
    alive = bool(run) and process_alive(run)
    pooled = queue_by_ab(queue or [])
    running: dict[str, list[tuple[str, str, float]]] = {}
    for job in running_jobs(night.settings.state_dir):
        running.setdefault(job.job.target, []).append((job.job.step.value, job.host, job.start))
    out: list[ABState] = []
    state_of: dict[str, ABStatus] = {}
    for ab in night.names:
        st = _recorded(night, ab)
        in_queue = [j for j in pooled.get(ab, []) if j.active]
        _place(st, running.get(ab, []), in_queue, alive)
        if st.state is ABStatus.CREATED:
            st.state = _waiting(st, night[ab].parents, state_of, alive)
        state_of[ab] = st.state
        out.append(st)
    return NightState(night, out, run_status(night, run, alive, problem), queue)


def _recorded(night: Night, ab: str) -> ABState:
    """What the state directory says of ``ab``: its records and failure notes (a detector
    job's, or that of a download it needed, where the AB has none)."""
    layout = night.settings.layout
    own, qc_job = JobId(Step.PROCESS_AB, ab), JobId(Step.PROCESS_QC, ab)
    state = ABState(ab, ABStatus.CREATED)
    state.record = _read(state, layout.record(own), "record")
    state.failure = _read(state, layout.failure(own), "failure note")
    state.qc = _read(state, layout.record(qc_job), "QC record")
    state.qc_failure = _read(state, layout.failure(qc_job), "QC failure note")
    for det in range(1, night.detectors(ab) + 1 if night.detectors(ab) > 1 else 1):
        path = layout.failure(JobId(Step.PROCESS_AB_DET, ab, det))
        state.failure = state.failure or _read(state, path, f"detector {det} failure note")
    if state.failure is None and state.record is None:  # a file it needs was not downloaded
        state.failure = _download_failure(night, state)
        state.download_failed = state.failure is not None
    state.retries = retries_of_ab(layout, ab)
    return state


def _read(state: ABState, path: str, what: str) -> dict[str, Any] | None:
    """The record or note ``path`` of an AB, None if there is none. A record that cannot be
    read is noted in ``state.unreadable``; a failure note that cannot be read still says that
    the job failed, and why it cannot tell more."""
    data, problem = read_json_checked(path)
    if not problem:
        return data  # type: ignore[no-any-return]
    if "failure note" in what:
        return {"reason": f"failed; its {what} is unreadable ({problem}): {path}", "log": ""}
    state.unreadable.append(f"{what} unreadable ({problem}): {path}")
    return None


def _place(
    st: ABState, jobs: list[tuple[str, str, float]], in_queue: list[Any], alive: bool
) -> None:
    """Succeeded, held, running or queued: from its record, its running markers (``jobs``)
    and its HTCondor jobs (``in_queue``); else it stays "created"."""
    held = [j for j in in_queue if j.held]
    st.pool = (
        f"held: {held[0].hold_reason}" if held else ", ".join(sorted({j.word for j in in_queue}))
    )
    on_pool = [j for j in in_queue if j.word == "running"]
    if st.record is not None:
        st.state, st.host, st.pool = ABStatus.SUCCEEDED, str(st.record.get("host") or ""), ""
    elif held:
        st.state = ABStatus.HELD
    elif jobs and alive:
        st.state, st.host = ABStatus.RUNNING, jobs[0][1]
        st.running = sorted({step for step, _, _ in jobs})
        st.running_since = min(t for _, _, t in jobs)
    elif on_pool:
        st.state, st.host = ABStatus.RUNNING, on_pool[0].host
        st.running = sorted({j.job_id.step.value for j in on_pool if j.job_id})
    elif in_queue:
        st.state = ABStatus.QUEUED


def _waiting(
    st: ABState, parents: tuple[str, ...], state_of: dict[str, ABStatus], alive: bool
) -> ABStatus:
    """The state of an AB that is neither done nor on its way: failed, blocked (a parent
    failed), queued (its run goes on) or created."""
    if st.failure is not None:
        return ABStatus.FAILED
    if any(state_of.get(p) in (ABStatus.FAILED, ABStatus.BLOCKED) for p in parents):
        return ABStatus.BLOCKED
    return ABStatus.QUEUED if alive else ABStatus.CREATED


def _download_failure(night: Night, state: ABState) -> dict[str, Any] | None:
    """The failed download of a file the AB of ``state`` needs (its note), or None."""
    from abflow.job.download import download_failure

    ab = night[state.ab]
    for path in (*ab.raw_inputs, *ab.cal_inputs):
        if os.path.exists(path):
            continue  # got it since (by hand, or a later run)
        note_path = download_failure(night.settings.layout, night.settings.dfo, path)
        note = _read(state, note_path, "download failure note")
        if note is not None:
            return note
    return None


def failed_for_downloads(state: NightState, names: Any, since: str | None) -> list[str]:
    """The ABs of ``names`` (all if None) that failed at or after ``since`` because a file
    they need could not be downloaded."""
    wanted = set(state.night.names if names is None else names)
    return [
        a.ab for a in state.abs if a.ab in wanted and a.download_failed and _since(a.failure, since)
    ]


def failure_summary(
    night: Night, names: Any = None, since: str | None = None, state: NightState | None = None
) -> str:
    """The end-of-run summary of what failed: each failed AB (or QC) of ``names`` whose failure
    happened at or after ``since`` (ISO time), why, its log and the log's last lines; then how
    many ABs did not run. Empty if nothing failed. ``state``: the night's, if read already."""
    wanted = set(night.names if names is None else names)
    state = state or night_state(night)
    mine = [a for a in state.abs if a.ab in wanted]
    failed = [a for a in mine if a.state is ABStatus.FAILED and _since(a.failure, since)]
    qc_failed = [a for a in mine if _since(a.qc_failure, since)]
    not_run = [a for a in mine if a.state in WAITING]
    retried = [a for a in mine if any(_at_or_after(r.get("time"), since) for r in a.retries)]
    if not (failed or qc_failed or not_run or retried):
        return ""
    n, q = len(failed), len(qc_failed)
    lines = (
        [
            f"abflow: {n} AB{'s' if n != 1 else ''} failed in this run"
            + (f", {q} QC report{'s' if q != 1 else ''} failed" if q else "")
            + ":"
        ]
        if failed or qc_failed
        else []
    )
    for a, note in [(a, a.failure) for a in failed] + [(a, a.qc_failure) for a in qc_failed]:
        lines += _failure_lines(a.ab, note or {})
    if retried:
        k = len(retried)
        lines.append(
            f"abflow: {k} AB{'s' if k != 1 else ''} ran again on the pool with more "
            "memory (held for exceeding the request; memory_retry):"
        )
        for a in retried:
            lines.append(f"  {a.ab}: {a.memory} ({_field(a.retries[-1], 'reason')}), " + a.state)
    if not_run:
        ok = {a.ab for a in state.abs if a.state is ABStatus.SUCCEEDED}
        k = len(not_run)
        lines.append(
            f"abflow: {k} AB{'s' if k != 1 else ''} did not run (they need a failed AB or "
            "download, or the night was stopped; the same command runs them after a fix):"
        )
        for a in not_run:
            waits = [p for p in night[a.ab].parents if p not in ok]
            lines.append(
                f"  {a.ab}"
                + (f" (waits for {', '.join(waits)})" if waits else "")
                + (f": {a.problem}" if a.problem else "")
            )
    return "\n".join(lines)


def qc1_text(values: dict[str, str], shown: int = 3) -> tuple[str, str]:
    """(the first ``shown`` QC1 numbers and how many more, all of them one per line)."""
    items = [f"{k}={v}" for k, v in values.items()]
    more = f" (+{len(items) - shown})" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more, "\n".join(items)


def qc1_summary(state: NightState, names: Any = None, since: str | None = None) -> str:
    """The QC1 numbers of the ABs ``names`` whose QC ran at or after ``since`` (ISO time): a
    line per AB (the first three; the page has all). Empty if none handed any over."""
    wanted = set(state.night.names if names is None else names)
    lines = []
    for a in state.abs:
        values = qc1_values(a.qc) if a.ab in wanted and _since(a.qc, since) else {}
        if values:
            lines.append(f"  {a.ab}: {qc1_text(values)[0]}")
    if not lines:
        return ""
    return f"abflow: QC1 numbers of {len(lines)} AB{'s' if len(lines) != 1 else ''}:\n" + (
        "\n".join(lines)
    )


def _at_or_after(epoch: object, since: str | None) -> bool:
    """True for a time (epoch seconds) at or after ``since`` (ISO time; None: any)."""
    if since is None:
        return True
    import datetime as _dt

    try:
        return float(epoch) >= _dt.datetime.fromisoformat(since).timestamp()  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return True


def _since(note: dict[str, Any] | None, since: str | None) -> bool:
    """True for a failure note written at or after ``since`` (ISO time; None: any)."""
    if not note:
        return False
    if since is None:
        return True
    import datetime as _dt

    try:
        return _dt.datetime.fromisoformat(str(note.get("end"))) >= _dt.datetime.fromisoformat(since)
    except ValueError:
        return True


def _failure_lines(ab: str, note: dict[str, Any]) -> list[str]:
    """A failed job in the summary: why, its log, the log's last lines (each shown inert: a
    recipe's output never reaches the terminal as a command)."""
    lines = [
        f"  {ab} ({_field(note, 'step', 'process_ab')}): {_field(note, 'reason', 'failed')}",
        f"    log: {_field(note, 'log')}",
    ]
    tail_lines = note.get("log_tail") or []
    if not isinstance(tail_lines, list):
        tail_lines = [tail_lines]
    if tail_lines:
        lines.append("    last lines:")
        lines += [f"      {inert(line, line=True)}" for line in tail_lines]
    return lines
