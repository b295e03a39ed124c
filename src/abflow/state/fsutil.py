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
import stat
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO

_unique = itertools.count()


class SizeMismatch(OSError):
    """An atomic copy produced a different number of bytes than expected."""


class OutsideRoots(OSError):
    """A path abflow was about to write or remove resolves outside the configured directories
    (a symbolic link leads elsewhere); the message names the path and where it leads."""


def resolve_roots(roots: Iterable[str]) -> tuple[str, ...]:
    """The directories ``roots`` with every symbolic link resolved (empty ones left out): what
    :func:`check_inside` compares with. Resolved once per run or job, so that a root that is a
    link itself (``$DFO_RAW_DIR`` on a big disk) stays fine."""
    return tuple(dict.fromkeys(os.path.realpath(r) for r in roots if r))


def inside(real: str, roots: Iterable[str]) -> bool:
    """True if the resolved path ``real`` is one of the resolved ``roots`` or below one."""
    return any(real == root or real.startswith(root.rstrip("/") + "/") for root in roots)


def check_inside(path: str, roots: Iterable[str], what: str = "write") -> str:
    """``path`` with every symbolic link resolved, if that lies inside the resolved ``roots``
    (:func:`resolve_roots`); else raise OutsideRoots naming both. What abflow writes, renames
    or removes is checked with this first."""
    roots = tuple(roots)
    real = os.path.realpath(path)
    if inside(real, roots):
        return real
    raise OutsideRoots(
        f"refusing to {what} {path}: it resolves to {real}, outside the configured directories "
        f"({', '.join(roots)}); a symbolic link leads there: remove or fix it"
    )


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


def links_leading_out(tops: Iterable[str], roots: Iterable[str]) -> list[tuple[str, str]]:
    """(path, where it leads) of every symbolic link to a directory below the directories
    ``tops`` (links not followed) that resolves outside the resolved ``roots``: what a run
    would write through (Snakemake creates its jobs' log and output directories itself)."""
    roots = tuple(roots)
    found = []
    for top in tops:
        for directory, dirs, _files in os.walk(top):
            for name in dirs:
                path = os.path.join(directory, name)
                if os.path.islink(path) and not inside(os.path.realpath(path), roots):
                    found.append((path, os.path.realpath(path)))
    return found


def remove_tree(path: str) -> None:
    """Remove the directory ``path`` and everything in it; absent: nothing to do. Symbolic
    links are never followed, ``path`` itself included: a link is removed, not what it points
    to (shutil.rmtree's descriptor-based walk below it)."""
    import shutil

    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(mode):  # a link (to a directory or not) or a file: only itself
        remove_file(path)
        return
    shutil.rmtree(path)


