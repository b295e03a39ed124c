"""Downloads: abflow's built-in archive client and the runner of one download job.

:func:`fetch` gets one file from an archive, a local directory or an HTTP archive given as a URL
template (NGAS style, ``http://host/RETRIEVE?file_id={file}``). It writes to a temporary name
beside the destination and renames only when the file is complete: its size matches the
archive's (``Content-Length``, or the archive file's size) and so does its checksum where the
archive gives one (``Content-MD5``, or ``Digest: md5=...`` / ``sha-256=...``). Connection errors,
timeouts, HTTP 5xx/408/429 and short or corrupt transfers are retried with exponential backoff;
an answer like 404 is final.

:func:`run_download` runs ``commands.download`` for one file of the night (the download rules'
jobs), removes anything partial if it fails, and keeps the night's download progress.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import os
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import BinaryIO

from abflow import __version__
from abflow.commands import fill
from abflow.config import Settings
from abflow.fsutil import (
    SizeMismatch,
    append_line,
    atomic_copy,
    atomic_write_json,
    atomic_write_with,
)
from abflow.layout import JobId, Step
from abflow.runner import now_iso
from abflow.runstate import stop_requested

CHUNK = 1 << 20


class FetchError(RuntimeError):
    """A file could not be fetched; the message names the file and the archive's answer."""


class _Retryable(Exception):
    """An attempt failed in a way worth retrying (the message is the archive's answer)."""


class _Final(Exception):
    """An attempt failed in a way that retrying cannot fix."""


def _check_name(file_name: str) -> None:
    if "/" in file_name or file_name in ("", ".", ".."):
        raise FetchError(f"{file_name!r} is not a plain archive file name")


def fetch_local(archive_dir: str, file_name: str, dest: str) -> int:
    """Copy ``file_name`` from the directory ``archive_dir`` to ``dest``; return its size."""
    _check_name(file_name)
    if not os.path.isdir(archive_dir):
        raise FetchError(f"archive directory {archive_dir} does not exist")
    source = os.path.join(archive_dir, file_name)
    try:
        size = os.stat(source).st_size
    except FileNotFoundError:
        raise FetchError(f"{file_name}: not in the archive {archive_dir}") from None
    try:
        atomic_copy(source, dest, expected_size=size)
    except SizeMismatch as exc:
        raise FetchError(f"{file_name}: {exc} (the archive has {size} bytes)") from None
    return size


def _expected_digests(headers: http.client.HTTPMessage) -> dict[str, str]:
    """Checksums the archive announced, as {algorithm: hex digest}."""
    out: dict[str, str] = {}
    try:
        md5 = headers.get("Content-MD5")
        if md5:
            out["md5"] = base64.b64decode(md5, validate=True).hex()
        for item in (headers.get("Digest") or "").split(","):
            algo, sep, value = item.strip().partition("=")
            algo = algo.lower().replace("sha-256", "sha256")
            if sep and algo in ("md5", "sha256"):
                out[algo] = base64.b64decode(value, validate=True).hex()
    except ValueError:
        raise _Retryable("unreadable checksum header from the archive") from None
    return out


