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
from conftest import ROOT, SNAKEFILE, records

from abflow.example.generate import make_dfo_tree

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
    """How many ABs a dry-run would run (abflow's console; 0 when nothing is to be done)."""
    out = proc.stdout + proc.stderr
    match = re.search(r"(\d+) of \d+ ABs would run", out)
    assert match or "abflow: nothing to do" in out, out
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
        assert re.search(rf"^  {re.escape(name)}\s", dry.stdout + dry.stderr, re.M)


# ----------------------------------------------------------------------------- 2. qualifiers
def test_everything_createab_writes_is_accepted_without_a_warning(tmp_path) -> None:
    s = site(tmp_path)
    check = abflow(s, "check")
    assert check.returncode == 0, check.stderr
    assert "CALIB_2024-07-12: 8 ABs, 12 dependencies, 4 levels: OK" in check.stdout
    assert "warning" not in check.stderr


@pytest.mark.parametrize(
    ("written", "meant"),
    [("MCALBI", "MCALIB"), ("RAWFLIE", "RAWFILE"), ("PRODUCT", "PRODUCTS"), ("mcalib", "MCALIB")],
)
def test_a_misspelt_qualifier_is_an_error_with_a_suggestion(tmp_path, written, meant) -> None:
    s = site(tmp_path)
    path = Path(s["dfo"]["ab_dir"], ARC1)
    lines = path.read_text().splitlines()
    n = next(i for i, ln in enumerate(lines) if ln.startswith(meant.upper() + " "))
    lines[n] = written + lines[n][len(meant) :]
    path.write_text("\n".join(lines) + "\n")
    check = abflow(s, "check")
    assert check.returncode == 2
    assert f"{path}:{n + 1}: unknown qualifier {written!r}: did you mean {meant}?" in check.stderr
    dry = snakemake(s, tmp_path, "-n")
    assert dry.returncode != 0 and f"did you mean {meant}?" in dry.stdout + dry.stderr


def test_an_unknown_qualifier_is_a_warning_or_on_request_an_error(tmp_path) -> None:
    s = site(tmp_path)
    for ab in Path(s["dfo"]["ab_dir"]).iterdir():
        ab.write_text(ab.read_text() + "UPDATE_STAMP    2024-07-14T08:00:00\n")
    check = abflow(s, "check")
    assert check.returncode == 0 and "OK" in check.stdout
    assert "unknown qualifier 'UPDATE_STAMP' (in 8 ABs): kept but not used" in check.stderr
    strict = abflow(s, "check", "--config", "unknown_qualifiers=error")
    assert strict.returncode == 2 and "unknown qualifier 'UPDATE_STAMP'" in strict.stderr


# ----------------------------------------------------------------------------- 3. createjob -a
def test_createjob_a_writes_the_sub_files_and_touches_nothing_else(tmp_path) -> None:
    s = site(tmp_path)
    assert abflow(s, "createjob", "-m", "CALIB", "-d", DATE).returncode == 0
    job_dir, mon_dir = Path(s["dfo"]["job_dir"]), Path(s["dfo"]["mon_dir"])

    def snapshot() -> dict[str, bytes]:
        return {str(p): p.read_bytes() for d in (job_dir, mon_dir) for p in d.glob("*")
                if p.is_file()}  # fmt: skip

    before = snapshot()
    sub = abflow(s, "createjob", "-m", "CALIB", "-d", DATE, "-a", FLAT1)
    assert sub.returncode == 0, sub.stderr
    after = snapshot()
    new = sorted(os.path.basename(p) for p in set(after) - set(before))
    assert new == [f"execAB_CALIB_{DATE}_sub", f"execQC_CALIB_{DATE}_sub"]
    assert {p: after[p] for p in before} == before  # JOBS_NIGHT, downloads, DFO_STATUS, ...
    exec_ab = (job_dir / f"execAB_CALIB_{DATE}_sub").read_text().splitlines()
    body = [ln for ln in exec_ab if not ln.startswith("#")]
    assert [ln.split("||")[2].split()[1] for ln in body] == [FLAT1, ARC1, STD1]
    assert [ln.split("||")[3].strip() for ln in body] == ["", "1", "1 2"]  # the waits
    assert "runs with:" in sub.stdout and f"subcascade={FLAT1}" in sub.stdout


