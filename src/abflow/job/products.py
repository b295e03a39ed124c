"""Did this attempt write the AB's products? (README: What abflow protects.)

An AB succeeds only on products its attempt wrote. At its start a job leaves a marker file in
every directory its products go to (``.<AB>.abflow-attempt``, on the products' own filesystem,
so only that filesystem's clock is compared, never a host's); after its command a product
counts only if it changed no earlier than that marker (its inode change time: writing,
copying or renaming a file sets it, and nobody can set it back as ``touch -d`` or ``cp -p``
set a modification time) and is complete: not empty, and a file that begins as FITS is whole
2,880-byte blocks, each header with its END card and followed by all of its data (as BITPIX,
NAXISn, PCOUNT and GCOUNT say); other files are the recipe's business. A file left by an
earlier attempt, a killed recipe's half-written product, or an empty file fail the AB with
what is wrong with each.

A multi-detector AB's products are installed by its join from what its detector jobs wrote
before the join started: each detector job marks the directories too, notes the marks in its
record (``attempt_marks``), and the join compares with the earliest of them.
"""

from __future__ import annotations

import os

from abflow.state.fsutil import check_inside, remove_file

TYPE_CHECKING = False  # (a job imports this module: only what it needs at once)
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from typing import BinaryIO

MARKER = ".{name}.abflow-attempt"
FITS_BLOCK = 2880
FITS_CARD = 80
MAX_HEADER_BLOCKS = 2000  # an END card further than 5.8 MB into a file: not looked for


def marker_path(directory: str, name: str) -> str:
    """The attempt marker of job ``name`` in ``directory``."""
    return os.path.join(directory, MARKER.format(name=name.replace("/", "_")))


class ProductBusy(OSError):
    """A product of the job is being written by another job right now (another night's)."""


def mark_attempt(
    products: Iterable[str], name: str, roots: Sequence[str], ab: str = ""
) -> dict[str, int]:
    """Write the attempt marker of job ``name`` (of AB ``ab``) in every directory of
    ``products`` (created if needed, inside the resolved ``roots``); return each directory's
    mark (the marker's inode change time in ns, as its filesystem set it). The marker names
    the products: a job of another AB (another night's) that writes one of them at the same
    time is refused (ProductBusy); the detector jobs of one AB share its products."""
    wanted = list(products)
    marks: dict[str, int] = {}
    try:
        for directory in sorted({os.path.dirname(p) for p in wanted}):
            if roots:
                check_inside(directory, roots, "write products into")
            os.makedirs(directory, exist_ok=True)
            mine = [p for p in wanted if os.path.dirname(p) == directory]
            marks[directory] = _marker(directory, name, mine, ab)
            _refuse_busy(directory, name, mine, ab)
    except BaseException:
        unmark(marks, name)
        raise
    return marks


def _marker(directory: str, name: str, products: list[str], ab: str) -> int:
    """Write the marker (its job and products, who writes them); its inode change time."""
    import json
    import socket

    from abflow.job.command import pool_cluster

    if pool_cluster():  # (a pool job: no psutil for its start time; its pid will do)
        owner = f"{socket.gethostname()}:{os.getpid()}"
    else:
        from abflow.state.runstate import owner_id

        owner = owner_id()
    path = marker_path(directory, name)
    remove_file(path)  # a crashed attempt's: the mark must be this attempt's
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        text = {"job": name, "ab": ab, "owner": owner, "products": products}
        os.write(fd, json.dumps(text).encode())
        return os.fstat(fd).st_ctime_ns
    finally:
        os.close(fd)


def _refuse_busy(directory: str, name: str, products: list[str], ab: str) -> None:
    """ProductBusy if the marker of another AB's job in ``directory`` names one of
    ``products`` and its run is alive."""
    from abflow.state.fsutil import read_json_object
    from abflow.state.runstate import process_alive

    own = marker_path(directory, name)
    for entry in os.listdir(directory):
        path = os.path.join(directory, entry)
        if path == own or not (entry.startswith(".") and entry.endswith(".abflow-attempt")):
            continue
        other = read_json_object(path) or {}
        if ab and other.get("ab") == ab:
            continue  # (a detector job of the same AB, or its join)
        shared = set(products) & set(other.get("products") or ())
        host, pid, start = [*str(other.get("owner", "")).split(":"), "", ""][:3]
        info: dict[str, object] = {"host": host, "pid": int(pid) if pid.isdigit() else 0}
        if start.isdigit():
            info["proc_start"] = int(start) + 1  # (whole seconds)
        alive = bool(info["pid"]) and process_alive(info)
        if shared and alive:
            raise ProductBusy(
                f"{sorted(shared)[0]} is being written by {other.get('job')} of another run "
                f"({other.get('owner')}) right now: one AB must not replace another's product"
            )