def _http_once(url: str, file_name: str, dest: str, timeout: float) -> int:
    request = urllib.request.Request(url, headers={"User-Agent": f"abflow/{__version__}"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        answer = f"HTTP {exc.code} {exc.reason}"
        if exc.code in (408, 429) or exc.code >= 500:
            raise _Retryable(answer) from None
        raise _Final(answer) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _Retryable(f"no answer ({reason})") from None
    with response:
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        digests = _expected_digests(response.headers)
        hashers = {algo: hashlib.new(algo) for algo in digests}

        def write(fh: BinaryIO) -> None:
            got = 0
            try:
                while True:
                    chunk = response.read1(CHUNK)
                    if not chunk:
                        break
                    fh.write(chunk)
                    got += len(chunk)
                    for hasher in hashers.values():
                        hasher.update(chunk)
            except (TimeoutError, http.client.HTTPException, OSError) as exc:
                raise _Retryable(f"transfer broken after {got} bytes ({exc!r})") from None
            if expected is not None and got != expected:
                raise _Retryable(f"short file: got {got} of {expected} bytes")
            for algo, hasher in hashers.items():
                if hasher.hexdigest() != digests[algo]:
                    raise _Retryable(f"{algo} checksum mismatch ({got} bytes received)")

        atomic_write_with(dest, write)
    return os.stat(dest).st_size


def fetch_http(
    url_template: str,
    file_name: str,
    dest: str,
    retries: int = 4,
    timeout: float = 60.0,
    backoff: float = 2.0,
    log: Callable[[str], None] = lambda msg: None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Download ``file_name`` from an HTTP archive (URL template with ``{file}``) to ``dest``."""
    _check_name(file_name)
    url = url_template.replace("{file}", urllib.parse.quote(file_name, safe=""))
    last = ""
    for attempt in range(retries + 1):
        try:
            return _http_once(url, file_name, dest, timeout)
        except _Final as exc:
            raise FetchError(f"{file_name}: the archive answered {exc} ({url})") from None
        except _Retryable as exc:
            last = str(exc)
            if attempt < retries:
                wait = backoff * 2**attempt
                log(f"{file_name}: {last}; retry {attempt + 1} of {retries} in {wait:g} s")
                sleep(wait)
    raise FetchError(
        f"{file_name}: failed after {retries + 1} attempts; last answer: {last} ({url})"
    )


def fetch(
    archive: str,
    file_name: str,
    dest: str,
    retries: int = 4,
    timeout: float = 60.0,
    backoff: float = 2.0,
    log: Callable[[str], None] = lambda msg: None,
) -> int:
    """Fetch ``file_name`` from ``archive`` (directory or HTTP URL template) to ``dest``."""
    if "://" in archive:
        return fetch_http(archive, file_name, dest, retries, timeout, backoff, log)
    return fetch_local(archive, file_name, dest)


def check_archive(settings: Settings) -> str | None:
    """Why the configured archive cannot serve ``abflow fetch``, or None.

    Only asked when the night needs downloads through abflow's own client.
    """
    archive = settings.archive
    if "://" in archive:
        return None  # the URL template was checked with the configuration
    if not os.path.isdir(archive):
        return (
            f"archive directory {archive} does not exist: create it (for the example night: "
            "abflow example) or set `archive` in the configuration"
        )
    return None


def uses_builtin_client(settings: Settings) -> bool:
    """True if ``commands.download`` calls ``abflow fetch``."""
    return "abflow fetch" in settings.commands["download"]


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} GB"


def record_progress(progress_file: str, name: str, size: int, total: int) -> str:
    """Append one finished download to the night's progress file; return the progress line."""
    append_line(progress_file, f"{size} {name}")
    done = 0
    done_bytes = 0
    with open(progress_file, encoding="utf-8") as fh:
        for line in fh:
            nbytes, _, _ = line.partition(" ")
            if nbytes.isdigit():
                done += 1
                done_bytes += int(nbytes)
    return f"[downloads] {done}/{total} files, {_human(done_bytes)} (last: {name}, {_human(size)})"


def download_job(settings: Settings, dest: str) -> JobId:
    """The download job of ``dest`` (a path below dfo.raw_dir or dfo.cal_dir)."""
    raw = settings.dfo["raw_dir"].rstrip("/") + "/"
    if dest.startswith(raw):
        return JobId(Step.DOWNLOAD_RAW, dest[len(raw) :])
    return JobId(Step.DOWNLOAD_MCAL, os.path.relpath(dest, settings.dfo["cal_dir"]))


def download_failure(settings: Settings, dest: str) -> str:
    """Where a failed download of ``dest`` is noted (until it succeeds): the ABs that need the
    file are FAILED on the page and in the summary, with the archive's answer."""
    return settings.layout.failure(download_job(settings, dest))


def run_download(
    settings: Settings,
    dest: str,
    log_path: str,
    progress_file: str | None = None,
    total: int = 0,
    echo: Callable[[str], None] = print,
    config: str = "",
) -> int:
    """Fetch ``dest`` with ``commands.download``; return its size or raise FetchError.

    The command runs in the destination directory with its output in ``log_path``. A failed
    download leaves nothing under ``dest``; the error names the file and the archive's answer
    (the last lines the command printed).
    """
    name = os.path.basename(dest)
    if stop_requested(settings.state_dir):
        raise FetchError(f"download of {name} not started: the night is stopping (abflow stop)")
    directory = os.path.dirname(dest)
    os.makedirs(directory, exist_ok=True)
    os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
    command = fill(
        settings.commands["download"],
        {"file": name, "dest": dest, "date": settings.date, "mode": settings.mode,
         "config": config},
    )  # fmt: skip
    env = {**os.environ, **settings.variables}
    t0 = time.monotonic()
    started = now_iso()
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(f"# abflow download {name}\n# command {command}\n")
        log.flush()
        proc = subprocess.run(
            command, shell=True, cwd=directory, env=env, stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, check=False,
        )  # fmt: skip
    seconds = time.monotonic() - t0
    size = os.path.getsize(dest) if os.path.isfile(dest) else -1
    if proc.returncode != 0 or size <= 0:
        if os.path.lexists(dest):
            os.unlink(dest)
        with open(log_path, encoding="utf-8", errors="replace") as fh:
            answer = [line.rstrip() for line in fh if not line.startswith("# ")][-5:]
        why = f"exit {proc.returncode}" if proc.returncode != 0 else "no file written"
        answer = answer or ["(nothing printed)"]
        atomic_write_json(
            download_failure(settings, dest),
            {"step": "download", "file": name, "dest": dest, "status": "FAILED",
             "reason": f"download of {name} failed ({why}): {answer[-1]}", "log": log_path,
             "log_tail": answer, "end": now_iso(), "host": socket.gethostname()},
        )  # fmt: skip
        raise FetchError(
            f"download of {name} failed ({why}); the archive's answer:\n"
            + "\n".join(f"    {line}" for line in answer)
            + f"\n  log: {log_path}"
        )
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"# done: {size} bytes in {seconds:.2f} s\n")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(download_failure(settings, dest))
    atomic_write_json(
        settings.layout.record(download_job(settings, dest)),
        {"step": "download", "file": name, "dest": dest, "bytes": size, "start": started,
         "end": now_iso(), "duration_s": round(seconds, 3), "host": socket.gethostname()},
    )  # fmt: skip
    if progress_file:
        line = record_progress(progress_file, name, size, total)
        echo(line)
        append_line(settings.layout.progress_log, f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}")
    return size