# ----------------------------------------------------------------------------- 4. DFOS config
def test_dfos_config_values_are_read_and_their_origin_shown(tmp_path) -> None:
    s = site(tmp_path)
    check = abflow(s, "check")
    config_dir = s["dfo"]["config_dir"]
    assert f"drs_type = CON (from {config_dir}/config.createAB:3 DRS_TYPE)" in check.stdout
    assert f"limits.jobs = 6 (from {config_dir}/config.createJob:2 MAX_JOBS)" in check.stdout
    assert f"qc_mode = PAR (from {config_dir}/config.processQC:3 QCBQS_TYPE)" in check.stdout
    assert f"inputs.GEN_CALDIR = {s['gen']} (from {config_dir}/config.createAB:5 GEN_CALDIR)" in (
        check.stdout
    )
    # a value of the site's own configuration wins, and the difference is said
    check = abflow(s, "check", "--config", "qc_mode=SER")
    assert "QCBQS_TYPE = 'PAR' differs from qc_mode: 'SER'" in check.stdout


# ----------------------------------------------------------------------------- 5. downloads
@pytest.mark.slow
def test_a_download_failing_for_good_fails_the_abs_that_need_it_by_name(tmp_path) -> None:
    s = site(tmp_path, drs_type="CPL", retries={"download": 0})
    (s["archive"] / "FO_MDRK_240710A_chip2.fits").unlink()  # the archive lost it
    run = snakemake(s, tmp_path, "--cores", "2")
    assert run.returncode != 0
    out = run.stdout + run.stderr
    summary = out[out.index("abflow: 1 AB failed") :]
    assert f"{ARC2} (download): download of FO_MDRK_240710A_chip2.fits failed" in summary
    assert "NGAS error: file FO_MDRK_240710A_chip2.fits not found" in summary
    assert "1 AB did not run" in summary and f"  {STD2} (waits for {ARC2})" in summary
    assert set(records(s["state"])) == {BIAS1, BIAS2, FLAT1, FLAT2, ARC1, STD1}
    assert abflow(s, "status").returncode == 0
    page = Path(s["dfo"]["mon_dir"], f"status_{DATE}.html").read_text()
    row = next(r for r in page.split("<tr") if ARC2 in r)
    assert 'data-state="failed"' in row and "FO_MDRK_240710A_chip2.fits" in row


# ----------------------------------------------------------------------------- 6. static inputs
def test_static_calibrations_outside_the_cal_dir_are_read_only_inputs(tmp_path) -> None:
    s = site(tmp_path)
    assert abflow(s, "check").returncode == 0  # $GEN_CALDIR from config.createAB
    (Path(s["dfo"]["config_dir"]) / "config.createAB").write_text("DRS_TYPE CON\n")
    check = abflow(s, "check")  # no GEN_CALDIR anywhere: refused, saying what to do
    assert check.returncode == 2 and "undefined variable $GEN_CALDIR" in check.stderr
    check = abflow(s, "check", "--config", f"inputs={{GEN_CALDIR: {s['gen']}}}")
    assert check.returncode == 0, check.stderr  # named in abflow's own configuration
    # nothing is written there: a product under an input directory is refused
    path = Path(s["dfo"]["ab_dir"], BIAS1)
    path.write_text(path.read_text().replace("$DFS_PRODUCT/BIAS", "$GEN_CALDIR/BIAS"))
    check = abflow(s, "check", "--config", f"inputs={{GEN_CALDIR: {s['gen']}}}")
    assert check.returncode == 2 and "is outside the configured directories" in check.stderr


# ----------------------------------------------------------------------------- 7. QC1 numbers
@pytest.mark.slow
def test_a_sites_qc1_numbers_reach_the_record_and_the_page(tmp_path) -> None:
    s = site(tmp_path, drs_type="CPL", qc_mode="SER")
    run = snakemake(s, tmp_path, "--cores", "2")
    assert run.returncode == 0, run.stdout[-3000:]
    qc = Path(s["state"], "records", "process_qc", f"{BIAS1}.json").read_text()
    qc1 = yaml.safe_load(qc)["qc1"]
    mean = f"{200 + len(BIAS1[: -len('.ab')]) % 7}.25"  # what the stand-in processQC writes
    assert qc1 == {"QC.BIAS.MASTER.MEAN": mean, "QC.RON": "3.1", "NPRODUCTS": "1",
                   "STATUS": "OK"}  # fmt: skip
    page = Path(s["dfo"]["mon_dir"], f"status_{DATE}.html").read_text()
    row = next(r for r in page.split("<tr") if BIAS1 in r)
    assert f">QC.BIAS.MASTER.MEAN={mean}, QC.RON=3.1, NPRODUCTS=1 (+1)</td>" in row
    assert "STATUS=OK" in row  # in the tooltip with every parameter


