"""FITS as the example's tooling writes and reads it, through astropy.io.fits: valid files with
checksums, ESO HIERARCH cards, multi-extension frames, atomic writes, and tile-compressed
products that QC reads too."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from abflow.example.qc import first_image
from abflow.example.synth import write_raw_frame
from abflow.state import fsutil

BLOCK = 2880
TIMESTAMP = "2013-02-13T10:02:03.123"


def test_frames_are_valid_fits_with_checksums_on_block_boundaries(tmp_path: Path) -> None:
    path = write_raw_frame(tmp_path, "MUSE", "DARK", TIMESTAMP, seed=1, exptime=10.0)
    assert path.stat().st_size % BLOCK == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a bad checksum or card would warn
        with fits.open(path, checksum=True) as hdus:
            hdus.verify("exception")
            assert [h.header.get("EXTNAME") for h in hdus] == [
                None,
                *(f"CHAN{i:02d}" for i in range(1, 25)),
            ]
            assert all("CHECKSUM" in h.header and "DATASUM" in h.header for h in hdus)
            # EXTNAME lookup is case-insensitive, as in FITS
            np.testing.assert_array_equal(hdus["chan02"].data, hdus["CHAN02"].data)
    raw = path.read_bytes()
    cards = [raw[i : i + 80].decode("ascii") for i in range(0, BLOCK, 80)]
    assert cards[0].startswith("SIMPLE  =                    T")
    assert any(c.startswith("HIERARCH ESO DPR CATG = 'CALIB   '") for c in cards)


def test_a_frame_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "frame.fits"
    write_raw_frame(target, "UVES", "BIAS", TIMESTAMP, seed=1)
    before = target.read_bytes()

    def broken_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(fsutil.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_raw_frame(target, "UVES", "BIAS", TIMESTAMP, seed=2)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frame.fits"]
    assert target.read_bytes() == before


def test_qc_reads_tile_compressed_products(tmp_path: Path) -> None:
    image = np.arange(64 * 48, dtype=np.float32).reshape(64, 48)
    path = tmp_path / "r.X_0000.fits.fz"
    fits.HDUList(
        [fits.PrimaryHDU(), fits.CompImageHDU(image, compression_type="GZIP_1", quantize_level=0.0)]
    ).writeto(path)
    index, data, header = first_image(str(path))
    assert index == 1 and header["NAXIS1"] == 48
    np.testing.assert_allclose(data, image)


def _cfitsio() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("cfitsio")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def test_cfitsio_reads_the_frames_we_write(tmp_path: Path) -> None:
    """CFITSIO is what the ESO recipes read the frames with."""
    lib = _cfitsio()
    if lib is None:
        pytest.skip("libcfitsio not installed (Debian: libcfitsio10, a dependency of esorex)")
    path = write_raw_frame(tmp_path, "MUSE", "BIAS", TIMESTAMP, seed=1, ifus=[1, 2])
    expected = fits.getdata(path, "CHAN02").astype(np.float64)
    fptr, status = ctypes.c_void_p(), ctypes.c_int(0)
    assert lib.ffopen(ctypes.byref(fptr), os.fsencode(path), 0, ctypes.byref(status)) == 0
    try:
        nhdu = ctypes.c_int()
        lib.ffthdu(fptr, ctypes.byref(nhdu), ctypes.byref(status))
        assert (status.value, nhdu.value) == (0, 3)
        value = ctypes.create_string_buffer(81)
        lib.ffgkys(fptr, b"ESO DPR CATG", value, None, ctypes.byref(status))
        assert (status.value, value.value) == (0, b"CALIB")
        hdutype = ctypes.c_int()
        lib.ffmahd(fptr, 3, ctypes.byref(hdutype), ctypes.byref(status))
        out = np.zeros(expected.size, dtype=np.float64)
        anynul = ctypes.c_int()
        lib.ffgpv(
            fptr,
            82,
            ctypes.c_longlong(1),
            ctypes.c_longlong(expected.size),
            None,
            out.ctypes.data_as(ctypes.c_void_p),
            ctypes.byref(anynul),
            ctypes.byref(status),
        )
        assert status.value == 0
        np.testing.assert_array_equal(out.reshape(expected.shape), expected)
    finally:
        lib.ffclos(fptr, ctypes.byref(status))
