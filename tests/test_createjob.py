"""abflow createjob: golden files for every format, idempotence, legacy config, PLUGIN, E2E."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import DATE, ROOT, records, write_config

from abflow.cli import main
from abflow.example.generate import ABSpec, fan_cascade, write_night
from abflow.model.config import load_settings, resolve
from abflow.model.load import load_night
from abflow.views.jobfiles import JobRequest, build, exec_ab_lines

GOLDEN = ROOT / "tests" / "data" / "golden" / "createjob"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"

# variant -> (config overrides, createjob options, night mode)
VARIANTS: dict[str, tuple[dict, list[str], str]] = {
    "cpl-ser-downloads": ({"drs_type": "CPL", "qc_mode": "SER"}, [], "CALIB"),
    "con-par-mcal": ({"drs_type": "CON", "qc_mode": "PAR", "raw_present": True}, [], "CALIB"),
    "int-implicit": ({"drs_type": "INT", "qc_mode": "IMPLICIT", "raw_present": True}, [], "CALIB"),
    "con-auto-cleanup": (
        {"drs_type": "CON", "cal_cleanup": True, "limits": {"downloads": 3}},
        ["-F"],
        "CALIB",
    ),
    "opshub-one-download": ({"drs_type": "CPL", "limits": {"downloads": 1}}, [], "CALIB"),
    "science": ({"drs_type": "CON", "qc_mode": "SER"}, [], "SCIENCE"),
    "con-subcascade": ({"drs_type": "CON", "qc_mode": "PAR"}, ["-a", "SYNTH_PARENT"], "CALIB"),
    "con-job-id": ({"drs_type": "CON", "qc_mode": "PAR"}, ["-r", "REPRO"], "CALIB"),
}


def golden_night(dfo: dict[str, str], mode: str, raw_present: bool) -> list[ABSpec]:
    specs = fan_cascade([1, 2, 2])
    specs[1].real_mcalibs = [("$DFO_CAL_DIR/2013-02-10/GI_MDRK_130210A_1x1.fits", "MASTER_DARK")]
    write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE, mode=mode)
    if raw_present:
        raw = Path(dfo["raw_dir"], DATE)
        raw.mkdir(parents=True, exist_ok=True)
        for spec in specs:
            for name in spec.raw_names():
                (raw / name).touch()
    return specs


def normalise(text: str, tmp: Path) -> str:
    """Machine paths, abflow's version and DFO_STATUS times replaced by placeholders."""
    text = text.replace(str(tmp), "$TMP").replace(os.path.dirname(sys.executable), "$BIN")
    text = text.replace(str(ROOT), "$ABFLOW")
    text = re.sub(r"abflow \d+\.\d+\.\d+", "abflow <version>", text)
    text = re.sub(r"/config/[0-9a-f]{16}\.json", "/config/<checksum>.json", text)
    return re.sub(r"^((cal|sci)_\w+ \S+) \S+$", r"\1 <time>", text, flags=re.M)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_job_files_match_the_golden_files(tmp_path, dfo, monkeypatch, variant) -> None:
    overrides, options, mode = VARIANTS[variant]
    overrides = dict(overrides)
    specs = golden_night(dfo, mode, overrides.pop("raw_present", False))
    options = [specs[1].name if o == "SYNTH_PARENT" else o for o in options]
    cfg = write_config(tmp_path / "config.yaml", dfo, mode=mode, **overrides)
    monkeypatch.setenv("USER", "giraffe")
    assert main(["createjob", "-m", mode, "-d", DATE, "--configfile", str(cfg), *options]) == 0
    job_dir = Path(dfo["job_dir"])
    produced = {
        p.name: normalise(p.read_text(), tmp_path) for p in sorted(job_dir.iterdir()) if p.is_file()
    }
    status = Path(dfo["mon_dir"], "DFO_STATUS")
    if status.exists():  # not with -a, which writes the _sub files only
        produced["DFO_STATUS"] = normalise(status.read_text(), tmp_path)
    expected_dir = GOLDEN / variant
    if UPDATE:
        shutil.rmtree(expected_dir, ignore_errors=True)
        expected_dir.mkdir(parents=True)
        for name, text in produced.items():
            (expected_dir / name).write_text(text)
    expected = {p.name: p.read_text() for p in sorted(expected_dir.iterdir())}
    assert sorted(produced) == sorted(expected)
    for name in expected:
        assert produced[name] == expected[name], f"{variant}/{name} differs from the golden file"


