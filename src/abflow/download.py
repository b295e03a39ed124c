"""Fetch archive files into the local DFOS tree (abflow's built-in archive client).

:func:`fetch` copies one file from an archive to its local destination, writing to a temporary
name beside the destination and renaming only when the copy is complete and its size matches,
so no truncated file ever appears under the final name. The archive is a local directory here
(``--archive DIR``); the example night keeps its synthetic raw frames in one.
"""

from __future__ import annotations

import os
import shutil
import tempfile


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
    directory = os.path.dirname(os.path.abspath(dest))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(dest)}.", suffix=".part")
    try:
        with open(source, "rb") as src, os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        got = os.stat(tmp).st_size
        if got != size:
            raise FetchError(f"{file_name}: copied {got} bytes, the archive has {size}")
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return size