def open_append(path: str) -> int:
    """A descriptor appending to ``path`` (created 0644 if absent), never through a symbolic
    link at ``path`` itself (OSError ELOOP instead)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)


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


def _stage(source: str, dest: str) -> str:
    """``source`` moved to a new temporary file beside ``dest`` (a rename where possible, else
    a copy, flushed to disk); its path."""
    import shutil

    directory = os.path.dirname(dest) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = _temporary(directory, os.path.basename(dest))
    try:
        try:
            os.close(fd)
            os.replace(source, tmp)
            return tmp
        except OSError:
            pass
        with open(source, "rb") as src, open(tmp, "wb") as fh:
            shutil.copyfileobj(src, fh, 1 << 20)
            fh.flush()
            os.fsync(fh.fileno())
        shutil.copymode(source, tmp)
    except BaseException:
        remove_file(tmp)
        raise
    return tmp


def replace_all(moves: Iterable[tuple[str, str]]) -> None:
    """Move every ``(source, dest)`` into place, all at once or not at all.

    Each source is first staged beside its destination (where a full disk or any other error
    strikes, nothing has been replaced yet); then each destination's previous file is kept
    under a hard link while the new one is renamed over it. On any error every destination is
    back as it was (its previous file, or absent), and the error is raised; on success the
    previous files are gone. Sources that were staged are consumed either way.
    """
    moves = list(moves)
    staged: list[tuple[str, str]] = []
    done: list[tuple[str, str | None]] = []  # (dest, its previous file's backup or None)
    try:
        for source, dest in moves:
            staged.append((_stage(source, dest), dest))
        for tmp, dest in staged:
            backup = _keep_previous(dest)
            try:
                os.replace(tmp, dest)
            except BaseException:
                if backup is not None:  # (still the file at dest: a hard link to it)
                    remove_file(backup)
                raise
            done.append((dest, backup))
    except BaseException:
        for dest, backup in reversed(done):
            if backup is not None:
                os.replace(backup, dest)
            else:
                remove_file(dest)
        for tmp, _dest in staged:
            remove_file(tmp)
        raise
    for _dest, backup in done:
        if backup is not None:
            remove_file(backup)
    for directory in {os.path.dirname(d) for _s, d in moves}:
        fsync_dir(directory or ".")


def _keep_previous(dest: str) -> str | None:
    """A hard link to the file at ``dest`` (None if there is none), to put back on failure."""
    if not os.path.lexists(dest):
        return None
    fd, backup = _temporary(os.path.dirname(dest) or ".", os.path.basename(dest) + ".previous")
    os.close(fd)
    os.unlink(backup)
    os.link(dest, backup, follow_symlinks=False)
    return backup


MAX_STATE_FILE = 64 << 20  # bytes: no file abflow writes into its state is near this
_JSON_KINDS = {
    dict: "an object",
    list: "a list",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "true or false",
    type(None): "null",
}


def read_json_checked(path: str | os.PathLike[str], kind: type = dict) -> tuple[Any | None, str]:
    """The JSON value of type ``kind`` (an object by default) in the file ``path``, and "";
    (None, "") if there is no such file; (None, what is wrong) if it is there but cannot be
    used: ``empty``, ``a directory, not a file``, ``not UTF-8 text``, ``not valid JSON
    (...)``, ``a list, not an object``... Never blocks (a FIFO is not read) and never raises."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None, ""
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror})"
    try:
        raw, problem = _read_regular(fd)
    finally:
        os.close(fd)
    if problem:
        return None, problem
    if not raw.strip():
        return None, "empty"
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text (byte {exc.start})"
    except ValueError as exc:  # json.JSONDecodeError: "Expecting value: line 1 column 1 (char 0)"
        return None, f"not valid JSON ({exc})"
    except RecursionError:
        return None, "not valid JSON (nested too deeply)"
    if not isinstance(data, kind) or (kind is not bool and isinstance(data, bool)):
        return None, f"{json_kind(data)}, not {_JSON_KINDS[kind]}"
    return data, ""


def json_kind(value: object) -> str:
    """What a JSON value is, as messages say it: ``a list``, ``a string``, ``a number``..."""
    return _JSON_KINDS.get(type(value), type(value).__name__)


def _read_regular(fd: int) -> tuple[bytes, str]:
    """The bytes of the open regular file ``fd``, or what else it is."""
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            return b"", "a directory, not a file"
        if not stat.S_ISREG(st.st_mode):
            return b"", "not a regular file"
        if st.st_size > MAX_STATE_FILE:
            return b"", f"too large ({st.st_size} bytes)"
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    except OSError as exc:
        return b"", f"cannot be read ({exc.strerror})"
    return b"".join(chunks), ""


def read_json_object(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None if it is absent, unreadable, torn or not an object
    (:func:`read_json_checked` says which)."""
    return read_json_checked(path)[0]  # type: ignore[no-any-return]


def iter_json_checked(*directories: str) -> Iterator[tuple[str, dict[str, Any] | None, str]]:
    """(path, object, "") of every ``*.json`` file under ``directories`` (recursively), or
    (path, None, what is wrong) for one that cannot be read (:func:`read_json_checked`);
    absent directories are skipped."""
    for base in directories:
        for root, _dirs, files in os.walk(base):
            for name in sorted(files):
                if name.endswith(".json"):
                    path = os.path.join(root, name)
                    data, problem = read_json_checked(path)
                    if data is not None or problem:
                        yield path, data, problem


def iter_json_objects(*directories: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, object) of every readable ``*.json`` file under ``directories`` (recursively);
    absent directories and torn or foreign files are skipped."""
    for path, data, _problem in iter_json_checked(*directories):
        if data is not None:
            yield path, data


def append_line(path: str | os.PathLike[str], line: str) -> None:
    """Append ``line`` and a newline to ``path`` in one O_APPEND write (creating file and
    directory if needed), so that lines written by concurrent processes never interleave."""
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    fd = open_append(os.fspath(path))
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)
