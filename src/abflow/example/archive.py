"""The bundled example night: make its synthetic raw frames in a local archive directory.

The ABs and the AB list of the example night are part of the checkout (resources/example/ab,
resources/example/mon); the raw frames are not (tens of MB): :func:`make_archive` generates one
deterministic frame per RAWFILE of the night into the archive directory, from which
``abflow fetch`` (the example's ``commands.download``) copies them into ``$DFO_RAW_DIR``.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Callable

from abflow.example.synth import INSTRUMENTS, write_raw_frame
from abflow.model.ab import AB
from abflow.model.config import Settings
from abflow.model.load import load_night

TIMESTAMP_RE = re.compile(r"\.(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3})\.fits$")
KIND_OF_TYPE = {"BIAS": "BIAS", "DARK": "DARK", "FLAT": "FLAT"}


class ExampleError(RuntimeError):
    """The night cannot be generated synthetically (unknown instrument, odd file name)."""


def frame_spec(ab: AB, raw_path: str) -> dict[str, object]:
    """Instrument, kind, timestamp, seed and exposure time of one raw frame of ``ab``."""
    name = os.path.basename(raw_path)
    match = TIMESTAMP_RE.search(name)
    if not match:
        raise ExampleError(f"{ab.path}: raw file {name} has no DFOS timestamp in its name")
    if ab.instrument not in INSTRUMENTS:
        raise ExampleError(
            f"{ab.path}: no synthetic frames for INSTRUMENT {ab.instrument!r} "
            f"(known: {', '.join(INSTRUMENTS)})"
        )
    kind = KIND_OF_TYPE.get(ab.raw_type)
    if kind is None:
        raise ExampleError(f"{ab.path}: no synthetic frames for RAW_TYPE {ab.raw_type!r}")
    exptime = 0.0
    for param in ab.params:
        key, _, value = param.partition("=")
        if key == "EXPTIME":
            exptime = float(value)
    return {
        "instrument": ab.instrument,
        "kind": kind,
        "timestamp": match.group(1),
        "seed": zlib.crc32(name.encode()),
        "exptime": exptime,
    }


def make_archive(
    settings: Settings,
    archive_dir: str | None = None,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> tuple[int, int]:
    """Generate the raw frames of the configured night into ``archive_dir``.

    Frames already present are kept unless ``force``. Returns (written, kept).
    """
    archive_dir = archive_dir or settings.archive
    if "://" in archive_dir:
        raise ExampleError(f"archive {archive_dir} is a URL: give a local directory")
    os.makedirs(archive_dir, exist_ok=True)
    night = load_night(settings)
    todo: dict[str, dict[str, object]] = {}
    for ab in (record.ab for record in night):
        for frame in ab.rawfiles:
            todo.setdefault(os.path.basename(frame.path), frame_spec(ab, frame.path))
    written = kept = 0
    for i, (name, spec) in enumerate(sorted(todo.items()), start=1):
        target = os.path.join(archive_dir, name)
        if os.path.isfile(target) and not force:
            kept += 1
            continue
        write_raw_frame(target, **spec)  # type: ignore[arg-type]
        written += 1
        if progress:
            progress(f"[{i}/{len(todo)}] {name}")
    return written, kept
