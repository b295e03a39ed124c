"""abflow createjob: the DFOS job files, written from the Night (docs/dfos.md §7, §11, §16).

For a mode and date this writes, in ``dfo.job_dir``:

* ``execAB_<MODE>_<DATE>`` in the format of the DRS_TYPE: CPL and INT ``processAB -a <AB>``
  lines in cascade order, CON ``<id> || processAB || -a <AB> -u <user> ||
  <ids it waits for>`` (the format vultur_exec_cascade read);
* ``execQC_<MODE>_<DATE>``: SER ``processQC -a <AB>`` lines, PAR the batch-queue line format,
  IMPLICIT no calls;
* ``rawDown_CALIB_<DATE>`` / ``mcalDown_CALIB_<DATE>`` when files must be downloaded (CALIB
  only): one download call per file, in groups of at most ``limits.downloads`` run in the
  background and closed by a ``wait`` line (one at a time for OPSHUB-style ``limits.downloads:
  1``);
* the night's entries in ``JOBS_NIGHT`` (``JOBS_AUTO`` with ``-F``, the file ``-r`` names),
  replacing earlier entries for the same mode and date and leaving every other line untouched.
  The execAB and execQC entries run abflow's Snakemake workflow (instead of
  vultur_exec_cascade);
* a ``cal_Queued``/``sci_Queued`` line appended to ``DFO_STATUS`` in ``dfo.mon_dir``.

With ``-a AB`` only ``execAB_<MODE>_<DATE>_sub`` and ``execQC_<MODE>_<DATE>_sub`` are written,
with that AB and the ABs depending on it (and their waits), and nothing else is touched; the
command that runs that subcascade is printed.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from abflow import __version__
from abflow.model.commands import fill
from abflow.model.config import ROOT, Settings
from abflow.model.night import Night
from abflow.state.fsutil import append_line, atomic_write_text

PROFILE_OF = {"CPL": "local", "CON": "condor", "INT": "int"}
BEGIN = "# >>> abflow createjob {mode} {date}"
END = "# <<< abflow createjob {mode} {date}"


class CreateJobError(RuntimeError):
    """createjob cannot write the job (the message says why and what to do)."""


@dataclass
class JobRequest:
    """What ``abflow createjob`` was asked to write."""

    auto: bool = False  # -F: JOBS_AUTO (autoDaily), else JOBS_NIGHT
    subcascade: str = ""  # -a AB
    job_file: str = ""  # -r JOB_FILE: the job file to write the entries into
    first_id: int = 1
    user: str = field(default_factory=lambda: os.environ.get("USER") or "dfos")
    configfile: str = ""  # the configuration the workflow call uses
    now: Callable[[], str] = lambda: time.strftime("%Y-%m-%dT%H:%M:%S")


@dataclass
class JobFiles:
    """The written files (path -> text), the JOBS file and its entry lines."""

    files: dict[str, str]
    jobs_file: str
    entry: list[str]


def _abs(night: Night, request: JobRequest) -> list[str]:
    """The ABs of the job, in cascade (run) order."""
    names = night.descendants(request.subcascade) if request.subcascade else night.names
    return sorted(names, key=lambda name: night[name].run_order)


def exec_ab_lines(night: Night, request: JobRequest) -> list[str]:
    """The lines of execAB_<MODE>_<DATE>, in the DRS_TYPE's format."""
    drs = night.settings.drs_type
    names = _abs(night, request)
    if drs == "CPL":
        return [f"processAB -a {ab}" for ab in names]
    if drs == "INT":  # serial like CPL; the recipe fans out itself (§16.4)
        return [f"processAB -a {ab}" for ab in names]
    ids = {ab: request.first_id + i for i, ab in enumerate(names)}
    lines = []
    for ab in names:
        waits = " ".join(str(ids[p]) for p in night[ab].parents if p in ids)
        lines.append(f"{ids[ab]} || processAB || -a {ab} -u {request.user} || {waits}".rstrip())
    return lines


