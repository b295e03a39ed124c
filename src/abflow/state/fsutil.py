"""Small file-system helpers: atomic writes, copies and moves.

Every file abflow writes goes through here: data lands in a temporary file in the destination
directory, is flushed to disk, and is renamed over the final name, so readers see either the old
file or the complete new one, never a partial write; on any error the temporary file is removed
and the destination is untouched.
"""

from __future__ import annotations

import itertools
import os

TYPE_CHECKING = False  # a job imports this module: typing, json, tempfile, shutil and contextlib
if TYPE_CHECKING:  # would cost it more CPU than the rest of its work (bench/fanout.py)
    from collections.abc import Callable, Iterable, Iterator
    from typing import Any, BinaryIO

_unique = itertools.count()

# JSON string escapes, as json.dumps (ensure_ascii) writes them
_ESCAPES = {i: f"\\u{i:04x}" for i in (*range(0x20), 0x7F)}
_ESCAPES.update({0x22: '\\"', 0x5C: "\\\\", 0x08: "\\b", 0x0C: "\\f", 0x0A: "\\n", 0x0D: "\\r",
                 0x09: "\\t"})  # fmt: skip


def _json_string(text: str) -> str:
    out = text.translate(_ESCAPES)
    if not out.isascii():
        out = "".join(c if c < "\x80" else _ascii_escape(ord(c)) for c in out)
    return f'"{out}"'


def _json_key(key: object) -> str:
    """A dict key as json.dumps writes it (numbers, booleans and None become strings)."""
    if isinstance(key, str):
        return _json_string(key)
    if key is None or isinstance(key, bool | int | float):
        return f'"{json_text(key)}"'
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def _ascii_escape(code: int) -> str:
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # a surrogate pair
    return f"\\u{0xD800 | (code >> 10):04x}\\u{0xDC00 | (code & 0x3FF):04x}"


def json_text(data: Any, _indent: str = "\n") -> str:
    """``data`` as JSON text, exactly as ``json.dumps(data, indent=2)`` writes it (strings,
    numbers, booleans, None, lists, tuples and dicts with string keys).

    Here rather than json.dumps because the json module imports ``re``: a job writing its
    record and marker with it would spend more CPU on that import than on everything else.
    """
    if isinstance(data, str):
        return _json_string(data)
    if data is None or isinstance(data, bool):
        return {None: "null", True: "true", False: "false"}[data]
    if isinstance(data, int):
        return int.__repr__(data)
    if isinstance(data, float):
        if data != data:
            return "NaN"
        if data in (float("inf"), float("-inf")):
            return "Infinity" if data > 0 else "-Infinity"
        return float.__repr__(data)
    inner = _indent + "  "
    if isinstance(data, dict):
        if not data:
            return "{}"
        items = (f"{inner}{_json_key(k)}: {json_text(v, inner)}" for k, v in data.items())
        return "{" + ",".join(items) + _indent + "}"
    if isinstance(data, list | tuple):
        if not data:
            return "[]"
        return "[" + ",".join(f"{inner}{json_text(v, inner)}" for v in data) + _indent + "]"
    raise TypeError(f"Object of type {type(data).__name__} is not JSON serializable")


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
    atomic_write_text(path, json_text(data) + "\n", durable=durable)


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
    import json

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
