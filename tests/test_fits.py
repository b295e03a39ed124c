"""Tests of abflow.example.fits: round trips, card formatting, block layout, reading foreign files."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

import numpy as np
import pytest

from abflow.example import fits
from abflow.example.fits import (
    BLOCK,
    Hdu,
    iter_hdus,
    list_extensions,
    read_data,
    read_header,
    write_fits,
)

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _cards(path: Path, hdu_offset: int = 0) -> list[str]:
    """The 80-character cards of the header starting at ``hdu_offset``, up to END."""
    raw = path.read_bytes()[hdu_offset:]
    cards = []
    for start in range(0, len(raw), 80):
        card = raw[start : start + 80].decode("ascii")
        cards.append(card)
        if card.startswith("END "):
            return cards
    raise AssertionError("no END card")


def _card(keyword: str, cards: list[str]) -> str:
    matches = [c for c in cards if c.startswith(keyword)]
    assert len(matches) == 1, (keyword, matches)
    return matches[0]


def _raw_header(*cards: str) -> bytes:
    """A header block from card texts (END appended, padded with blanks)."""
    text = "".join(c.ljust(80) for c in (*cards, "END"))
    raw = text.encode("ascii")
    return raw + b" " * (-len(raw) % BLOCK)


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % BLOCK)


# --------------------------------------------------------------------------------------------
# data round trips
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "bitpix"),
    [
        (np.uint8, 8),
        (np.int16, 16),
        (np.int32, 32),
        (np.int64, 64),
        (np.float32, -32),
        (np.float64, -64),
    ],
)
@pytest.mark.parametrize("shape", [(7,), (5, 3), (2, 3, 4)])
def test_round_trip_every_bitpix_and_rank(
    tmp_path: Path, dtype: type, bitpix: int, shape: tuple[int, ...]
) -> None:
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    if info is not None:
        data = rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
        data.flat[0] = info.min
        data.flat[-1] = info.max
    else:
        data = (rng.standard_normal(shape) * 1e6).astype(dtype)
    path = tmp_path / "a.fits"
    write_fits(path, Hdu({"OBJECT": "x"}, data))

    header = read_header(path)
    assert header["BITPIX"] == bitpix
    assert header["NAXIS"] == len(shape)
    # FITS axis order is the reverse of numpy's
    assert [header[f"NAXIS{i}"] for i in range(1, len(shape) + 1)] == list(reversed(shape))
    back = read_data(path)
    assert back is not None
    assert back.dtype == np.dtype(dtype)  # native byte order, original type
    assert back.dtype.isnative
    assert back.shape == shape
    np.testing.assert_array_equal(back, data)
    assert "BSCALE" not in header and "BZERO" not in header


def test_int16_is_stored_big_endian_without_scaling(tmp_path: Path) -> None:
    path = tmp_path / "i16.fits"
    write_fits(path, Hdu({}, np.array([[1, -2, 300]], dtype=np.int16)))
    raw = path.read_bytes()
    assert raw[BLOCK : BLOCK + 6] == b"\x00\x01\xff\xfe\x01\x2c"
    cards = _cards(path)
    assert not any(c.startswith(("BSCALE", "BZERO")) for c in cards)


def test_big_endian_input_array_is_written_correctly(tmp_path: Path) -> None:
    data = np.arange(6, dtype=">f8").reshape(2, 3)
    path = tmp_path / "be.fits"
    write_fits(path, Hdu({}, data))
    np.testing.assert_array_equal(read_data(path), data.astype(np.float64))


def test_unsupported_dtype_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="int16"):
        write_fits(tmp_path / "u16.fits", Hdu({}, np.zeros((2, 2), dtype=np.uint16)))
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# header cards
# --------------------------------------------------------------------------------------------


def test_header_values_round_trip_with_types(tmp_path: Path) -> None:
    header = {
        "OBJECT": "BIAS",
        "QUOTED": "it's a 'test'",
        "LEADING": "  padded",
        "EMPTY": "",
        "FLAG": True,
        "NOFLAG": False,
        "COUNT": -42,
        "BIGINT": 12345678901234,
        "EXPTIME": 3.0,
        "TINY": 1e-5,
        "HUGE": -6.02214076e23,
        "PI": 3.141592653589793,
        "ESO DPR CATG": "CALIB",
        "ESO DET OUT1 PRSCX": 24,
        "ESO INS LAMP1 ST": True,
        "ESO DET OUT1 GAIN": 1.1,
    }
    path = tmp_path / "h.fits"
    write_fits(path, Hdu(header))
    back = read_header(path)
    for key, value in header.items():
        expected = value.rstrip() if isinstance(value, str) else value
        assert back[key] == expected, key
        assert type(back[key]) is type(value), key
    # order kept, after the structural cards
    assert list(back)[:4] == ["SIMPLE", "BITPIX", "NAXIS", "OBJECT"]
    assert list(back)[3:] == list(header)


def test_card_formats_follow_the_fixed_format(tmp_path: Path) -> None:
    path = tmp_path / "c.fits"
    write_fits(
        path,
        Hdu(
            {
                "EXPTIME": (3.5, "integration time [s]"),
                "FLAG": False,
                "NUM": 7,
                "QUOTED": "it's",
                "ESO DPR CATG": ("CALIB", "observation category"),
                "HIERARCH ESO DPR TYPE": "BIAS",
            }
        ),
    )
    cards = _cards(path)
    assert all(len(c) == 80 for c in cards)
    assert cards[0] == "SIMPLE  =                    T / conforms to FITS standard".ljust(80)
    # logical and numeric values right-justified to column 30
    assert _card("FLAG", cards)[:30] == "FLAG    =                    F"
    assert _card("NUM", cards)[:30] == "NUM     =                    7"
    assert _card("EXPTIME", cards).rstrip() == (
        "EXPTIME =                  3.5 / integration time [s]"
    )
    # quotes doubled, string padded to at least 8 characters
    assert _card("QUOTED", cards).rstrip() == "QUOTED  = 'it''s   '"
    # long keywords as ESO HIERARCH cards; explicit prefix accepted and not doubled
    assert _card("HIERARCH ESO DPR CATG", cards).rstrip() == (
        "HIERARCH ESO DPR CATG = 'CALIB   ' / observation category"
    )
    assert _card("HIERARCH ESO DPR TYPE", cards).rstrip() == "HIERARCH ESO DPR TYPE = 'BIAS    '"
    assert cards[-1] == "END".ljust(80)
    back = read_header(path)
    assert back["ESO DPR TYPE"] == "BIAS"
    assert "HIERARCH ESO DPR TYPE" not in back


def test_comments_do_not_leak_into_values(tmp_path: Path) -> None:
    path = tmp_path / "c.fits"
    write_fits(path, Hdu({"A": (1, "one / slash"), "B": ("x/y", "path"), "C": (2.5, "c")}))
    back = read_header(path)
    assert back["A"] == 1 and back["B"] == "x/y" and back["C"] == 2.5


def test_float_values_always_look_like_floats(tmp_path: Path) -> None:
    path = tmp_path / "f.fits"
    write_fits(path, Hdu({"A": 1.0, "B": 1e20, "C": 2e-7}))
    cards = _cards(path)
    assert _card("A ", cards)[10:30].strip() == "1.0"
    assert _card("B ", cards)[10:30].strip() == "1.0E+20"
    assert _card("C ", cards)[10:30].strip() == "2.0E-07"
    back = read_header(path)
    assert back["A"] == 1.0 and isinstance(back["A"], float)
    assert back["B"] == 1e20 and back["C"] == 2e-7


@pytest.mark.parametrize(
    ("header", "error"),
    [
        ({"X": float("nan")}, ValueError),
        ({"X": float("inf")}, ValueError),
        ({"X": "é"}, ValueError),
        ({"X": "a" * 80}, ValueError),
        ({"ESO " + "VERY LONG " * 8: 1}, ValueError),
        ({"X": [1, 2]}, TypeError),
        ({"X": None}, TypeError),
    ],
)
def test_invalid_header_values_are_rejected(
    tmp_path: Path, header: dict, error: type[Exception]
) -> None:
    with pytest.raises(error):
        write_fits(tmp_path / "bad.fits", Hdu(header))
    assert list(tmp_path.iterdir()) == []


def test_structural_and_scaling_keys_from_caller_are_replaced(tmp_path: Path) -> None:
    path = tmp_path / "s.fits"
    data = np.ones((2, 3), dtype=np.float32)
    header = {"SIMPLE": False, "BITPIX": 16, "NAXIS": 5, "NAXIS1": 99, "BZERO": 32768, "A": 1}
    write_fits(path, Hdu(header, data))
    back = read_header(path)
    assert back["SIMPLE"] is True
    assert (back["BITPIX"], back["NAXIS"], back["NAXIS1"], back["NAXIS2"]) == (-32, 2, 3, 2)
    assert "BZERO" not in back
    np.testing.assert_array_equal(read_data(path), data)


def test_header_round_trip_through_read_header(tmp_path: Path) -> None:
    first = tmp_path / "1.fits"
    write_fits(first, Hdu({"ESO PRO CATG": "MASTER_BIAS", "N": 3}, np.zeros((2, 2), np.int16)))
    second = tmp_path / "2.fits"
    write_fits(second, Hdu(read_header(first), np.zeros((4, 4), np.float32)))
    back = read_header(second)
    assert back["ESO PRO CATG"] == "MASTER_BIAS" and back["N"] == 3
    assert (back["BITPIX"], back["NAXIS1"]) == (-32, 4)


# --------------------------------------------------------------------------------------------
# multi-extension files and padding
# --------------------------------------------------------------------------------------------


def _mef(path: Path) -> list[np.ndarray]:
    datas = [
        np.arange(6, dtype=np.int16).reshape(2, 3),
        np.full((40, 50), 2.5, dtype=np.float32),
        np.arange(1000, dtype=np.float64),
    ]
    write_fits(
        path,
        Hdu({"INSTRUME": "MUSE", "ESO DPR CATG": "CALIB"}),
        [Hdu({"EXTNAME": f"CHAN{i + 1:02d}", "IDX": i}, d) for i, d in enumerate(datas)]
        + [Hdu({"EXTNAME": "EMPTY"})],
    )
    return datas


def test_multi_extension_file(tmp_path: Path) -> None:
    path = tmp_path / "mef.fits"
    datas = _mef(path)
    primary = read_header(path)
    assert primary["EXTEND"] is True and primary["NAXIS"] == 0
    assert read_data(path) is None
    infos = list_extensions(path)
    assert [i.index for i in infos] == [0, 1, 2, 3, 4]
    assert [i.extname for i in infos] == [None, "CHAN01", "CHAN02", "CHAN03", "EMPTY"]
    for info in infos[1:]:
        assert info.header["XTENSION"] == "IMAGE"
        assert (info.header["PCOUNT"], info.header["GCOUNT"]) == (0, 1)
    for i, data in enumerate(datas):
        np.testing.assert_array_equal(read_data(path, i + 1), data)
        np.testing.assert_array_equal(read_data(path, f"CHAN{i + 1:02d}"), data)
        assert read_header(path, f"CHAN{i + 1:02d}")["IDX"] == i
    # EXTNAME lookup is case-insensitive, as in FITS
    np.testing.assert_array_equal(read_data(path, "chan02"), datas[1])
    assert read_data(path, "EMPTY") is None
    assert read_header(path, "EMPTY")["NAXIS"] == 0
    with pytest.raises(KeyError):
        read_header(path, "CHAN99")
    with pytest.raises(KeyError):
        read_data(path, 5)


def test_single_hdu_primary_has_no_extend(tmp_path: Path) -> None:
    path = tmp_path / "one.fits"
    write_fits(path, Hdu({}, np.zeros((2, 2), np.int16)))
    assert "EXTEND" not in read_header(path)


def test_blocks_are_padded(tmp_path: Path) -> None:
    path = tmp_path / "mef.fits"
    _mef(path)
    raw = path.read_bytes()
    assert len(raw) % BLOCK == 0
    infos = list_extensions(path)
    # every header starts on a block boundary, and data follow their header directly
    for info in infos:
        assert info.data_offset % BLOCK == 0
    assert [i.data_size for i in infos] == [0, 12, 8000, 8000, 0]
    # header padding is blanks, data padding zeros
    chan01 = infos[1]
    end = chan01.data_offset + chan01.data_size
    assert raw[end : chan01.data_offset + BLOCK] == b"\0" * (BLOCK - chan01.data_size)
    header_text = raw[: infos[0].data_offset].decode("ascii")
    after_end = header_text[header_text.index("END" + " " * 77) + 80 :]
    assert after_end == " " * len(after_end)
    # primary (1 block) + CHAN01 (1 + 1) + CHAN02 (1 + 3) + CHAN03 (1 + 3) + EMPTY (1)
    assert len(raw) == 12 * BLOCK


def test_header_spanning_several_blocks(tmp_path: Path) -> None:
    header = {f"ESO QC KEY{i} VALUE": float(i) for i in range(100)}  # > 36 cards
    path = tmp_path / "long.fits"
    data = np.arange(4, dtype=np.int32)
    write_fits(path, Hdu(header, data))
    info = list_extensions(path)[0]
    assert info.data_offset == 3 * BLOCK  # 104 cards -> 3 blocks
    back = read_header(path)
    assert all(back[k] == v for k, v in header.items())
    np.testing.assert_array_equal(read_data(path), data)


# --------------------------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------------------------


def test_atomic_write_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "a.fits"
    write_fits(path, Hdu({"V": 1}, np.zeros(3, np.int16)))
    write_fits(path, Hdu({"V": 2}, np.zeros(3, np.int16)))  # overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.fits"]
    assert read_header(path)["V"] == 2
    assert (path.stat().st_mode & 0o777) == 0o644


def test_failed_write_keeps_old_file_and_removes_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.fits"
    write_fits(path, Hdu({"V": 1}))
    before = path.read_bytes()

    def broken_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(fits.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_fits(path, Hdu({"V": 2}, np.zeros((100, 100), np.float64)))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.fits"]
    assert path.read_bytes() == before


# --------------------------------------------------------------------------------------------
# reading files written by other software
# --------------------------------------------------------------------------------------------


def test_bscale_bzero_are_applied(tmp_path: Path) -> None:
    # unsigned 16-bit convention (BZERO = 32768) and a scaled image with BLANK
    raw = np.array([[-32768, 0, 32767]], dtype=">i2").tobytes()
    content = _raw_header(
        "SIMPLE  =                    T",
        "BITPIX  =                   16",
        "NAXIS   =                    2",
        "NAXIS1  =                    3",
        "NAXIS2  =                    1",
        "EXTEND  =                    T",
        "BSCALE  =                  1.0",
        "BZERO   =              32768.0",
    ) + _pad(raw)
    raw2 = np.array([10, 20, -1], dtype=">i4").tobytes()
    content += _raw_header(
        "XTENSION= 'IMAGE   '",
        "BITPIX  =                   32",
        "NAXIS   =                    1",
        "NAXIS1  =                    3",
        "PCOUNT  =                    0",
        "GCOUNT  =                    1",
        "BSCALE  =                  0.5",
        "BZERO   =                  1.0",
        "BLANK   =                   -1",
        "EXTNAME = 'SCALED  '",
    ) + _pad(raw2)
    path = tmp_path / "scaled.fits"
    path.write_bytes(content)
    data = read_data(path)
    assert data is not None and data.dtype == np.float64
    np.testing.assert_array_equal(data, [[0.0, 32768.0, 65535.0]])
    scaled = read_data(path, "SCALED")
    assert scaled is not None
    np.testing.assert_array_equal(scaled[:2], [6.0, 11.0])
    assert np.isnan(scaled[2])


def test_tables_are_skipped_and_not_read_as_images(tmp_path: Path) -> None:
    table = np.arange(3, dtype=">f8").tobytes()
    image = np.arange(4, dtype=">i2").tobytes()
    content = _raw_header(
        "SIMPLE  =                    T",
        "BITPIX  =                    8",
        "NAXIS   =                    0",
        "EXTEND  =                    T",
        "COMMENT   a commentary card = not a value",
        "HISTORY   another one",
    )
    content += _raw_header(
        "XTENSION= 'BINTABLE'",
        "BITPIX  =                    8",
        "NAXIS   =                    2",
        "NAXIS1  =                    8",
        "NAXIS2  =                    3",
        "PCOUNT  =                    0",
        "GCOUNT  =                    1",
        "TFIELDS =                    1",
        "TFORM1  = '1D      '",
        "EXTNAME = 'TRACE   '",
    ) + _pad(table)
    content += _raw_header(
        "XTENSION= 'IMAGE   '",
        "BITPIX  =                   16",
        "NAXIS   =                    1",
        "NAXIS1  =                    4",
        "PCOUNT  =                    0",
        "GCOUNT  =                    1",
        "EXTNAME = 'DATA    '",
    ) + _pad(image)
    path = tmp_path / "table.fits"
    path.write_bytes(content)
    infos = list(iter_hdus(path))
    assert [(i.index, i.extname) for i in infos] == [(0, None), (1, "TRACE"), (2, "DATA")]
    assert infos[1].data_size == 24
    assert "COMMENT" not in infos[0].header and "HISTORY" not in infos[0].header
    with pytest.raises(ValueError, match="BINTABLE"):
        read_data(path, "TRACE")
    np.testing.assert_array_equal(read_data(path, "DATA"), [0, 1, 2, 3])


def test_continue_long_strings_and_odd_values(tmp_path: Path) -> None:
    content = _raw_header(
        "SIMPLE  =                    T",
        "BITPIX  =                    8",
        "NAXIS   =                    0",
        "LONGSTR = 'first part &'",
        "CONTINUE  'second part&'",
        "CONTINUE  ' end'",
        "DFLOAT  =               1.5D+2 / Fortran exponent",
        "UNDEF   =                      / no value",
        "HIERARCH ESO PRO REC1 PARAM1 VALUE = 'true' / string, not bool",
        "HIERARCH ESO QC COUNT = 40",
        "DUP     =                    1",
        "DUP     =                    2",
    )
    path = tmp_path / "odd.fits"
    path.write_bytes(content)
    header = read_header(path)
    assert header["LONGSTR"] == "first part second part end"
    assert header["DFLOAT"] == 150.0
    assert header["UNDEF"] is None
    assert header["ESO PRO REC1 PARAM1 VALUE"] == "true"
    assert header["ESO QC COUNT"] == 40
    assert header["DUP"] == 1  # first occurrence wins
    assert "CONTINUE" not in header


def test_not_a_fits_file(tmp_path: Path) -> None:
    path = tmp_path / "x.fits"
    path.write_bytes(b"hello".ljust(BLOCK))
    with pytest.raises(ValueError):
        read_header(path)


def test_truncated_data_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "t.fits"
    write_fits(path, Hdu({}, np.zeros((100, 100), np.float64)))
    path.write_bytes(path.read_bytes()[: BLOCK * 3])
    with pytest.raises(ValueError, match="truncated"):
        read_data(path)


# --------------------------------------------------------------------------------------------
# cross-check with CFITSIO, the reference implementation (when its library is installed)
# --------------------------------------------------------------------------------------------


def _cfitsio() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("cfitsio")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def test_cfitsio_reads_what_we_write(tmp_path: Path) -> None:
    lib = _cfitsio()
    if lib is None:
        pytest.skip("libcfitsio not installed (Debian: libcfitsio10)")
    path = tmp_path / "x.fits"
    data = np.arange(12, dtype=np.int16).reshape(3, 4) - 5
    write_fits(
        path,
        Hdu({"ESO DPR CATG": ("CALIB", "category"), "EXPTIME": 2.5, "Q": "it's"}),
        [Hdu({"EXTNAME": "CHAN01"}, data), Hdu({"EXTNAME": "CHAN02"}, data.astype(np.float32))],
    )
    fptr = ctypes.c_void_p()
    status = ctypes.c_int(0)
    assert lib.ffopen(ctypes.byref(fptr), os.fsencode(path), 0, ctypes.byref(status)) == 0
    try:
        nhdu = ctypes.c_int()
        lib.ffthdu(fptr, ctypes.byref(nhdu), ctypes.byref(status))
        assert (status.value, nhdu.value) == (0, 3)
        value = ctypes.create_string_buffer(81)
        comment = ctypes.create_string_buffer(81)
        lib.ffgkys(fptr, b"ESO DPR CATG", value, comment, ctypes.byref(status))
        assert (status.value, value.value, comment.value) == (0, b"CALIB", b"category")
        lib.ffgkys(fptr, b"Q", value, None, ctypes.byref(status))
        assert (status.value, value.value) == (0, b"it's")
        exptime = ctypes.c_double()
        lib.ffgkyd(fptr, b"EXPTIME", ctypes.byref(exptime), None, ctypes.byref(status))
        assert (status.value, exptime.value) == (0, 2.5)
        for hdu in (2, 3):
            hdutype = ctypes.c_int()
            lib.ffmahd(fptr, hdu, ctypes.byref(hdutype), ctypes.byref(status))
            out = np.zeros(12, dtype=np.float64)
            anynul = ctypes.c_int()
            tdouble = 82
            lib.ffgpv(
                fptr,
                tdouble,
                ctypes.c_longlong(1),
                ctypes.c_longlong(12),
                None,
                out.ctypes.data_as(ctypes.c_void_p),
                ctypes.byref(anynul),
                ctypes.byref(status),
            )
            assert status.value == 0
            np.testing.assert_array_equal(out.reshape(3, 4), data)
    finally:
        lib.ffclos(fptr, ctypes.byref(status))


def test_trailing_padding_after_last_hdu_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "p.fits"
    write_fits(path, Hdu({"A": 1}), [Hdu({"EXTNAME": "X"}, np.ones(3, np.int16))])
    path.write_bytes(path.read_bytes() + b"\0" * BLOCK)
    assert [i.extname for i in list_extensions(path)] == [None, "X"]
    np.testing.assert_array_equal(read_data(path, "X"), [1, 1, 1])


def test_empty_file_is_not_fits(tmp_path: Path) -> None:
    path = tmp_path / "empty.fits"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        list_extensions(path)
