"""Downloads and QC as throttled rule groups, measured in real snakemake runs."""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path

import pytest
from conftest import DATE, ROOT, records, run_snakemake, write_config

from abflow.example.generate import ABSpec, fan_cascade, write_night

pytestmark = pytest.mark.slow

STANDIN_JOB = f"{sys.executable} {ROOT / 'tests' / 'standins' / 'standin_job.py'}"
STANDIN_DOWNLOAD = ROOT / "tests" / "standins" / "standin_download.sh"


def events(log: Path) -> list[tuple[str, str, float]]:
    """(kind, name, time) lines written by the stand-ins."""
    out = []
    for line in log.read_text().splitlines():
        kind, name, t = line.split()
        out.append((kind, name, float(t)))
    return out


def spans(log: Path) -> dict[str, list[tuple[float, float]]]:
    """name -> [(start, end), ...] from a stand-in log."""
    starts: dict[str, list[float]] = {}
    out: dict[str, list[tuple[float, float]]] = {}
    for kind, name, t in events(log):
        if kind == "start":
            starts.setdefault(name, []).append(t)
        else:
            out.setdefault(name, []).append((starts[name].pop(0), t))
    return out


def max_concurrency(intervals: list[tuple[float, float]]) -> int:
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = best = 0
    for _, delta in points:
        running += delta
        best = max(best, running)
    return best


def shared_raw_night(dfo: dict[str, str], archive: Path, widths=(2, 2)) -> list[ABSpec]:
    """A night whose ABs each have three raw files, one of them shared by every AB."""
    specs = fan_cascade(list(widths))
    shared = f"RAWFILE $DFO_RAW_DIR/{DATE}/SHARED.2013-02-13T00:00:00.000.fits BIAS"
    for spec in specs:
        spec.n_raw = 2
        spec.extra_lines = [shared]
    write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
    archive.mkdir(exist_ok=True)
    names = {"SHARED.2013-02-13T00:00:00.000.fits"}
    for spec in specs:
        names.update(spec.raw_names())
    for name in names:
        (archive / name).write_bytes(name.encode() * 100)
    return specs


def config(tmp_path: Path, dfo, archive: Path, **extra) -> tuple[Path, Path, Path]:
    dl_log = tmp_path / "downloads.events"
    job_log = tmp_path / "jobs.events"
    qc_log = tmp_path / "qc.events"
    seconds = extra.pop("download_seconds", 0.6)
    fail = extra.pop("fail_download", "")
    commands = {
        "download": f"{STANDIN_DOWNLOAD} {dl_log} {archive} {{file}} {{dest}} {seconds} {fail}",
        "process_ab": f"{STANDIN_JOB} {job_log} {{ab_file}} --seconds 0.3 --check-raw",
        "process_qc": f"{STANDIN_JOB} {qc_log} {{ab_file}} --seconds 0.4 --check-raw",
    }
    commands.update(extra.pop("commands", {}))
    extra.setdefault("qc_mode", "SER")
    cfg = write_config(tmp_path / "config.yaml", dfo, commands=commands, **extra)
    return cfg, dl_log, qc_log


def test_downloads_run_at_most_limit_at_once_each_file_once(tmp_path, dfo) -> None:
    archive = tmp_path / "archive"
    specs = shared_raw_night(dfo, archive, widths=(4, 4))
    cfg, dl_log, _ = config(
        tmp_path, dfo, archive, drs_type="CON", limits={"downloads": 3}, qc_mode="IMPLICIT"
    )
    proc = run_snakemake(tmp_path, cfg, cores=4)
    fetched = spans(dl_log)
    expected = 1 + 2 * len(specs)
    assert len(fetched) == expected
    assert all(len(v) == 1 for v in fetched.values())  # each file fetched once
    assert max_concurrency([s for v in fetched.values() for s in v]) == 3
    assert len(records(os.path.join(dfo["job_dir"], "abflow"))) == len(specs)
    out = proc.stdout + proc.stderr
    # abflow's console (not a terminal here): the last progress line, once
    assert out.count(f"downloads: {expected}/{expected} files") == 1, out
    progress_log = Path(dfo["job_dir"], "abflow", "logs", "downloads.log").read_text()
    assert f"[downloads] {expected}/{expected} files" in progress_log  # and in the log


