"""Run one step of one AB (a shell command) and write its completion record.

A job (abflow.job) runs its AB's command here: in the step's own, freshly emptied working
directory, with the command's output appended to the job log; on success the completion record
is written atomically. A failed step writes no record (so Snakemake treats the job as failed
and its children do not start) but a failure note beside the records, for the summary and the
status page; a later success removes the note.

The command sees the ``$DFO_*`` directories and ``$ABFLOW_AB``, ``$ABFLOW_WORKDIR``,
``$ABFLOW_INPUTS`` (where the AB's virtual calibrations are), ``$ABFLOW_RESULTS`` (a JSON file it
may write, copied into the record under ``results``) and, for a detector job, ``$ABFLOW_DET``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from abflow.ab import AB
from abflow.commands import fill
from abflow.config import Settings
from abflow.fsutil import atomic_write_json, read_json_object
from abflow.layout import JobId
from abflow.layout import Step as StepName
from abflow.runstate import note_command, running_marker, stop_requested

LOG_TAIL_LINES = 20
RESULTS_FILE = "abflow_results.json"
STEPS = ("process_ab", "process_qc", "process_ab_det", "mef_join")


class StepFailed(RuntimeError):
    """The step's command failed or did not leave its expected products."""


@dataclass
class Step:
    """What to run for one AB step and where to put the results."""

    ab: str
    step: str
    command: str  # a command template (abflow.commands): {threads} is filled at run time
    workdir: str
    log_path: str
    record_path: str
    failed_path: str
    env: Mapping[str, str] = field(default_factory=dict)
    products: Sequence[tuple[str, str]] = ()
    check_products: bool = True
    info: Mapping[str, object] = field(default_factory=dict)
    files: Mapping[str, object] = field(default_factory=dict)
    values: Mapping[str, object] = field(default_factory=dict)
    state_dir: str = ""

    @property
    def job(self) -> JobId:
        """The job this step is."""
        det = self.values.get("det")
        return JobId(StepName(self.step), self.ab, int(det) if det is not None else None)  # type: ignore[arg-type]


def ab_step(
    settings: Settings,
    ab: AB,
    job: JobId,
    parents: Sequence[str] = (),
    virtual: Mapping[str, str] | None = None,
    record: str = "",
    log: str = "",
    config: str = "",
) -> Step:
    """The step ``job`` of ``ab``: its command template, paths and environment.

    ``parents`` are the ABs it takes calibrations from and ``virtual`` maps each of its
    ``MCALIB VIRTUAL`` paths to the real product (both from the Night); ``record`` and ``log``
    the paths its rule declares (default: the layout's); ``config`` the run configuration file
    (the ``{config}`` placeholder).
    """
    if job.step.value not in STEPS:
        raise ValueError(f"unknown step {job.step!r}")
    layout = settings.layout
    workdir = layout.work(job)
    env = dict(settings.variables)
    env.update(
        ABFLOW_AB=ab.name,
        ABFLOW_WORKDIR=workdir,
        ABFLOW_INPUTS=os.path.join(workdir, "abflow_inputs.json"),
        ABFLOW_RESULTS=os.path.join(workdir, RESULTS_FILE),
    )
    makes_products = job.step in (StepName.PROCESS_AB, StepName.MEF_JOIN) and ab.runs_recipe
    date = ab.date or settings.date
    values: dict[str, object] = {
        "ab": ab.name, "ab_file": ab.path, "date": date, "mode": settings.mode, "config": config,
    }  # fmt: skip
    if job.det is not None:
        values["det"] = job.det
        env["ABFLOW_DET"] = str(job.det)
    info = {"batch": settings.batch_id, "date": date, "mode": settings.mode,
            "recipe": ab.recipe, "raw_type": ab.raw_type, "parents": list(parents),
            **({"det": job.det} if job.det is not None else {})}  # fmt: skip
    return Step(
        ab=ab.name, step=job.step.value, command=settings.commands[job.step.value],
        values=values, workdir=workdir, log_path=log or layout.log(job),
        record_path=record or layout.record(job), failed_path=layout.failure(job), env=env,
        products=[(f.path, f.tag) for f in ab.products] if makes_products else [],
        check_products=makes_products and settings.check_products, info=info,
        files={"abflow_inputs.json": {"ab": ab.name, "virtual": dict(virtual or {})}},
        state_dir=settings.state_dir,
    )  # fmt: skip


