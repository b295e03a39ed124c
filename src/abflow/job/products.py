"""Did this attempt write the AB's products? (README: What abflow protects.)

An AB succeeds only on products its attempt wrote. At its start a job leaves a marker file in
every directory its products go to (``.<AB>.abflow-attempt``, on the products' own filesystem,
so only that filesystem's clock is compared, never a host's); after its command a product
counts only if it was modified no earlier than that marker and is complete: not empty, and a
file that begins as FITS is whole 2,880-byte blocks with an END card in its primary header
(other files are the recipe's business). A file left by an earlier attempt, a killed recipe's
half-written product, or an empty file fail the AB with what is wrong with each.

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

MARKER = ".{name}.abflow-attempt"
FITS_BLOCK = 2880
FITS_CARD = 80
MAX_HEADER_BLOCKS = 2000  # an END card further than 5.8 MB into a file: not looked for


def marker_path(directory: str, name: str) -> str:
    """The attempt marker of job ``name`` in ``directory``."""
    return os.path.join(directory, MARKER.format(name=name.replace("/", "_")))


def mark_attempt(products: Iterable[str], name: str, roots: Sequence[str]) -> dict[str, int]:
    """Write the attempt marker of job ``name`` in every directory of ``products`` (created
    if needed, inside the resolved ``roots``); return each directory's mark (the marker's
    modification time in ns, as its filesystem set it)."""
    marks: dict[str, int] = {}
    for directory in sorted({os.path.dirname(p) for p in products}):
        if roots:
            check_inside(directory, roots, "write products into")
        os.makedirs(directory, exist_ok=True)
        path = marker_path(directory, name)
        remove_file(path)  # a crashed attempt's: the mark must be this attempt's
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            marks[directory] = os.fstat(fd).st_mtime_ns
        finally:
            os.close(fd)
    return marks


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


def fits_problem(path: str, size: int) -> str:
    """Why the FITS file ``path`` (of ``size`` bytes) is incomplete ("" if whole, or if it
    does not begin as FITS)."""
    try:
        with open(path, "rb") as fh:
            block = fh.read(FITS_BLOCK)
            if not block.startswith(b"SIMPLE  ="):
                return ""
            if size % FITS_BLOCK:
                return f"incomplete FITS file ({size} bytes, not whole {FITS_BLOCK}-byte blocks)"
            for _ in range(MAX_HEADER_BLOCKS):
                if len(block) < FITS_BLOCK:
                    break
                cards = (block[i : i + FITS_CARD] for i in range(0, FITS_BLOCK, FITS_CARD))
                if any(card[:8] == b"END     " for card in cards):
                    return ""
                block = fh.read(FITS_BLOCK)
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    return "incomplete FITS file (its primary header has no END card)"


def product_problem(path: str, marks: Mapping[str, int]) -> tuple[int, str]:
    """(size, why the product ``path`` does not count: "" if it does; -1 if missing)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return -1, "missing"
    except OSError as exc:
        return -1, f"unreadable ({exc.strerror})"
    mark = marks.get(os.path.dirname(path))
    if mark is not None and st.st_mtime_ns < mark:
        return st.st_size, "not written by this attempt (last modified before it started)"
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