def test_every_download_finishes_before_an_ab_needing_it_starts(tmp_path, dfo) -> None:
    archive = tmp_path / "archive"
    specs = shared_raw_night(dfo, archive)
    cfg, dl_log, _ = config(tmp_path, dfo, archive, drs_type="CON", qc_mode="IMPLICIT")
    run_snakemake(tmp_path, cfg, cores=3)
    fetched = {name: v[0][1] for name, v in spans(dl_log).items()}
    recs = records(os.path.join(dfo["job_dir"], "abflow"))
    for spec in specs:
        t_start = dt.datetime.fromisoformat(recs[spec.name]["start"]).timestamp()
        for raw in [*spec.raw_names(), "SHARED.2013-02-13T00:00:00.000.fits"]:
            assert fetched[raw] <= t_start


@pytest.mark.parametrize("full", [True, False])
def test_full_rawdownload_holds_every_ab_until_all_downloads_are_done(tmp_path, dfo, full):
    archive = tmp_path / "archive"
    shared_raw_night(dfo, archive, widths=(3, 3))
    cfg, dl_log, _ = config(
        tmp_path, dfo, archive, drs_type="CON", full_rawdownload=full, qc_mode="IMPLICIT",
        limits={"downloads": 2},
    )  # fmt: skip
    run_snakemake(tmp_path, cfg, cores=3)
    last_download = max(e for v in spans(dl_log).values() for _, e in v)
    job_starts = [t for kind, _, t in events(tmp_path / "jobs.events") if kind == "start"]
    if full:
        assert min(job_starts) >= last_download
    else:  # without the flag the first AB starts while other downloads still run
        assert min(job_starts) < last_download


def test_qc_ser_runs_one_at_a_time_and_par_up_to_the_limit(tmp_path, dfo) -> None:
    archive = tmp_path / "archive"
    shared_raw_night(dfo, archive, widths=(4,))
    cfg, _, qc_log = config(tmp_path, dfo, archive, drs_type="CON", qc_mode="SER")
    run_snakemake(tmp_path, cfg, cores=4)
    qc = [s for v in spans(qc_log).values() for s in v]
    assert len(qc) == 4 and max_concurrency(qc) == 1
    qc_records = Path(dfo["job_dir"], "abflow", "records", "process_qc")
    assert len(list(qc_records.glob("*.json"))) == 4
    # PAR: rerun only the QC, up to limits.qc at once
    qc_log.unlink()
    cfg, _, qc_log = config(tmp_path, dfo, archive, drs_type="CON", qc_mode="PAR", limits={"qc": 3})
    for rec in qc_records.glob("*.json"):
        rec.unlink()
    run_snakemake(tmp_path, cfg, cores=4)
    qc = [s for v in spans(qc_log).values() for s in v]
    assert len(qc) == 4 and max_concurrency(qc) == 3
    assert not (tmp_path / "jobs.events").read_text().count("start") > 4  # ABs not rerun


def test_implicit_qc_runs_no_qc_jobs(tmp_path, dfo) -> None:
    archive = tmp_path / "archive"
    shared_raw_night(dfo, archive, widths=(2,))
    cfg, _, qc_log = config(tmp_path, dfo, archive, qc_mode="IMPLICIT")
    dry = run_snakemake(tmp_path, cfg, "-n")
    assert "process_qc" not in dry.stdout
    run_snakemake(tmp_path, cfg)
    assert not qc_log.exists()


def test_failed_qc_marks_the_qc_and_stops_nothing(tmp_path, dfo) -> None:
    archive = tmp_path / "archive"
    specs = shared_raw_night(dfo, archive, widths=(1, 2))
    failing = specs[0].name
    cfg, _, _ = config(
        tmp_path, dfo, archive, drs_type="CON",
        commands={"process_qc": f"{STANDIN_JOB} {tmp_path / 'qc.events'} {{ab_file}} "
                  f"--fail-if {failing[:-3]}"},
    )  # fmt: skip
    proc = run_snakemake(tmp_path, cfg, cores=2, check=False)
    assert proc.returncode != 0
    assert set(records(os.path.join(dfo["job_dir"], "abflow"))) == {s.name for s in specs}
    qc_done = {
        p.name[:-5] for p in Path(dfo["job_dir"], "abflow", "records", "process_qc").iterdir()
    }
    assert qc_done == {s.name for s in specs[1:]}
    note = Path(dfo["job_dir"], "abflow", "failed", "process_qc", failing + ".json")
    assert "failing" in note.read_text()


