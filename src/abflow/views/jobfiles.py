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
* the night's block in ``JOBS_NIGHT`` (``JOBS_AUTO`` with ``-F``), replacing an earlier block
  of the same mode and date and leaving every other line untouched, and abflow's exit-status
  lines just before its first block. The block's execAB and execQC calls run abflow's
  Snakemake workflow (instead of vultur_exec_cascade): the ABs (``steps=ab``), then the QC of
  those that succeeded (``steps=qc``). A job file is a plain shell script run top to bottom,
  as DFOS's are: a failed call is recorded (``ABFLOW_FAILED``) and the block goes on (the QC
  of the ABs that succeeded, the flag, the monitor call), as does the next date's block and
  every line after it; abflow's exit-status lines (an ``EXIT`` trap before its first block)
  turn what was recorded into the file's exit status (the same under ``sh``, ``bash`` and
  ``bash -e``). The calls of configured commands (downloads, monitors) run with abflow's
  programs first on PATH and the run configuration as ``$ABFLOW_CONFIG``, as the workflow's
  jobs do: a job file runs with cron's or the batch system's environment;
* a ``cal_Queued``/``sci_Queued`` line appended to ``DFO_STATUS`` in ``dfo.mon_dir``, once the
  block is written.

The job file is the operator's: it is rewritten atomically (through a symbolic link, to the
file it names, inside the configured directories), under a lock against a concurrent
createjob, with its mode kept (a new one is executable). With ``-a AB`` only
``execAB_<MODE>_<DATE>_sub`` and ``execQC_<MODE>_<DATE>_sub`` are written, with that AB and the
ABs depending on it (and their waits), and nothing else is touched; the command that runs that
subcascade is printed. With ``-r ID`` the job files are named after the job id
(``execAB_<MODE>_<DATE>_<ID>``, ..., and the job file ``JOBS_<ID>``), and the main ones, the
JOBS_NIGHT block and DFO_STATUS are left alone.
"""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from abflow import __version__
from abflow.job.download import download_job
from abflow.model.commands import fill
from abflow.model.config import ROOT, Settings
from abflow.model.night import Night
from abflow.state.fsutil import append_line, atomic_write_text

PROFILE_OF = {"CPL": "local", "CON": "condor", "INT": "int"}
BEGIN = "# >>> abflow createjob {mode} {date}"
END = "# <<< abflow createjob {mode} {date}"
BEGIN_ANY = "# >>> abflow createjob CALIB ", "# >>> abflow createjob SCIENCE "
# abflow's exit-status lines, before its first block: what the blocks record becomes the job
# file's exit status when it ends (an EXIT trap, so that lines an operator appends after the
# blocks still run, as they would in DFOS's plain script)
EXIT_STATUS = [
    "# >>> abflow createjob: exit status",
    'trap \'if [ -n "${ABFLOW_FAILED:-}" ]; then echo "abflow: failed:${ABFLOW_FAILED}" >&2; '
    "exit 1; fi' EXIT",
    "# <<< abflow createjob: exit status",
]
JOB_ID_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
# job ids that name the night's main job files (JOBS_NIGHT, JOBS_AUTO): -r refuses them
RESERVED_JOB_IDS = ("NIGHT", "AUTO")


class CreateJobError(RuntimeError):
    """createjob cannot write the job (the message says why and what to do)."""


@dataclass
class JobRequest:
    """What ``abflow createjob`` was asked to write."""

    auto: bool = False  # -F: JOBS_AUTO (autoDaily), else JOBS_NIGHT
    subcascade: str = ""  # -a AB
    job_id: str = ""  # -r ID: the job files named after it, the main ones left alone
    first_id: int = 1
    user: str = field(default_factory=lambda: os.environ.get("USER") or "dfos")
    configfile: str = ""  # the run configuration the workflow calls use (written by createjob)
    now: Callable[[], str] = lambda: time.strftime("%Y-%m-%dT%H:%M:%S")


@dataclass
class JobFiles:
    """The written files (path -> text), the JOBS file and its entry lines."""

    files: dict[str, str]
    jobs_file: str
    entry: list[str]
    stale: list[str] = field(default_factory=list)  # download files of an earlier createjob


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
    if drs == "INT":  # serial like CPL; the recipe fans out itself (-l, §16.4)
        return [f"processAB -a {ab} -l" for ab in names]
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
        directory = shlex.quote(os.path.dirname(path))
        directories[directory] = None
        call = _staged_download(s, request, path)
        if kind == "raw":  # not again once CAL_CLEANUP removed it (its ABs are done)
            cleaned = s.layout.cleaned(download_job(s.dfo, path).target)
            call = f"test -e {shlex.quote(cleaned)} || {call}"
        calls.append(call)
    lines = ['echo "starting raw data download ..."'] if kind == "raw" and calls else []
    lines += [*(_environment(request) if calls else []), *(f"mkdir -p {d}" for d in directories)]
    group = s.limits["downloads"]
    if group <= 1:
        return lines + calls
    for i in range(0, len(calls), group):
        lines += [f"{call} &" for call in calls[i : i + group]]
        lines.append("wait")
    return lines


def _staged_download(s: Settings, request: JobRequest, path: str) -> str:
    """One download call of a download file, made only if the file is not in place (a job
    file run again, a file another date's block fetched): the command runs in a staging
    directory beside the file (``{dest}`` is the file there), and the file is linked into place
    once complete, never over a file someone placed; the staging directory goes either way."""
    name = os.path.basename(path)
    stage = f".{name}.abflow-download.jobfile"
    values = {
        "file": name,
        "dest": os.path.join(os.path.dirname(path), stage, name),
        "date": s.date,
        "mode": s.mode,
        "config": request.configfile,
    }
    command = fill(s.commands["download"], values)
    q = {
        k: shlex.quote(v)
        for k, v in (
            ("dir", os.path.dirname(path)),
            ("stage", stage),
            ("name", name),
            ("dest", path),
        )
    }
    return (
        f"test -s {q['dest']} || "
        f"(cd {q['dir']} && rm -rf {q['stage']} && mkdir {q['stage']} && cd {q['stage']} "
        f"&& {command} && {{ ln {q['name']} {q['dest']} || test -s {q['dest']}; }}; "
        f"status=$?; cd {q['dir']} && rm -rf {q['stage']}; exit $status)"
    )


def snakemake_program() -> list[str]:
    """abflow's own snakemake, by absolute path (a job file runs with cron's or the batch
    system's PATH, where a bare ``snakemake`` is not found or is another one)."""
    beside = os.path.join(os.path.dirname(sys.executable), "snakemake")
    return [beside] if os.access(beside, os.X_OK) else [sys.executable, "-m", "snakemake"]


def snakemake_argv(
    settings: Settings,
    profile: str,
    configfile: str | None,
    config: Sequence[str],
    extra: Sequence[str] = (),
) -> list[str]:
    """A night's Snakemake command line (a job file's workflow call, and the controller
    ``abflow submit`` hands to HTCondor): abflow's own snakemake on abflow's Snakefile, in the
    night's state directory, with ``profile``, ``configfile`` and the ``--config`` items
    ``config``; ``extra``: further Snakemake options."""
    argv = [
        *snakemake_program(),
        "-s",
        os.path.join(ROOT, "Snakefile"),
        "--directory",
        settings.state_dir,
        "--profile",
        profile,
    ]
    if configfile:
        argv += ["--configfile", os.path.abspath(configfile)]
    if config:
        argv += ["--config", *config]
    return argv + list(extra)


def abflow_program() -> list[str]:
    """abflow's own abflow command, by absolute path (see snakemake_program)."""
    beside = os.path.join(os.path.dirname(sys.executable), "abflow")
    return [beside] if os.access(beside, os.X_OK) else [sys.executable, "-m", "abflow"]


def _environment(request: JobRequest) -> list[str]:
    """The lines that give a job file's configured commands what the workflow's jobs run with:
    abflow's programs first on PATH (then the job file's own PATH) and the run configuration
    as ``$ABFLOW_CONFIG`` (what an abflow command without --configfile reads)."""
    bin_dir = shlex.quote(os.path.dirname(sys.executable))
    return [
        f'PATH={bin_dir}:"$PATH"',
        f"ABFLOW_CONFIG={shlex.quote(request.configfile)}",
        "export PATH ABFLOW_CONFIG",
    ]


def _with_environment(call: str, request: JobRequest) -> str:
    """``call`` in a subshell with :func:`_environment` (the job file's own lines keep theirs)."""
    return f"({'; '.join(_environment(request))}; {call})"


def snakemake_call(night: Night, request: JobRequest, steps: str) -> str:
    """The workflow call that replaces vultur_exec_cascade for this night: the ABs
    (``steps=ab``) or the QC of those that succeeded (``steps=qc``), with the run configuration
    createjob wrote (the site's configuration and createjob's ``--config`` overrides). DRS_TYPE
    CON hands the night to HTCondor and waits for it (``abflow submit --wait``, as
    ``vultur_exec_cascade --wait`` did): ending the job file's shell does not end the night,
    and a controller that dies is started again by HTCondor."""
    s = night.settings
    config = [
        f"mode={s.mode}",
        f"date={s.date}",
        f"drs_type={s.drs_type}",
        f"qc_mode={s.qc_mode}",
        f"steps={steps}",
    ]
    if request.subcascade:
        config.append(f"subcascade={request.subcascade}")
    profile = os.path.join(ROOT, "profiles", PROFILE_OF[s.drs_type])
    if s.drs_type == "CON":
        words = [*abflow_program(), "submit", "--wait", "--profile", profile]
        words += ["--configfile", request.configfile, "--config", *config]
    else:
        words = snakemake_argv(s, profile, request.configfile, config)
    return " ".join(shlex.quote(w) for w in words)


def _status_file(settings: Settings) -> str:
    return os.path.join(settings.dfo["mon_dir"], "DFO_STATUS")


def _recorded(call: str, batch: str, step: str) -> str:
    """``call``, its failure recorded for the exit-status lines; the block goes on."""
    return f'{call} || ABFLOW_FAILED="${{ABFLOW_FAILED:-}} {batch}:{step}"'


def _carry_on(call: str, what: str) -> str:
    """``call``, whose failure is said and does not end the job file (also under sh -e)."""
    return f'{call} || echo "abflow: {what} failed (exit $?): the job file goes on" >&2'


def jobs_entry(
    night: Night, request: JobRequest, paths: dict[str, str], downloads: Sequence[str]
) -> list[str]:
    """The night's lines in JOBS_NIGHT/JOBS_AUTO, in DFOS order. Every call is made whatever
    the calls before it did, as in DFOS's job files: the QC of the ABs that succeeded, the
    flag, the trending, the final monitor call (``-F``, the export, only in JOBS_AUTO)."""
    s = night.settings
    batch, flag = f"{s.mode}_{s.date}", "cal" if s.mode == "CALIB" else "sci"
    values = {"date": s.date, "mode": s.mode, "config": request.configfile}
    monitor = fill(s.commands["monitor"], values)
    dfo_monitor = _with_environment(fill(s.commands["dfo_monitor"], values), request)
    how = f"-m {s.mode} -d {s.date}" + (" -F" if request.auto else "")
    how += f" -r {request.job_id}" if request.job_id else ""
    lines = [BEGIN.format(mode=s.mode, date=s.date) + f" (abflow {__version__}: createjob {how})"]
    if request.auto:
        lines.append(_carry_on(dfo_monitor, "dfoMonitor"))
    lines.append(f"{_with_environment(f'{monitor} -r', request)} &")
    lines += [_carry_on(shlex.quote(paths[name]), name) for name in downloads]
    call = snakemake_call(night, request, "ab")
    lines.append(f"{_recorded(call, batch, 'execAB')}  # execAB: {paths['execAB']}")
    if s.drs_type == "CON":
        lines.append(f'echo "vultur_exec_cascade for {s.date} done."')
    lines.append("export CALL_ENABLED=YES")
    if s.qc_mode == "IMPLICIT":
        lines.append(f"# execQC: QC_MODE IMPLICIT, no QC calls ({paths['execQC']})")
    else:
        call = snakemake_call(night, request, "qc")
        lines.append(f"{_recorded(call, batch, 'execQC')}  # execQC: {paths['execQC']}")
    lines += [
        f'echo "{flag}_QC {s.date} $(date +%Y-%m-%dT%H:%M:%S)" >> {shlex.quote(_status_file(s))}',
        _carry_on(
            _with_environment(f"{monitor} -F" if request.auto else monitor, request),
            "the AB monitor",
        ),
    ]
    if request.auto:
        trend = shlex.quote(os.path.join(s.dfo["job_dir"], "execHC_TREND"))
        lines += [_carry_on(trend, "execHC_TREND"), _carry_on(dfo_monitor, "dfoMonitor")]
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
    suffix = "_sub" if request.subcascade else f"_{request.job_id}" if request.job_id else ""
    paths = {
        "execAB": os.path.join(job_dir, f"execAB_{tag}{suffix}"),
        "execQC": os.path.join(job_dir, f"execQC_{tag}{suffix}"),
        "rawDown": os.path.join(job_dir, f"rawDown_{tag}{suffix}"),
        "mcalDown": os.path.join(job_dir, f"mcalDown_{tag}{suffix}"),
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
    name = "JOBS_AUTO" if request.auto else "JOBS_NIGHT"
    jobs_file = os.path.join(job_dir, f"JOBS_{request.job_id}" if request.job_id else name)
    stale = [paths[n] for n in ("rawDown", "mcalDown") if n not in downloads]
    return JobFiles(files, jobs_file, jobs_entry(night, request, paths, downloads), stale)


def _block_end(lines: list[str], start: int, end: str, where: str) -> int:
    """The line (index) of the end marker ``end`` of the block starting at ``start``
    (markers are matched without surrounding whitespace); CreateJobError if there is none."""
    for i in range(start + 1, len(lines)):
        if lines[i].strip() == end:
            return i
    raise CreateJobError(
        f"{where}:{start + 1}: abflow's block has no end marker {end!r}: the file was edited; "
        "put the marker back (or remove the block) and run createjob again"
    )


def replace_entry(text: str, entry: list[str], mode: str, date: str, where: str = "") -> str:
    """``text`` (a job file) with the block for mode/date replaced by ``entry`` in its place
    (appended if there is none) and abflow's exit-status lines just before its first block.
    Every other line stays as it was; a block without its end marker is refused
    (CreateJobError)."""
    begin, end = BEGIN.format(mode=mode, date=date), END.format(mode=mode, date=date)
    lines = text.split("\n")  # ("\n" only: the operator's lines stay byte for byte)
    if lines and lines[-1] == "":
        lines.pop()
    out: list[str] = []
    i, placed = 0, False
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith(begin) and (line == begin or line[len(begin)] == " "):
            i = _block_end(lines, i, end, where) + 1
            out += [] if placed else entry
            placed = True
        elif line == EXIT_STATUS[0]:
            i = _block_end(lines, i, EXIT_STATUS[-1], where) + 1
        else:
            out.append(lines[i])
            i += 1
    if not placed:
        out += entry
    first = next(i for i, line in enumerate(out) if line.strip().startswith(BEGIN_ANY))
    return "\n".join([*out[:first], *EXIT_STATUS, *out[first:]]) + "\n"


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
    """Write the job files, call the PLUGIN, update the job file and DFO_STATUS (with ``-a``
    only the _sub files, and say how to run them; with ``-r`` DFO_STATUS stays as it is)."""
    s = night.settings
    job = build(night, request)
    # before anything is written: the files the block and its flag go into must be usable
    status = "" if request.subcascade or request.job_id else _writable_file(s, _status_file(s))
    if job.jobs_file:
        _writable_file(s, job.jobs_file)
    os.makedirs(s.dfo["job_dir"], exist_ok=True)
    for stale in job.stale:  # a rerun without downloads leaves no stale download file
        if os.path.isfile(stale):
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
        log(f"  {snakemake_call(night, request, 'ab')}")
        if s.qc_mode != "IMPLICIT":
            log(f"  {snakemake_call(night, request, 'qc')}")
        return job
    with _job_file_lock(job.jobs_file):
        target = _write_block(s, job)
        log(f"wrote the {s.mode}_{s.date} block of {target}")
        if request.job_id:
            log(f"run it with: sh {shlex.quote(job.jobs_file)}")
            return job
        flag = "cal_Queued" if s.mode == "CALIB" else "sci_Queued"
        append_line(status, f"{flag} {s.date} {request.now()}")
    log(f"{flag} {s.date} added to {status}")
    return job


@contextmanager
def _job_file_lock(jobs_file: str) -> Iterator[None]:
    """An exclusive ``flock`` of ``.abflow/<job file>.lock`` beside it: one createjob at a time
    reads and rewrites a job file (and queues its night)."""
    import fcntl

    directory, name = os.path.split(jobs_file)
    os.makedirs(os.path.join(directory, ".abflow"), exist_ok=True)
    fd = os.open(
        os.path.join(directory, ".abflow", f"{name}.lock"),
        os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW,
        0o644,
    )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _writable_file(settings: Settings, path: str) -> str:
    """The file ``path`` resolves to (through symbolic links), which createjob may rewrite or
    append to: inside the configured directories, and a regular file or none yet
    (CreateJobError naming the path otherwise: a directory, a FIFO, a link leading out)."""
    from abflow.state.fsutil import check_inside

    target = os.path.realpath(path)
    try:
        check_inside(target, settings.roots)
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        return target
    except OSError as exc:
        raise CreateJobError(f"{path}: {exc}") from None
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise CreateJobError(
            f"{path}"
            + (f" (a link to {target})" if target != os.path.abspath(path) else "")
            + f" is {kind}: createjob writes a plain text file there; move it away"
        )
    return target


def _write_block(settings: Settings, job: JobFiles) -> str:
    """Replace the night's block in the job file (through a symbolic link, to the file it
    names, inside the configured directories), keeping its mode; return the file written."""
    from abflow.model.ab import read_regular

    target = _writable_file(settings, job.jobs_file)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
        data = read_regular(target, 64 << 20)  # (the operator's bytes; a FIFO never blocks)
        current = data.decode("utf-8")
    except FileNotFoundError:
        current, mode = "", 0o755
    except (OSError, ValueError) as exc:  # (UnicodeDecodeError is a ValueError)
        raise CreateJobError(f"cannot read the job file {target}: {exc}") from None
    text = replace_entry(current, job.entry, settings.mode, settings.date, target)
    atomic_write_text(target, text, mode=mode)
    return target