def exec_qc_lines(night: Night, request: JobRequest) -> list[str]:
    """The lines of execQC_<MODE>_<DATE>, in the QC mode's format."""
    mode = night.settings.qc_mode
    names = [ab for ab in _abs(night, request) if night[ab].ab.runs_recipe]
    if mode == "IMPLICIT":
        return ["# QC_MODE IMPLICIT: the AB calls run the QC themselves, no QC calls"]
    if mode == "SER":
        return [f"processQC -a {ab}" for ab in names]
    group = max(night.settings.limits["qc"], 1)  # PAR: N at a time, then wait
    lines: list[str] = []
    for i in range(0, len(names), group):
        lines += [f"processQC -a {ab} &" for ab in names[i : i + group]]
        lines.append("wait")
    return lines


def download_lines(night: Night, request: JobRequest, kind: str) -> list[str]:
    """rawDown/mcalDown lines: one download call per missing file, throttled (CALIB only)."""
    s = night.settings
    if s.mode != "CALIB":
        return []
    wanted: dict[str, None] = {}
    for ab in _abs(night, request):
        inputs = night[ab].raw_inputs if kind == "raw" else night[ab].cal_inputs
        for path in inputs:
            if not os.path.exists(path):
                wanted[path] = None
    calls = []
    directories: dict[str, None] = {}
    for path in wanted:
        command = fill(
            s.commands["download"],
            {"file": os.path.basename(path), "dest": path, "date": s.date, "mode": s.mode},
        )
        directory = shlex.quote(os.path.dirname(path))
        directories[directory] = None
        calls.append(f"(cd {directory} && {command})")
    lines = [f"mkdir -p {d}" for d in directories]
    group = s.limits["downloads"]
    if group <= 1:
        return lines + calls
    for i in range(0, len(calls), group):
        lines += [f"{call} &" for call in calls[i : i + group]]
        lines.append("wait")
    return lines


def snakemake_program() -> list[str]:
    """abflow's own snakemake, by absolute path (a job file runs with cron's or the batch
    system's PATH, where a bare ``snakemake`` is not found or is another one)."""
    beside = os.path.join(os.path.dirname(sys.executable), "snakemake")
    return [beside] if os.access(beside, os.X_OK) else [sys.executable, "-m", "snakemake"]


def abflow_program() -> list[str]:
    """abflow's own abflow command, by absolute path (see snakemake_program)."""
    beside = os.path.join(os.path.dirname(sys.executable), "abflow")
    return [beside] if os.access(beside, os.X_OK) else [sys.executable, "-m", "abflow"]


def snakemake_call(night: Night, request: JobRequest, qc_mode: str) -> str:
    """The workflow call that replaces vultur_exec_cascade for this night. DRS_TYPE CON hands
    the night to HTCondor and waits for it (``abflow submit --wait``, as ``vultur_exec_cascade
    --wait`` did): ending the job file's shell does not end the night, and a controller that
    dies is started again by HTCondor."""
    s = night.settings
    config = [f"mode={s.mode}", f"date={s.date}", f"drs_type={s.drs_type}", f"qc_mode={qc_mode}"]
    if request.subcascade:
        config.append(f"subcascade={request.subcascade}")
    if s.drs_type == "CON":
        words = [
            *abflow_program(), "submit", "--wait",
            "--profile", os.path.join(ROOT, "profiles", PROFILE_OF[s.drs_type]),
            "--configfile", request.configfile, "--config", *config,
        ]  # fmt: skip
        return " ".join(shlex.quote(w) for w in words)
    words = [
        *snakemake_program(),
        "-s", os.path.join(ROOT, "Snakefile"),
        "--directory", s.state_dir,
        "--profile", os.path.join(ROOT, "profiles", PROFILE_OF[s.drs_type]),
        "--configfile", request.configfile,
        "--config", *config,
    ]  # fmt: skip
    return " ".join(shlex.quote(w) for w in words)


def _status_file(settings: Settings) -> str:
    return os.path.join(settings.dfo["mon_dir"], "DFO_STATUS")


