"""End to end: the bundled example night with real esorex recipes, in a temporary DFOS tree."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from conftest import DATE, example_config, records, run_snakemake

pytestmark = [
    pytest.mark.esorex,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("esorex") is None, reason="esorex is not installed"),
]

EXPECTED = {
    "gimasterbias": ["MASTER_BIAS", "BAD_PIXEL_MAP"],
    "gimasterdark": ["MASTER_DARK"],
    "uves_cal_mbias": ["MASTER_BIAS_BLUE"],
    "uves_cal_mdark": ["MASTER_DARK_BLUE"],
    "muse_bias": ["MASTER_BIAS"] * 24,
    "muse_dark": ["MASTER_DARK"] * 24,
}


def test_example_night_runs_real_recipes_in_parallel(example_local) -> None:
    dfo = example_local["dfo"]
    assert "30 frames written" in example_local["made"].stdout
    recs = records(os.path.join(dfo["job_dir"], "abflow"))
    assert len(recs) == 10
    for ab, rec in recs.items():
        assert rec["status"] == "SUCCESSFUL", ab
        tags = [p["tag"] for p in rec["products"]]
        assert tags == EXPECTED[rec["recipe"]], ab
        for product in rec["products"]:
            path = product["path"]
            assert path.startswith(dfo["product_dir"])
            assert fits.getheader(path)["ESO PRO CATG"] == product["tag"]
        assert Path(dfo["log_dir"], DATE, ab[: -len(".ab")] + ".rblog").is_file()
    # the darks used the biases made this night: their SOFs name the bias products
    dark = next(ab for ab, r in recs.items() if r["recipe"] == "uves_cal_mdark")
    parent = recs[dark]["parents"][0]
    sof = Path(recs[dark]["workdir"], dark[: -len(".ab")] + ".sof").read_text()
    assert recs[parent]["products"][0]["path"] + " MASTER_BIAS_BLUE" in sof
    data = fits.getdata(recs[dark]["products"][0]["path"])
    assert data is not None and np.isfinite(data).all() and np.abs(data).max() > 0
    # two jobs ran at once somewhere (parallel CON run on 4 cores): AB jobs and MUSE's
    # per-IFU jobs (which, on the critical path, go first and may keep the slots busy)
    det_dir = Path(dfo["job_dir"], "abflow", "records", "process_ab_det")
    jobs = [*recs.values(), *(json.loads(p.read_text()) for p in det_dir.rglob("*.json"))]
    spans = sorted((r["start"], r["end"]) for r in jobs)
    assert any(b[0] < a[1] for a, b in itertools.pairwise(spans))
    # raw frames were fetched into $DFO_RAW_DIR/<DATE> from the archive, each once
    assert len(os.listdir(Path(dfo["raw_dir"], DATE))) == 30
    download_logs = list(Path(dfo["job_dir"], "abflow", "logs", "download_raw").rglob("*.log"))
    assert len(download_logs) == 30
    # MUSE under CON: 24 per-IFU jobs and a join per AB; IFU k's product is CHANk
    muse = next(ab for ab, r in recs.items() if r["recipe"] == "muse_bias")
    assert recs[muse]["step"] == "mef_join"
    dets = list(Path(dfo["job_dir"], "abflow", "records", "process_ab_det", muse).glob("*.json"))
    assert len(dets) == 24
    extnames = [fits.getheader(p["path"]).get("EXTNAME") for p in recs[muse]["products"]]
    assert extnames == [f"CHAN{k:02d}" for k in range(1, 25)]
    # QC: one record per AB with QC1 numbers; the synthetic GIRAFFE darks have 40 hot pixels
    qc_dir = Path(dfo["job_dir"], "abflow", "records", "process_qc")
    qc = {p.name[: -len(".json")]: json.loads(p.read_text()) for p in qc_dir.glob("*.json")}
    assert set(qc) == set(recs)
    for ab, rec in qc.items():
        numbers = rec["results"]["products"]
        assert [n["catg"] for n in numbers] == EXPECTED[recs[ab]["recipe"]]
        assert Path(rec["results"]["paf"]).is_file() and Path(rec["results"]["png"]).is_file()
        if recs[ab]["recipe"] in ("gimasterdark", "muse_dark"):
            assert all(n["hot_pixels"] == 40 for n in numbers)
        if recs[ab]["recipe"] == "uves_cal_mbias":
            assert numbers[0]["median"] > 100 and 0 < numbers[0]["noise"] < 20


def test_muse_under_int_is_one_parallel_call_per_ab(tmp_path) -> None:
    cfg, dfo = example_config(tmp_path)
    ab_list = Path(tmp_path, "mon", f"AB_list_CALIB_{DATE}")
    ab_list.write_text("".join(line + "\n" for line in ab_list.read_text().splitlines()
                               if line.startswith("MUSE")))  # fmt: skip
    subprocess.run(["abflow", "example", "--configfile", str(cfg)], check=True, capture_output=True)
    run_snakemake(tmp_path, cfg, cores=2, profile="int", timeout=900)
    recs = records(os.path.join(dfo["job_dir"], "abflow"))
    assert len(recs) == 2
    for rec in recs.values():
        assert rec["step"] == "process_ab" and rec["threads"] == 2
        extnames = [fits.getheader(p["path"]).get("EXTNAME") for p in rec["products"]]
        assert extnames == [f"CHAN{k:02d}" for k in range(1, 25)]
        log = Path(rec["log"]).read_text()
        assert "--nifu=-1" in log
    assert not Path(dfo["job_dir"], "abflow", "records", "process_ab_det").exists()
