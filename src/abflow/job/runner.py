"""Run one step of one AB (a shell command) and write its completion record.

A job (abflow.job.main) runs its AB's command here: in the step's own, freshly emptied working
directory, with the command's output appended to the job log, marked as running meanwhile
(``running/<job>.json``: read by abflow.state.runstate); on success the completion record is
written atomically. A failed step writes no record (so Snakemake treats the job as failed and
its children do not start) but a failure note beside the records, for the summary and the
status page; a later success removes the note.

The command sees the ``$DFO_*`` directories and ``$ABFLOW_AB``, ``$ABFLOW_CONFIG`` (the run's
configuration: an ``abflow`` command it calls reads it), ``$ABFLOW_WORKDIR``,
``$ABFLOW_INPUTS`` (where the AB's virtual calibrations are), ``$ABFLOW_RESULTS`` (a JSON file it
may write, copied into the record under ``results``) and, for a detector job, ``$ABFLOW_DET``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time

from abflow.job import shell
from abflow.job.command import pool_cluster
from abflow.job.marker import RunningMarker
from abflow.job.products import check_products, earliest, mark_attempt, unmark
from abflow.state.fsutil import (
    atomic_write_json,
    atomic_write_text,
    check_inside,
    iter_json_objects,
    open_append,
    remove_file,
    remove_tree,
)
from abflow.state.layout import JobId, StateLayout
from abflow.state.layout import Step as StepName
from abflow.state.text import inert
from abflow.state.units import now_iso

TYPE_CHECKING = False  # (a job imports this module: only what it needs at once)
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

LOG_TAIL_LINES = 20
RESULTS_FILE = "abflow_results.json"
INPUTS_FILE = "abflow_inputs.json"


class StepFailed(RuntimeError):
    """The step's command failed or did not leave its expected products."""


class StepInterrupted(StepFailed):
    """The run was interrupted (Ctrl-C, abflow stop --now) and ended the step's command."""


class StepRun:
    """What to run for one AB step and where to put the results (a plain class: a job builds
    one at its start)."""

    __slots__ = (
        "ab",
        "benchmark_path",
        "check_products",
        "command",
        "env",
        "failed_path",
        "files",
        "info",
        "log_path",
        "products",
        "record_path",
        "roots",
        "state_dir",
        "step",
        "values",
        "workdir",
    )

    def __init__(
        self,
        ab: str,
        step: str,
        command: str,  # the shell command line, filled (abflow.model.commands.fill)
        workdir: str,
        log_path: str,
        record_path: str,
        failed_path: str,
        env: Mapping[str, str] | None = None,
        products: Sequence[tuple[str, str]] = (),
        check_products: bool = True,
        info: Mapping[str, object] | None = None,
        files: Mapping[str, object] | None = None,
        values: Mapping[str, object] | None = None,
        state_dir: str = "",
        benchmark_path: str = "",  # where the job's benchmark goes (Snakemake's format)
        roots: Sequence[str] = (),  # the resolved directories it may write in (none: unchecked)
    ) -> None:
        self.ab, self.step, self.command, self.workdir = ab, step, command, workdir
        self.log_path, self.record_path, self.failed_path = log_path, record_path, failed_path
        self.env = dict(env or {})
        self.products = list(products)
        self.check_products = check_products
        self.info = dict(info or {})
        self.files = dict(files or {})
        self.values = dict(values or {})
        self.state_dir = state_dir
        self.benchmark_path = benchmark_path
        self.roots = tuple(roots)

    @property
    def job(self) -> JobId:
        """The job this step is."""
        det = self.values.get("det")
        return JobId(StepName(self.step), self.ab, int(det) if det is not None else None)  # type: ignore[call-overload]


