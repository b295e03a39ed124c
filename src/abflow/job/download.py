"""A download job: ``commands.download`` for one file of the night.

The command (``ngasClient -f {file}``, or the example's ``abflow fetch {file} {dest}``:
abflow.job.fetch) runs in a staging directory of its run's own beside the destination
(``<dir>/.<file>.abflow-download.<owner>/``, made fresh; ``{dest}`` is the file there) with its
output in the job's log; the finished file is then linked into place, never over a file that is
there. So the destination only ever holds a complete file, whatever happens to the run
meanwhile (a crash, a reboot): the next run finds the file, or downloads it again. Two nights
needing the same file each stage their own copy; the first one placed stays, and a failure
never removes a file someone placed (a download that fails while the file arrived meanwhile
counts as done). A failed download leaves a failure note naming the file and the archive's
last words (the ABs needing the file are FAILED with it); a finished one a record (bytes,
start, end, host) and a line of the night's download progress. Staging directories that a
dead process of this host left are removed, never following a symbolic link.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time

from abflow.job import shell
from abflow.job.marker import RunningMarker
from abflow.state.fsutil import (
    append_line,
    atomic_write_json,
    check_inside,
    remove_file,
    remove_tree,
)
from abflow.state.layout import JobId, StateLayout, Step
from abflow.state.notes import write_failure
from abflow.state.units import human_bytes, now_iso

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from abflow.job.command import JobCommand


class DownloadFailed(RuntimeError):
    """The download failed; the message names the file and the archive's answer."""


_totals: dict[str, list[int]] = {}  # progress file -> [files, bytes] this process has counted
_totals_lock = threading.Lock()


def record_progress(progress_file: str, name: str, size: int, total: int) -> str:
    """Append one finished download to the night's progress file; return the progress line.
    The counts are kept in this process (downloads run on the submitting host, in threads of
    Snakemake), read from the file once."""
    with _totals_lock:
        counts = _totals.get(progress_file)
        if counts is None:
            counts = _totals[progress_file] = [0, 0]
            with (
                contextlib.suppress(OSError),
                open(progress_file, encoding="utf-8", errors="replace") as fh,
            ):
                for line in fh:
                    nbytes, _, _ = line.partition(" ")
                    if nbytes.isdigit():
                        counts[0] += 1
                        counts[1] += int(nbytes)
        append_line(progress_file, f"{size} {name}")
        counts[0] += 1
        counts[1] += size
        done, done_bytes = counts
    return (
        f"[downloads] {done}/{total} files, {human_bytes(done_bytes)} "
        f"(last: {name}, {human_bytes(size)})"
    )


STAGING = ".{name}.abflow-download.{owner}"


def staging_path(dest: str, owner: str) -> str:
    """Where the download command of run ``owner`` (its owner id) writes ``dest`` (its
    ``{dest}``) before it is linked into place: a directory of that run's own beside it
    (hidden), in which the command runs."""
    name = os.path.basename(dest)
    staging = STAGING.format(name=name, owner=owner.replace("/", "_"))
    return os.path.join(os.path.dirname(dest), staging, name)


def _remove_stale_stagings(dest: str, here: str) -> None:
    """Remove the staging directories of ``dest`` that processes of this host left and that
    are gone (a crash): ``<host>:<pid>:<start>`` in their names."""
    from abflow.state.runstate import process_alive

    directory, name = os.path.split(dest)
    prefix = STAGING.format(name=name, owner="")
    try:
        entries = [e for e in os.listdir(directory) if e.startswith(prefix)]
    except OSError:
        return
    for entry in entries:
        host, _, rest = entry[len(prefix) :].partition(":")
        pid, _, start = rest.partition(":")
        if host != here or not pid.isdigit() or not start.isdigit():
            continue
        if not process_alive({"pid": int(pid), "host": host, "proc_start": int(start) + 1}):
            remove_tree(os.path.join(directory, entry))


def download_job(dfo: Mapping[str, str], dest: str) -> JobId:
    """The download job of ``dest`` (a path below dfo.raw_dir or dfo.cal_dir)."""
    raw = dfo["raw_dir"].rstrip("/") + "/"
    if dest.startswith(raw):
        return JobId(Step.DOWNLOAD_RAW, dest[len(raw) :])
    return JobId(Step.DOWNLOAD_MCAL, os.path.relpath(dest, dfo["cal_dir"]))


def download_failure(layout: StateLayout, dfo: Mapping[str, str], dest: str) -> str:
    """Where a failed download of ``dest`` is noted (until it succeeds): the ABs that need the
    file are FAILED on the page and in the summary, with the archive's answer."""
    return layout.failure(download_job(dfo, dest))


def mark_ab_failed(ab_file: str, roots: Sequence[str]) -> bool:
    """Set ``PROCESS_STATUS FAILED`` in the AB file ``ab_file`` (a file it needs could not be
    downloaded: DFOS's processAB, which downloads for itself, fails the AB so, and DFOS's AB
    monitor reads it there). The file is rewritten atomically, keeping its mode and every
    other byte; it is written only inside ``roots`` (resolved). True if it changed. The
    qualifier is bookkeeping: the AB is not rerun for it (abflow.model.ab)."""
    import re
    import stat

    from abflow.model.ab import read_regular
    from abflow.state.fsutil import atomic_write_bytes

    target = check_inside(ab_file, roots)
    data = read_regular(target, 16 << 20)
    line = re.compile(rb"^(PROCESS_STATUS[ \t]+)(\S*)", re.MULTILINE)
    found = line.search(data)
    if found and found.group(2) == b"FAILED":
        return False
    if found:
        data = data[: found.start(2)] + b"FAILED" + data[found.end(2) :]
    else:
        data += (b"" if data.endswith(b"\n") or not data else b"\n") + b"PROCESS_STATUS  FAILED\n"
    atomic_write_bytes(target, data, stat.S_IMODE(os.stat(target).st_mode))
    return True


