"""Synthetic raw frames (abflow.example.synth), and real ESO recipes run on them through esorex.

The tests marked ``esorex`` run the Debian ``esorex`` command with the GIRAFFE, UVES and MUSE
plugins (packages esorex, cpl-plugin-giraf, cpl-plugin-uves, cpl-plugin-muse).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from abflow.example.synth import (
    MUSE_FLAT_QUADRANT,
    MUSE_NIFU,
    RAW_TAGS,
    archive_name,
    giraffe_frame,
    hot_pixel_positions,
    mjd_obs,
    muse_frame,
    raw_frame,
    uves_frame,
    write_raw_frame,
)

# --------------------------------------------------------------------------------------------
# names and times
# --------------------------------------------------------------------------------------------


def test_archive_name_formats() -> None:
    ts = "2013-02-13T10:02:03.123"
    assert archive_name("GIRAF", ts) == "GIRAF.2013-02-13T10:02:03.123.fits"
    assert archive_name("GIRAFFE", ts) == "GIRAF.2013-02-13T10:02:03.123.fits"
    assert archive_name("UVES", ts) == "UVES.2013-02-13T10:02:03.123.fits"
    assert archive_name("MUSE", ts) == "MUSE.2013-02-13T10:02:03.123.fits"
    # always three decimals, truncated (not rounded), UTC
    assert archive_name("MUSE", "2013-02-13T10:02:03") == "MUSE.2013-02-13T10:02:03.000.fits"
    assert archive_name("MUSE", "2013-02-13T10:02:03.9999") == "MUSE.2013-02-13T10:02:03.999.fits"
    cest = timezone(timedelta(hours=2))
    moment = datetime(2013, 2, 13, 12, 2, 3, 123456, tzinfo=cest)
    assert archive_name("UVES", moment) == "UVES.2013-02-13T10:02:03.123.fits"


def test_mjd_obs() -> None:
    assert mjd_obs("2013-02-13T00:00:00") == 56336.0
    assert mjd_obs("2013-02-13T12:00:00.000") == 56336.5
    assert mjd_obs(datetime(1858, 11, 17, tzinfo=UTC)) == 0.0
    assert abs(mjd_obs("2013-02-13T10:02:03.123") - (56336 + 36123.123 / 86400)) < 1e-9


# --------------------------------------------------------------------------------------------
# frame contents
# --------------------------------------------------------------------------------------------

TIMESTAMP = "2013-02-13T10:02:03.123"
CASES = [
    ("GIRAFFE", "BIAS", (2112, 1152)),
    ("GIRAFFE", "DARK", (2112, 1152)),
    ("UVES", "BIAS", (512, 512)),
    ("UVES", "DARK", (512, 512)),
    ("MUSE", "BIAS", (384, 384)),
    ("MUSE", "DARK", (384, 384)),
]


@pytest.mark.parametrize(("instrument", "kind", "shape"), CASES)
def test_frame_headers_and_pixels(instrument: str, kind: str, shape: tuple[int, int]) -> None:
    exptime = 600.0 if kind == "DARK" else 0.0
    hdus = raw_frame(instrument, kind, TIMESTAMP, seed=3, exptime=exptime)
    value = hdus[0].header
    assert value["ARCFILE"] == archive_name(instrument, TIMESTAMP)
    assert value["ORIGIN"] == "ESO"
    assert value["INSTRUME"] == instrument
    assert value["DATE-OBS"] == TIMESTAMP
    assert value["MJD-OBS"] == pytest.approx(mjd_obs(TIMESTAMP), abs=1e-8)
    assert value["EXPTIME"] == exptime
    assert value["ESO DPR CATG"] == "CALIB"
    assert value["ESO DPR TYPE"] == kind
    assert (
        value["ESO DPR TECH"] == {"GIRAFFE": "IMAGE", "UVES": "ECHELLE", "MUSE": "IFU"}[instrument]
    )
    images = [h.data for h in hdus if h.data is not None]
    assert images, "no pixel data"
    for image in images:
        assert image.dtype == np.int16
        assert image.shape == shape
        assert image.min() > 0
    if instrument == "MUSE":
        assert hdus[0].data is None
        assert [h.header["EXTNAME"] for h in hdus[1:]] == [f"CHAN{i:02d}" for i in range(1, 25)]
    else:
        assert len(hdus) == 1


def test_uves_has_the_keys_the_recipes_need() -> None:
    header = uves_frame("BIAS", TIMESTAMP, seed=1)[0].header
    for key in (
        "EXPTIME",
        "MJD-OBS",
        "ORIGIN",
        "ESO DET READ SPEED",
        "ESO DET OUT1 PRSCX",
        "ESO DET OUT1 OVSCX",
        "ESO DET OUT1 PRSCY",
        "ESO DET OUT1 OVSCY",
        "ESO DET WIN1 BINX",
        "ESO DET WIN1 BINY",
        "CTYPE1",
        "CTYPE2",
        "CRPIX1",
        "CRPIX2",
        "CDELT1",
        "CDELT2",
        "ESO DET CHIP1 ID",
        "ESO DET CHIPS",
    ):
        assert key in header, key
    assert isinstance(header["CRVAL1"], float) and isinstance(header["CRVAL2"], float)
    assert header["ESO DET CHIPS"] == 1  # blue arm: classification rule DET.CHIPS == 1


def test_muse_extensions_describe_four_ports() -> None:
    hdus = muse_frame("BIAS", TIMESTAMP, seed=1, quadrant=(64, 96), ifus=[5, 7])
    assert [h.header["EXTNAME"] for h in hdus[1:]] == ["CHAN05", "CHAN07"]
    ext = hdus[1]
    assert ext.data is not None and ext.data.shape == (2 * (64 + 64), 2 * (96 + 64))
    header = ext.header
    positions = {n: (header[f"ESO DET OUT{n} X"], header[f"ESO DET OUT{n} Y"]) for n in range(1, 5)}
    assert positions == {1: (1, 1), 2: (4096, 1), 3: (4096, 4112), 4: (1, 4112)}
    for n in range(1, 5):
        assert (header[f"ESO DET OUT{n} NX"], header[f"ESO DET OUT{n} NY"]) == (96, 64)
        for scan in ("PRSCX", "PRSCY", "OVSCX", "OVSCY"):
            assert header[f"ESO DET OUT{n} {scan}"] == 32
    assert header["ESO DET CHIP NAME"] == "MUSE-CCD-05"
    assert (header["ESO DET BINX"], header["ESO DET BINY"]) == (1, 1)
    # each port has its own bias level: compare the four corners
    data = ext.data.astype(float)
    corners = [data[:64, :64], data[:64, -64:], data[-64:, -64:], data[-64:, :64]]
    levels = [float(np.median(c)) for c in corners]
    assert levels == sorted(levels) and levels[3] - levels[0] > 30
    with pytest.raises(ValueError):
        muse_frame("BIAS", TIMESTAMP, seed=1, ifus=[25])


def test_bias_level_and_read_noise() -> None:
    image = giraffe_frame("BIAS", TIMESTAMP, seed=5, bias_level=210.0, read_noise=4.2)[0].data
    assert image is not None
    assert abs(float(image.mean()) - 210.0) < 0.05
    assert abs(float(image.std()) - 4.2) < 0.05


def test_frames_are_deterministic(tmp_path: Path) -> None:
    a = write_raw_frame(tmp_path / "a.fits", "UVES", "DARK", TIMESTAMP, seed=11, exptime=60.0)
    b = write_raw_frame(tmp_path / "b.fits", "UVES", "DARK", TIMESTAMP, seed=11, exptime=60.0)
    c = write_raw_frame(tmp_path / "c.fits", "UVES", "DARK", TIMESTAMP, seed=12, exptime=60.0)
    assert a.read_bytes() == b.read_bytes()
    data_a, data_c = fits.getdata(a), fits.getdata(c)
    assert data_a is not None and data_c is not None
    assert not np.array_equal(data_a, data_c)


def test_hot_pixels_are_fixed_per_detector_and_scale_with_exptime() -> None:
    darks = [
        giraffe_frame("DARK", TIMESTAMP, seed=s, exptime=t, hot_pixels=40, hot_rate=5.0)[0].data
        for s, t in ((1, 3600.0), (2, 3600.0), (3, 100.0))
    ]
    rows, cols = hot_pixel_positions("GIRAFFE", "CCD-44", (2112, 1152), 40, 48)
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) == 40
    assert cols.min() >= 48  # never in the prescan
    expected = set(zip(rows.tolist(), cols.tolist(), strict=True))
    for dark in darks[:2]:
        assert dark is not None
        hot = np.argwhere(dark > 210 + 1000)
        assert {(int(r), int(c)) for r, c in hot} == expected
        assert float(np.median(dark[rows, cols])) == pytest.approx(210 + 5.0 * 3600, abs=20)
    short = darks[2]
    assert short is not None
    assert float(np.median(short[rows, cols])) == pytest.approx(210 + 5.0 * 100, abs=20)


def test_dark_current_only_in_the_illuminated_area() -> None:
    dark = giraffe_frame("DARK", TIMESTAMP, seed=4, exptime=3600.0, dark_current=0.01)[0].data
    assert dark is not None
    prescan = float(np.median(dark[:, :48]))
    illuminated = float(np.median(dark[:, 48:]))
    assert prescan == pytest.approx(210, abs=1)
    assert illuminated == pytest.approx(210 + 36, abs=1)


def test_write_raw_frame_names_file_after_arcfile(tmp_path: Path) -> None:
    path = write_raw_frame(tmp_path, "GIRAFFE", "BIAS", TIMESTAMP, seed=1)
    assert path == tmp_path / "GIRAF.2013-02-13T10:02:03.123.fits"
    header = fits.getheader(path)
    assert header["ARCFILE"] == path.name
    assert header["ESO DPR TYPE"] == "BIAS"
    data = fits.getdata(path)
    assert data is not None and data.shape == (2112, 1152)
    # int16 as stored (FITS is big-endian), unscaled: UVES refuses BSCALE/BZERO
    assert data.dtype.kind == "i" and data.dtype.itemsize == 2
    assert "BSCALE" not in header and "BZERO" not in header
    assert header["BITPIX"] == 16 and "CHECKSUM" in header
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_generation_is_fast(tmp_path: Path) -> None:
    # generous bound (the target is < 0.5 s per frame) so that a loaded machine does not fail
    for instrument in ("GIRAFFE", "UVES", "MUSE"):
        start = time.perf_counter()
        write_raw_frame(tmp_path, instrument, "DARK", TIMESTAMP, seed=1, exptime=10.0)
        assert time.perf_counter() - start < 3.0, instrument


@pytest.mark.parametrize(
    ("instrument", "kind"),
    [
        ("GIRAFFE", "FLAT"),
        ("UVES", "FLAT"),
        ("FORS2", "BIAS"),
        ("GIRAFFE", "DARK"),  # exptime 0: recipes would divide by zero
        ("MUSE", "DARK"),
        ("MUSE", "FLAT"),
    ],
)
def test_unsupported_frames_are_rejected(instrument: str, kind: str) -> None:
    with pytest.raises(ValueError):
        raw_frame(instrument, kind, TIMESTAMP, seed=1)


# --------------------------------------------------------------------------------------------
# real recipes
# --------------------------------------------------------------------------------------------

needs_esorex = pytest.mark.skipif(
    shutil.which("esorex") is None,
    reason="esorex not installed (Debian: esorex cpl-plugin-giraf cpl-plugin-uves cpl-plugin-muse)",
)


def _frames(raw: Path, instrument: str, kind: str, hour: int, exptime: float) -> list[Path]:
    return [
        write_raw_frame(
            raw, instrument, kind, f"2013-02-13T{hour:02d}:{i:02d}:03.123", 10 * hour + i, exptime
        )
        for i in range(3)
    ]


def _esorex(
    workdir: Path, recipe: str, options: list[str], sof: list[tuple[Path, str]], prefix: str
) -> dict[str, str]:
    """Run one recipe in its own working directory; return {product file name: PRO.CATG}."""
    workdir.mkdir(parents=True)
    out = workdir / "out"
    out.mkdir()
    sof_path = workdir / f"{recipe}.sof"
    sof_path.write_text("".join(f"{path.resolve()} {tag}\n" for path, tag in sof))
    command = [
        "esorex",
        f"--output-dir={out}",
        f"--log-dir={out}",
        f"--output-prefix={prefix}",
        "--suppress-prefix=FALSE",
        recipe,
        *options,
        str(sof_path),
    ]
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{recipe} exited {result.returncode}:\n{output[-4000:]}"
    errors = [line for line in output.splitlines() if "[ ERROR ]" in line]
    assert not errors, "\n".join(errors)
    assert "[ ERROR ]" not in (out / "esorex.log").read_text()
    assert not list(workdir.glob("*.fits")), "products written outside --output-dir"
    return {p.name: fits.getheader(p)["ESO PRO CATG"] for p in sorted(out.glob("*.fits"))}


def _count_hot(path: Path, ext: int | str, threshold: float) -> int:
    data = fits.getdata(path, ext)
    assert data is not None
    assert np.any(data != 0), f"{path.name} is all zeros"
    return int(np.count_nonzero(data > threshold))


@pytest.mark.esorex
@needs_esorex
def test_giraffe_bias_dark_chain(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    tag = RAW_TAGS["GIRAFFE"]
    bias = _frames(raw, "GIRAFFE", "BIAS", 10, 0.0)
    prefix = "r.GIRAF.2013-02-13T10:00:03.123_tpl"
    products = _esorex(
        tmp_path / "bias", "gimasterbias", [], [(p, tag["BIAS"]) for p in bias], prefix
    )
    assert products == {
        f"{prefix}_0000.fits": "MASTER_BIAS",
        f"{prefix}_0001.fits": "BAD_PIXEL_MAP",
    }
    master_bias = tmp_path / "bias" / "out" / f"{prefix}_0000.fits"
    mbias = fits.getdata(master_bias)
    assert mbias is not None and float(np.median(mbias)) == pytest.approx(210.0, abs=1.0)

    darks = _frames(raw, "GIRAFFE", "DARK", 11, 3600.0)
    prefix = "r.GIRAF.2013-02-13T11:00:03.123_tpl"
    products = _esorex(
        tmp_path / "dark",
        "gimasterdark",
        ["--bsremove-areas=5:40:0:2111"],  # default stops at row 4095: beyond our 2112 rows
        [(p, tag["DARK"]) for p in darks] + [(master_bias, "MASTER_BIAS")],
        prefix,
    )
    assert products == {f"{prefix}_0000.fits": "MASTER_DARK"}
    master_dark = tmp_path / "dark" / "out" / f"{prefix}_0000.fits"
    # master dark is in ADU/s: hot pixels at 5 ADU/s, dark current 0.002 ADU/s
    assert _count_hot(master_dark, 0, 1.0) == 40
    data = fits.getdata(master_dark)
    assert data is not None and float(np.median(data)) == pytest.approx(0.002, abs=0.001)


@pytest.mark.esorex
@needs_esorex
def test_uves_blue_bias_dark_chain(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    tag = RAW_TAGS["UVES"]
    bias = _frames(raw, "UVES", "BIAS", 10, 0.0)
    prefix = "r.UVES.2013-02-13T10:00:03.123_tpl"
    products = _esorex(
        tmp_path / "bias", "uves_cal_mbias", [], [(p, tag["BIAS"]) for p in bias], prefix
    )
    assert products == {f"{prefix}_0000.fits": "MASTER_BIAS_BLUE"}
    master_bias = tmp_path / "bias" / "out" / f"{prefix}_0000.fits"

    darks = _frames(raw, "UVES", "DARK", 11, 3600.0)
    prefix = "r.UVES.2013-02-13T11:00:03.123_tpl"
    products = _esorex(
        tmp_path / "dark",
        "uves_cal_mdark",
        [],
        [(p, tag["DARK"]) for p in darks] + [(master_bias, "MASTER_BIAS_BLUE")],
        prefix,
    )
    assert products == {f"{prefix}_0000.fits": "MASTER_DARK_BLUE"}
    master_dark = tmp_path / "dark" / "out" / f"{prefix}_0000.fits"
    # not normalised: hot pixels at 5 ADU/s * 3600 s, dark current 0.002 ADU/s * 3600 s
    assert _count_hot(master_dark, 0, 1000.0) == 20
    data = fits.getdata(master_dark)
    assert data is not None and float(np.median(data)) == pytest.approx(7.2, abs=1.0)


@pytest.mark.esorex
@needs_esorex
def test_muse_bias_dark_chain(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    tag = RAW_TAGS["MUSE"]
    chans = {f"CHAN{i:02d}" for i in range(1, MUSE_NIFU + 1)}
    bias = _frames(raw, "MUSE", "BIAS", 10, 0.0)
    prefix = "r.MUSE.2013-02-13T10:00:03.123_tpl"
    products = _esorex(
        tmp_path / "bias", "muse_bias", ["--nifu=-1"], [(p, tag["BIAS"]) for p in bias], prefix
    )
    # one product per IFU; with parallel IFUs the numbering follows completion order, so the
    # IFU is identified by the EXTNAME of the product's primary HDU
    assert products == {f"{prefix}_{i:04d}.fits": "MASTER_BIAS" for i in range(MUSE_NIFU)}
    bias_out = tmp_path / "bias" / "out"
    assert {fits.getheader(bias_out / name)["EXTNAME"] for name in products} == chans
    first = bias_out / f"{prefix}_0000.fits"
    assert [hdu.header.get("EXTNAME") for hdu in fits.open(first)] == [
        fits.getheader(first)["EXTNAME"],
        "DATA",
        "DQ",
        "STAT",
    ]

    darks = _frames(raw, "MUSE", "DARK", 11, 3600.0)
    prefix = "r.MUSE.2013-02-13T11:00:03.123_tpl"
    products = _esorex(
        tmp_path / "dark",
        "muse_dark",
        ["--nifu=-1"],
        [(p, tag["DARK"]) for p in darks] + [(bias_out / n, "MASTER_BIAS") for n in products],
        prefix,
    )
    assert products == {f"{prefix}_{i:04d}.fits": "MASTER_DARK" for i in range(MUSE_NIFU)}
    dark_out = tmp_path / "dark" / "out"
    assert {fits.getheader(dark_out / name)["EXTNAME"] for name in products} == chans
    for name in products:
        # normalised to 3600 s: hot pixels at 3 ADU/s * 3600 s, 40 per IFU
        assert _count_hot(dark_out / name, "DATA", 1000.0) == 40
        assert fits.getheader(dark_out / name)["ESO QC DARK MASTER NBADPIX"] >= 40


@pytest.mark.esorex
@needs_esorex
def test_muse_flat_chain_on_one_full_width_ifu(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    opts = {"quadrant": MUSE_FLAT_QUADRANT, "ifus": [1]}

    def frames(kind: str, hour: int, exptime: float) -> list[tuple[Path, str]]:
        return [
            (
                write_raw_frame(
                    raw, "MUSE", kind, f"2013-02-13T{hour:02d}:{i:02d}:03.123", i, exptime, **opts
                ),
                RAW_TAGS["MUSE"][kind],
            )
            for i in range(3)
        ]

    products = _esorex(tmp_path / "bias", "muse_bias", ["--nifu=1"], frames("BIAS", 10, 0), "b")
    assert products == {"b_0000.fits": "MASTER_BIAS"}
    master_bias = (tmp_path / "bias" / "out" / "b_0000.fits", "MASTER_BIAS")
    products = _esorex(
        tmp_path / "dark", "muse_dark", ["--nifu=1"], [*frames("DARK", 11, 600), master_bias], "d"
    )
    assert products == {"d_0000.fits": "MASTER_DARK"}
    master_dark = (tmp_path / "dark" / "out" / "d_0000.fits", "MASTER_DARK")
    products = _esorex(
        tmp_path / "flat",
        "muse_flat",
        ["--nifu=1", "--order=1"],
        [*frames("FLAT", 12, 10), master_bias, master_dark],
        "f",
    )
    assert products == {"f_0000.fits": "MASTER_FLAT", "f_0001.fits": "TRACE_TABLE"}
    out = tmp_path / "flat" / "out"
    flat = fits.getheader(out / "f_0000.fits")
    assert flat["EXTNAME"] == "CHAN01"
    assert flat["ESO QC FLAT MASTER MEDIAN"] > 1000  # lamp light reached the master flat
    trace = fits.open(out / "f_0001.fits")
    assert trace[1].header["XTENSION"] == "BINTABLE"
    assert trace[1].header["NAXIS2"] == 48  # one trace row per slice: all slices found


def test_muse_flat_needs_full_width_quadrants() -> None:
    with pytest.raises(ValueError, match="MUSE FLAT frames need quadrants"):
        muse_frame("FLAT", TIMESTAMP, seed=1, exptime=10.0)  # default 128 x 128 quadrants
    hdus = muse_frame("FLAT", TIMESTAMP, seed=1, exptime=10.0, quadrant=(16, 2048), ifus=[3])
    header = hdus[0].header
    # the MUSE classification rule for FLAT needs this template and DPR keys
    assert header["ESO TPL ID"] == "MUSE_wfm_cal_specflat"
    assert (header["ESO DPR CATG"], header["ESO DPR TECH"]) == ("CALIB", "IFU")
    assert header["ESO DPR TYPE"].startswith("FLAT")
    data = hdus[1].data
    assert data is not None
    # a row through the lower data area crosses 24 slices per port pair: 48 lit runs in all
    row = data[32 + 8].astype(float)
    lit = row > 1000 + 2000
    starts = np.flatnonzero(lit[1:] & ~lit[:-1])
    assert len(starts) == 48
    assert int(lit.sum()) == 48 * 77


def test_muse_hot_pixels_lie_in_the_data_areas_of_each_ifu() -> None:
    positions = []
    for seed in (1, 2):
        hdus = muse_frame("DARK", TIMESTAMP, seed=seed, exptime=3600.0, ifus=[1, 2])
        hot_per_ifu = []
        for ext in hdus[1:]:
            assert ext.data is not None
            hot = np.argwhere(ext.data > 1000 + 100 + 5000)
            assert len(hot) == 40
            rows, cols = hot[:, 0], hot[:, 1]
            # 384 x 384: data rows/cols are 32..159 and 224..351 (prescans outside, overscans
            # in the middle)
            for axis in (rows, cols):
                assert np.all(((axis >= 32) & (axis < 160)) | ((axis >= 224) & (axis < 352)))
            hot_per_ifu.append({(int(r), int(c)) for r, c in hot})
        assert hot_per_ifu[0] != hot_per_ifu[1]  # each CCD has its own hot pixels
        positions.append(hot_per_ifu)
    assert positions[0] == positions[1]  # and keeps them from frame to frame