def now_iso() -> str:
    """The current time, local, ISO 8601 with milliseconds and UTC offset."""
    return _dt.datetime.now().astimezone().isoformat(timespec="milliseconds")


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
    return data.splitlines()[-lines:]


@dataclass
class _Outcome:
    """How a step's command ended."""

    start: str
    end: str
    duration: float
    host: str
    command: str
    returncode: int
    output_from: int  # where this run's output starts in the log


def run_step(step: Step, threads: int = 1) -> dict[str, object]:
    """Run ``step`` with ``threads`` cores; return the completion record, or raise StepFailed.

    The command template is filled with ``step.values`` and ``{threads}`` (shell-quoted), and
    OMP_NUM_THREADS is set to ``threads``.
    """
    command = fill(step.command, {**step.values, "threads": threads})
    if step.state_dir and stop_requested(step.state_dir):
        raise StepFailed(
            f"{step.step} of AB {step.ab} not started: the night is stopping (abflow stop; "
            "the next run starts it)"
        )
    _prepare_workdir(step)
    outcome = _run_command(step, command, threads)
    record = _record(step, outcome, threads)
    if record["status"] != "SUCCESSFUL":
        atomic_write_json(step.failed_path, record)
        excerpt = "\n".join(f"    {line}" for line in record["log_tail"])  # type: ignore[union-attr]
        raise StepFailed(
            f"{step.step} of AB {step.ab} FAILED: {record['reason']}\n  log: {step.log_path}\n"
            f"  last lines:\n{excerpt}"
        )
    atomic_write_json(step.record_path, record)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(step.failed_path)
    return record


def _prepare_workdir(step: Step) -> None:
    """A fresh working directory with the step's input files, and the log's directory."""
    if os.path.isdir(step.workdir):
        shutil.rmtree(step.workdir)
    os.makedirs(step.workdir)
    for name, content in step.files.items():
        atomic_write_json(os.path.join(step.workdir, name), content)
    os.makedirs(os.path.dirname(step.log_path) or ".", exist_ok=True)


def _run_command(step: Step, command: str, threads: int) -> _Outcome:
    """Run the command (marked as running) with its output in the log; how it ended."""
    env = {**os.environ, **{k: str(v) for k, v in step.env.items()}}
    env["OMP_NUM_THREADS"] = str(threads)
    start, t0, host = now_iso(), time.monotonic(), socket.gethostname()
    marking = (
        running_marker(step.state_dir, step.job) if step.state_dir else contextlib.nullcontext({})
    )
    with marking as mark, open(step.log_path, "a", encoding="utf-8") as log:
        log.write(
            f"# abflow {step.step} {step.ab}\n# host {host}\n# start {start}\n"
            f"# workdir {step.workdir}\n# command {command}\n"
        )
        log.flush()
        output_from = log.tell()
        returncode = _wait_for(_start(command, step.workdir, env, log), mark, log)
        end, duration = now_iso(), round(time.monotonic() - t0, 3)
        reason = _failure_reason(step, returncode)
        log.write(f"# end {end} ({duration} s) exit {returncode}")
        log.write(f" FAILED: {reason}\n" if reason else " SUCCESSFUL\n")
    return _Outcome(start, end, duration, host, command, returncode, output_from)


