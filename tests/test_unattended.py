"""DFOS job files that run unattended (issue 27): the JOBS_NIGHT and JOBS_AUTO that createjob
writes, run by `sh` and `bash -e` as autoDaily would, on nights written by hand
(tests/data/dfos_night and dfos_night2, with the DFOS tool stand-ins of tests/standins/dfos).

A failed AB costs the night nothing but itself and what waits for it: the QC of every AB that
succeeded runs, the flag, the monitor calls and the next date's block follow, no file is
downloaded twice, CAL_CLEANUP keeps the failed AB's raw files, and the file ends with status 1.
Besides: createjob on the bundled example with nothing downloaded, concurrent createjobs, a job
file an operator edited, linked or made executable, and the site's configuration on a DFOS
machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from test_dfos_dropin import (
    ARC1,
    ARC2,
    BIAS1,
    BIAS2,
    FLAT1,
    FLAT2,
    STD1,
    STD2,
    abflow,
    calls,
    site,
)

DATE, DATE2 = "2024-07-12", "2024-07-13"
NIGHT2 = ROOT / "tests" / "data" / "dfos_night2"
BIAS3, FLAT3 = "FORS2.2024-07-14T08:58:40.250_tpl.ab", "FORS2.2024-07-14T09:17:02.750_tpl.ab"


def two_nights(tmp_path: Path, **config: object) -> dict:
    """The hand-written night of DATE and the one of DATE2 in one DFOS tree (their raw files
    in the stand-in archive), FLAT1 failing (the stand-in processAB fails it)."""
    s = site(tmp_path, **config)
    for ab in (NIGHT2 / "ab").iterdir():
        shutil.copy(ab, s["dfo"]["ab_dir"])
        for line in ab.read_text().splitlines():
            cols = line.split()
            if cols and cols[0] == "RAWFILE":
                (s["archive"] / os.path.basename(cols[1])).write_text("raw frame\n")
    shutil.copy(NIGHT2 / "mon" / f"AB_list_CALIB_{DATE2}", s["dfo"]["mon_dir"])
    s["env"]["STANDIN_FAIL"] = "09:20:05.100"  # FLAT1 (ARC1 and STD1 wait for it)
    return s


def run_job_file(s: dict, path: Path, shell: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*shell, str(path)],
        cwd=path.parent,
        env=s["env"],
        capture_output=True,
        text=True,
        timeout=600,
    )


def qc_done(s: dict) -> set[str]:
    return {p.stem for p in Path(s["state"], "records", "process_qc").glob("*.json")}


@pytest.mark.slow
@pytest.mark.parametrize("shell", [["sh"], ["bash", "-e"]], ids=["sh", "bash-e"])
def test_a_failed_ab_costs_the_job_file_neither_its_qc_nor_its_flags_nor_the_next_date(
    tmp_path, shell
) -> None:
    s = two_nights(tmp_path, drs_type="CPL", qc_mode="SER", cal_cleanup=True)
    for date in (DATE, DATE2):
        made = abflow(s, "createjob", "-m", "CALIB", "-d", date)
        assert made.returncode == 0, made.stderr
    jobs = Path(s["dfo"]["job_dir"], "JOBS_NIGHT")
    assert os.access(jobs, os.X_OK)  # a new job file is executable
    after = tmp_path / "operator.log"  # a line the operator appended after abflow's blocks
    with jobs.open("a") as fh:
        fh.write(f"echo after >> {after}\n")
    proc = run_job_file(s, jobs, shell)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert f"abflow: failed: CALIB_{DATE}:execAB" in proc.stderr
    assert after.read_text() == "after\n"  # it ran, and the file still ends with status 1
    # each AB processed once (none again by the QC step), the failed one's descendants never
    ran = Counter(calls(s, "processAB"))
    assert set(ran.values()) == {1} and ARC1 not in ran and STD1 not in ran
    assert FLAT1 in ran and BIAS3 in ran and FLAT3 in ran
    # the QC of every AB that succeeded, of both dates; none of the failed one or its waiters
    done = {BIAS1, BIAS2, FLAT2, BIAS3, FLAT3}
    assert {n for n in ran if n != FLAT1} >= done
    assert qc_done(s) == {n for n in ran if n != FLAT1}
    assert sorted(calls(s, "processQC")) == sorted(qc_done(s))
    assert "no QC for 3 ABs that did not succeed" in out and FLAT1 in out
    assert f"CALIB_{DATE}: QC of 5 ABs: 5 succeeded, in " in out  # the QC step's count line
    # the flags and the monitor calls of both dates, in order, the final one not exported
    flags = [
        ln.split()[:2] for ln in Path(s["dfo"]["mon_dir"], "DFO_STATUS").read_text().splitlines()
    ]
    assert flags == [
        ["cal_Queued", DATE],
        ["cal_Queued", DATE2],
        ["cal_QC", DATE],
        ["cal_QC", DATE2],
    ]
    monitor = [
        ln.split(None, 1)[1].strip()
        for ln in s["calls"].read_text().splitlines()
        if ln.startswith("getStatusAB")
    ]
    assert monitor == [f"-d {DATE} -r", f"-d {DATE}", f"-d {DATE2} -r", f"-d {DATE2}"]
    # every file downloaded once; CAL_CLEANUP kept only what ABs that did not succeed read
    fetched = Counter(calls(s, "ngasClient"))
    assert fetched and set(fetched.values()) == {1}, fetched
    left = sorted(p.name for p in Path(s["dfo"]["raw_dir"]).rglob("*.fits"))
    kept = ("FORS2.2024-07-13T09:2", "FORS2.2024-07-13T09:4", "FORS2.2024-07-13T10:1")
    assert left and all(name.startswith(kept) for name in left), left
    assert "CAL_CLEANUP removed" in out
    if shell == ["sh"]:  # the job file run again: only the failed AB is retried, and nothing
        before = s["calls"].read_text()  # is downloaded again (CAL_CLEANUP removed most files)
        again = run_job_file(s, jobs, shell)
        assert again.returncode == 1, again.stderr[-2000:]
        new_calls = [c.split()[:2] for c in s["calls"].read_text()[len(before) :].splitlines()]
        assert [c for c in new_calls if c[0] in ("ngasClient", "processAB")] == [
            ["processAB", FLAT1]
        ]
        assert sorted(p.name for p in Path(s["dfo"]["raw_dir"]).rglob("*.fits")) == left
    # the AB monitor (abflow's page of the night) shows the failed AB as FAILED
    page = Path(s["dfo"]["mon_dir"], f"status_{DATE}.html")
    assert abflow(s, "status", "-d", DATE).returncode == 0
    row = next(r for r in page.read_text().split("<tr") if FLAT1 in r)
    assert 'data-state="failed"' in row


@pytest.mark.slow
def test_jobs_auto_under_int_exports_trends_and_says_it_failed(tmp_path) -> None:
    """JOBS_AUTO (createjob -F), DRS_TYPE INT: dfoMonitor first and last, execHC_TREND and the
    exporting monitor call after a failed AB, and status 1 under bash -e; processAB called
    with -l; an AB whose raw file the archive lost FAILED in its AB file (DFOS's monitor)."""
    s = two_nights(tmp_path, drs_type="INT", qc_mode="PAR")
    (s["archive"] / "FORS2.2024-07-13T10:15:48.600.fits").unlink()  # STD2's raw file is lost
    assert abflow(s, "createjob", "-m", "CALIB", "-d", DATE, "-F").returncode == 0
    job_dir = Path(s["dfo"]["job_dir"])
    trend = job_dir / "execHC_TREND"
    trend.write_text(f"#!/bin/sh\necho execHC_TREND >> {s['calls']}\n")
    trend.chmod(0o755)
    proc = run_job_file(s, job_dir / "JOBS_AUTO", ["bash", "-e"])
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    said = [
        ln.split()[0] + (" " + ln.split()[-1] if ln.startswith("getStatusAB") else "")
        for ln in s["calls"].read_text().splitlines()
        if ln.startswith(("getStatusAB", "dfoMonitor", "execHC_TREND"))
    ]
    assert said[0] == "dfoMonitor" and said[-1] == "dfoMonitor"
    assert said[1:-1] == ["getStatusAB -r", "getStatusAB -F", "execHC_TREND"]
    assert qc_done(s) == {BIAS1, BIAS2, FLAT2, ARC2}
    assert f"cal_QC {DATE}" in Path(s["dfo"]["mon_dir"], "DFO_STATUS").read_text()
    ran = [ln for ln in s["calls"].read_text().splitlines() if ln.startswith("processAB")]
    assert ran and all(ln.endswith(" -l") for ln in ran)  # INT: the whole machine
    assert STD2 not in calls(s, "processAB")
    std2 = Path(s["dfo"]["ab_dir"], STD2).read_text()
    assert re.search(r"^PROCESS_STATUS\s+FAILED$", std2, re.MULTILINE)
    assert "2 failed (1 for want of a download)" in proc.stdout + proc.stderr


# ------------------------------------------------------------------- createjob as the operator
def test_createjob_on_the_bundled_example_with_nothing_downloaded(tmp_path) -> None:
    """Every placeholder a template may use is filled where it is used ({config}: the run
    configuration createjob writes); the example's download uses it."""
    from conftest import example_config

    cfg, dfo = example_config(tmp_path)
    made = subprocess.run(
        ["abflow", "createjob", "-m", "CALIB", "-d", "2013-02-12", "--configfile", str(cfg)],
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    raw = Path(dfo["job_dir"], "rawDown_CALIB_2013-02-12").read_text()
    named = re.findall(r"--configfile (\S+\.json)", raw)
    assert named and all(os.path.isfile(p) for p in named)
    assert json.loads(Path(named[0]).read_text())["date"] == "2013-02-12"


@pytest.mark.parametrize("step", ["download", "process_ab", "process_qc"])
def test_every_placeholder_of_a_template_is_filled_where_it_is_used(tmp_path, step) -> None:
    from abflow.model.commands import PLACEHOLDERS

    s = site(tmp_path, drs_type="CPL")
    words = " ".join("{" + name + "}" for name in PLACEHOLDERS[step])
    s["config"].write_text(s["config"].read_text() + f"commands:\n  {step}: echo {words}\n")
    made = abflow(s, "createjob", "-m", "CALIB", "-d", DATE)
    assert made.returncode == 0, made.stderr
    dry = subprocess.run(
        ["abflow", "check", "--configfile", str(s["config"])],
        env=s["env"],
        capture_output=True,
        text=True,
    )
    assert dry.returncode == 0, dry.stderr


def test_createjob_carries_its_config_overrides_and_max_cores(tmp_path) -> None:
    s = site(tmp_path, drs_type="CPL")
    createjob = Path(s["dfo"]["config_dir"], "config.createJob")
    createjob.write_text(createjob.read_text() + "MAX_CORES       1\n")
    check = abflow(s, "check")
    assert "limits.downloads = 1 (from" in check.stdout and "MAX_CORES" in check.stdout
    assert (
        abflow(s, "createjob", "-m", "CALIB", "-d", DATE, "--config", "limits.jobs=3").returncode
        == 0
    )
    jobs = Path(s["dfo"]["job_dir"], "JOBS_NIGHT").read_text()
    used = json.loads(Path(re.search(r"--configfile (\S+\.json)", jobs).group(1)).read_text())
    assert used["limits"]["jobs"] == 3 and used["limits"]["downloads"] == 1
    raw = Path(s["dfo"]["job_dir"], f"rawDown_CALIB_{DATE}").read_text()
    assert raw.splitlines()[2] == 'echo "starting raw data download ..."'
    assert not [ln for ln in raw.splitlines() if ln.endswith(" &")]  # MAX_CORES 1: one at a time


def _createjob_in_thread(s: dict, date: str, errors: list) -> None:
    from abflow.cli import main

    try:
        assert main(["createjob", "-m", "CALIB", "-d", date, "--configfile", str(s["config"])]) == 0
    except BaseException as exc:  # (reported by the test)
        errors.append(exc)


def test_two_createjobs_at_once_write_both_blocks(tmp_path, monkeypatch) -> None:
    """The job file is read, rewritten and the night queued under a lock: of two createjob
    calls at once (a pause between reading and writing makes them overlap), none loses the
    other's block, and DFO_STATUS queues exactly the blocks written."""
    import abflow.views.jobfiles as jobfiles

    s = two_nights(tmp_path, drs_type="CPL")
    real = jobfiles.replace_entry

    def slow(*args: object, **kwargs: object) -> str:
        import time

        time.sleep(0.3)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(jobfiles, "replace_entry", slow)
    errors: list = []
    threads = [
        threading.Thread(target=_createjob_in_thread, args=(s, d, errors)) for d in (DATE, DATE2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    text = Path(s["dfo"]["job_dir"], "JOBS_NIGHT").read_text()
    for date in (DATE, DATE2):
        assert text.count(f"# >>> abflow createjob CALIB {date} ") == 1
    queued = Path(s["dfo"]["mon_dir"], "DFO_STATUS").read_text().split()
    assert sorted(queued[1::3]) == [DATE, DATE2]


def test_a_job_file_is_the_operators(tmp_path) -> None:
    """Only abflow's block is replaced (markers matched without trailing blanks), every other
    line stays byte for byte, the file's mode stays, a link is written through (to a file
    inside the configured directories; one leading outside them is refused), and a block
    whose end marker is gone is refused with file and line, touching nothing."""
    s = site(tmp_path, drs_type="CPL")
    job_dir = Path(s["dfo"]["job_dir"])
    assert abflow(s, "createjob", "-m", "CALIB", "-d", DATE).returncode == 0
    end = f"# <<< abflow createjob CALIB {DATE}"
    text = (job_dir / "JOBS_NIGHT").read_text().replace(end, end + "  \t")
    before, after = b"# operator: before\rstill the same line\n", b"operator_tool --after\n"
    outside = tmp_path / "elsewhere" / "JOBS_NIGHT"
    real = Path(s["dfo"]["log_dir"], "jobs", "JOBS_NIGHT")  # (a configured directory)
    for path in (outside, real):
        path.parent.mkdir()
        path.write_bytes(before + text.encode() + after)
        path.chmod(0o750)
    (job_dir / "JOBS_NIGHT").unlink()
    (job_dir / "JOBS_NIGHT").symlink_to(outside)
    refused = abflow(s, "createjob", "-m", "CALIB", "-d", DATE)
    assert refused.returncode == 1 and "outside the configured directories" in refused.stderr
    assert outside.read_bytes() == before + text.encode() + after
    (job_dir / "JOBS_NIGHT").unlink()
    (job_dir / "JOBS_NIGHT").symlink_to(real)
    made = abflow(s, "createjob", "-m", "CALIB", "-d", DATE)
    assert made.returncode == 0, made.stderr
    assert (job_dir / "JOBS_NIGHT").is_symlink()
    new = real.read_bytes()
    assert new.startswith(before) and after in new and new.count(end.encode()) == 1
    assert stat.S_IMODE(real.stat().st_mode) == 0o750
    # an end marker gone: refused, the file as it was
    broken = new.replace(end.encode() + b"\n", b"")
    real.write_bytes(broken)
    refused = abflow(s, "createjob", "-m", "CALIB", "-d", DATE)
    assert refused.returncode == 1 and f"{real}:" in refused.stderr
    assert "has no end marker" in refused.stderr and real.read_bytes() == broken


# ------------------------------------------------------------------- a DFOS machine
def test_on_a_dfos_machine_the_sites_configuration_is_used_never_the_example(
    tmp_path, monkeypatch
) -> None:
    """$DFO_* set and no --configfile: $DFO_CONFIG_DIR/abflow.yaml, or without one the
    schema's DFOS defaults (the real DFOS tools), never the bundled example; the start line
    names which."""
    from abflow.model.config import DFO_DIRS, load_settings

    s = site(tmp_path, drs_type="CPL")
    env = dict(s["env"], DFS_PRODUCT=s["dfo"]["product_dir"])
    for key, (name, _sub) in DFO_DIRS.items():
        if key != "product_dir":
            env[name] = s["dfo"][key]
            monkeypatch.setenv(name, s["dfo"][key])
    monkeypatch.setenv("DFS_PRODUCT", s["dfo"]["product_dir"])
    defaults = load_settings(None, [f"date={DATE}"])
    assert defaults.commands["process_ab"] == "processAB -a {ab}"
    assert defaults.dfo["ab_dir"] == s["dfo"]["ab_dir"]
    site_file = Path(s["dfo"]["config_dir"], "abflow.yaml")
    site_file.write_text(yaml.safe_dump({"date": DATE, "qc_mode": "SER"}))
    assert load_settings().qc_mode == "SER" and load_settings().date == DATE
    snakemake = [
        str(Path(sys.executable).parent / "snakemake"),
        "-s",
        str(ROOT / "Snakefile"),
        "--profile",
        str(ROOT / "profiles" / "local"),
        "-n",
    ]
    dry = subprocess.run(
        snakemake, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    said = dry.stdout + dry.stderr
    assert f"abflow: configuration: {site_file} (the site's" in said, said[-2000:]
    assert "resources/example" not in said
    site_file.unlink()
    dry = subprocess.run(
        [*snakemake, "--config", f"date={DATE}"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    said = dry.stdout + dry.stderr
    assert "the schema's DFOS defaults ($DFO_* directories, processAB" in said, said[-2000:]


def test_process_ab_fetches_a_cleaned_up_raw_file_with_any_placeholder(tmp_path) -> None:
    """`abflow process-ab` of an AB whose raw file was cleaned up downloads it again with the
    configured template, every placeholder filled ({config}: the run configuration)."""
    from abflow.example.processab import fetch_missing
    from abflow.model.ab import read_ab
    from abflow.model.config import load_settings

    s = site(tmp_path, drs_type="CPL")
    template = "test -f {config} && test {date} && test {mode} && printf raw > {dest}"
    settings = load_settings(s["config"], [f"commands.download={template}"])
    ab, _ = read_ab(os.path.join(s["dfo"]["ab_dir"], BIAS1), settings.variables)
    fetch_missing(ab, settings, print)
    assert all(Path(f.path).read_text() == "raw" for f in ab.rawfiles)