# ----------------------------------------------------------------------------- 8. smaller gaps
def without_environment(line: str) -> str:
    """A job file line without the subshell that gives a configured command abflow's PATH and
    the run configuration (abflow.views.jobfiles)."""
    return re.sub(
        r"^\(PATH=\S+; ABFLOW_CONFIG=\S+; export PATH ABFLOW_CONFIG; (.*?)\)", r"\1", line
    )


def test_jobs_auto_is_framed_by_dfomonitor_and_the_monitor_calls(tmp_path) -> None:
    s = site(tmp_path)
    assert abflow(s, "createjob", "-m", "CALIB", "-d", DATE, "-F").returncode == 0
    text = Path(s["dfo"]["job_dir"], "JOBS_AUTO").read_text()
    block = [without_environment(ln) for ln in text.splitlines()]
    begin = next(i for i, ln in enumerate(block) if ln.startswith("# >>> abflow createjob CALIB"))
    body = block[begin + 1 : block.index(f"# <<< abflow createjob CALIB {DATE}")]
    go_on = ' || echo "abflow: {} failed (exit $?): the job file goes on" >&2'
    assert body[0] == body[-1] == "dfoMonitor -m -q" + go_on.format("dfoMonitor")
    assert body[1] == f"getStatusAB -d {DATE} -r &"
    final = f"getStatusAB -d {DATE} -F" + go_on.format("the AB monitor")
    ab_call = next(i for i, ln in enumerate(body) if "# execAB:" in ln)
    assert body[ab_call + 1] == f'echo "vultur_exec_cascade for {DATE} done."'  # CON
    assert body.index(final) > ab_call
    # JOBS_NIGHT (createJob's command-line mode) calls the monitor without exporting it
    assert abflow(s, "createjob", "-m", "CALIB", "-d", DATE).returncode == 0
    night = Path(s["dfo"]["job_dir"], "JOBS_NIGHT").read_text().splitlines()
    assert f"getStatusAB -d {DATE}" + go_on.format("the AB monitor") in [
        without_environment(ln) for ln in night
    ]
    assert not [ln for ln in night if " -F" in ln]


def test_createjob_r_writes_a_job_of_its_own_and_leaves_the_nights_alone(tmp_path) -> None:
    """-r JOB_ID: the job files are named after the job id, and the night's main job files,
    its JOBS_NIGHT block and DFO_STATUS stay as they are."""
    s = site(tmp_path)
    assert abflow(s, "createjob", "-m", "CALIB", "-d", DATE).returncode == 0
    job_dir, status = Path(s["dfo"]["job_dir"]), Path(s["dfo"]["mon_dir"], "DFO_STATUS")
    before = {p.name: p.read_bytes() for p in job_dir.iterdir() if p.is_file()}
    queued = status.read_text()
    made = abflow(s, "createjob", "-m", "CALIB", "-d", DATE, "-r", "REPRO")
    assert made.returncode == 0, made.stderr
    after = {p.name: p.read_bytes() for p in job_dir.iterdir() if p.is_file()}
    assert {n: after[n] for n in before} == before and status.read_text() == queued
    assert sorted(set(after) - set(before)) == [
        "JOBS_REPRO",
        f"execAB_CALIB_{DATE}_REPRO",
        f"execQC_CALIB_{DATE}_REPRO",
        f"mcalDown_CALIB_{DATE}_REPRO",
        f"rawDown_CALIB_{DATE}_REPRO",
    ]
    assert f"run it with: sh {job_dir / 'JOBS_REPRO'}" in made.stdout
    assert "-r REPRO" in (job_dir / "JOBS_REPRO").read_text()
    bad = abflow(s, "createjob", "-m", "CALIB", "-d", DATE, "-r", "../x")
    assert bad.returncode == 2 and "a job id is letters, digits" in bad.stderr


