"""A download job: ``commands.download`` for one file of the night.

The command (``ngasClient -f {file}``, or the example's ``abflow fetch {file} {dest}``:
abflow.job.fetch) runs in a staging directory beside the destination
(``<dir>/.<file>.abflow-download/``, emptied first; ``{dest}`` is the file there) with its
output in the job's log; the finished file is then renamed into place. So the destination only
ever holds a complete file, whatever happens to the run meanwhile (a crash, a reboot): the
next run finds the file, or downloads it again. A failed download leaves nothing under the
file's name and a failure note naming the file and the archive's last words (the ABs needing
the file are FAILED with it); a finished one a record (bytes, start, end, host) and a line of
the night's download progress.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time

from abflow.job import shell
from abflow.job.marker import RunningMarker
from abflow.state.fsutil import append_line, atomic_write_json, remove_file, remove_tree
from abflow.state.layout import JobId, StateLayout, Step
from abflow.state.notes import write_failure
from abflow.state.units import human_bytes, now_iso

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

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
            with contextlib.suppress(OSError), open(progress_file, encoding="utf-8") as fh:
                for line in fh:
                    nbytes, _, _ = line.partition(" ")
                    if nbytes.isdigit():
                        counts[0] += 1
                        counts[1] += int(nbytes)
        append_line(progress_file, f"{size} {name}")
        counts[0] += 1
        counts[1] += size
        done, done_bytes = counts
    return (f"[downloads] {done}/{total} files, {human_bytes(done_bytes)} "
            f"(last: {name}, {human_bytes(size)})")  # fmt: skip


STAGING = ".{name}.abflow-download"


def staging_path(dest: str) -> str:
    """Where the download command writes ``dest`` (its ``{dest}``) before it is renamed into
    place: a directory of its own beside it (hidden), in which the command runs."""
    name = os.path.basename(dest)
    return os.path.join(os.path.dirname(dest), STAGING.format(name=name), name)


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


def run_download(command: JobCommand, echo: Callable[[str], None] | None = None) -> int:
    """Fetch the file of a download job with its command (``--run``, into ``--dest``); return
    its size, or raise DownloadFailed."""
    job, dest, layout = command.job, command.dest, StateLayout(command.state_dir)
    name = os.path.basename(dest)
    if os.path.exists(layout.stop_flag):
        raise DownloadFailed(f"download of {name} not started: the night is stopping (abflow stop)")
    staged = staging_path(dest)
    directory = os.path.dirname(staged)
    remove_tree(directory)  # what an earlier attempt left
    os.makedirs(directory)
    os.makedirs(os.path.dirname(command.log) or ".", exist_ok=True)
    t0, started = time.monotonic(), now_iso()
    marker = RunningMarker(command.state_dir, job)  # a crashed run's successor ends it
    with open(command.log, "w", encoding="utf-8") as log, marker:
        log.write(f"# abflow download {name}\n# command {command.shell}\n")
        log.flush()
        env = {**os.environ, **dict(command.env)}
        pid = shell.start(command.shell, directory, env, log.fileno())
        marker.note_command(pid)
        returncode, _usage, ended = shell.wait(pid)
    if ended:  # the run was interrupted: nothing half-written stays, no failure is noted
        remove_tree(directory)
        raise DownloadFailed(f"download of {name} interrupted (the next run starts it again)")
    seconds = time.monotonic() - t0
    if returncode == 0 and os.path.isfile(staged):
        os.replace(staged, dest)
    remove_tree(directory)
    size = os.path.getsize(dest) if os.path.isfile(dest) else -1
    if returncode != 0 or size <= 0:
        _failed(layout, job, dest, command.log,
                f"exit {returncode}" if returncode else "no file written")  # fmt: skip
    with open(command.log, "a", encoding="utf-8") as log:
        log.write(f"# done: {size} bytes in {seconds:.2f} s\n")
    remove_file(layout.failure(job))
    atomic_write_json(
        layout.record(job),
        {"step": "download", "file": name, "dest": dest, "bytes": size, "start": started,
         "end": now_iso(), "duration_s": round(seconds, 3), "host": socket.gethostname()},
    )  # fmt: skip
    if command.progress:
        line = record_progress(command.progress, name, size, command.total)
        if echo is not None:
            echo(line)
        append_line(layout.progress_log, f"{now_iso('seconds')} {line}")
    return size


def _failed(layout: StateLayout, job: JobId, dest: str, log_path: str, why: str) -> None:
    """Remove what is left of ``dest``, write the job's failure note, raise DownloadFailed."""
    name = os.path.basename(dest)
    if os.path.lexists(dest):
        os.unlink(dest)
    with open(log_path, encoding="utf-8", errors="replace") as fh:
        answer = [line.rstrip() for line in fh if not line.startswith("# ")][-5:]
    answer = answer or ["(nothing printed)"]
    write_failure(layout, job, f"download of {name} failed ({why}): {answer[-1]}", log=log_path,
                  log_tail=answer, step="download", file=name, dest=dest,
                  host=socket.gethostname())  # fmt: skip
    raise DownloadFailed(
        f"download of {name} failed ({why}); the archive's answer:\n"
        + "\n".join(f"    {line}" for line in answer)
        + f"\n  log: {log_path}"
    )