def test_con_waits_are_the_nights_edges(dfo) -> None:
    specs = fan_cascade([1, 3, 6, 2])
    specs[7].parents = [specs[1].name, specs[2].name]  # an AB with two parents
    write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
    night = load_night(resolve({"date": DATE, "dfo": dfo, "drs_type": "CON"}))
    lines = exec_ab_lines(night, JobRequest(user="u"))
    ids: dict[str, int] = {}
    waits: dict[str, set[int]] = {}
    for line in lines:
        job_id, tool, args, wait = (part.strip() for part in line.split("||"))
        assert tool == "processAB"
        ab = args.split()[1]
        ids[ab] = int(job_id)
        waits[ab] = {int(w) for w in wait.split()}
        assert all(w < ids[ab] for w in waits[ab])  # a job only waits for earlier ones
    for record in night:
        assert waits[record.name] == {ids[p] for p in record.parents}


def test_rerunning_createjob_is_idempotent_and_keeps_other_lines(tmp_path, dfo) -> None:
    golden_night(dfo, "CALIB", raw_present=False)
    cfg = write_config(tmp_path / "config.yaml", dfo, drs_type="CON")
    jobs = Path(dfo["job_dir"], "JOBS_NIGHT")
    jobs.parent.mkdir(parents=True, exist_ok=True)
    jobs.write_text("# site job file\nsome_site_tool --daily\n")
    args = ["createjob", "-m", "CALIB", "-d", DATE, "--configfile", str(cfg)]
    assert main(args) == 0
    first = jobs.read_text()
    assert main(args) == 0
    assert main([*args, "-a", fan_cascade([1, 2, 2])[1].name]) == 0
    assert main(args) == 0
    second = jobs.read_text()
    assert second == first
    assert second.startswith("# site job file\nsome_site_tool --daily\n")
    assert second.count("# execAB:") == 1 and second.count("# execQC:") == 1
    # another date gets its own block, and the first one stays as it was
    write_night(fan_cascade([1]), dfo["ab_dir"], dfo["mon_dir"], "2013-02-13")
    assert main(["createjob", "-m", "CALIB", "-d", "2013-02-13", "--configfile", str(cfg)]) == 0
    text = jobs.read_text()
    assert text.startswith(first) and text.count("# execAB:") == 2
    # abflow's exit-status lines once, just before its first block (the operator's lines first)
    exit_status = "# >>> abflow createjob: exit status\ntrap "
    assert text.count(exit_status) == 1
    assert text.index(exit_status) == len("# site job file\nsome_site_tool --daily\n")
    statuses = Path(dfo["mon_dir"], "DFO_STATUS").read_text().splitlines()
    # three createjob runs of the night queue it; -a (the _sub files only) does not
    assert [s.split()[:2] for s in statuses] == [["cal_Queued", DATE]] * 3 + [
        ["cal_Queued", "2013-02-13"]
    ]


def test_subcascade_asked_interactively(tmp_path, dfo, monkeypatch, capsys) -> None:
    specs = golden_night(dfo, "CALIB", raw_present=True)
    cfg = write_config(tmp_path / "config.yaml", dfo, drs_type="CON")
    args = ["createjob", "-m", "CALIB", "-d", DATE, "--configfile", str(cfg), "-a"]
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)  # cron: no terminal to ask on
    assert main(args) == 2
    assert "name the parent AB, -a AB" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "2")
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"   2  {specs[1].name}  (waits for {specs[0].name})" in out
    text = Path(dfo["job_dir"], f"execAB_CALIB_{DATE}_sub").read_text()
    sub = [line for line in text.splitlines() if not line.startswith("#")]
    assert [line.split("||")[2].split()[1] for line in sub] == [specs[1].name, specs[3].name]
    assert sub[1].endswith("|| 1")