def jobs_entry(
    night: Night, request: JobRequest, paths: dict[str, str], downloads: Sequence[str]
) -> list[str]:
    """The night's lines in JOBS_NIGHT/JOBS_AUTO, in DFOS order."""
    s = night.settings
    flag = "cal" if s.mode == "CALIB" else "sci"
    values = {"date": s.date, "mode": s.mode}
    monitor = fill(s.commands["monitor"], values)
    how = f"-m {s.mode} -d {s.date}" + (" -F" if request.auto else "")
    how += f" -r {request.job_file}" if request.job_file else ""
    lines = [BEGIN.format(mode=s.mode, date=s.date) + f" (abflow {__version__}: createjob {how})"]
    if request.auto:
        lines.append(fill(s.commands["dfo_monitor"], values))
    lines += [
        f"{monitor} -r &",
        *[shlex.quote(paths[name]) for name in downloads],
        # a failed call ends the block with its status (as `bash -e` would): the QC flag below
        # is written only after the processing (and its QC) succeeded
        f"{snakemake_call(night, request, 'IMPLICIT')} || exit $?  # execAB: {paths['execAB']}",
    ]
    if s.drs_type == "CON":
        lines.append(f'echo "vultur_exec_cascade for {s.date} done."')
    lines.append("export CALL_ENABLED=YES")
    if s.qc_mode == "IMPLICIT":
        lines.append(f"# execQC: QC_MODE IMPLICIT, no QC calls ({paths['execQC']})")
    else:
        call = snakemake_call(night, request, s.qc_mode)
        lines.append(f"{call} || exit $?  # execQC: {paths['execQC']}")
    lines += [
        f'echo "{flag}_QC {s.date} $(date +%Y-%m-%dT%H:%M:%S)" >> {shlex.quote(_status_file(s))}',
        f"{monitor} -F",
    ]
    if request.auto:
        lines.append(shlex.quote(os.path.join(s.dfo["job_dir"], "execHC_TREND")))
    if s.cal_cleanup and s.mode == "CALIB":
        lines.append(f"rm -rf {shlex.quote(os.path.join(s.dfo['raw_dir'], s.date))}")
    if request.auto:
        lines.append(fill(s.commands["dfo_monitor"], values))
    lines.append(END.format(mode=s.mode, date=s.date))
    return lines


def header_lines(night: Night, tag: str) -> list[str]:
    """What an execAB/execQC file says about itself: it is a record, not the input."""
    return [
        "abflow runs the night from the ABs (the JOBS_NIGHT/JOBS_AUTO entry calls its",
        "workflow): editing this file changes nothing. To leave an AB out of the night, remove",
        f"it from {os.path.basename(night.settings.ab_list_path)} or list it under `exclude` in",
        "the configuration (the ABs depending on it are left out too, and listed).",
    ]


def _script(lines: list[str], title: str, shell: bool = True, notes: Sequence[str] = ()) -> str:
    """A job file: a shell script, or (batch-queue formats) plain lines with a title comment."""
    head = [*(["#!/bin/sh"] if shell else []), f"# {title}", *(f"# {n}" for n in notes)]
    return "\n".join([*head, *lines]) + "\n"


def build(night: Night, request: JobRequest) -> JobFiles:
    """Everything createjob writes for ``night`` (nothing is written here)."""
    s = night.settings
    if request.subcascade and request.subcascade not in night:
        raise CreateJobError(f"-a {request.subcascade}: no such AB in {s.ab_list_path}")
    tag = f"{s.mode}_{s.date}"
    job_dir = s.dfo["job_dir"]
    suffix = "_sub" if request.subcascade else ""
    paths = {
        "execAB": os.path.join(job_dir, f"execAB_{tag}{suffix}"),
        "execQC": os.path.join(job_dir, f"execQC_{tag}{suffix}"),
        "rawDown": os.path.join(job_dir, f"rawDown_{tag}"),
        "mcalDown": os.path.join(job_dir, f"mcalDown_{tag}"),
    }
    writer = f"written by abflow {__version__} createjob for {tag}, DRS_TYPE {s.drs_type}"
    notes = header_lines(night, tag)
    files = {
        paths["execAB"]: _script(
            exec_ab_lines(night, request),
            f"execAB_{tag}{suffix} {writer}",
            shell=s.drs_type != "CON",
            notes=notes,
        ),
        paths["execQC"]: _script(
            exec_qc_lines(night, request),
            f"execQC_{tag}{suffix} {writer}, QC {s.qc_mode}",
            notes=notes,
        ),
    }
    if request.subcascade:  # createJob -a: the _sub files only, nothing else is touched
        return JobFiles(files, "", [])
    downloads = []
    for name, kind in (("rawDown", "raw"), ("mcalDown", "cal")):
        lines = download_lines(night, request, kind)
        if lines:
            files[paths[name]] = _script(lines, f"{name}_{tag} {writer}")
            downloads.append(name)
    name = request.job_file or ("JOBS_AUTO" if request.auto else "JOBS_NIGHT")
    jobs_file = os.path.join(job_dir, name)
    return JobFiles(files, jobs_file, jobs_entry(night, request, paths, downloads))