def tail(path: str, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last ``lines`` lines of a text file (empty if it cannot be read)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", "replace")
    except OSError:
        return []
    # lines end at "\n" only: a "\r", a form feed or U+2028 in a log is shown (escaped), it
    # does not start a line of its own
    found = data.split("\n")
    if found and found[-1] == "":
        found.pop()
    return found[-lines:]


class _Outcome:
    """How a step's command ended."""

    __slots__ = (
        "bad",
        "command",
        "duration",
        "end",
        "found",
        "host",
        "missing",
        "output_from",
        "reason",
        "returncode",
        "start",
        "usage",
    )

    def __init__(
        self,
        start: str,
        end: str,
        duration: float,
        host: str,
        command: str,
        returncode: int,
        output_from: int,
        usage: object,
    ) -> None:
        self.start, self.end, self.duration, self.host = start, end, duration, host
        self.command, self.returncode = command, returncode
        self.output_from = output_from  # where this run's output starts in the log
        self.usage = usage  # the command's resource use (os.wait4)
        self.found: list[dict[str, object]] = []  # the products as found
        self.missing: list[str] = []
        self.bad: list[str] = []  # products that do not count, with why
        self.reason = ""  # why the step failed ("" if it did not)


def run_step(step: StepRun, threads: int = 1) -> dict[str, object]:
    """Run ``step`` with ``threads`` cores (OMP_NUM_THREADS); return the completion record, or
    raise StepFailed."""
    command = step.command
    batch = str(step.info.get("batch", ""))
    if step.state_dir and os.path.exists(StateLayout(step.state_dir).stop_flag(batch)):
        raise StepFailed(
            f"{step.step} of AB {step.ab} not started: the night is stopping (abflow stop; "
            "the next run starts it)"
        )
    name = step.job.name
    try:
        _prepare_workdir(step)
        marks = mark_attempt((p for p, _ in step.products), name, step.roots, step.ab)
    except OSError as exc:  # outside the configured directories, a full disk, ...
        _note_failure(step, f"not started: {exc}")
        raise StepFailed(f"{step.step} of AB {step.ab} not started: {exc}") from None
    try:
        outcome = _run_command(step, command, threads, _marks_to_compare(step, marks))
    except OSError as exc:  # its log cannot be written (a full disk), ...
        _note_failure(step, f"failed: {exc}")
        raise StepFailed(f"{step.step} of AB {step.ab} failed: {exc}") from None
    finally:
        unmark(marks, name)
    if step.step == StepName.PROCESS_AB_DET and marks:
        step.info["attempt_marks"] = marks  # what its join compares with
    record = _record(step, outcome, threads)
    if record["status"] != "SUCCESSFUL":
        _note_failure(step, str(record["reason"]), record)
        excerpt = "\n".join(f"    {inert(line, line=True)}" for line in record["log_tail"])  # type: ignore[union-attr]
        raise StepFailed(
            f"{step.step} of AB {step.ab} FAILED: {record['reason']}\n  log: {step.log_path}\n"
            f"  last lines:\n{excerpt}"
        )
    return _succeeded(step, record, outcome)


def _succeeded(step: StepRun, record: dict[str, object], outcome: _Outcome) -> dict[str, object]:
    """Write the completion record (the step failed if it cannot be written: a full disk),
    remove an earlier failure note, write the benchmark (best effort)."""
    try:
        atomic_write_json(step.record_path, record)
    except OSError as exc:
        why = f"its command succeeded, but its completion record {step.record_path} "
        _note_failure(step, why + f"cannot be written: {exc.strerror or exc}")
        raise StepFailed(
            f"{step.step} of AB {step.ab} failed: {why}cannot be written: {exc}"
        ) from None
    remove_file(step.failed_path)
    if step.benchmark_path:
        with contextlib.suppress(OSError):
            write_benchmark(step.benchmark_path, outcome)
    return record


def _note_failure(step: StepRun, reason: str, note: dict[str, object] | None = None) -> None:
    """The failure note of a step (``note``: its record, else the reason alone), inside the
    directories it may write in; best effort (the disk may be full)."""
    note = note or {
        "ab": step.ab,
        "step": step.step,
        "status": "FAILED",
        "reason": reason,
        "end": now_iso(),
        "log": step.log_path,
        "log_tail": [],
        **step.info,
    }
    try:
        if step.roots:
            check_inside(step.failed_path, step.roots)
        atomic_write_json(step.failed_path, note)
    except OSError:
        pass


BENCHMARK_HEADER = (
    "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time"
)


def write_benchmark(path: str, outcome: _Outcome) -> None:
    """The job's benchmark, in Snakemake's format: its command's wall time, peak memory of its
    largest process (MiB), I/O (MiB) and CPU time (s)."""
    use, seconds = outcome.usage, outcome.duration
    h, rem = divmod(int(seconds), 3600)
    values = [
        f"{seconds:.4f}",
        f"{h}:{rem // 60:02d}:{rem % 60:02d}",
        f"{use.ru_maxrss / 1024:.2f}",
        "-",
        "-",
        "-",
        f"{use.ru_inblock * 512 / 2**20:.2f}",
        f"{use.ru_oublock * 512 / 2**20:.2f}",
        "-",
        f"{use.ru_utime + use.ru_stime:.2f}",
    ]  # type: ignore[attr-defined]
    atomic_write_text(path, BENCHMARK_HEADER + "\n" + "\t".join(values) + "\n")


def _marks_to_compare(step: StepRun, own: dict[str, int]) -> dict[str, int] | None:
    """The marks this attempt's products are compared with (None: products are not checked):
    a join's are its detector jobs' earliest, which wrote what it installs."""
    if not step.check_products:
        return None
    if step.step != StepName.MEF_JOIN or not step.state_dir:
        return own
    layout = StateLayout(step.state_dir)
    directory = os.path.dirname(layout.record(JobId(StepName.PROCESS_AB_DET, step.ab, 1)))
    dets = [r.get("attempt_marks") for _p, r in iter_json_objects(directory)]
    return earliest(own, *(m for m in dets if isinstance(m, dict)))


def _prepare_workdir(step: StepRun) -> None:
    """A fresh working directory with the step's input files, and the log's directory; each
    inside the directories the step may write in (after resolving symbolic links)."""
    if step.roots:
        for path in (step.workdir, step.log_path, step.record_path, step.failed_path):
            check_inside(path, step.roots)
    remove_tree(step.workdir)
    os.makedirs(step.workdir)
    for name, content in step.files.items():
        atomic_write_json(os.path.join(step.workdir, name), content, durable=False)
    os.makedirs(os.path.dirname(step.log_path) or ".", exist_ok=True)


def _run_command(
    step: StepRun, command: str, threads: int, marks: dict[str, int] | None
) -> _Outcome:
    """Run the command (marked as running) with its output in the log; how it ended, its
    products judged against the attempt's ``marks`` (None: not checked)."""
    env = {**os.environ, **{k: str(v) for k, v in step.env.items()}}
    env["OMP_NUM_THREADS"] = str(threads)
    start, t0, host = now_iso(), time.monotonic(), socket.gethostname()
    marker = RunningMarker(step.state_dir, step.job)
    with open(open_append(step.log_path), "a", encoding="utf-8") as log, marker:
        log.write(
            f"# abflow {step.step} {step.ab}\n# host {host}\n# start {start}\n"
            f"# workdir {step.workdir}\n# command {command}\n"
        )
        log.flush()
        output_from = log.tell()
        pid = shell.start(command, step.workdir, env, log.fileno())
        marker.note_command(pid)  # (written once the command runs: it starts sooner)
        try:
            returncode, usage, ended = shell.wait(pid)
        except BaseException:
            log.write(f"# {now_iso()} interrupted: the command was ended\n")
            raise
        if ended:  # the run was interrupted: not a failure of the AB
            log.write(f"# {now_iso()} interrupted: the command was ended\n")
            raise StepInterrupted(
                f"{step.step} of AB {step.ab}: interrupted, the command "
                "was ended (the next run starts it again)"
            )
        end, duration = now_iso(), round(time.monotonic() - t0, 3)
        outcome = _Outcome(start, end, duration, host, command, returncode, output_from, usage)
        listed = step.products if step.step != StepName.PROCESS_AB_DET else []
        _judge(outcome, listed, marks)
        log.write(f"# end {end} ({duration} s) exit {returncode}")
        log.write(f" FAILED: {outcome.reason}\n" if outcome.reason else " SUCCESSFUL\n")
    return outcome


def _judge(
    outcome: _Outcome, products: Sequence[tuple[str, str]], marks: dict[str, int] | None
) -> None:
    """Why the step failed, if it did: its exit, or (``marks`` given: products are checked)
    products missing or not written by this attempt (abflow.job.products)."""
    outcome.found, outcome.missing, outcome.bad = check_products(products, marks or {})
    if marks is None:
        outcome.bad = []
    if outcome.returncode != 0:
        outcome.reason = shell.describe_exit(outcome.returncode)
    elif marks is None:
        return
    elif outcome.missing:
        missing = outcome.missing
        outcome.reason = (
            f"command exited 0 but {len(missing)} expected product(s) are missing: "
            + ", ".join(missing[:5])
            + (" ..." if len(missing) > 5 else "")
        )
    elif outcome.bad:
        bad = outcome.bad
        outcome.reason = (
            f"command exited 0 but {len(bad)} product(s) do not count: "
            + ", ".join(bad[:5])
            + (" ..." if len(bad) > 5 else "")
        )


def _record(step: StepRun, outcome: _Outcome, threads: int) -> dict[str, object]:
    """The step's completion record (or failure note)."""
    products, missing, reason = outcome.found, outcome.missing, outcome.reason
    record: dict[str, object] = {
        "ab": step.ab,
        "step": step.step,
        "status": "FAILED" if reason else "SUCCESSFUL",
        "start": outcome.start,
        "end": outcome.end,
        "duration_s": outcome.duration,
        "host": outcome.host,
        "command": outcome.command,
        "threads": threads,
        "exit_code": outcome.returncode,
        "workdir": step.workdir,
        "log": step.log_path,
        "products": products,
        "missing_products": missing,
        **step.info,
    }
    if outcome.bad:
        record["bad_products"] = outcome.bad
    if pool_cluster():
        record["cluster"] = pool_cluster()
    results = _read_results(os.path.join(step.workdir, RESULTS_FILE))
    if results is not None:
        record["results"] = results
    if step.step == StepName.PROCESS_QC:
        qc1 = site_qc1(step.workdir, step.log_path, outcome.output_from)
        if qc1:
            record["qc1"] = qc1
    if reason:
        record["reason"] = reason
        record["log_tail"] = tail(step.log_path)
    return record


PAF_QC = r"^\s*(QC\.[A-Za-z0-9_.-]+)\s+(.*?)\s*(?:;.*)?$"
OUTPUT_QC1 = r"^\s*QC1\s+([A-Za-z0-9_.:-]+)\s*(?:=\s*)?(\S.*?)\s*$"


def site_qc1(workdir: str, log_path: str, offset: int = 0) -> dict[str, str]:
    """The QC1 parameters a site's processQC handed over, by name (see README: QC1 numbers).

    Two ways, both read: the ESO PAF files (``*.paf``) the command leaves in its working
    directory, each ``QC.<NAME> <value>`` line; and the command's output (its log from
    ``offset``), each line ``QC1 <NAME> <value>`` (or ``QC1 <NAME> = <value>``). Values are kept
    as written (quotes removed); a name given twice keeps its last value.
    """
    found: dict[str, str] = {}
    try:
        names = sorted(os.listdir(workdir))
    except OSError:
        names = []
    for name in names:
        if name.endswith(".paf") and not name.startswith("."):
            found.update(_matches(os.path.join(workdir, name), PAF_QC))
    found.update(_matches(log_path, OUTPUT_QC1, offset))
    return found


def _matches(path: str, pattern: str, offset: int = 0) -> dict[str, str]:
    import re

    compiled = re.compile(pattern)
    out: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            fh.seek(offset)
            for line in fh:
                match = compiled.match(line)
                if match:
                    out[match.group(1)] = match.group(2).strip('"')
    except OSError:
        pass
    return out


def _read_results(path: str) -> object | None:
    if not os.path.exists(path):
        return None
    import json  # only where a command wrote results

    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return {"error": f"unreadable {RESULTS_FILE}: {exc}"}
