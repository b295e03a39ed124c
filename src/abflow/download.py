"""Fetch archive files into the local DFOS tree (abflow's built-in archive client).

:func:`fetch` copies one file from an archive to its local destination, writing to a temporary
name beside the destination and renaming only when the copy is complete and its size matches,
so no truncated file ever appears under the final name. The archive is a local directory here
(``--archive DIR``); the example night keeps its synthetic raw frames in one.
"""

from __future__ import annotations

import os

from abflow.fsutil import SizeMismatch, atomic_copy


class FetchError(RuntimeError):
    """A file could not be fetched; the message names the file and the archive's answer."""


def fetch_local(archive_dir: str, file_name: str, dest: str) -> int:
    """Copy ``file_name`` from the directory ``archive_dir`` to ``dest``; return its size."""
    if "/" in file_name or file_name in ("", ".", ".."):
        raise FetchError(f"{file_name!r} is not a plain archive file name")
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