def test_legacy_configuration_fills_unset_keys_and_reports_conflicts(tmp_path, dfo) -> None:
    config_dir = Path(tmp_path, "dfoconfig")
    config_dir.mkdir()
    (config_dir / "config.createJob").write_text(
        "# createJob configuration\nCAL_CLEANUP   YES\nMAX_JOBS   12 # at most\n"
        "FULL_RAWDOWNLOAD NO\n# MEF section\nMEF_FACTOR 8\nPLUGIN /opt/dfos/bin/plugin\n"
    )
    (config_dir / "config.createAB").write_text("DRS_TYPE  CON\n")
    (config_dir / "config.processQC").write_text("QC_MODE  PAR\n")
    cfg = {"date": DATE, "dfo": {**dfo, "config_dir": str(config_dir)}, "drs_type": "INT"}
    s = resolve(cfg)
    assert s.cal_cleanup is True and s.limits["jobs"] == 12 and s.full_rawdownload is False
    assert (s.mef_factor, s.plugin, s.qc_mode) == (8, "/opt/dfos/bin/plugin", "PAR")
    assert s.drs_type == "INT"  # set in the configuration: it wins, and that is reported
    assert len(s.notes) == 1 and "config.createAB:1 DRS_TYPE = 'CON' differs" in s.notes[0]
    (config_dir / "config.processQC").write_text("QC_MODE  SOMETIMES\n")
    with pytest.raises(Exception, match=r"config\.processQC:1: QC_MODE 'SOMETIMES'"):
        resolve(cfg)


def test_plugin_runs_before_the_jobs_entry_and_its_failure_stops(tmp_path, dfo, capsys) -> None:
    golden_night(dfo, "CALIB", raw_present=True)
    seen = tmp_path / "seen"
    plugin = tmp_path / "plugin.sh"
    plugin.write_text(
        f'#!/bin/sh\necho "$1" > {seen}\n[ -z "$FAIL" ] || {{ echo refused; exit 3; }}\n'
    )
    plugin.chmod(plugin.stat().st_mode | stat.S_IEXEC)
    cfg = write_config(tmp_path / "config.yaml", dfo, plugin=str(plugin))
    args = ["createjob", "-m", "CALIB", "-d", DATE, "--configfile", str(cfg)]
    assert main(args) == 0
    assert seen.read_text().strip() == str(Path(dfo["job_dir"], f"execAB_CALIB_{DATE}"))
    os.environ["FAIL"] = "1"
    try:
        Path(dfo["job_dir"], "JOBS_NIGHT").unlink()
        assert main(args) == 1
    finally:
        del os.environ["FAIL"]
    err = capsys.readouterr().err
    assert "PLUGIN" in err and "failed (exit 3)" in err and "refused" in err
    assert not Path(dfo["job_dir"], "JOBS_NIGHT").exists()


def test_build_writes_nothing(tmp_path, dfo) -> None:
    golden_night(dfo, "CALIB", raw_present=False)
    night = load_night(resolve({"date": DATE, "dfo": dfo}))
    job = build(night, JobRequest(user="u", configfile="/c.yaml"))
    assert len(job.files) == 4 and not any(os.path.exists(p) for p in job.files)


