"""abflow's archive client (``abflow fetch``): one file from an archive, never half written.

:func:`fetch` gets one file from an archive, a local directory or an HTTP archive given as a URL
template (NGAS style, ``http://host/RETRIEVE?file_id={file}``). It writes to a temporary name
beside the destination and renames only when the file is complete: its size matches the
archive's (``Content-Length``, or the archive file's size) and so does its checksum where the
archive gives one (``Content-MD5``, or ``Digest: md5=...`` / ``sha-256=...``). Connection errors,
timeouts, HTTP 5xx/408/429 and short or corrupt transfers are retried with exponential backoff;
an answer like 404 is final.

A download job (abflow.job.download) runs it as its command where ``commands.download`` is
``abflow fetch {file} {dest}`` (the example night's).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import BinaryIO

from abflow import __version__
from abflow.model.config import Settings
from abflow.state.fsutil import SizeMismatch, atomic_copy, atomic_write_with

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