def _start(command: str, cwd: str, env: Mapping[str, str], log: IO[str]) -> subprocess.Popen:
    """The command in its own process group: a crashed run's successor can end it with all
    its children, and the job ends them when Snakemake or abflow stop ends the job."""
    return subprocess.Popen(
        command, shell=True, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def _wait_for(proc: subprocess.Popen, mark: dict[str, Any], log: IO[str]) -> int:
    """The command's exit status; if the job is interrupted, the command is ended first."""
    if mark:
        note_command(mark, proc.pid)
    try:
        return proc.wait()
    except BaseException:
        end_process_group(proc)
        log.write(f"# {now_iso()} interrupted: the command was ended\n")
        raise


def _failure_reason(step: Step, returncode: int) -> str:
    """Why the step failed ("" if it did not)."""
    if returncode != 0:
        return _describe_exit(returncode)
    _found, missing = _check_products(step.products)
    if step.check_products and missing:
        return f"command exited 0 but {len(missing)} expected product(s) are missing: " + (
            ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        )
    return ""


def _record(step: Step, outcome: _Outcome, threads: int) -> dict[str, object]:
    """The step's completion record (or failure note)."""
    products, missing = _check_products(step.products)
    reason = _failure_reason(step, outcome.returncode)
    record: dict[str, object] = {
        "ab": step.ab, "step": step.step, "status": "FAILED" if reason else "SUCCESSFUL",
        "start": outcome.start, "end": outcome.end, "duration_s": outcome.duration,
        "host": outcome.host, "command": outcome.command, "threads": threads,
        "exit_code": outcome.returncode, "workdir": step.workdir, "log": step.log_path,
        "products": products, "missing_products": missing, **step.info,
    }  # fmt: skip
    results = _read_results(os.path.join(step.workdir, RESULTS_FILE))
    if results is not None:
        record["results"] = results
    if step.step == "process_qc":
        qc1 = site_qc1(step.workdir, step.log_path, outcome.output_from)
        if qc1:
            record["qc1"] = qc1
    if reason:
        record["reason"] = reason
        record["log_tail"] = tail(step.log_path)
    return record


PAF_QC_RE = re.compile(r"^\s*(QC\.[A-Za-z0-9_.-]+)\s+(.*?)\s*(?:;.*)?$")
OUTPUT_QC1_RE = re.compile(r"^\s*QC1\s+([A-Za-z0-9_.:-]+)\s*(?:=\s*)?(\S.*?)\s*$")


def site_qc1(workdir: str, log_path: str, offset: int = 0) -> dict[str, str]:
    """The QC1 parameters a site's processQC handed over, by name (see README: QC1 numbers).

    Two ways, both read: the ESO PAF files (``*.paf``) the command leaves in its working
    directory, each ``QC.<NAME> <value>`` line; and the command's output (its log from
    ``offset``), each line ``QC1 <NAME> <value>`` (or ``QC1 <NAME> = <value>``). Values are kept
    as written (quotes removed); a name given twice keeps its last value.
    """
    found: dict[str, str] = {}
    for paf in sorted(glob.glob(os.path.join(glob.escape(workdir), "*.paf"))):
        found.update(_matches(paf, PAF_QC_RE))
    found.update(_matches(log_path, OUTPUT_QC1_RE, offset))
    return found


def _matches(path: str, pattern: re.Pattern[str], offset: int = 0) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            fh.seek(offset)
            for line in fh:
                match = pattern.match(line)
                if match:
                    out[match.group(1)] = match.group(2).strip('"')
    except OSError:
        pass
    return out


def end_process_group(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """End ``proc`` and every process of its group: SIGTERM, then SIGKILL after ``grace`` s."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _read_results(path: str) -> object | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return {"error": f"unreadable {RESULTS_FILE}: {exc}"}


def _describe_exit(code: int) -> str:
    if code < 0:
        return f"command killed by signal {-code}"
    if code > 128:
        return f"command exited {code} (killed by signal {code - 128}?)"
    return f"command exited {code}"


def _check_products(
    expected: Sequence[tuple[str, str]],
) -> tuple[list[dict[str, object]], list[str]]:
    found: list[dict[str, object]] = []
    missing: list[str] = []
    for path, tag in expected:
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            missing.append(path)
            continue
        found.append({"path": path, "tag": tag, "bytes": size})
    return found, missing


def read_record(path: str | os.PathLike[str]) -> dict[str, object] | None:
    """A completion record, or None if absent or unreadable (a torn record is not done)."""
    return read_json_object(path)


def ensure_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and parents) if needed and return it as a Path."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    return p
