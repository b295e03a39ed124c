"""Times and sizes as abflow writes them (records, notes, locks, progress lines, the console)."""

from __future__ import annotations

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
