"""abflow's processQC: QC1 numbers, PAF and PNG report."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from conftest import DATE

from abflow.example.qc import HOT_SIGMA, QCError, image_stats, process_qc
from abflow.model.ab import parse_ab
from abflow.model.config import resolve


def test_image_stats_on_a_known_image() -> None:
    rng = np.random.default_rng(1)
    data = rng.normal(500.0, 4.0, size=(400, 400))
    data[10, 10:25] = 500 + 20 * HOT_SIGMA * 4  # 15 hot pixels
    data[5, 5] = np.nan
    median, noise, mean, hot = image_stats(data)
    assert median == pytest.approx(500.0, abs=0.1)
    assert noise == pytest.approx(4.0, rel=0.03)
    assert mean == pytest.approx(500.0 + 15 * 800 / 160_000, abs=0.1)
    assert hot == 15
    with pytest.raises(QCError):
        image_stats(np.full((3, 3), np.nan))


def test_process_qc_writes_paf_png_and_results(dfo, tmp_path, monkeypatch) -> None:
    settings = resolve({"date": DATE, "dfo": dfo})
    product = Path(dfo["product_dir"], "DARK", DATE, "r.X_0000.fits")
    product.parent.mkdir(parents=True)
    image = np.full((64, 64), 7.0, dtype=np.float32)
    image[3, 3] = 1000.0
    header = fits.Header([("HIERARCH ESO PRO CATG", "MASTER_DARK")])
    fits.PrimaryHDU(image, header).writeto(product)
    text = (
        f"RECIPE gimasterdark\nRAW_TYPE DARK\nRAWFILE $DFO_RAW_DIR/{DATE}/a.fits DARK\n"
        f"PRODUCTS $DFS_PRODUCT/DARK/{DATE}/r.X_0000.fits MASTER_DARK\n"
    )
    ab, problems = parse_ab(text, os.path.join(dfo["ab_dir"], "X.ab"), settings.variables)
    assert problems == []
    results_file = tmp_path / "results.json"
    monkeypatch.setenv("ABFLOW_RESULTS", str(results_file))
    out = process_qc(ab, settings, log=lambda m: None)
    qc = out["products"][0]
    assert (qc["catg"], qc["median"], qc["noise"], qc["hot_pixels"]) == ("MASTER_DARK", 7.0, 0.0, 1)
    paf = Path(out["paf"]).read_text()
    assert paf.startswith("PAF.HDR.START")
    assert 'QC.PRO1.CATG           "MASTER_DARK" ;' in paf
    assert "QC.PRO1.NHOT           1 ;" in paf
    assert Path(out["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Path(out["paf"]).parent == Path(dfo["log_dir"], DATE)
    assert json.loads(results_file.read_text()) == out
    product.unlink()
    with pytest.raises(QCError, match=r"r\.X_0000\.fits"):
        process_qc(ab, settings, log=lambda m: None)
