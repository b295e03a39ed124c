"""Times and sizes as abflow writes them (records, notes, locks, progress lines, the console)."""

from __future__ import annotations

import math
from datetime import datetime


def now_iso(timespec: str = "milliseconds") -> str:
    """The current time, local, ISO 8601 with its UTC offset (``2026-12-02T15:04:05.123+01:00``)."""
    return datetime.now().astimezone().isoformat(timespec=timespec)


def iso_of(epoch: float, timespec: str = "seconds") -> str:
    """The local time of ``epoch`` seconds, as :func:`now_iso` writes it."""
    return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec=timespec)


def clock_text(iso: object, missing: str = "") -> str:
    """An ISO time as people read it on the page and the console (``2026-12-06 04:24:46``)."""
    return str(iso)[:19].replace("T", " ") if iso else missing


def human_bytes(n: float) -> str:
    """``1.2 GB`` style (powers of 1000, as archive transfer rates are quoted)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def as_number(value: object) -> float | None:
    """``value`` as a finite number if it is one (an int, a float or a numeric string, as a
    record written by hand or by another version may hold it), else None (a list, a word,
    NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None
