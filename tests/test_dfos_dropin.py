"""abflow as a DFOS drop-in, on a night written by hand in the createAB syntax.

The night (tests/data/dfos_night: FORS2, two chips, bias -> flat -> arc -> std, a static
calibration in $GEN_CALDIR, a header-only REAL calibration to download, DFOS config files with
DRS_TYPE CON, MAX_JOBS 6, QCBQS_TYPE PAR) runs with stand-ins for the DFOS tools
(tests/standins/dfos: processAB rewrites PROCESS_STATUS and LOG_NAME in the AB as DFOS does,
processQC leaves a PAF and QC1 lines, ngasClient fetches from an archive directory), through
the JOBS_NIGHT that `abflow createjob` writes, as an operator would run it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, SNAKEFILE

from abflow.generate import make_dfo_tree

DATE = "2024-07-12"
NIGHT = ROOT / "tests" / "data" / "dfos_night"
STANDINS = ROOT / "tests" / "standins" / "dfos"
BIN = Path(sys.executable).parent
BIAS1, BIAS2 = "FORS2.2024-07-13T09:01:11.100_tpl.ab", "FORS2.2024-07-13T09:01:11.600_tpl.ab"
FLAT1, FLAT2 = "FORS2.2024-07-13T09:20:05.100_tpl.ab", "FORS2.2024-07-13T09:20:05.600_tpl.ab"
ARC1, ARC2 = "FORS2.2024-07-13T09:41:37.100_tpl.ab", "FORS2.2024-07-13T09:41:37.600_tpl.ab"
STD1, STD2 = "FORS2.2024-07-13T10:15:48.100_tpl.ab", "FORS2.2024-07-13T10:15:48.600_tpl.ab"


def site(tmp_path: Path, **config: Any) -> dict[str, Any]:
    """The hand-written night in a temporary DFOS tree, with its archive, its static
    calibrations, its DFOS configuration and a site configuration that names only the
    directories (the commands are the schema's defaults: processAB, processQC, ngasClient)."""
    dfo = make_dfo_tree(tmp_path / "dfo")
    dfo["config_dir"] = str(tmp_path / "dfo" / "config")
    shutil.copytree(NIGHT / "ab", dfo["ab_dir"], dirs_exist_ok=True)
    shutil.copytree(NIGHT / "mon", dfo["mon_dir"], dirs_exist_ok=True)
    gen = tmp_path / "gen_cal"
    shutil.copytree(NIGHT / "config", dfo["config_dir"])
    createab = Path(dfo["config_dir"], "config.createAB")
    createab.write_text(createab.read_text().replace("/dfos/cal/GEN", str(gen)))
    archive = tmp_path / "archive"
    archive.mkdir()
    for ab in Path(dfo["ab_dir"]).iterdir():
        for line in ab.read_text().splitlines():
            cols = line.split("#")[0].split()
            if cols and cols[0] == "RAWFILE":
                (archive / os.path.basename(cols[1])).write_text("raw frame\n")
            if cols[:2] == ["MCALIB", "REAL"] and "$GEN_CALDIR" in cols[2]:
                static = Path(cols[2].replace("$GEN_CALDIR", str(gen)))
                static.parent.mkdir(parents=True, exist_ok=True)
                static.write_text("static calibration\n")
            if cols[:2] == ["MCALIB", "REAL"] and cols[2].endswith(".hdr"):
                header = Path(cols[2].replace("$DFO_CAL_DIR", dfo["cal_dir"]))
                header.parent.mkdir(parents=True, exist_ok=True)
                header.write_text("header only (cleanupProducts)\n")
                (archive / (header.name[: -len(".hdr")] + ".fits")).write_text("master dark\n")
    cfg = {"date": DATE, "dfo": dict(dfo), **config}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = dict(
        os.environ,
        PATH=f"{STANDINS}:{BIN}:{os.environ['PATH']}",
        STANDIN_ARCHIVE=str(archive),
        STANDIN_CALLS=str(tmp_path / "calls.log"),
        PYTHONWARNINGS="ignore",
    )
    return {
        "dfo": dfo, "config": path, "env": env, "archive": archive, "gen": gen,
        "calls": tmp_path / "calls.log", "state": os.path.join(dfo["job_dir"], "abflow"),
    }  # fmt: skip


def abflow(s: dict[str, Any], *args: str, check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "abflow"), *args, "--configfile", str(s["config"])],
        capture_output=True, text=True, env=s["env"], check=check, timeout=300,
    )  # fmt: skip


