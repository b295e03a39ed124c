"""abflow's processAB pieces: SOF, virtual calibrations, product matching, failures."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from astropy.io import fits
from conftest import DATE

from abflow.example.processab import (
    ProcessError,
    Product,
    assign_products,
    esorex_command,
    process_ab,
    virtual_map,
    write_sof,
)
from abflow.model.ab import parse_ab
from abflow.model.config import resolve

AB_TEXT = f"""\
RECIPE uves_cal_mdark
RAW_TYPE DARK
PROD_ROOT_NAME r.UVES.X_tpl
PROD_PATH $DFS_PRODUCT/DARK/{DATE}
RAWFILE $DFO_RAW_DIR/{DATE}/UVES.1.fits DARK_BLUE
RAWFILE $DFO_RAW_DIR/{DATE}/UVES.2.fits DARK_BLUE
MCALIB VIRTUAL $DFO_CAL_DIR/VCAL/r.UVES.B_tpl_0000.hdr MASTER_BIAS_BLUE
MCALIB REAL $DFO_CAL_DIR/2013-02-10/UV_MBIA.fits MASTER_FORMAT
PRODUCTS $DFS_PRODUCT/DARK/{DATE}/r.UVES.X_tpl_0000.fits MASTER_DARK_BLUE
PRODUCTS $DFS_PRODUCT/DARK/{DATE}/r.UVES.X_tpl_0001.fits QC_TABLE
RECIPE_PARAM --mdark-method=median
"""


@pytest.fixture
def setup(dfo):
    settings = resolve({"date": DATE, "dfo": dfo})
    ab, problems = parse_ab(
        AB_TEXT, os.path.join(dfo["ab_dir"], "UVES.X_tpl.ab"), settings.variables
    )
    assert problems == []
    return settings, ab


def touch(path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Path(path).write_bytes(b"")


def test_sof_replaces_virtual_calibrations_by_the_upstream_product(setup, tmp_path) -> None:
    settings, ab = setup
    bias = os.path.join(settings.dfo["product_dir"], "BIAS", DATE, "r.UVES.B_tpl_0000.fits")
    inputs = tmp_path / "abflow_inputs.json"
    inputs.write_text(json.dumps({"virtual": {ab.mcalibs[0].path: bias}}))
    virtual = virtual_map(ab, settings, str(inputs))
    assert virtual == {ab.mcalibs[0].path: bias}
    for path in [f.path for f in ab.rawfiles] + [bias, ab.mcalibs[1].path]:
        touch(path)
    sof = tmp_path / "x.sof"
    entries = write_sof(ab, virtual, str(sof))
    assert sof.read_text().splitlines() == [f"{p} {t}" for p, t in entries]
    assert entries[2] == (bias, "MASTER_BIAS_BLUE")
    assert entries[3] == (ab.mcalibs[1].path, "MASTER_FORMAT")


def test_virtual_product_is_found_in_the_product_tree_without_the_workflow(setup) -> None:
    settings, ab = setup
    with pytest.raises(ProcessError, match="process the AB that makes it first"):
        virtual_map(ab, settings, None)
    bias = os.path.join(settings.dfo["product_dir"], "BIAS", DATE, "r.UVES.B_tpl_0000.fits")
    touch(bias)
    assert virtual_map(ab, settings, None) == {ab.mcalibs[0].path: bias}


def test_missing_sof_inputs_are_named(setup, tmp_path) -> None:
    _, ab = setup
    with pytest.raises(ProcessError, match=r"UVES\.1\.fits"):
        write_sof(ab, {}, str(tmp_path / "x.sof"))


def test_products_are_matched_by_pro_catg_and_extras_kept(setup) -> None:
    _, ab = setup
    outputs = [
        Product("/w/out/r.UVES.X_tpl_0000.fits", "QC_TABLE"),
        Product("/w/out/r.UVES.X_tpl_0001.fits", "MASTER_DARK_BLUE"),
        Product("/w/out/r.UVES.X_tpl_0002.fits", "DEBUG_IMAGE"),
    ]
    moves, missing = assign_products(ab, outputs)
    assert missing == []
    assert moves[0] == (outputs[1].path, ab.products[0].path)
    assert moves[1] == (outputs[0].path, ab.products[1].path)
    assert moves[2] == (outputs[2].path, os.path.join(ab.prod_path, "r.UVES.X_tpl_0002.fits"))
    moves, missing = assign_products(ab, outputs[:1])
    assert missing == ["r.UVES.X_tpl_0000.fits (MASTER_DARK_BLUE)"]


def test_esorex_command_is_an_argument_list_with_the_ab_options(setup) -> None:
    _, ab = setup
    cmd = esorex_command(ab, "/w/x.sof", "/w/out")
    assert cmd[-3:] == ["uves_cal_mdark", "--mdark-method=median", "/w/x.sof"]
    assert "--output-prefix=r.UVES.X_tpl" in cmd and "--output-dir=/w/out" in cmd


def test_failing_recipe_moves_nothing_and_says_why(setup, tmp_path, monkeypatch) -> None:
    settings, ab = setup
    for f in ab.rawfiles:
        touch(f.path)
    touch(ab.mcalibs[1].path)
    bias = os.path.join(settings.dfo["product_dir"], "BIAS", DATE, "r.UVES.B_tpl_0000.fits")
    touch(bias)
    ab_file = Path(ab.path)
    ab_file.write_text(AB_TEXT)
    # A stand-in esorex (test double) that writes one product then crashes like a recipe.
    fake = tmp_path / "fake-esorex"
    out_product = "r.UVES.X_tpl_0000.fits"
    fake.write_text(
        "#!/bin/sh\nfor a; do case $a in --output-dir=*) d=${a#--output-dir=};; esac; done\n"
        "echo '[ ERROR ] uves_cal_mdark: boom' > esorex.log\n"
        f"touch $d/{out_product}\nkill -SEGV $$\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr("abflow.example.processab.ESOREX", str(fake))
    with pytest.raises(ProcessError) as info:
        process_ab(str(ab_file), settings, workdir=str(tmp_path / "work"))
    assert "uves_cal_mdark failed" in str(info.value) and "exit -11" in str(info.value)
    assert "[ ERROR ] uves_cal_mdark: boom" in str(info.value)
    assert not os.path.exists(ab.products[0].path)  # nothing half-done in PROD_PATH


def test_exit_zero_without_the_expected_products_fails(setup, tmp_path, monkeypatch) -> None:
    settings, ab = setup
    for f in ab.rawfiles:
        touch(f.path)
    touch(ab.mcalibs[1].path)
    touch(os.path.join(settings.dfo["product_dir"], "BIAS", DATE, "r.UVES.B_tpl_0000.fits"))
    Path(ab.path).write_text(AB_TEXT)
    fake = tmp_path / "fake-esorex"
    fake.write_text(
        "#!/usr/bin/env python3\nimport sys\nfrom astropy.io import fits\n"
        "d=[a.split('=',1)[1] for a in sys.argv if a.startswith('--output-dir=')][0]\n"
        "h=fits.Header([('HIERARCH ESO PRO CATG', 'MASTER_DARK_BLUE')])\n"
        "fits.PrimaryHDU(header=h).writeto(d+'/r.UVES.X_tpl_0000.fits')\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr("abflow.example.processab.ESOREX", str(fake))
    with pytest.raises(ProcessError, match=r"r.UVES.X_tpl_0001.fits \(QC_TABLE\)"):
        process_ab(ab.path, settings, workdir=str(tmp_path / "work"))
    assert not os.path.exists(ab.products[0].path)


def test_fits_product_catg_is_read(tmp_path) -> None:
    path = tmp_path / "p.fits"
    fits.PrimaryHDU(header=fits.Header([("HIERARCH ESO PRO CATG", "MASTER_BIAS")])).writeto(path)
    from abflow.example.processab import list_products

    assert list_products(str(tmp_path)) == [Product(str(path), "MASTER_BIAS")]
