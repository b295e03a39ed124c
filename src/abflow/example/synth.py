"""Deterministic synthetic raw calibration frames that real ESO recipes accept.

Three detectors are modelled, each at the smallest size its recipes process robustly:

* ``GIRAFFE``: one 1152 x 2112 image (``gimasterbias``, ``gimasterdark``; smaller frames make
  the recipes crash on fixed QC windows). The first 48 columns are a prescan without dark
  current, so ``gimasterdark --bsremove-areas=5:40:0:<ny-1>`` finds a clean bias there.
* ``UVES`` blue arm: one 512 x 512 image with prescan and overscan columns
  (``uves_cal_mbias``, ``uves_cal_mdark``; SOF tags ``BIAS_BLUE``/``DARK_BLUE``).
* ``MUSE``: a header-only primary HDU plus 24 image extensions ``CHAN01``..``CHAN24``, each
  with four read-out quadrants of (by default) 128 x 128 pixels plus 32-pixel prescans and
  overscans (``muse_bias``, ``muse_dark``); ``muse_flat`` needs full-width quadrants
  (:data:`MUSE_FLAT_QUADRANT`, 128 x 2048), best with one IFU.

Pixels are ``int16``: a bias level per read-out port with Gaussian read noise, plus (for
darks) a small dark current and a fixed set of hot pixels, plus (for MUSE flats) lamp light
in 48 slices. Everything derives from the ``seed`` except the positions of hot pixels, which
belong to the detector and are the same in every frame, so that stacking recipes keep them
in the master dark where a QC check can count them.

The ``ARCFILE`` keyword carries the DFOS archive name (see :func:`archive_name`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from abflow.state.fsutil import atomic_write_with

__all__ = [
    "ARCHIVE_PREFIX",
    "INSTRUMENTS",
    "KINDS",
    "MUSE_FLAT_QUADRANT",
    "MUSE_NIFU",
    "MUSE_QUADRANT",
    "RAW_TAGS",
    "archive_name",
    "giraffe_frame",
    "hot_pixel_positions",
    "mjd_obs",
    "muse_frame",
    "parse_timestamp",
    "raw_frame",
    "uves_frame",
    "write_raw_frame",
]

INSTRUMENTS = ("GIRAFFE", "UVES", "MUSE")
"""Instruments this module can make frames for."""

KINDS = ("BIAS", "DARK", "FLAT")
"""Frame kinds (``FLAT`` only for MUSE)."""

ARCHIVE_PREFIX: dict[str, str] = {"GIRAFFE": "GIRAF", "UVES": "UVES", "MUSE": "MUSE"}
"""DFOS raw-file prefix (``DFO_FILE_NAME``) per instrument."""

RAW_TAGS: dict[str, dict[str, str]] = {
    "GIRAFFE": {"BIAS": "BIAS", "DARK": "DARK"},
    "UVES": {"BIAS": "BIAS_BLUE", "DARK": "DARK_BLUE"},
    "MUSE": {"BIAS": "BIAS", "DARK": "DARK", "FLAT": "FLAT"},
}
"""SOF tag (DO.CATG of the instrument's classification rules) per instrument and kind."""

MJD_EPOCH = datetime(1858, 11, 17, tzinfo=UTC)
INT16_MAX = np.iinfo(np.int16).max


# --------------------------------------------------------------------------------------------
# Names and times
# --------------------------------------------------------------------------------------------


def _hdu(
    cards: dict[str, Any], data: np.ndarray | None, primary: bool = True
) -> fits.PrimaryHDU | fits.ImageHDU:
    """An HDU with ``cards`` (keyword -> value or (value, comment), ESO's multi-word keywords as
    HIERARCH cards) and ``data``."""
    header = fits.Header()
    for key, value in cards.items():
        value, comment = value if isinstance(value, tuple) else (value, "")
        header[key if len(key) <= 8 and " " not in key else f"HIERARCH {key}"] = (value, comment)
    return (fits.PrimaryHDU if primary else fits.ImageHDU)(data=data, header=header)


def parse_timestamp(timestamp: str | datetime) -> datetime:
    """Return a timezone-aware UTC datetime for an ISO timestamp (naive values count as UTC)."""
    if isinstance(timestamp, datetime):
        moment = timestamp
    else:
        text = timestamp.strip()
        if text.endswith("Z"):
            text = text[:-1]
        moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _iso_millis(moment: datetime) -> str:
    """ISO format with exactly three decimals and no zone, as in ESO DATE-OBS and ARCFILE."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def archive_name(instrument_prefix: str, timestamp: str | datetime) -> str:
    """Return the DFOS archive file name, e.g. ``GIRAF.2013-02-13T10:02:03.123.fits``.

    ``instrument_prefix`` is the raw-file prefix (``GIRAF``, ``UVES``, ``MUSE``); an instrument
    name from :data:`ARCHIVE_PREFIX` (``GIRAFFE``) is translated. The timestamp is truncated to
    milliseconds.
    """
    prefix = ARCHIVE_PREFIX.get(instrument_prefix.upper(), instrument_prefix)
    return f"{prefix}.{_iso_millis(parse_timestamp(timestamp))}.fits"


def mjd_obs(timestamp: str | datetime) -> float:
    """Return the Modified Julian Date of a timestamp (UTC)."""
    delta = parse_timestamp(timestamp) - MJD_EPOCH
    return delta.days + (delta.seconds + delta.microseconds / 1e6) / 86400.0


# --------------------------------------------------------------------------------------------
# Pixels
# --------------------------------------------------------------------------------------------


def _detector_rng(*labels: str) -> np.random.Generator:
    """A generator seeded by detector identity only (same in every frame of that detector)."""
    digest = hashlib.sha256("/".join(labels).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def hot_pixel_positions(
    instrument: str, chip: str, shape: tuple[int, int], count: int, margin: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(rows, cols)`` of the hot pixels of a detector, independent of any frame seed.

    Positions are distinct and lie in the illuminated area (``margin`` columns are kept free
    on either side, for prescan/overscan).
    """
    ny, nx = shape
    width = nx - 2 * margin
    rng = _detector_rng(instrument, chip, "hot")
    flat = rng.choice(ny * width, size=count, replace=False)
    rows, cols = np.divmod(flat, width)
    return rows, cols + margin


def _to_int16(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, INT16_MAX).astype(np.int16)


def _noise(
    rng: np.random.Generator, shape: tuple[int, ...], level: float, ron: float
) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(ron) + np.float32(level)


# --------------------------------------------------------------------------------------------
# Common header
# --------------------------------------------------------------------------------------------

_DPR_TECH = {"GIRAFFE": "IMAGE", "UVES": "ECHELLE", "MUSE": "IFU"}
_TELESCOPE = {"GIRAFFE": "ESO-VLT-U2", "UVES": "ESO-VLT-U2", "MUSE": "ESO-VLT-U4"}


def _check(instrument: str, kind: str, exptime: float = 0.0) -> tuple[str, str]:
    inst = instrument.upper()
    if inst not in RAW_TAGS:
        raise ValueError(f"unknown instrument {instrument!r}; expected one of {INSTRUMENTS}")
    knd = kind.upper()
    if knd not in RAW_TAGS[inst]:
        supported = ", ".join(RAW_TAGS[inst])
        raise ValueError(f"{inst} frames of kind {kind!r} are not supported ({supported})")
    if knd != "BIAS" and not exptime > 0:
        # the recipes divide by EXPTIME: a zero would give NaN products or a crash
        raise ValueError(f"{inst} {knd} frames need a positive exptime, got {exptime!r}")
    return inst, knd


def _primary_header(instrument: str, kind: str, timestamp: str | datetime, exptime: float) -> dict:
    moment = parse_timestamp(timestamp)
    arcfile = archive_name(ARCHIVE_PREFIX[instrument], moment)
    dpr_type = {"BIAS": "BIAS", "DARK": "DARK", "FLAT": "FLAT,LAMP"}[kind]
    tpl_id = {
        "GIRAFFE": f"GIRAF_gen_cal_{kind.lower()}",
        "UVES": f"UVES_blue_cal_{kind.lower()}",
        "MUSE": "MUSE_wfm_cal_specflat" if kind == "FLAT" else f"MUSE_gen_cal_{kind.lower()}",
    }[instrument]
    return {
        "ORIGIN": ("ESO", "European Southern Observatory"),
        "DATE": (_iso_millis(moment), "file creation date"),
        "TELESCOP": (_TELESCOPE[instrument], "ESO telescope name"),
        "INSTRUME": (instrument, "instrument used"),
        "OBJECT": (kind, "original target"),
        "RA": (0.0, "deg"),
        "DEC": (0.0, "deg"),
        "EQUINOX": (2000.0, "standard FK5"),
        "RADECSYS": ("FK5", "coordinate reference frame"),
        "EXPTIME": (float(exptime), "integration time [s]"),
        "MJD-OBS": (round(mjd_obs(moment), 8), "MJD start"),
        "DATE-OBS": (_iso_millis(moment), "observing date"),
        "UTC": (float(moment.hour * 3600 + moment.minute * 60 + moment.second), "[s] UTC"),
        "ARCFILE": (arcfile, "archive file name"),
        "ESO DPR CATG": ("CALIB", "observation category"),
        "ESO DPR TYPE": (dpr_type, "observation type"),
        "ESO DPR TECH": (_DPR_TECH[instrument], "observation technique"),
        "ESO TPL ID": (tpl_id, "template signature ID"),
        "ESO TPL NEXP": (3, "number of exposures in template"),
        "ESO OBS NAME": ("Calibration", "OB name"),
        "ESO OBS PROG ID": ("60.A-9022(C)", "ESO program identification"),
    }


# --------------------------------------------------------------------------------------------
# GIRAFFE
# --------------------------------------------------------------------------------------------

GIRAFFE_SHAPE = (2112, 1152)
"""Default GIRAFFE frame shape ``(ny, nx)``; smaller than about 2100 x 1150 crashes the recipes."""
GIRAFFE_PRESCAN = 48


def giraffe_frame(
    kind: str,
    timestamp: str | datetime,
    seed: int,
    exptime: float = 0.0,
    *,
    shape: tuple[int, int] = GIRAFFE_SHAPE,
    bias_level: float = 210.0,
    read_noise: float = 4.2,
    dark_current: float = 0.002,
    hot_pixels: int = 40,
    hot_rate: float = 5.0,
) -> fits.HDUList:
    """Return a GIRAFFE ``BIAS`` or ``DARK`` raw frame as a single primary image HDU.

    ``dark_current`` and ``hot_rate`` are in ADU per second; ``hot_pixels`` fixed pixels get
    ``hot_rate * exptime`` on top of the bias (saturating at 32767). The first 48 columns
    (prescan) receive neither. The prescan is 48 columns wide, so ``gimasterdark`` needs
    ``--bsremove-areas=5:40:0:<ny-1>`` when ``ny < 4096``.
    """
    inst, knd = _check("GIRAFFE", kind, exptime)
    ny, nx = shape
    rng = np.random.default_rng(seed)
    image = _noise(rng, shape, bias_level, read_noise)
    if knd == "DARK":
        _add_dark(image[:, GIRAFFE_PRESCAN:], rng, dark_current, exptime)
        rows, cols = hot_pixel_positions(inst, "CCD-44", shape, hot_pixels, GIRAFFE_PRESCAN)
        image[rows, cols] += hot_rate * exptime
    header = _primary_header(inst, knd, timestamp, exptime if knd != "BIAS" else 0.0)
    header.update(_giraffe_cards(ny, nx, read_noise, exptime))
    return fits.HDUList([_hdu(header, _to_int16(image))])


def _giraffe_cards(ny: int, nx: int, read_noise: float, exptime: float) -> dict[str, Any]:
    """The GIRAFFE detector's header cards."""
    return {
        "ESO DET CHIPS": (1, "# of chips in detector array"),
        "ESO DET CHIP1 ID": ("CCD-44", "detector chip identification"),
        "ESO DET CHIP1 NAME": ("EEV44-82", "detector chip name"),
        "ESO DET CHIP1 NX": (nx - GIRAFFE_PRESCAN, "# of pixels along X"),
        "ESO DET CHIP1 NY": (ny, "# of pixels along Y"),
        "ESO DET OUTPUTS": (1, "# of outputs"),
        "ESO DET OUT1 ID": ("L", "output ID as from manufacturer"),
        "ESO DET OUT1 NX": (nx - GIRAFFE_PRESCAN, "valid pixels along X"),
        "ESO DET OUT1 NY": (ny, "valid pixels along Y"),
        "ESO DET OUT1 PRSCX": (GIRAFFE_PRESCAN, "prescan region in X"),
        "ESO DET OUT1 PRSCY": (0, "prescan region in Y"),
        "ESO DET OUT1 OVSCX": (0, "overscan region in X"),
        "ESO DET OUT1 OVSCY": (0, "overscan region in Y"),
        "ESO DET OUT1 CONAD": (0.5, "conversion from ADUs to electrons"),
        "ESO DET OUT1 GAIN": (2.0, "conversion from electrons to ADU"),
        "ESO DET OUT1 RON": (read_noise * 0.5, "readout noise per output (e-)"),
        "ESO DET READ SPEED": ("normal", "readout speed"),
        "ESO DET WIN1 BINX": (1, "binning factor along X"),
        "ESO DET WIN1 BINY": (1, "binning factor along Y"),
        "ESO DET WIN1 UIT1": (float(exptime), "user defined subintegration time"),
        "ESO INS MODE": ("MED", "instrument mode"),
    }


def _add_dark(area: np.ndarray, rng: np.random.Generator, rate: float, exptime: float) -> None:
    """Add dark current (``rate`` ADU/s over ``exptime`` s) with its shot noise, in place.

    The shot noise is the Gaussian approximation of Poisson noise (much faster to draw).
    """
    mean = rate * exptime
    if mean > 0:
        noise = rng.standard_normal(area.shape, dtype=np.float32)
        area += np.float32(mean) + noise * np.float32(np.sqrt(mean))


# --------------------------------------------------------------------------------------------
# UVES blue
# --------------------------------------------------------------------------------------------

UVES_SHAPE = (512, 512)
UVES_PRESCAN = 24
UVES_OVERSCAN = 24


def uves_frame(
    kind: str,
    timestamp: str | datetime,
    seed: int,
    exptime: float = 0.0,
    *,
    shape: tuple[int, int] = UVES_SHAPE,
    bias_level: float = 180.0,
    read_noise: float = 3.5,
    dark_current: float = 0.002,
    hot_pixels: int = 20,
    hot_rate: float = 5.0,
) -> fits.HDUList:
    """Return a UVES blue-arm ``BIAS`` or ``DARK`` raw frame (single primary image HDU).

    The image has 24 prescan and 24 overscan columns that see only bias; units as in
    :func:`giraffe_frame`. ``DET CHIP1 ID`` is fixed, as ``uves_cal_mdark`` compares it with
    the master bias.
    """
    inst, knd = _check("UVES", kind, exptime)
    ny, nx = shape
    rng = np.random.default_rng(seed)
    image = _noise(rng, shape, bias_level, read_noise)
    if knd == "DARK":
        _add_dark(image[:, UVES_PRESCAN : nx - UVES_OVERSCAN], rng, dark_current, exptime)
        rows, cols = hot_pixel_positions(inst, "EEV-BLUE", shape, hot_pixels, UVES_PRESCAN)
        image[rows, cols] += hot_rate * exptime
    header = _primary_header(inst, knd, timestamp, exptime if knd != "BIAS" else 0.0)
    header.update(_uves_cards(ny, nx, read_noise, exptime))
    return fits.HDUList([_hdu(header, _to_int16(image))])


def _uves_cards(ny: int, nx: int, read_noise: float, exptime: float) -> dict[str, Any]:
    """The UVES blue detector's header cards (and the pixel coordinates the recipes read)."""
    return {
        "CTYPE1": ("PIXEL", "pixel coordinate system"),
        "CTYPE2": ("PIXEL", "pixel coordinate system"),
        "CRVAL1": (1.0, "coordinate at reference pixel"),
        "CRVAL2": (1.0, "coordinate at reference pixel"),
        "CRPIX1": (1.0, "reference pixel"),
        "CRPIX2": (1.0, "reference pixel"),
        "CDELT1": (1.0, "binning factor"),
        "CDELT2": (1.0, "binning factor"),
        "ESO DET CHIPS": (1, "# of chips in detector array"),
        "ESO DET CHIP1 ID": ("EEV-BLUE", "detector chip identification"),
        "ESO DET CHIP1 NAME": ("EEV", "detector chip name"),
        "ESO DET CHIP1 NX": (nx - UVES_PRESCAN - UVES_OVERSCAN, "# of pixels along X"),
        "ESO DET CHIP1 NY": (ny, "# of pixels along Y"),
        "ESO DET OUTPUTS": (1, "# of outputs"),
        "ESO DET OUT1 ID": ("L", "output ID as from manufacturer"),
        "ESO DET OUT1 NX": (nx - UVES_PRESCAN - UVES_OVERSCAN, "valid pixels along X"),
        "ESO DET OUT1 NY": (ny, "valid pixels along Y"),
        "ESO DET OUT1 PRSCX": (UVES_PRESCAN, "prescan region in X"),
        "ESO DET OUT1 OVSCX": (UVES_OVERSCAN, "overscan region in X"),
        "ESO DET OUT1 PRSCY": (0, "prescan region in Y"),
        "ESO DET OUT1 OVSCY": (0, "overscan region in Y"),
        "ESO DET OUT1 CONAD": (0.5, "conversion from ADUs to electrons"),
        "ESO DET OUT1 GAIN": (2.0, "conversion from electrons to ADU"),
        "ESO DET OUT1 RON": (read_noise * 0.5, "readout noise per output (e-)"),
        "ESO DET READ SPEED": ("225kHz,1x1,low", "readout speed"),
        "ESO DET WIN1 BINX": (1, "binning factor along X"),
        "ESO DET WIN1 BINY": (1, "binning factor along Y"),
        "ESO DET WIN1 NX": (nx, "# of pixels along X"),
        "ESO DET WIN1 NY": (ny, "# of pixels along Y"),
        "ESO DET WIN1 STRX": (1, "lower left pixel in X"),
        "ESO DET WIN1 STRY": (1, "lower left pixel in Y"),
        "ESO DET WIN1 UIT1": (float(exptime), "user defined subintegration time"),
        "ESO INS PATH": ("BLUE", "optical path used"),
        "ESO INS MODE": ("DICHR#1", "instrument mode"),
    }


# --------------------------------------------------------------------------------------------
# MUSE
# --------------------------------------------------------------------------------------------

MUSE_QUADRANT = (128, 128)
"""Default MUSE quadrant shape ``(ny, nx)`` of illuminated pixels (real detectors: 2056 x 2048)."""
MUSE_SCAN = 32
"""MUSE prescan and overscan width (pixels), as on the real detectors."""
MUSE_NIFU = 24
MUSE_FULL_NX = 4096
MUSE_FULL_NY = 4112
MUSE_SLICES = 48
MUSE_SLICE_WIDTH = 77
MUSE_SLICE_GAP = 6
MUSE_GAIN = 1.1
MUSE_FLAT_QUADRANT = (128, 2048)
"""Quadrant shape for a ``muse_flat`` chain: the slices need the full detector width (48 slices of
77 pixels); 128 rows suffice. Bias and dark frames for that chain need the same shape."""


@dataclass(frozen=True)
class _Port:
    """Geometry of one MUSE read-out port inside the raw extension image."""

    number: int
    data_y: slice
    data_x: slice
    x: int
    y: int


def _muse_ports(ny: int, nx: int, scan: int) -> list[_Port]:
    """The four ports: 1 lower left, 2 lower right, 3 upper right, 4 upper left."""
    height = 2 * (ny + 2 * scan)
    width = 2 * (nx + 2 * scan)
    low_y = slice(scan, scan + ny)
    high_y = slice(height - scan - ny, height - scan)
    left_x = slice(scan, scan + nx)
    right_x = slice(width - scan - nx, width - scan)
    return [
        _Port(1, low_y, left_x, 1, 1),
        _Port(2, low_y, right_x, MUSE_FULL_NX, 1),
        _Port(3, high_y, right_x, MUSE_FULL_NX, MUSE_FULL_NY),
        _Port(4, high_y, left_x, 1, MUSE_FULL_NY),
    ]


def _muse_flat_light(ny: int, nx: int, level: float) -> np.ndarray:
    """Lamp light on the stitched ``(2 ny, 2 nx)`` data area: 48 vertical slices.

    Slices are 77 pixels wide with 6-pixel gaps, centred on the detector, as on MUSE's CCDs
    (``muse_flat`` finds no slices narrower than that).
    """
    width = 2 * nx
    gap = MUSE_SLICE_GAP
    pitch = MUSE_SLICE_WIDTH + gap
    span = MUSE_SLICES * pitch - gap
    if span > width:
        raise ValueError(
            f"MUSE FLAT frames need quadrants at least {(span + 1) // 2} pixels wide for 48 "
            f"slices of {MUSE_SLICE_WIDTH} pixels (got {nx}); use quadrant={MUSE_FLAT_QUADRANT} "
            "for the flats and for the bias and dark frames of the same chain"
        )
    first = (width - span) // 2
    cols = np.zeros(width, dtype=np.float32)
    for k in range(MUSE_SLICES):
        start = first + k * pitch
        cols[start : start + MUSE_SLICE_WIDTH] = 1.0
    rows = np.linspace(0.7, 1.0, 2 * ny, dtype=np.float32)  # smooth spectral variation
    return np.outer(rows, cols) * np.float32(level)


def muse_frame(
    kind: str,
    timestamp: str | datetime,
    seed: int,
    exptime: float = 0.0,
    *,
    quadrant: tuple[int, int] = MUSE_QUADRANT,
    ifus: range | list[int] | tuple[int, ...] = range(1, MUSE_NIFU + 1),
    bias_level: float = 1000.0,
    read_noise: float = 3.0,
    dark_current: float = 0.001,
    hot_pixels: int = 40,
    hot_rate: float = 3.0,
    flat_level: float = 8000.0,
) -> fits.HDUList:
    """Return a MUSE raw frame: header-only primary HDU plus one ``CHANnn`` HDU per IFU.

    Each extension holds four ports of ``quadrant`` illuminated pixels with 32-pixel prescans
    and overscans; the ports' ``DET OUTn X/Y`` positions are those of the full detector, as
    the pipeline expects whatever the window size. ``ifus`` selects which ``CHANnn``
    extensions to write (run the recipes with ``--nifu=-1`` for all 24, ``--nifu=k``
    otherwise). ``FLAT`` frames carry lamp light in 48 slices of 77 pixels with 6-pixel gaps;
    ``muse_flat`` traces them only at full width, so use ``quadrant=MUSE_FLAT_QUADRANT`` for
    the flats and for the bias and dark frames of that chain (with ``ifus=[1]`` and
    ``--nifu=1`` this runs in about a second per recipe). ``hot_pixels`` is the number of hot
    pixels per IFU (in the illuminated areas); other parameters as in :func:`giraffe_frame`.
    """
    inst, knd = _check("MUSE", kind, exptime)
    ny, nx = quadrant
    ports = _muse_ports(ny, nx, MUSE_SCAN)
    rng = np.random.default_rng(seed)
    header = _primary_header(inst, knd, timestamp, exptime if knd != "BIAS" else 0.0)
    header.update({**_MUSE_CARDS, **(_MUSE_LAMP_CARDS if knd == "FLAT" else {})})
    light = _muse_flat_light(ny, nx, flat_level) if knd == "FLAT" else None
    extensions = []
    for ifu in ifus:
        if not 1 <= ifu <= MUSE_NIFU:
            raise ValueError(f"MUSE IFU numbers run from 1 to {MUSE_NIFU}, got {ifu}")
        image = _muse_bias(rng, ports, quadrant, bias_level + 4.0 * ifu, read_noise)
        if knd in ("DARK", "FLAT"):
            for port in ports:
                _add_dark(image[port.data_y, port.data_x], rng, dark_current, exptime)
        if knd == "DARK":
            _muse_hot_pixels(image, f"MUSE-CCD-{ifu:02d}", quadrant, hot_pixels, hot_rate * exptime)
        if light is not None:
            _muse_lamp(image, rng, ports, quadrant, light)
        cards = _muse_ifu_cards(ifu, ports, quadrant, read_noise)
        extensions.append(_hdu(cards, _to_int16(image), primary=False))
    return fits.HDUList([_hdu(header, None), *extensions])


_MUSE_CARDS = {
    "ESO DET CHIPS": (24, "# of chips in detector array"),
    "ESO DET READ CURID": (1, "used readout mode id"),
    "ESO DET READ CURNAME": ("SCI1.0", "used readout mode name"),
    "ESO INS MODE": ("WFM-NOAO-N", "instrument mode used"),
    "ESO INS OPTI1 NAME": ("Blue_N", "filter name"),
}
_MUSE_LAMP_CARDS = {
    "ESO INS LAMP1 NAME": ("CON-LAMP1", "lamp name"),
    "ESO INS LAMP1 ST": (True, "lamp switched on"),
}


def _muse_bias(
    rng: np.random.Generator,
    ports: list[_Port],
    quadrant: tuple[int, int],
    bias_level: float,
    read_noise: float,
) -> np.ndarray:
    """One IFU's image of bias: each port its own level and noise over its whole quarter
    (prescans and overscans included)."""
    ny, nx = quadrant
    shape = (2 * (ny + 2 * MUSE_SCAN), 2 * (nx + 2 * MUSE_SCAN))
    image = np.empty(shape, dtype=np.float32)
    half_y, half_x = shape[0] // 2, shape[1] // 2
    for port in ports:
        qy = slice(0, half_y) if port.y == 1 else slice(half_y, shape[0])
        qx = slice(0, half_x) if port.x == 1 else slice(half_x, shape[1])
        image[qy, qx] = _noise(rng, (half_y, half_x), bias_level + 15.0 * port.number, read_noise)
    return image


def _muse_hot_pixels(
    image: np.ndarray, chip: str, quadrant: tuple[int, int], count: int, signal: float
) -> None:
    """Add ``signal`` to the chip's hot pixels (fixed positions on the stitched data area,
    mapped past the prescans and overscans)."""
    ny, nx = quadrant
    scan = MUSE_SCAN
    rows, cols = hot_pixel_positions("MUSE", chip, (2 * ny, 2 * nx), count)
    rows = np.where(rows < ny, rows + scan, rows + 3 * scan)
    cols = np.where(cols < nx, cols + scan, cols + 3 * scan)
    image[rows, cols] += signal


def _muse_lamp(
    image: np.ndarray,
    rng: np.random.Generator,
    ports: list[_Port],
    quadrant: tuple[int, int],
    light: np.ndarray,
) -> None:
    """Add the lamp ``light`` to each port's data area, with photon noise (MUSE_GAIN e-/ADU,
    as a Gaussian approximation of Poisson)."""
    ny, nx = quadrant
    for port in ports:
        ly = slice(0, ny) if port.y == 1 else slice(ny, 2 * ny)
        lx = slice(0, nx) if port.x == 1 else slice(nx, 2 * nx)
        lamp = light[ly, lx]
        noise = rng.standard_normal(lamp.shape, dtype=np.float32)
        image[port.data_y, port.data_x] += lamp + noise * np.sqrt(lamp / np.float32(MUSE_GAIN))


def _muse_ifu_cards(
    ifu: int, ports: list[_Port], quadrant: tuple[int, int], read_noise: float
) -> dict[str, Any]:
    """The header cards of one IFU's extension: its chip and its four ports."""
    ny, nx = quadrant
    scan = MUSE_SCAN
    cards: dict[str, Any] = {
        "EXTNAME": (f"CHAN{ifu:02d}", "extension name"),
        "ESO DET CHIP NAME": (f"MUSE-CCD-{ifu:02d}", "detector chip name"),
        "ESO DET CHIP ID": (f"ESO-CCD-{ifu:03d}", "detector chip identification"),
        "ESO DET CHIP INDEX": (ifu, "chip index"),
        "ESO DET CHIP NX": (MUSE_FULL_NX, "# of pixels along X"),
        "ESO DET CHIP NY": (MUSE_FULL_NY, "# of pixels along Y"),
        "ESO DET BINX": (1, "binning factor along X"),
        "ESO DET BINY": (1, "binning factor along Y"),
        "ESO DET OUTPUTS": (4, "# of outputs"),
    }
    for port in ports:
        out = f"ESO DET OUT{port.number}"
        cards.update(
            {
                f"{out} ID": ("ABCD"[port.number - 1], "output ID"),
                f"{out} X": (port.x, "X location of output"),
                f"{out} Y": (port.y, "Y location of output"),
                f"{out} NX": (nx, "valid pixels along X"),
                f"{out} NY": (ny, "valid pixels along Y"),
                f"{out} PRSCX": (scan, "prescan region in X"),
                f"{out} PRSCY": (scan, "prescan region in Y"),
                f"{out} OVSCX": (scan, "overscan region in X"),
                f"{out} OVSCY": (scan, "overscan region in Y"),
                f"{out} GAIN": (MUSE_GAIN, "[count/adu] conversion ADU to electrons"),
                f"{out} RON": (read_noise * MUSE_GAIN, "[count] readout noise"),
            }
        )
    return cards


# --------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------

_FACTORIES: dict[str, Callable[..., fits.HDUList]] = {
    "GIRAFFE": giraffe_frame,
    "UVES": uves_frame,
    "MUSE": muse_frame,
}


def raw_frame(
    instrument: str,
    kind: str,
    timestamp: str | datetime,
    seed: int,
    exptime: float = 0.0,
    **opts: Any,
) -> fits.HDUList:
    """Return the HDUs of a synthetic raw frame (primary first) for an instrument and kind.

    ``opts`` go to :func:`giraffe_frame`, :func:`uves_frame` or :func:`muse_frame`.
    """
    inst, knd = _check(instrument, kind, exptime)
    return _FACTORIES[inst](knd, timestamp, seed, exptime, **opts)


def write_raw_frame(
    path: str | os.PathLike[str],
    instrument: str,
    kind: str,
    timestamp: str | datetime,
    seed: int,
    exptime: float = 0.0,
    **opts: Any,
) -> Path:
    """Write a synthetic raw frame and return its path.

    If ``path`` is an existing directory the file is named after its ``ARCFILE``
    (:func:`archive_name`) inside it; otherwise ``path`` is the file name (``ARCFILE`` still
    holds the archive name). The write is atomic.
    """
    hdus = raw_frame(instrument, kind, timestamp, seed, exptime, **opts)
    target = Path(path)
    if target.is_dir():
        target = target / str(hdus[0].header["ARCFILE"])
    atomic_write_with(target, lambda fh: hdus.writeto(fh, checksum=True))
    return target