def snakemake(s: dict[str, Any], workdir: Path, *args: str, profile: str = "local"):
    cmd = [
        str(BIN / "snakemake"), "-s", str(SNAKEFILE), "--directory", str(workdir),
        "--profile", str(ROOT / "profiles" / profile), "--configfile", str(s["config"]), *args,
    ]  # fmt: skip
    return subprocess.run(cmd, cwd=workdir, env=s["env"], capture_output=True, text=True,
                          timeout=900)  # fmt: skip


def calls(s: dict[str, Any], tool: str) -> list[str]:
    if not s["calls"].exists():
        return []
    return [ln.split()[1] for ln in s["calls"].read_text().splitlines() if ln.startswith(tool)]


def ab_jobs(proc: subprocess.CompletedProcess) -> int:
    match = re.search(r"^process_ab\s+(\d+)$", proc.stdout, re.M)
    return int(match.group(1)) if match else 0


# ----------------------------------------------------------------------------- 1. no reprocessing
@pytest.mark.slow
def test_jobs_night_with_dfos_processab_reprocesses_nothing(tmp_path) -> None:
    """createjob's JOBS_NIGHT, run by `bash -e`: the AB call, then the QC call of the same
    JOBS_NIGHT. processAB writes PROCESS_STATUS and LOG_NAME into every AB; the QC call must
    process no AB again, nor must a comment added to an AB; a changed recipe option reruns that
    AB and its descendants."""
    s = site(tmp_path, drs_type="CPL")  # this machine (the site says CON: a pool, see test_condor)
    made = abflow(s, "createjob", "-m", "CALIB", "-d", DATE)
    assert made.returncode == 0, made.stderr
    jobs = Path(s["dfo"]["job_dir"], "JOBS_NIGHT")
    proc = subprocess.run(["bash", "-e", str(jobs)], cwd=tmp_path, env=s["env"],
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    every = sorted(p.name for p in Path(s["dfo"]["ab_dir"]).iterdir())
    assert sorted(calls(s, "processAB")) == every  # each AB processed exactly once
    assert sorted(calls(s, "processQC")) == every  # and its QC once
    for name in every:  # processAB wrote its bookkeeping into the AB
        text = Path(s["dfo"]["ab_dir"], name).read_text()
        assert "PROCESS_STATUS  SUCCESSFUL" in text and "LOG_NAME        " in text
    assert re.search(rf"^cal_QC {DATE} ", Path(s["dfo"]["mon_dir"], "DFO_STATUS").read_text(), re.M)
    # a comment in an AB is no reason to process anything again
    bias = Path(s["dfo"]["ab_dir"], BIAS1)
    bias.write_text(bias.read_text() + "# checked by the night QC scientist\n")
    dry = snakemake(s, tmp_path, "-n")
    assert dry.returncode == 0 and ab_jobs(dry) == 0, dry.stdout[-3000:]
    # a changed recipe option is: that AB and the ABs that depend on it, nothing else
    flat = Path(s["dfo"]["ab_dir"], FLAT1)
    flat.write_text(flat.read_text().replace("--dispersion=3.45", "--dispersion=3.50"))
    dry = snakemake(s, tmp_path, "-n")
    assert ab_jobs(dry) == 3
    for name in (FLAT1, ARC1, STD1):
        assert f"ab={name}" in dry.stdout
