"""What a QC scientist reads on the console during a night (abflow's Snakemake logger).

:class:`Console` turns Snakemake's log records into one line per AB as it starts, succeeds or
fails (``[12/26] FORS2.2024-07-13T11:16:05.771_tpl.ab  flat succeeded 3.2 s``), a download
progress line (files, bytes, rate: redrawn in place on a terminal, plain lines otherwise), a
stop or an interruption reported once as what it is, and the end of the night: abflow's summary
(every failed AB with its reason and log, every AB that did not run) and one count line. A
dry-run shows the cascade as levels and which ABs would run and why
(:mod:`abflow.views.dryrun`). Snakemake's own messages that only a developer reads (job blocks,
"Select jobs to execute", exception blocks of jobs whose failure is already reported) are left
out; its warnings and its errors about the workflow itself are kept.

The workflow announces the run once (:func:`announce`: the ABs, their levels and what each
makes, the state layout); the plugin package ``snakemake_logger_plugin_abflow`` feeds the
records to a Console.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from abflow.state.fsutil import read_json_object
from abflow.state.layout import JobId, StateLayout, Step
from abflow.state.text import inert
from abflow.state.units import as_number, human_bytes
from abflow.upstream.snakemake import WORDING, contains, says
from abflow.views.events import POOL_ATTR, PoolEvent
from abflow.views.terminal import on_hangup, was_interrupted

RUN_ATTR = "abflow_run"  # a record carrying the run's RunInfo (announce)
SUMMARY_ATTR = "abflow_summary"  # a record carrying abflow's end-of-run summary
# a record of abflow's HTCondor executor (snakemake_executor_plugin_abflow_htcondor): a dict
# with "what" (submitted, adopted, memory, removed), "job" (AbflowJob), "cluster" and more
AB_RULES = ("process_ab", "process_ab_det")
DOWNLOAD_RULES = ("download_raw", "download_mcal")
STOPPING = "the night is stopping"  # abflow stop's reason for jobs it does not start
# Snakemake's messages (abflow.upstream.snakemake.WORDING) and what abflow says instead ("" drops
# them)
TRANSLATED = {
    "nothing_to_do": "abflow: nothing to do: every AB of this run is up to date",
    "failed_exit": "",
    "will_exit": "",
    "cancelling": "",
    "terminating": "",  # the console says it was interrupted (note_interrupt)
}
PLAIN_EVERY = 10.0  # seconds between download progress lines when not on a terminal
CONSOLES: weakref.WeakSet[Console] = weakref.WeakSet()  # this process's consoles (on_hangup)


@dataclass(frozen=True)
class RunInfo:
    """What the console needs to know of a run, announced by the workflow once."""

    batch: str  # BATCH_ID (several joined for a multi-date run)
    labels: Mapping[str, str]  # AB -> what it makes (its RAW_TYPE, lower case)
    levels: tuple[tuple[str, ...], ...]  # the cascade's levels (AB names)
    parents: Mapping[str, tuple[str, ...]]
    layout: StateLayout
    requested: frozenset[str] = frozenset()  # the subcascade asked for
    pool: bool = False  # jobs go to an HTCondor pool
    # a downloaded file's name -> the ABs of this run that read it
    readers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, rules: Any) -> RunInfo:
        """The RunInfo of an :class:`abflow.run.rules.NightRules`."""
        night = rules.night
        return cls(
            batch=", ".join(night.batch_ids()),
            labels={r.name: (r.ab.raw_type or r.ab.recipe or "ab").lower() for r in night},
            levels=tuple(tuple(level) for level in night.levels()),
            parents={r.name: r.parents for r in night},
            layout=night.settings.layout,
            requested=rules.scope.subcascade_set,
            pool=bool(rules.pool),
            readers=_readers(night, rules.scope.to_run),
        )


def _readers(night: Any, names: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """A file's name -> the ABs of ``names`` that read it (raw frames, REAL calibrations)."""
    out: dict[str, list[str]] = {}
    for name in names:
        for path in (*night[name].raw_inputs, *night[name].cal_inputs):
            out.setdefault(os.path.basename(path), []).append(name)
    return {k: tuple(v) for k, v in out.items()}


