"""Minimal numpy-only FITS reader and writer.

Covers what abflow needs to make synthetic raw frames for ESO recipes and to read back the
products that ``esorex`` writes:

* writing a primary HDU (image or header only) plus IMAGE extensions, atomically;
* reading headers (by HDU index or EXTNAME) into plain dicts, ``HIERARCH`` keys included;
* reading image data of any standard BITPIX, with BSCALE/BZERO applied;
* walking the HDUs of a file without reading their data (tables are skipped, not decoded).

Header values are ``str``, ``bool``, ``int`` or ``float``. Keywords longer than eight
characters, or containing blanks (such as ``"ESO DPR CATG"``) or lower-case letters, are
written as ``HIERARCH`` cards and read back without the ``HIERARCH`` prefix. Commentary
cards (``COMMENT``, ``HISTORY``, blank keywords) are not part of the header dicts returned
by the readers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from abflow.state.fsutil import atomic_write_chunks

__all__ = [
    "BLOCK",
    "Hdu",
    "HduInfo",
    "iter_hdus",
    "list_extensions",
    "read_data",
    "read_header",
    "write_fits",
]

BLOCK = 2880
"""Size of a FITS logical record in bytes; headers and data are padded to multiples of it."""

CARD = 80

HeaderValue = str | bool | int | float

_BITPIX_TO_DTYPE: dict[int, str] = {
    8: ">u1",
    16: ">i2",
    32: ">i4",
    64: ">i8",
    -32: ">f4",
    -64: ">f8",
}
_DTYPE_TO_BITPIX: dict[str, int] = {
    "u1": 8,
    "i2": 16,
    "i4": 32,
    "i8": 64,
    "f4": -32,
    "f8": -64,
}

# Keys that describe the data layout; the writer derives them from the array, so values given
# by the caller (for example a header dict read from another file) are dropped.
_STRUCTURAL = {"SIMPLE", "XTENSION", "BITPIX", "NAXIS", "EXTEND", "PCOUNT", "GCOUNT"}
_SCALING = {"BSCALE", "BZERO", "BLANK"}
_COMMENTARY = {"COMMENT", "HISTORY", ""}


@dataclass
class Hdu:
    """One header-data unit to write.

    ``header`` maps keyword to value, or to a ``(value, comment)`` tuple, in the order the cards
    should appear. ``data`` is an image array (numpy axis order: the last axis is ``NAXIS1``)
    or ``None`` for a header-only HDU.
    """

    header: Mapping[str, HeaderValue | tuple[HeaderValue, str]] = field(default_factory=dict)
    data: np.ndarray | None = None


@dataclass(frozen=True)
class HduInfo:
    """Description of one HDU found in a file, without its data."""

    index: int
    extname: str | None
    header: dict[str, Any]
    data_offset: int
    data_size: int


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _format_value(value: HeaderValue) -> str:
    """Return the FITS representation of a header value (fixed format where it applies)."""
    if isinstance(value, (bool, np.bool_)):
        return f"{'T' if value else 'F':>20}"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):>20}"
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"FITS header values must be finite, got {value!r}")
        text = repr(value).upper()
        if "E" in text:
            mantissa, exponent = text.split("E")
            if "." not in mantissa:
                mantissa += ".0"
            text = f"{mantissa}E{exponent}"
        elif "." not in text:
            text += ".0"
        return f"{text:>20}"
    if isinstance(value, str):
        if not all(32 <= ord(c) <= 126 for c in value):
            raise ValueError(f"FITS strings must be printable ASCII: {value!r}")
        escaped = value.replace("'", "''")
        return f"'{escaped:<8}'"
    raise TypeError(f"unsupported FITS header value type {type(value).__name__}: {value!r}")


def _normalise_key(key: str) -> tuple[str, bool]:
    """Return ``(keyword, is_hierarch)`` for a user-given key."""
    key = key.strip()
    if key.upper().startswith("HIERARCH "):
        return key[9:].strip(), True
    hierarch = len(key) > 8 or " " in key or key != key.upper()
    if not key or not all(33 <= ord(c) <= 126 and c != "=" for c in key.replace(" ", "")):
        raise ValueError(f"invalid FITS keyword {key!r}")
    return key, hierarch


def _make_card(key: str, value: HeaderValue, comment: str = "") -> str:
    """Build one 80-character card; raises ``ValueError`` if it does not fit."""
    keyword, hierarch = _normalise_key(key)
    text = _format_value(value)
    if hierarch:
        # ESO convention: no fixed-format alignment for HIERARCH values.
        card = f"HIERARCH {keyword} = {text.strip() if not isinstance(value, str) else text}"
    else:
        card = f"{keyword:<8}= {text}"
    if len(card) > CARD:
        raise ValueError(f"header card for {key!r} is longer than {CARD} characters: {card!r}")
    if comment:
        if not all(32 <= ord(c) <= 126 for c in comment):
            raise ValueError(f"FITS comments must be printable ASCII: {comment!r}")
        room = CARD - len(card) - 3
        if room > 0:
            card = f"{card} / {comment[:room]}"
    return f"{card:<{CARD}}"


def _structural_cards(hdu: Hdu, primary: bool, extend: bool) -> list[str]:
    data = hdu.data
    bitpix = 8
    shape: tuple[int, ...] = ()
    if data is not None:
        data = np.asarray(data)
        code = data.dtype.str[1:]
        if code not in _DTYPE_TO_BITPIX:
            raise TypeError(
                f"unsupported image dtype {data.dtype} (use uint8, int16, int32, int64, "
                "float32 or float64; write unsigned 16-bit data as int16)"
            )
        if data.ndim == 0:
            raise ValueError("image data must have at least one axis")
        bitpix = _DTYPE_TO_BITPIX[code]
        shape = data.shape
    cards = [
        _make_card("SIMPLE", True, "conforms to FITS standard")
        if primary
        else _make_card("XTENSION", "IMAGE", "image extension"),
        _make_card("BITPIX", bitpix, "bits per data value"),
        _make_card("NAXIS", len(shape), "number of data axes"),
    ]
    for i, n in enumerate(reversed(shape), start=1):
        cards.append(_make_card(f"NAXIS{i}", int(n), f"length of data axis {i}"))
    if primary:
        if extend:
            cards.append(_make_card("EXTEND", True, "FITS dataset may contain extensions"))
    else:
        cards.append(_make_card("PCOUNT", 0, "number of parameters"))
        cards.append(_make_card("GCOUNT", 1, "number of groups"))
    return cards


def _encode_hdu(hdu: Hdu, primary: bool, extend: bool) -> bytes:
    cards = _structural_cards(hdu, primary, extend)
    for key, item in hdu.header.items():
        keyword, _ = _normalise_key(key)
        upper = keyword.upper()
        if upper in _STRUCTURAL or upper in _SCALING or upper.startswith("NAXIS") or upper == "END":
            continue
        if isinstance(item, tuple):
            value, comment = item
        else:
            value, comment = item, ""
        cards.append(_make_card(key, value, comment))
    cards.append(f"{'END':<{CARD}}")
    header = "".join(cards).encode("ascii")
    header += b" " * (-len(header) % BLOCK)
    if hdu.data is None:
        return header
    data = np.asarray(hdu.data)
    raw = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder(">")).tobytes()
    return header + raw + b"\0" * (-len(raw) % BLOCK)


def write_fits(path: str | os.PathLike[str], primary: Hdu, extensions: Sequence[Hdu] = ()) -> None:
    """Write a FITS file with a primary HDU and optional IMAGE extensions, atomically.

    The file is written to a temporary file in the target directory, flushed to disk and then
    renamed over ``path``, so readers never see a partial file. Structural keywords
    (``SIMPLE``, ``BITPIX``, ``NAXISn``, ``EXTEND``, ``XTENSION``, ``PCOUNT``, ``GCOUNT``) and
    scaling keywords (``BSCALE``, ``BZERO``, ``BLANK``) are derived from the data; values for
    them in the given headers are ignored. Pixels are stored unscaled as big-endian values of
    the array's own type: ``uint8`` (BITPIX 8), ``int16`` (16), ``int32`` (32), ``int64`` (64),
    ``float32`` (-32) or ``float64`` (-64).
    """
    blobs = [_encode_hdu(primary, primary=True, extend=bool(extensions))]
    blobs.extend(_encode_hdu(ext, primary=False, extend=False) for ext in extensions)
    atomic_write_chunks(path, blobs)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _parse_string(text: str) -> tuple[str, str]:
    """Parse a quoted FITS string at the start of ``text``; return (value, rest)."""
    out: list[str] = []
    i = 1
    while i < len(text):
        char = text[i]
        if char == "'":
            if i + 1 < len(text) and text[i + 1] == "'":
                out.append("'")
                i += 2
                continue
            return "".join(out).rstrip(), text[i + 1 :]
        out.append(char)
        i += 1
    # Unterminated string: be lenient and take everything.
    return "".join(out).rstrip(), ""


def _parse_value(text: str) -> HeaderValue | None:
    text = text.lstrip()
    if text.startswith("'"):
        return _parse_string(text)[0]
    text = text.split("/", 1)[0].strip()
    if not text:
        return None
    if text == "T":
        return True
    if text == "F":
        return False
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text.replace("D", "E").replace("d", "e"))
    except ValueError:
        return text


def _parse_card(card: str) -> tuple[str, str] | None:
    """Split a card into (keyword, raw value text); ``None`` for cards without a value."""
    keyword = card[:8].rstrip()
    if keyword == "HIERARCH":
        rest = card[8:]
        if "=" not in rest:
            return None
        key, value = rest.split("=", 1)
        return key.strip(), value
    if keyword == "CONTINUE":
        return keyword, card[8:]
    if card[8:10] == "= " and keyword not in _COMMENTARY:
        return keyword, card[10:]
    return None


def _parse_header(cards: list[str]) -> dict[str, Any]:
    header: dict[str, Any] = {}
    last_long: str | None = None
    for card in cards:
        parsed = _parse_card(card)
        if parsed is None:
            last_long = None
            continue
        key, raw = parsed
        if key == "CONTINUE":
            # Long-string convention: a string ending in '&' continues on CONTINUE cards.
            if last_long is not None and raw.lstrip().startswith("'"):
                value = _parse_string(raw.lstrip())[0]
                previous = header[last_long]
                header[last_long] = previous[:-1] + value
                last_long = last_long if value.endswith("&") else None
            continue
        value = _parse_value(raw)
        last_long = None
        if key in header:
            continue  # first occurrence wins, as in most FITS readers
        header[key] = value
        if isinstance(value, str) and value.endswith("&"):
            last_long = key
    return header


def _read_header_cards(handle: BinaryIO, extension: bool) -> list[str] | None:
    """Read header blocks up to END; ``None`` at the end of the HDUs.

    After the primary HDU, anything that does not start with ``XTENSION`` (end of file, zero
    padding, the "special records" the standard allows) ends the HDU sequence.
    """
    cards: list[str] = []
    while True:
        block = handle.read(BLOCK)
        if not cards and (not block or (extension and not block.startswith(b"XTENSION"))):
            return None
        if len(block) < BLOCK:
            raise ValueError("truncated FITS header: END card missing")
        text = block.decode("ascii", errors="replace")
        for start in range(0, BLOCK, CARD):
            card = text[start : start + CARD]
            if card[:8].rstrip() == "END":
                cards.append(card)
                return cards
            cards.append(card)


def _data_size(header: Mapping[str, Any]) -> int:
    naxis = int(header.get("NAXIS", 0))
    if naxis == 0:
        return 0
    bitpix = int(header["BITPIX"])
    axes = [int(header[f"NAXIS{i}"]) for i in range(1, naxis + 1)]
    if header.get("GROUPS") is True and axes[0] == 0:
        axes = axes[1:]  # random groups: NAXIS1 = 0 is a placeholder
    count = math.prod(axes)
    size = abs(bitpix) // 8 * int(header.get("GCOUNT", 1)) * (int(header.get("PCOUNT", 0)) + count)
    return size


def iter_hdus(path: str | os.PathLike[str]) -> Iterator[HduInfo]:
    """Yield an :class:`HduInfo` per HDU of a file, seeking past the data instead of reading it.

    Every kind of extension (IMAGE, BINTABLE, TABLE) is listed; ``extname`` is ``None`` where
    the HDU has no EXTNAME (usually the primary HDU).
    """
    with open(path, "rb") as handle:
        index = 0
        while True:
            cards = _read_header_cards(handle, extension=index > 0)
            if cards is None:
                if index == 0:
                    raise ValueError(f"{os.fspath(path)} is empty, not a FITS file")
                return
            header = _parse_header(cards)
            if index == 0 and header.get("SIMPLE") is not True:
                raise ValueError(f"{os.fspath(path)} is not a FITS file (SIMPLE = T missing)")
            offset = handle.tell()
            size = _data_size(header)
            extname = header.get("EXTNAME")
            yield HduInfo(
                index=index,
                extname=str(extname) if extname is not None else None,
                header=header,
                data_offset=offset,
                data_size=size,
            )
            handle.seek(offset + size + (-size % BLOCK))
            index += 1


def list_extensions(path: str | os.PathLike[str]) -> list[HduInfo]:
    """Return the :class:`HduInfo` of every HDU in the file (index 0 is the primary HDU)."""
    return list(iter_hdus(path))


def _find_hdu(path: str | os.PathLike[str], ext: int | str) -> HduInfo:
    if isinstance(ext, bool) or not isinstance(ext, (int, str)):
        raise TypeError(f"ext must be an HDU index or an EXTNAME, got {ext!r}")
    for info in iter_hdus(path):
        if isinstance(ext, int):
            if info.index == ext:
                return info
        elif info.extname is not None and info.extname.strip().upper() == ext.strip().upper():
            return info
    raise KeyError(f"no HDU {ext!r} in {os.fspath(path)}")


def read_header(path: str | os.PathLike[str], ext: int | str = 0) -> dict[str, Any]:
    """Return the header of one HDU (by index, or by EXTNAME, case-insensitive) as a dict.

    Keys keep their order in the file; ``HIERARCH`` keys appear without the prefix (e.g.
    ``"ESO PRO CATG"``). Values are ``str`` (quotes and trailing blanks removed), ``bool``,
    ``int``, ``float``, or ``None`` for keywords without a value. Raises ``KeyError`` if the
    HDU does not exist.
    """
    return _find_hdu(path, ext).header


def read_data(path: str | os.PathLike[str], ext: int | str = 0) -> np.ndarray | None:
    """Return the image data of one HDU, or ``None`` if it has none.

    The array has numpy axis order (``NAXIS1`` is the last axis) and native byte order. With
    ``BSCALE``/``BZERO`` other than 1/0 the physical values are returned as ``float64`` (pixels
    equal to ``BLANK`` become NaN); otherwise the stored type is kept. Raises ``ValueError``
    for table extensions.
    """
    info = _find_hdu(path, ext)
    header = info.header
    xtension = str(header.get("XTENSION", "IMAGE")).strip().upper()
    if xtension != "IMAGE":
        raise ValueError(f"HDU {ext!r} of {os.fspath(path)} is a {xtension}, not an image")
    naxis = int(header.get("NAXIS", 0))
    if naxis == 0:
        return None
    bitpix = int(header["BITPIX"])
    if bitpix not in _BITPIX_TO_DTYPE:
        raise ValueError(f"unsupported BITPIX {bitpix}")
    shape = tuple(int(header[f"NAXIS{i}"]) for i in range(naxis, 0, -1))
    dtype = np.dtype(_BITPIX_TO_DTYPE[bitpix])
    count = math.prod(shape)
    with open(path, "rb") as handle:
        handle.seek(info.data_offset)
        raw = handle.read(count * dtype.itemsize)
    if len(raw) != count * dtype.itemsize:
        raise ValueError(f"truncated data in HDU {ext!r} of {os.fspath(path)}")
    data = np.frombuffer(raw, dtype=dtype).reshape(shape)
    bscale = header.get("BSCALE", 1)
    bzero = header.get("BZERO", 0)
    if bscale != 1 or bzero != 0:
        scaled = data.astype(np.float64) * float(bscale) + float(bzero)
        blank = header.get("BLANK")
        if bitpix > 0 and isinstance(blank, int):
            scaled[data == blank] = np.nan
        return scaled
    return data.astype(dtype.newbyteorder("="))
