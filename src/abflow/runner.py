"""Run one step of one AB (a shell command) and write its completion record.

Used by the workflow's scripts: each AB job runs its command in the AB's own, freshly emptied
working directory, appends the command's output to the job log, and on success writes the
completion record atomically. A failed step writes no record (so Snakemake treats the job as
failed and its children do not start) but a failure note beside the records, for the summary and
the status page; a later success removes the note.
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

from abflow.ab import AB
from abflow.commands import fill
from abflow.config import Settings
from abflow.fsutil import atomic_write_json, read_json_object
from abflow.runstate import job_name, note_command, running_marker, stop_requested

LOG_TAIL_LINES = 20


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


STEPS = ("process_ab", "process_qc", "process_ab_det", "mef_join")
RESULTS_FILE = "abflow_results.json"


def ab_step(
    settings: Settings,
    ab: AB,
    step: str = "process_ab",
    parents: Sequence[str] = (),
    virtual: Mapping[str, str] | None = None,
    det: int | None = None,
) -> Step:
    """One step of ``ab``: process_ab, process_qc, or for a multi-detector AB process_ab_det
    (detector ``det``) and mef_join. Returns command template, paths and environment.

    ``parents`` are the ABs it takes calibrations from and ``virtual`` maps each of its
    ``MCALIB VIRTUAL`` paths to the real product (both from the Night). The command sees the
    ``$DFO_*`` directories, ``$ABFLOW_CONFIG`` (the run's configuration), ``$ABFLOW_WORKDIR``,
    ``$ABFLOW_INPUTS`` (where the virtual calibrations are) and ``$ABFLOW_RESULTS``: a JSON
    file the command may write, copied into the completion record under ``results``.
    """
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}")
    if (step == "process_ab_det") != (det is not None):
        raise ValueError("a detector number is given exactly for process_ab_det")
    names = {"ab": ab.name, "det": det}
    workdir = settings.workdir(ab.name, step, det)
    env = dict(settings.variables)
    env.update(
        {
            "ABFLOW_CONFIG": settings.to_config_json(),
            "ABFLOW_AB": ab.name,
            "ABFLOW_WORKDIR": workdir,
            "ABFLOW_INPUTS": os.path.join(workdir, "abflow_inputs.json"),
            "ABFLOW_RESULTS": os.path.join(workdir, RESULTS_FILE),
        }
    )
    makes_products = step in ("process_ab", "mef_join") and ab.runs_recipe
    values: dict[str, object] = {
        "ab": ab.name,
        "ab_file": ab.path,
        "date": ab.date or settings.date,
        "mode": settings.mode,
    }
    if det is not None:
        values["det"] = det
        env["ABFLOW_DET"] = str(det)
    return Step(
        ab=ab.name,
        step=step,
        command=settings.commands[step],
        values=values,
        workdir=workdir,
        log_path=settings.state_pattern("logs", step).format(**names),
        record_path=settings.record_path(ab.name, step, det),
        failed_path=settings.state_pattern("failed", step).format(**names),
        env=env,
        products=[(f.path, f.tag) for f in ab.products] if makes_products else [],
        check_products=makes_products and settings.check_products,
        info={
            "batch": settings.batch_id,
            "date": ab.date or settings.date,
            "mode": settings.mode,
            "recipe": ab.recipe,
            "raw_type": ab.raw_type,
            "parents": list(parents),
            **({"det": det} if det is not None else {}),
        },
        files={"abflow_inputs.json": {"ab": ab.name, "virtual": dict(virtual or {})}},
        state_dir=settings.state_dir,
    )


def now_iso() -> str:
    """The current time, local, ISO 8601 with milliseconds and UTC offset."""
    return _dt.datetime.now().astimezone().isoformat(timespec="milliseconds")


def _prepare_workdir(workdir: str) -> None:
    if os.path.isdir(workdir):
        shutil.rmtree(workdir)
    os.makedirs(workdir)


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
    _prepare_workdir(step.workdir)
    for name, content in step.files.items():
        atomic_write_json(os.path.join(step.workdir, name), content)
    os.makedirs(os.path.dirname(step.log_path) or ".", exist_ok=True)
    env = dict(os.environ)
    env.update({k: str(v) for k, v in step.env.items()})
    env["OMP_NUM_THREADS"] = str(threads)
    start = now_iso()
    t0 = time.monotonic()
    host = socket.gethostname()
    marker = job_name(step.step, step.ab, step.values.get("det"))  # type: ignore[arg-type]
    with (
        (
            running_marker(step.state_dir, marker) if step.state_dir else contextlib.nullcontext({})
        ) as mark,
        open(step.log_path, "a", encoding="utf-8") as log,
    ):
        log.write(
            f"# abflow {step.step} {step.ab}\n# host {host}\n# start {start}\n"
            f"# workdir {step.workdir}\n# command {command}\n"
        )
        log.flush()
        output_from = log.tell()  # where this run's command output starts in the log
        # its own process group: a crashed run's successor can end the command with all its
        # children, and this job ends them when Snakemake or abflow stop ends it
        proc = subprocess.Popen(
            command,
            shell=True,
            cwd=step.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if mark:
            note_command(mark, proc.pid)
        try:
            proc.wait()
        except BaseException:
            end_process_group(proc)
            log.write(f"# {now_iso()} interrupted: the command was ended\n")
            raise
        end = now_iso()
        duration = round(time.monotonic() - t0, 3)
        products, missing = _check_products(step.products)
        ok = proc.returncode == 0 and not (step.check_products and missing)
        if proc.returncode != 0:
            reason = _describe_exit(proc.returncode)
        elif not ok:
            reason = f"command exited 0 but {len(missing)} expected product(s) are missing: " + (
                ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            )
        else:
            reason = ""
        log.write(f"# end {end} ({duration} s) exit {proc.returncode}")
        log.write(f" FAILED: {reason}\n" if not ok else " SUCCESSFUL\n")
    results = _read_results(os.path.join(step.workdir, RESULTS_FILE))
    record: dict[str, object] = {
        "ab": step.ab,
        "step": step.step,
        "status": "SUCCESSFUL" if ok else "FAILED",
        "start": start,
        "end": end,
        "duration_s": duration,
        "host": host,
        "command": command,
        "threads": threads,
        "exit_code": proc.returncode,
        "workdir": step.workdir,
        "log": step.log_path,
        "products": products,
        "missing_products": missing,
        **step.info,
    }
    if results is not None:
        record["results"] = results
    if step.step == "process_qc":
        qc1 = site_qc1(step.workdir, step.log_path, output_from)
        if qc1:
            record["qc1"] = qc1
    if not ok:
        record["reason"] = reason
        record["log_tail"] = tail(step.log_path)
        atomic_write_json(step.failed_path, record)
        excerpt = "\n".join(f"    {line}" for line in record["log_tail"])
        raise StepFailed(
            f"{step.step} of AB {step.ab} FAILED: {reason}\n  log: {step.log_path}\n"
            f"  last lines:\n{excerpt}"
        )
    atomic_write_json(step.record_path, record)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(step.failed_path)
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
        try:
            with open(paf, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    match = PAF_QC_RE.match(line)
                    if match:
                        found[match.group(1)] = match.group(2).strip('"')
        except OSError:
            continue
    try:
        with open(log_path, encoding="utf-8", errors="replace") as fh:
            fh.seek(offset)
            for line in fh:
                match = OUTPUT_QC1_RE.match(line)
                if match:
                    found[match.group(1)] = match.group(2).strip('"')
    except OSError:
        pass
    return found


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