def announce(logger: logging.Logger, rules: Any, text: str) -> None:
    """Log ``text`` (abflow's line about the run) carrying the run's :class:`RunInfo`."""
    logger.info(text, extra={RUN_ATTR: RunInfo.of(rules)})


@dataclass
class Seen:
    """A job Snakemake told about (JOB_INFO)."""

    rule: str
    ab: str = ""
    det: int | None = None
    output: tuple[str, ...] = ()
    log: tuple[str, ...] = ()
    reason: str = ""
    start: float = 0.0

    @classmethod
    def of(cls, record: logging.LogRecord, now: float) -> Seen:
        """The job of a JOB_INFO record."""
        wildcards = getattr(record, "wildcards", None) or {}
        det = wildcards.get("det")
        return cls(
            rule=str(getattr(record, "rule_name", "")),
            ab=str(wildcards.get("ab", wildcards.get("file", ""))),
            det=int(det) if det not in (None, "") else None,
            output=tuple(_output_path(str(o)) for o in getattr(record, "output", None) or ()),
            log=tuple(str(o) for o in getattr(record, "log", None) or ()),
            reason=str(getattr(record, "reason", "") or ""),
            start=now,
        )

    def job_id(self) -> JobId | None:
        """abflow's identity of the job (None for Snakemake's bookkeeping rules)."""
        try:
            return JobId(Step(self.rule), self.ab, self.det)
        except ValueError:
            return None


def human_seconds(s: float) -> str:
    """``3.2 s``, ``4 min 05 s``, ``2 h 03 min``."""
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


@dataclass
class Downloads:
    """The run's downloads as one progress line."""

    total: int = 0
    done: int = 0
    failed: int = 0
    not_started: int = 0  # the night stopped or was interrupted first
    running: int = 0
    nbytes: int = 0
    first: float | None = None
    last_plain: float = -1e9  # when the last plain progress line was written
    ended: float | None = None  # when the last one ended

    @property
    def active(self) -> bool:
        """True while downloads of this run are outstanding."""
        ended = self.done + self.failed + self.not_started
        return self.first is not None and ended < max(self.total, 1)

    def line(self, now: float) -> str:
        """``downloads: 12/40 files, 1.2 GB, 35.0 MB/s, 2 running``."""
        spent = max((self.ended or now) - (self.first or now), 1e-3)
        total = f"/{self.total}" if self.total else ""
        text = f"downloads: {self.done}{total} files, {human_bytes(self.nbytes)}"
        if self.nbytes:
            text += f", {human_bytes(self.nbytes / spent)}/s"
        if self.running:
            text += f", {self.running} running"
        if self.failed:
            text += f", {self.failed} FAILED"
        if self.not_started:
            text += f", {self.not_started} not started"
        if not self.active:
            text += f", done in {human_seconds(spent)}"
        return text


@dataclass
class Tally:
    """How the ABs of the run ended, for the count line."""

    total: int = 0
    started: set[str] = field(default_factory=set)
    succeeded: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    not_started: set[str] = field(default_factory=set)
    qc_succeeded: set[str] = field(default_factory=set)  # ABs whose QC job succeeded
    qc_failed: set[str] = field(default_factory=set)
    downloads_failed: set[str] = field(default_factory=set)  # file names, until one succeeds

    @property
    def ended(self) -> int:
        """ABs that succeeded or failed."""
        return len(self.succeeded) + len(self.failed)

    def counter(self) -> str:
        """``[12/26]``."""
        width = len(str(self.total))
        return f"[{self.ended:>{width}}/{self.total}]"