def test_par_exec_qc_runs_n_at_a_time_then_waits(tmp_path) -> None:
    s = site(tmp_path, limits={"qc": 3})
    assert abflow(s, "createjob", "-m", "CALIB", "-d", DATE).returncode == 0
    lines = Path(s["dfo"]["job_dir"], f"execQC_CALIB_{DATE}").read_text().splitlines()
    body = [ln for ln in lines if not ln.startswith("#")]
    assert [ln.endswith("&") for ln in body] == [*[True] * 3, False] * 2 + [True, True, False]
    assert body[3] == body[7] == body[10] == "wait"
    assert body[0].startswith("processQC -a FORS2.")


def test_exec_ab_says_it_is_a_record_and_how_to_leave_an_ab_out(tmp_path) -> None:
    s = site(tmp_path)
    assert abflow(s, "createjob", "-m", "CALIB", "-d", DATE).returncode == 0
    head = Path(s["dfo"]["job_dir"], f"execAB_CALIB_{DATE}").read_text()
    assert "editing this file changes nothing" in head and "`exclude`" in head
    left = abflow(s, "check", "--config", f"exclude=[{FLAT1}]")
    assert left.returncode == 0 and "CALIB_2024-07-12: 5 ABs" in left.stdout
    for ab in (FLAT1, ARC1, STD1):
        assert f"AB {ab} left out" in left.stderr


def test_dfos_options_m_and_d_on_check_cascade_and_plan(tmp_path) -> None:
    s = site(tmp_path)
    s["config"].write_text(s["config"].read_text().replace(DATE, "2024-07-01"))
    for command in ("check", "cascade", "plan"):
        assert abflow(s, command).returncode == 2  # no AB list for the configured date
        proc = abflow(s, command, "-m", "CALIB", "-d", DATE)
        assert proc.returncode == 0, (command, proc.stderr)


def test_a_missing_ab_file_is_refused_or_on_request_left_out(tmp_path) -> None:
    s = site(tmp_path)
    Path(s["dfo"]["ab_dir"], ARC2).unlink()
    check = abflow(s, "check")
    assert check.returncode == 2
    assert f"AB_list_CALIB_{DATE}:6: AB {ARC2} is listed but" in check.stderr
    assert "missing_abs: skip" in check.stderr
    skip = abflow(s, "check", "--config", "missing_abs=skip")
    assert skip.returncode == 0 and "CALIB_2024-07-12: 6 ABs" in skip.stdout
    assert f"AB {ARC2} is listed but" in skip.stderr and f"AB {STD2} left out" in skip.stderr


def test_the_hand_written_night_on_the_console_and_as_pictures(tmp_path) -> None:
    """The night as a QC scientist sees it: the cascade picture (no graphviz), the dry-run's
    levels, one console line per AB, the timeline with every AB's name."""
    import xml.etree.ElementTree as ET

    s = site(tmp_path)
    svg = tmp_path / "cascade.svg"
    assert abflow(s, "cascade", "--brief", "--svg", str(svg)).returncode == 0
    ns = {"s": "http://www.w3.org/2000/svg"}
    root = ET.parse(svg).getroot()
    boxes = root.findall(".//s:g[@class='ab']", ns)
    names = sorted(p.name for p in Path(s["dfo"]["ab_dir"]).iterdir())
    assert sorted(b.findall("s:text", ns)[0].text for b in boxes) == names
    assert all(b.find("s:title", ns).text.startswith(b.get("id")[3:]) for b in boxes)
    edges = [e.find("s:title", ns).text for e in root.findall(".//s:path[@class='edge']", ns)]
    assert len(edges) == 12  # `abflow check`: 12 dependencies
    assert any(e.startswith(f"{FLAT1} takes ") and e.endswith(f" from {BIAS1}") for e in edges)
    dry = snakemake(s, tmp_path, "-n")
    out = dry.stdout + dry.stderr
    assert "8 of 8 ABs would run, cascade of 4 levels" in out, out
    assert re.search(r"level 3\s+2 ABs \(std 2\): 2 would run", out), out
    run = snakemake(s, tmp_path)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    succeeded = re.findall(r"^\[\s*\d/8\] (\S+)\s+\w+ succeeded [\d.]+ s$", out, re.M)
    assert sorted(succeeded) == names, out
    assert re.search(r"CALIB_2024-07-12: 8 of 8 ABs succeeded, in ", out)
    assert "Error" not in out and "rule process_ab" not in out
    assert abflow(s, "timeline").returncode == 0
    tips = re.findall(
        r"<title>([^<]*)</title>", Path(s["dfo"]["mon_dir"], f"timeline_{DATE}.svg").read_text()
    )
    assert all(any(t.startswith(n) for t in tips) for n in names), tips