@pytest.mark.slow
@pytest.mark.esorex
@pytest.mark.skipif(shutil.which("esorex") is None, reason="esorex is not installed")
def test_generated_jobs_night_runs_the_night(tmp_path, dfo) -> None:
    """createjob on a night of stand-in jobs, then the JOBS_NIGHT block run by `bash -e`: the
    ABs, then their QC, then the QC flag and the final monitor call."""
    specs = fan_cascade([2, 3, 3])
    write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
    cfg = tmp_path / "config.yaml"
    write_config(
        cfg, dfo, qc_mode="SER",
        commands={"process_ab": "sleep 0.2", "process_qc": "sleep 0.1",
                  "monitor": f"abflow status -d {{date}} -m {{mode}} --configfile {cfg}"},
    )  # fmt: skip
    assert main(["createjob", "-m", "CALIB", "-d", DATE, "--configfile", str(cfg)]) == 0
    jobs = Path(dfo["job_dir"], "JOBS_NIGHT").read_text()
    proc = subprocess.run(
        ["bash", "-e", "-c", jobs], capture_output=True, text=True, check=False, timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    settings = load_settings(cfg)
    recs = records(settings.state_dir)
    assert len(recs) == 8 and all(r["status"] == "SUCCESSFUL" for r in recs.values())
    qc = list(Path(settings.state_dir, "records", "process_qc").glob("*.json"))
    assert len(qc) == 8
    status = Path(dfo["mon_dir"], "DFO_STATUS").read_text().split("\n")
    assert status[0].startswith(f"cal_Queued {DATE}") and status[1].startswith(f"cal_QC {DATE}")
    page = Path(dfo["mon_dir"], f"status_{DATE}.html").read_text()  # the final monitor call
    assert 'id="count-succeeded" class="succeeded">succeeded: <b>8</b>' in page


def test_every_golden_line_is_documented_or_said_to_be_silent() -> None:
    """Each line of every golden createjob file matches exactly one entry of
    golden/createjob/sources.yaml, which cites the section of docs/dfos.md it follows or
    says that the reference is silent there (and what abflow does)."""
    import fnmatch

    sources = yaml.safe_load((GOLDEN / "sources.yaml").read_text())
    entries = sources["lines"]
    for entry in entries:
        cited = re.findall(r"§[\d.]+", entry["source"])
        assert cited or entry["source"].startswith("silent:"), entry
        assert all(c in sources["sections"] for c in cited), entry
    text = (ROOT / "docs" / "dfos.md").read_text()  # the project's own DFOS facts
    for number, title in sources["sections"].items():
        heading = number.lstrip("§").rstrip(".")
        assert re.search(rf"^#+ {re.escape(heading)}\.? {re.escape(title)}$", text, re.M), (
            number,
            title,
        )
    used = set()
    for path in sorted(GOLDEN.glob("*/*")):
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            hits = [
                i for i, e in enumerate(entries)
                if fnmatch.fnmatch(path.name, e["files"]) and re.fullmatch(e["pattern"], line)
            ]  # fmt: skip
            assert len(hits) == 1, f"{path.relative_to(GOLDEN)}:{n}: {line!r} matches {hits}"
            used.update(hits)
    assert used == set(range(len(entries)))  # no entry for a line that no longer exists


def test_createjob_checks_where_it_writes_before_writing_anything(tmp_path, dfo, capsys) -> None:
    """DFO_STATUS and the job file through a link inside the configured directories are
    written there; a link leading out, a directory or a FIFO in their place is refused before
    any file is written (a FIFO never hangs createjob); -r NIGHT or AUTO would name the main
    job file and is refused; createjob says which configuration its job file's calls read."""
    golden_night(dfo, "CALIB", raw_present=True)
    cfg = write_config(tmp_path / "config.yaml", dfo, drs_type="CPL")
    args = ["createjob", "-m", "CALIB", "-d", DATE, "--configfile", str(cfg)]
    mon, job_dir = Path(dfo["mon_dir"]), Path(dfo["job_dir"])
    status, shared = mon / "DFO_STATUS", mon / "shared" / "DFO_STATUS"
    shared.parent.mkdir()
    shared.write_text("cal_Updated 2013-02-11 x\n")
    status.symlink_to(shared)
    assert main(args) == 0
    said = capsys.readouterr().out
    assert f"configuration: {cfg}; the job file's calls read it as " in said
    assert shared.read_text().splitlines()[1].startswith(f"cal_Queued {DATE} ")
    assert status.is_symlink()
    outside = tmp_path / "elsewhere"
    outside.write_text("")
    for what, make in (
        ("outside the configured directories", lambda p: p.symlink_to(outside)),
        ("is a directory", lambda p: p.mkdir()),
        ("is not a regular file", lambda p: os.mkfifo(p)),
    ):
        for path in (status, job_dir / "JOBS_NIGHT"):
            for made in job_dir.glob("*_CALIB_*"):
                made.unlink()
            moved = path.with_name(path.name + ".kept")
            path.rename(moved)
            make(path)
            assert main(args) == 1
            assert what in capsys.readouterr().err
            assert not list(job_dir.glob("*_CALIB_*"))  # nothing written
            path.rmdir() if path.is_dir() else path.unlink()
            moved.rename(path)
    assert outside.read_text() == ""
    for reserved in ("NIGHT", "auto"):
        assert main([*args, "-r", reserved]) == 2
        assert "names the night's main job file" in capsys.readouterr().err


def test_job_file_calls_find_abflow_and_the_configuration_under_crons_environment(
    tmp_path, dfo
) -> None:
    """A job file runs with cron's PATH and no $ABFLOW_CONFIG: its monitor call (here abflow's
    own page, without --configfile) still finds abflow and writes the night's page into the
    configured tree, not the bundled example's."""
    golden_night(dfo, "CALIB", raw_present=True)
    cfg = write_config(
        tmp_path / "config.yaml", dfo, commands={"monitor": "abflow status -d {date} -m {mode}"}
    )
    assert main(["createjob", "-m", "CALIB", "-d", DATE, "--configfile", str(cfg)]) == 0
    lines = Path(dfo["job_dir"], "JOBS_NIGHT").read_text().splitlines()
    final = next(ln for ln in lines if "abflow status" in ln and "-r)" not in ln)
    proc = subprocess.run(
        ["sh", "-c", final],
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "the AB monitor failed" not in proc.stderr, proc.stderr
    assert Path(dfo["mon_dir"], f"status_{DATE}.html").is_file()