def replace_entry(text: str, entry: list[str], mode: str, date: str) -> str:
    """``text`` (a JOBS file) with the block for mode/date replaced by ``entry``.

    Every other line stays as it was; a missing block is appended.
    """
    begin = BEGIN.format(mode=mode, date=date)
    end = END.format(mode=mode, date=date)
    kept: list[str] = []
    inside = False
    for line in text.splitlines():
        if line.startswith(begin):
            inside = True
            continue
        if inside:
            if line == end:
                inside = False
            continue
        kept.append(line)
    return "\n".join([*kept, *entry]) + "\n"


def run_plugin(plugin: str, exec_ab: str) -> None:
    """Call the configured PLUGIN with the execAB path; raise CreateJobError if it fails."""
    try:
        proc = subprocess.run(
            [plugin, exec_ab], capture_output=True, text=True, check=False, timeout=600
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CreateJobError(f"PLUGIN {plugin} could not run: {exc}") from None
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr).strip() or "(no output)"
        raise CreateJobError(
            f"PLUGIN {plugin} failed (exit {proc.returncode}) on {exec_ab}; its output:\n{output}"
        )


def write(night: Night, request: JobRequest, log: Callable[[str], None] = print) -> JobFiles:
    """Write the job files, call the PLUGIN, update the JOBS file and DFO_STATUS (with ``-a``
    only the _sub files, and say how to run them)."""
    s = night.settings
    job = build(night, request)
    os.makedirs(s.dfo["job_dir"], exist_ok=True)
    tag = f"{s.mode}_{s.date}"
    if not request.subcascade:
        for name in ("rawDown", "mcalDown"):  # a rerun without downloads leaves no stale file
            stale = os.path.join(s.dfo["job_dir"], f"{name}_{tag}")
            if stale not in job.files and os.path.exists(stale):
                os.unlink(stale)
    for path, text in job.files.items():
        atomic_write_text(path, text, mode=0o755)
        log(f"wrote {path}")
    exec_ab = next(p for p in job.files if os.path.basename(p).startswith("execAB_"))
    if s.plugin:
        run_plugin(s.plugin, exec_ab)
        log(f"PLUGIN {s.plugin} {exec_ab}: ok")
    if request.subcascade:
        n = len(_abs(night, request))
        log(f"the subcascade of {request.subcascade} ({n} AB{'s' if n != 1 else ''}) runs with:")
        log(f"  {snakemake_call(night, request, 'IMPLICIT')}")
        if s.qc_mode != "IMPLICIT":
            log(f"  {snakemake_call(night, request, s.qc_mode)}")
        return job
    try:
        with open(job.jobs_file, encoding="utf-8") as fh:
            current = fh.read()
    except FileNotFoundError:
        current = ""
    atomic_write_text(job.jobs_file, replace_entry(current, job.entry, s.mode, s.date))
    log(f"wrote the {tag} entries of {job.jobs_file}")
    flag = "cal_Queued" if s.mode == "CALIB" else "sci_Queued"
    status = _status_file(s)
    append_line(status, f"{flag} {s.date} {request.now()}")
    log(f"{flag} {s.date} added to {status}")
    return job