class Console:
    """Snakemake's log records in, abflow's console lines out (see the module docstring)."""

    def __init__(
        self,
        stream: TextIO,
        tty: bool = False,
        dryrun: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream, self.tty, self.dryrun, self.clock = stream, tty, dryrun, clock
        self.run: RunInfo | None = None
        self.jobs: dict[int, Seen] = {}
        self.tally = Tally()
        self.downloads = Downloads()
        self.stats: dict[str, int] = {}
        self.t0 = clock()
        self.stopping = self.interrupted = self.summarised = self.closed = False
        self.pending_error = ""  # the exception text Snakemake logged before a job's error
        self.progress_shown = False
        self.width = 0
        self.dry_jobs: list[Seen] = []
        self.dry_shown = False
        self.announced: set[str] = set()  # ABs whose submission or adoption was said
        self.adopted: set[str] = set()  # ABs (or their QC) taken over from a run that died
        CONSOLES.add(self)

    # ----- output ------------------------------------------------------------------------
    def say(self, text: str) -> None:
        """Write lines (the progress line, on a terminal, stays the last line). Control
        characters in them are shown escaped: what comes from outside (a log, a note, a server,
        Snakemake) never reaches the terminal as a command; abflow's own redrawing of the
        progress line does not pass here."""
        if self.progress_shown:
            self.stream.write("\r\x1b[K")
            self.progress_shown = False
        self.stream.write(inert(text.rstrip("\n")) + "\n")
        self._progress()
        self.stream.flush()

    def _progress(self, final: bool = False) -> None:
        """The download progress: redrawn in place on a terminal while downloads go on; else a
        plain line at most every PLAIN_EVERY seconds; and a last line when they are done."""
        d = self.downloads
        if d.first is None or self.dryrun or d.ended is not None:
            return
        now = self.clock()
        if final:
            d.ended = now
            self.stream.write(d.line(now) + "\n")
        elif self.tty:
            self.stream.write("\r\x1b[K" + d.line(now))
            self.progress_shown = True
        elif now - d.last_plain >= PLAIN_EVERY:
            d.last_plain = now
            self.stream.write(d.line(now) + "\n")

    def ab_line(self, ab: str, what: str, counter: bool = True) -> str:
        """``[12/26] <AB>  flat succeeded 3.2 s`` (the counter column blank for QC lines)."""
        label = self.run.labels.get(ab, "") if self.run else ""
        count = self.tally.counter()
        return f"{count if counter else ' ' * len(count)} {ab:<{self.width}}  {label} {what}"

    # ----- records -----------------------------------------------------------------------
    def handle(self, record: logging.LogRecord) -> None:
        """Take one of Snakemake's log records."""
        if was_interrupted() and not self.interrupted:
            self._interrupt()
        run = getattr(record, RUN_ATTR, None)
        if run is not None:
            self.run = run
            self.width = min(max((len(n) for n in run.labels), default=0), 60)
        if getattr(record, SUMMARY_ATTR, None) is not None:
            self.summarised = True
        pool_event = getattr(record, POOL_ATTR, None)
        if isinstance(pool_event, PoolEvent):
            self._pool_event(pool_event)
            return
        event = str(getattr(record, "event", "") or "")
        handler = {
            "job_info": self._job_info,
            "job_finished": self._job_finished,
            "job_error": self._job_error,
            "error": self._error,
            "run_info": self._run_info,
        }.get(event)
        if handler is not None:
            handler(record)
        elif not event:
            self._message(record)

    def _text(self, record: logging.LogRecord) -> str:
        msg = record.msg
        return "" if msg is None or msg == "None" else str(msg)

    def _message(self, record: logging.LogRecord) -> None:
        text = self._text(record)
        if not text:
            return
        if says("dry_run_done", text):
            self.show_dryrun()
            return
        for name, instead in TRANSLATED.items():
            if says(name, text):
                if instead:
                    self.say(instead)
                return
        if says("complete_log", text):
            self.say("Snakemake's log of this run:" + text.split(":", 1)[1])
        elif record.levelno >= logging.WARNING or not says("routine", text):
            self.say(text)  # abflow's own lines, and whatever Snakemake says out of routine

    def _run_info(self, record: logging.LogRecord) -> None:
        stats = getattr(record, "stats", None) or {}
        if self.stats or not stats:
            return
        self.stats = {str(k): int(v) for k, v in stats.items()}
        self.tally.total = self.stats.get("process_ab", 0)
        self.downloads.total = sum(self.stats.get(r, 0) for r in DOWNLOAD_RULES)
        if self.dryrun:
            return
        qc = self.stats.get("process_qc", 0)
        extra = [f"{self.downloads.total} downloads"] if self.downloads.total else []
        extra += [f"{qc} QC jobs"] if qc else []
        n = self.tally.total
        self.say(
            f"abflow: {n} AB{'s' if n != 1 else ''} to run"
            + (f" ({', '.join(extra)})" if extra else "")
        )

    def _job_info(self, record: logging.LogRecord) -> None:
        seen = Seen.of(record, self.clock())
        self.jobs[int(getattr(record, "jobid", -1))] = seen
        if self.dryrun:
            self.dry_jobs.append(seen)
            return
        if seen.rule in AB_RULES and seen.ab not in self.tally.started:
            self.tally.started.add(seen.ab)
            if not (self.run and self.run.pool):  # on a pool: said by the executor's record
                self.say(self.ab_line(seen.ab, "started"))
        elif seen.rule in DOWNLOAD_RULES:
            d = self.downloads
            d.first = seen.start if d.first is None else d.first
            d.running += 1
            self._redraw()

    def _pool_event(self, event: PoolEvent) -> None:
        """What abflow's HTCondor executor did with a job: submitted or adopted it (said once
        per AB, as an AB's start), released it with more memory, removed stale jobs."""
        if event.what == "removed":
            clusters = ", ".join(str(c) for c in event.clusters)
            self.say(f"abflow: removed HTCondor job(s) {clusters}: " + inert(event.why, line=True))
            return
        try:
            job = JobId.parse(event.job)
        except ValueError:
            return
        if event.what == "memory":
            self.say(
                self.ab_line(
                    job.target,
                    f"held for memory ({inert(event.reason, line=True)}):"
                    f" HTCondor job {event.cluster} runs again with {event.to_mb} MB"
                    f" (was {event.from_mb} MB)",
                    counter=False,
                )
            )
            return
        if event.what == "adopted":
            self.adopted.add(job.target)
        if job.step is Step.PROCESS_QC:
            if event.what == "adopted":
                self.say(
                    self.ab_line(
                        job.target, f"QC adopted (HTCondor job {event.cluster})", counter=False
                    )
                )
            return
        if job.target in self.announced:
            return
        self.announced.add(job.target)
        self.say(self.ab_line(job.target, _pool_text(event)))

    def _redraw(self) -> None:
        if self.progress_shown:
            self.stream.write("\r\x1b[K")
            self.progress_shown = False
        self._progress(final=not self.downloads.active)
        self.stream.flush()

    def _job_finished(self, record: logging.LogRecord) -> None:
        seen = self.jobs.get(int(getattr(record, "job_id", -1)))
        if seen is None:
            return
        took = human_seconds(self.clock() - seen.start)
        if seen.rule == "process_ab":
            self.tally.succeeded.add(seen.ab)
            start = min(
                (j.start for j in self.jobs.values() if j.ab == seen.ab and j.rule in AB_RULES),
                default=seen.start,
            )
            took = self._recorded_duration(seen) if seen.ab in self.adopted else None
            took = took if took is not None else self.clock() - start
            self.say(
                self.ab_line(seen.ab, f"succeeded {human_seconds(took)}" + self._retried(seen.ab))
            )
        elif seen.rule == "process_qc":
            self.tally.qc_succeeded.add(seen.ab)
            self.say(self.ab_line(seen.ab, f"QC succeeded {took}", counter=False))
        elif seen.rule in DOWNLOAD_RULES:
            self.tally.downloads_failed.discard(os.path.basename(seen.ab))
            d = self.downloads
            d.running, d.done = max(d.running - 1, 0), d.done + 1
            d.nbytes += sum(_size(p) for p in seen.output)
            self._redraw()

    def _recorded_duration(self, seen: Seen) -> float | None:
        """How long the job's command ran, as its record says (an adopted job ran before this
        console saw it)."""
        job = seen.job_id()
        if job is None or self.run is None:
            return None
        return as_number((read_json_object(self.run.layout.record(job)) or {}).get("duration_s"))

    def _retried(self, ab: str) -> str:
        """`` (memory raised to 4096 MB)`` if the pool ran a job of ``ab`` again with more
        memory."""
        if self.run is None or not self.run.pool:
            return ""
        from abflow.state.notes import retries_of_ab

        top = max(
            (as_number(r.get("to_mb")) or 0 for r in retries_of_ab(self.run.layout, ab)), default=0
        )
        return f" (memory raised to {top:.0f} MB)" if top else ""

    def _error(self, record: logging.LogRecord) -> None:
        """An exception Snakemake prints: a job's is kept for its JOB_ERROR, others shown."""
        text = self._text(record)
        if getattr(record, "exception", "") in ("RuleException", "CalledProcessError"):
            self.pending_error = text
        elif text and not self.interrupted and not contains("incomplete_run", text):
            self.say(text)

    def _job_error(self, record: logging.LogRecord) -> None:
        seen = self.jobs.get(int(getattr(record, "jobid", -1)))
        pending, self.pending_error = self.pending_error, ""
        if seen is None:
            return
        note = self._failure_note(seen)
        stopped = note is None and (self.interrupted or STOPPING in pending or self._stop_flag())
        if seen.rule in DOWNLOAD_RULES:
            d = self.downloads
            d.running = max(d.running - 1, 0)
            d.not_started, d.failed = d.not_started + stopped, d.failed + (not stopped)
            self._redraw()
        if stopped:
            self._not_started(seen)
            return
        reason, log = _reason(note, str(getattr(record, "rule_msg", "") or "") or pending, seen)
        self._report_failure(seen, reason, log)

    def _report_failure(self, seen: Seen, reason: str, log: str) -> None:
        where = f"\n{'':{len(self.tally.counter())}} log: {log}" if log else ""
        if seen.rule in AB_RULES:
            if seen.ab in self.tally.failed:
                return  # another detector of an AB already reported
            self.tally.failed.add(seen.ab)
            det = f"detector {seen.det}: " if seen.det is not None else ""
            took = human_seconds(self.clock() - seen.start)
            self.say(self.ab_line(seen.ab, f"FAILED {took}: {det}{reason}") + where)
        elif seen.rule == "process_qc":
            self.tally.qc_failed.add(seen.ab)
            self.say(self.ab_line(seen.ab, f"QC FAILED: {reason}", counter=False) + where)
        elif seen.rule in DOWNLOAD_RULES:
            self.tally.downloads_failed.add(os.path.basename(seen.ab))
            self.say(f"download of {os.path.basename(seen.ab)} FAILED: {reason}{where}")
        else:
            self.say(f"{seen.rule} FAILED: {reason}{where}")

    def _not_started(self, seen: Seen) -> None:
        if seen.rule in AB_RULES:
            self.tally.not_started.add(seen.ab)
            self.tally.started.discard(seen.ab)
        if not (self.stopping or self.interrupted):
            self.stopping = True
            self.say(
                "abflow: the night is stopping (abflow stop): the running ABs finish, "
                "no other AB starts"
            )

    def _interrupt(self) -> None:
        if self.interrupted:
            return
        self.interrupted = True
        how = "abflow stop --now" if self._stop_flag() else "Ctrl-C"
        running = sorted(self.tally.started - self.tally.succeeded - self.tally.failed)
        self.say(
            f"abflow: interrupted ({how}): ending the running ABs"
            + (f" ({', '.join(running)})" if running else "")
            + "; the same command resumes the night"
        )

    def _stop_flag(self) -> bool:
        run = self.run
        return bool(run) and any(
            os.path.exists(run.layout.stop_flag(b))  # type: ignore[union-attr]
            for b in run.batch.split(", ")
        )  # type: ignore[union-attr]

    def _failure_note(self, seen: Seen) -> dict[str, Any] | None:
        """The failure note the job wrote in this run, if any."""
        job = seen.job_id()
        if job is None or self.run is None:
            return None
        path = self.run.layout.failure(job)
        try:
            if os.path.getmtime(path) < time.time() - (self.clock() - seen.start) - 2:
                return None  # an older failure of the same job
        except OSError:
            return None
        return read_json_object(path)

    # ----- dry-run and end ---------------------------------------------------------------
    def show_dryrun(self) -> None:
        """The dry-run's view of the cascade (once)."""
        if self.dry_shown:
            return
        self.dry_shown = True
        from abflow.views.dryrun import render

        self.say(render(self.run, self.dry_jobs, self.stats))

    def close(self) -> None:
        """The end of the run: the count line (the dry-run's view if not shown yet)."""
        if self.closed:
            return
        self.closed = True
        if self.dryrun:
            if self.dry_jobs:
                self.show_dryrun()
            return
        if self.progress_shown:  # the in-place line becomes a line of its own
            self.stream.write("\r\x1b[K")
            self.progress_shown = False
        if self.downloads.first is not None and self.downloads.ended is None:
            self.downloads.ended = self.clock()
            self.stream.write(self.downloads.line(self.downloads.ended) + "\n")
        t = self.tally
        if self.run is not None and not (t.total or t.started) and (t.qc_succeeded or t.qc_failed):
            took = human_seconds(self.clock() - self.t0)  # a QC step (steps qc): no AB ran
            failed = f", {len(t.qc_failed)} failed" if t.qc_failed else ""
            self.say(
                f"abflow: {self.run.batch}: QC of {len(t.qc_succeeded) + len(t.qc_failed)} "
                f"ABs: {len(t.qc_succeeded)} succeeded{failed}, in {took}"
            )
            return
        if self.run is None or not (self.tally.total or self.tally.started):
            return
        # ABs that never started because a file they read could not be downloaded: failed,
        # as the end summary and the AB monitor say
        lost = {
            ab
            for name in t.downloads_failed
            for ab in self.run.readers.get(name, ())
            if ab not in t.started and ab not in t.succeeded and ab not in t.failed
        }
        did_not_run = max(t.total - t.ended - len(lost), 0)
        parts = [f"{len(t.succeeded)} of {t.total} ABs succeeded"]
        if t.failed or lost:
            why = f" ({len(lost)} for want of a download)" if lost else ""
            parts += [f"{len(t.failed) + len(lost)} failed{why}"]
        parts += [f"{did_not_run} did not run"] if did_not_run else []
        how = " (interrupted)" if self.interrupted else " (stopped)" if self.stopping else ""
        took = human_seconds(self.clock() - self.t0)
        self.say(f"abflow: {self.run.batch}: {', '.join(parts)}, in {took}{how}")


def _pool_text(event: PoolEvent) -> str:
    """What an AB's first pool event says of it."""
    cluster, status = event.cluster, event.status
    if event.what != "adopted":
        return f"submitted (HTCondor job {cluster})"
    if status in ("failed", "succeeded"):
        return (
            f"adopted (HTCondor job {cluster} of the run that died, {status} while no "
            "controller ran)"
        )
    status = f", {status}" if status else ""
    return f"adopted (HTCondor job {cluster}{status}, left by the run that died)"


def _output_path(named: str) -> str:
    """The path of an output as a job's record names it (an update() output is annotated)."""
    from abflow.upstream.snakemake import WORDING

    found = WORDING["update_output"].match(named)
    return found.group("path") if found else named


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _reason(note: Mapping[str, Any] | None, pending: str, seen: Seen) -> tuple[str, str]:
    """Why a job failed and its log: from its failure note, else from what the executor said
    (``pending``: its message, e.g. HTCondor's hold reason, or the exception's text)."""
    if note is not None:
        reason, log = note.get("reason") or "failed", note.get("log") or ""
    else:
        pending = WORDING["remote_error_suffix"].sub("", pending)
        lines = [ln.strip() for ln in pending.splitlines() if ln.strip()]
        useful = [ln for ln in lines if not ln.startswith(("File ", "RuleException", "Traceback"))]
        reason, log = (useful[-1] if useful else "failed"), (seen.log[0] if seen.log else "")
    return inert(reason, line=True), inert(log, line=True)


def _terminal_gone() -> None:
    """The terminal hung up (abflow.views.terminal.continue_in): no console redraws in place."""
    for console in list(CONSOLES):
        console.tty, console.progress_shown = False, False


on_hangup(_terminal_gone)