def test_cal_cleanup_removes_raw_files_only_after_every_reader(tmp_path, dfo) -> None:
    archive = tmp_path / "archive"
    specs = shared_raw_night(dfo, archive, widths=(2, 2))
    cfg, _, _ = config(tmp_path, dfo, archive, drs_type="CON", cal_cleanup=True)
    run_snakemake(tmp_path, cfg, cores=3)  # every AB and QC job checked its raw files exist
    assert len(records(os.path.join(dfo["job_dir"], "abflow"))) == len(specs)
    raw_dir = Path(dfo["raw_dir"], DATE)
    assert not raw_dir.exists() or list(raw_dir.iterdir()) == []
    again = run_snakemake(tmp_path, cfg, "-n", cores=3)  # nothing downloaded or run again
    assert "abflow: nothing to do: every AB" in again.stdout + again.stderr


def test_a_failing_download_fails_only_the_abs_that_need_it(tmp_path, dfo) -> None:
    archive = tmp_path / "archive"
    specs = shared_raw_night(dfo, archive, widths=(2, 2))
    bad = specs[0].raw_names()[0]
    cfg, _, _ = config(
        tmp_path, dfo, archive, drs_type="CON", qc_mode="IMPLICIT", fail_download=bad
    )
    proc = run_snakemake(tmp_path, cfg, cores=3, check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert f"download of {bad} failed (exit 1)" in out
    assert f"HTTP 404 Not Found: {bad} is not in the archive" in out
    done = set(records(os.path.join(dfo["job_dir"], "abflow")))
    assert done == {specs[1].name, specs[3].name}  # the sibling branch went on
    assert not Path(dfo["raw_dir"], DATE, bad).exists()


def test_missing_archive_directory_is_refused_before_anything_runs(tmp_path, dfo) -> None:
    write_night(fan_cascade([1]), dfo["ab_dir"], dfo["mon_dir"], DATE)
    cfg = write_config(
        tmp_path / "config.yaml", dfo, archive=str(tmp_path / "nowhere"),
        commands={"download": "abflow fetch {file} {dest}"},
    )  # fmt: skip
    proc = run_snakemake(tmp_path, cfg, "-n", check=False)
    assert proc.returncode != 0
    assert f"archive directory {tmp_path / 'nowhere'} does not exist" in proc.stdout + proc.stderr


def test_real_calibrations_are_downloaded_once_also_over_a_header_only_copy(tmp_path, dfo):
    archive = tmp_path / "archive"
    archive.mkdir()
    cal = Path(dfo["cal_dir"], "2013-02-10")
    cal.mkdir(parents=True)
    (cal / "GI_MBIA_130210A_1x1.hdr").write_text("SIMPLE = T\nEND\n")  # cleanupProducts left it
    (archive / "GI_MBIA_130210A_1x1.fits").write_bytes(b"master bias" * 50)
    real = [("$DFO_CAL_DIR/2013-02-10/GI_MBIA_130210A_1x1.hdr", "MASTER_BIAS")]
    specs = [ABSpec(n.name, n_raw=1, real_mcalibs=real) for n in fan_cascade([3])]
    write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
    for spec in specs:
        for name in spec.raw_names():
            (archive / name).write_bytes(b"raw")
    cfg, dl_log, _ = config(tmp_path, dfo, archive, drs_type="CON", qc_mode="IMPLICIT")
    run_snakemake(tmp_path, cfg, cores=3)
    fetched = spans(dl_log)
    assert len(fetched["GI_MBIA_130210A_1x1.fits"]) == 1
    assert (cal / "GI_MBIA_130210A_1x1.fits").read_bytes() == b"master bias" * 50
    assert len(records(os.path.join(dfo["job_dir"], "abflow"))) == 3