def run_download(command: JobCommand, echo: Callable[[str], None] | None = None) -> int:
    """Fetch the file of a download job with its command (``--run``, into ``--dest``); return
    its size, or raise DownloadFailed."""
    job, dest, layout = command.job, command.dest, StateLayout(command.state_dir)
    name = os.path.basename(dest)
    if command.batch and os.path.exists(layout.stop_flag(command.batch)):
        raise DownloadFailed(f"download of {name} not started: the night is stopping (abflow stop)")
    roots = command.write_roots()
    try:
        for path in (dest, command.log):
            check_inside(path, roots)
    except OSError as exc:
        raise DownloadFailed(f"download of {name} not started: {exc}") from None
    staged, here = _staged_file(command), socket.gethostname()
    directory = os.path.dirname(staged)
    if os.path.dirname(directory) != os.path.dirname(dest):
        raise DownloadFailed(f"download of {name}: its staging file {staged} is not beside it")
    _remove_stale_stagings(dest, here)
    remove_tree(directory)  # what an earlier attempt of this run left (never through a link)
    os.makedirs(directory)
    os.makedirs(os.path.dirname(command.log) or ".", exist_ok=True)
    t0, started = time.monotonic(), now_iso()
    try:
        returncode, placed = _download(command, staged)
    finally:
        remove_tree(directory)
    seconds = time.monotonic() - t0
    size = os.path.getsize(dest) if os.path.isfile(dest) else -1
    if size <= 0:  # (a file someone else placed meanwhile counts: it is complete)
        _failed(
            layout,
            job,
            dest,
            command.log,
            f"exit {returncode}" if returncode else "no file written",
        )
    with open(command.log, "a", encoding="utf-8") as log:
        log.write(f"# done: {size} bytes in {seconds:.2f} s{placed}\n")
    remove_file(layout.failure(job))
    atomic_write_json(
        layout.record(job),
        {
            "step": "download",
            "file": name,
            "dest": dest,
            "bytes": size,
            "start": started,
            "end": now_iso(),
            "duration_s": round(seconds, 3),
            "host": here,
        },
    )
    if command.progress:
        line = record_progress(command.progress, name, size, command.total)
        if echo is not None:
            echo(line)
        append_line(layout.progress_log, f"{now_iso('seconds')} {line}")
    return size


def _staged_file(command: JobCommand) -> str:
    """The file the download command writes (its ``{dest}``): its run's staging path."""
    if command.staged:
        return command.staged
    from abflow.state.runstate import owner_id

    return staging_path(command.dest, owner_id())


def _download(command: JobCommand, staged: str) -> tuple[int, str]:
    """Fetch the file into ``staged`` and put it in place, unless another run has placed it
    already; the command's exit status and what happened besides, for the log."""
    dest, name = command.dest, os.path.basename(command.dest)
    if os.path.isfile(dest) and os.path.getsize(dest) > 0:  # another night placed it
        fd = os.open(command.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with open(fd, "w", encoding="utf-8") as log:
            log.write(f"# abflow download {name}: already in place\n")
        return 0, " (another run had placed the file: not downloaded again)"
    returncode, ended = _fetch(command, os.path.dirname(staged))
    if ended:  # the run was interrupted: nothing half-written stays, no failure is noted
        raise DownloadFailed(f"download of {name} interrupted (the next run starts it again)")
    return returncode, _place(staged, dest) if returncode == 0 else ""


def _fetch(command: JobCommand, directory: str) -> tuple[int, bool]:
    """Run the download command in ``directory`` (marked as running); its exit status, and
    whether the run ended it (interrupted)."""
    marker = RunningMarker(command.state_dir, command.job)  # a crashed run's successor ends it
    fd = os.open(command.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with open(fd, "w", encoding="utf-8") as log, marker:
        log.write(
            f"# abflow download {os.path.basename(command.dest)}\n# command {command.shell}\n"
        )
        log.flush()
        env = {**os.environ, **dict(command.env)}
        pid = shell.start(command.shell, directory, env, log.fileno())
        marker.note_command(pid)
        returncode, _usage, ended = shell.wait(pid)
    return returncode, ended


def _place(staged: str, dest: str) -> str:
    """Put the staged file at ``dest`` unless a file is there already (another run placed it:
    it stays); "" or what happened instead, for the log."""
    if not os.path.isfile(staged) or os.path.islink(staged):
        return ""
    try:
        os.link(staged, dest)  # never over a file: fails if one is there
    except FileExistsError:
        return " (another run had placed the file meanwhile: kept)"
    return ""


def _failed(layout: StateLayout, job: JobId, dest: str, log_path: str, why: str) -> None:
    """Remove what is left of ``dest``, write the job's failure note, raise DownloadFailed."""
    name = os.path.basename(dest)
    with open(log_path, encoding="utf-8", errors="replace", newline="") as fh:
        lines = fh.read().split("\n")  # ("\n" only: a "\r" in the answer is shown escaped)
    answer = [line for line in lines if line and not line.startswith("# ")][-5:]
    answer = answer or ["(nothing printed)"]
    write_failure(
        layout,
        job,
        f"download of {name} failed ({why}): {answer[-1]}",
        log=log_path,
        log_tail=answer,
        step="download",
        file=name,
        dest=dest,
        host=socket.gethostname(),
    )
    raise DownloadFailed(
        f"download of {name} failed ({why}); the archive's answer:\n"
        + "\n".join(f"    {line}" for line in answer)
        + f"\n  log: {log_path}"
    )