def unmark(marks: Iterable[str], name: str) -> None:
    """Remove the attempt markers of job ``name`` from the directories ``marks``."""
    for directory in marks:
        remove_file(marker_path(directory, name))


def earliest(*marks: Mapping[str, object]) -> dict[str, int]:
    """Per directory, the earliest of several attempts' marks (a join and its detectors)."""
    out: dict[str, int] = {}
    for one in marks:
        for directory, mark in one.items():
            if isinstance(mark, int) and not isinstance(mark, bool):
                out[directory] = min(mark, out.get(directory, mark))
    return out


def _header(fh: BinaryIO, block: bytes) -> dict[str, str] | None:
    """The cards of the header starting with ``block`` (keyword -> value text), read up to its
    END card; None if the file ends first."""
    cards: dict[str, str] = {}
    for _ in range(MAX_HEADER_BLOCKS):
        if len(block) < FITS_BLOCK:
            return None
        for i in range(0, FITS_BLOCK, FITS_CARD):
            card = block[i : i + FITS_CARD].decode("ascii", "replace")
            if card[:8] == "END     ":
                return cards
            if card[8:10] == "= ":
                cards[card[:8].strip()] = card[10:].split("/", 1)[0].strip()
        block = fh.read(FITS_BLOCK)
    return None


def _data_bytes(cards: dict[str, str]) -> int:
    """The size of an HDU's data as its header says (without the padding)."""
    number = lambda key, default: int(float(cards.get(key, default)))  # noqa: E731
    axes = number("NAXIS", 0)
    if axes == 0:
        return 0
    elements = 1
    for k in range(1, axes + 1):
        elements *= number(f"NAXIS{k}", 0)
    return abs(number("BITPIX", 8)) // 8 * number("GCOUNT", 1) * (number("PCOUNT", 0) + elements)


def fits_problem(path: str, size: int) -> str:
    """Why the FITS file ``path`` (of ``size`` bytes) is incomplete ("" if whole, or if it
    does not begin as FITS): whole blocks, every header with its END card and all its data."""
    try:
        with open(path, "rb") as fh:
            block = fh.read(FITS_BLOCK)
            if not block.startswith(b"SIMPLE  ="):
                return ""
            if size % FITS_BLOCK:
                return f"incomplete FITS file ({size} bytes, not whole {FITS_BLOCK}-byte blocks)"
            while block:
                cards = _header(fh, block)
                if cards is None:
                    return "incomplete FITS file (a header without its END card)"
                data = _data_bytes(cards)
                end = fh.tell() + -(-data // FITS_BLOCK) * FITS_BLOCK
                if end > size:
                    return f"incomplete FITS file ({size} bytes, its data need {end})"
                fh.seek(end)
                block = fh.read(FITS_BLOCK)
                if block and not block.startswith(b"XTENSION"):
                    return ""  # (trailing bytes that are no extension: the recipe's business)
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    except ValueError:
        return "a FITS header with an unreadable NAXIS, BITPIX, PCOUNT or GCOUNT"
    return ""


def product_problem(path: str, marks: Mapping[str, int]) -> tuple[int, str]:
    """(size, why the product ``path`` does not count: "" if it does; -1 if missing)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return -1, "missing"
    except OSError as exc:
        return -1, f"unreadable ({exc.strerror})"
    mark = marks.get(os.path.dirname(path))
    if mark is not None and st.st_ctime_ns < mark:
        return st.st_size, "not written by this attempt (last changed before it started)"
    if st.st_size == 0:
        return 0, "empty"
    return st.st_size, fits_problem(path, st.st_size)


def check_products(
    expected: Sequence[tuple[str, str]], marks: Mapping[str, int]
) -> tuple[list[dict[str, object]], list[str], list[str]]:
    """The products as found (path, tag, bytes), the missing ones, and every product that
    does not count with why (``<path> (<why>)``)."""
    found: list[dict[str, object]] = []
    missing: list[str] = []
    bad: list[str] = []
    for path, tag in expected:
        size, why = product_problem(path, marks)
        if size < 0:
            missing.append(path)
        else:
            found.append({"path": path, "tag": tag, "bytes": size})
        if why and size >= 0:
            bad.append(f"{path} ({why})")
    return found, missing, bad
