"""Small file-system helpers: atomic writes, copies and moves.

Every file abflow writes goes through here: data lands in a temporary file in the destination
directory, is flushed to disk, and is renamed over the final name, so readers see either the old
file or the complete new one, never a partial write; on any error the temporary file is removed
and the destination is untouched.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO

_unique = itertools.count()


class SizeMismatch(OSError):
    """An atomic copy produced a different number of bytes than expected."""


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a rename in ``directory`` durable (best effort)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # best effort
    finally:
        os.close(fd)


def _temporary(directory: str, name: str) -> tuple[int, str]:
    """A new file beside ``name`` in ``directory`` (open for writing, mode 0600), and its path."""
    while True:
        tmp = os.path.join(directory, f".{name}.{os.getpid()}.{next(_unique)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), tmp
        except FileExistsError:
            continue


def atomic_write_with(
    path: str | os.PathLike[str],
    write: Callable[[BinaryIO], None],
    mode: int = 0o644,
    durable: bool = True,
) -> None:
    """Create ``path`` atomically; ``write`` fills the open temporary file. ``durable``: also
    flushed to disk before and after the rename (not needed for what a crash may lose, such as
    a running job's marker)."""
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = _temporary(directory, os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        remove_file(tmp)
        raise
    if durable:
        fsync_dir(directory)


def atomic_write_chunks(path: str | os.PathLike[str], chunks: Iterable[bytes]) -> None:
    """Write the concatenated ``chunks`` to ``path`` atomically."""

    def write(fh: BinaryIO) -> None:
        for chunk in chunks:
            fh.write(chunk)

    atomic_write_with(path, write)


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, mode: int = 0o644, durable: bool = True
) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write_with(path, lambda fh: fh.write(data), mode, durable)


def atomic_write_text(
    path: str | os.PathLike[str], text: str, mode: int = 0o644, durable: bool = True
) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"), mode, durable)


def atomic_write_json(path: str | os.PathLike[str], data: Any, durable: bool = True) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(data, indent=2) + "\n", durable=durable)


def remove_file(path: str) -> None:
    """Remove the file ``path``; absent is fine (without contextlib, which a job would import
    only for this)."""
    try:  # noqa: SIM105
        os.unlink(path)
    except FileNotFoundError:
        pass


def remove_tree(path: str) -> None:
    """Remove the directory ``path`` and everything in it (symbolic links are not followed;
    absent: nothing to do). Without shutil, which a job would import only for this."""
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            remove_tree(entry.path)
        else:
            remove_file(entry.path)
    os.rmdir(path)


def atomic_copy(
    source: str | os.PathLike[str], dest: str | os.PathLike[str], expected_size: int | None = None
) -> int:
    """Copy ``source`` to ``dest`` atomically; return the size.

    With ``expected_size``, a copy of any other size raises SizeMismatch and leaves nothing.
    """

    import shutil

    def write(fh: BinaryIO) -> None:
        with open(source, "rb") as src:
            shutil.copyfileobj(src, fh, 1 << 20)
        if expected_size is not None and fh.tell() != expected_size:
            raise SizeMismatch(f"copied {fh.tell()} bytes, expected {expected_size}")

    atomic_write_with(dest, write)
    return os.stat(dest).st_size


def atomic_move(source: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """Move ``source`` to ``dest``: a rename where possible, else an atomic copy then unlink."""
    os.makedirs(os.path.dirname(os.fspath(dest)) or ".", exist_ok=True)
    try:
        os.replace(source, dest)
        return
    except OSError:
        pass
    atomic_copy(source, dest, os.stat(source).st_size)
    os.unlink(source)


def read_json_object(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None if it is absent, unreadable, torn or not an object."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def iter_json_objects(*directories: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, object) of every readable ``*.json`` file under ``directories`` (recursively);
    absent directories and torn or foreign files are skipped."""
    for base in directories:
        for root, _dirs, files in os.walk(base):
            for name in files:
                if name.endswith(".json"):
                    path = os.path.join(root, name)
                    data = read_json_object(path)
                    if data is not None:
                        yield path, data


def append_line(path: str | os.PathLike[str], line: str) -> None:
    """Append ``line`` and a newline to ``path`` in one O_APPEND write (creating file and
    directory if needed), so that lines written by concurrent processes never interleave."""
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)
