"""Real snakemake runs of abflow's Snakefile on small generated nights in temporary directories."""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path

import pytest
from conftest import DATE, intervals, place_raw_files, records, run_snakemake, waves, write_config

from abflow.example.generate import fan_cascade, write_night

pytestmark = pytest.mark.slow


def night(tmp_path: Path, dfo: dict[str, str], widths, **config) -> tuple[Path, list[str]]:
    specs = fan_cascade(widths)
    names = write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
    cfg = write_config(tmp_path / "config.yaml", dfo, **config)
    return cfg, names


def state(dfo: dict[str, str]) -> str:
    return os.path.join(dfo["job_dir"], "abflow")


def mtimes(dfo: dict[str, str]) -> dict[str, float]:
    d = os.path.join(state(dfo), "records")
    return {f: os.stat(os.path.join(d, f)).st_mtime_ns for f in os.listdir(d)}


def test_cpl_runs_one_ab_at_a_time_in_cascade_order(tmp_path, dfo) -> None:
    cfg, names = night(tmp_path, dfo, [1, 2, 3], commands={"process_ab": "sleep 0.3"})
    run_snakemake(tmp_path, cfg, cores=3)
    spans = intervals(records(state(dfo)).values())
    assert sorted(spans, key=lambda ab: spans[ab][0]) == names
    ordered = sorted(spans.values())
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(ordered)), ordered


@pytest.mark.parametrize(("cores", "optimum"), [(2, 6), (3, 4), (6, 3)])
def test_con_reaches_the_optimal_makespan(tmp_path, dfo, cores: int, optimum: int) -> None:
    # bias -> 3 flats -> 6 science ABs, equal-length jobs. Optimum by hand: with 2 slots the
    # bias runs alone, then 9 jobs take ceil(9/2) = 5 lengths; with 3 slots 1 + 1 + 2; with 6
    # slots one length per level.
    cfg, _ = night(tmp_path, dfo, [1, 3, 6], drs_type="CON", commands={"process_ab": "sleep 1.5"})
    place_raw_files(dfo)  # equal-length AB jobs only: no downloads sharing the slots
    run_snakemake(tmp_path, cfg, cores=cores)
    spans = intervals(records(state(dfo)).values())
    assert len(spans) == 10
    assert waves(spans) == optimum, spans
    running = max(sum(1 for s, e in spans.values() if s <= t < e) for t, _ in spans.values())
    assert running == min(cores, 6)


def test_limits_jobs_caps_concurrent_abs_below_cores(tmp_path, dfo) -> None:
    cfg, _ = night(
        tmp_path,
        dfo,
        [4],
        drs_type="CON",
        limits={"jobs": 2},
        commands={"process_ab": "sleep 1"},
    )
    run_snakemake(tmp_path, cfg, cores=4)
    spans = intervals(records(state(dfo)).values())
    assert waves(spans) == 2


def test_subcascade_reruns_exactly_the_ab_and_its_descendants(tmp_path, dfo) -> None:
    cfg, names = night(tmp_path, dfo, [1, 3, 6], drs_type="CON")
    run_snakemake(tmp_path, cfg, cores=2)
    before = mtimes(dfo)
    flat = names[1]
    dry = run_snakemake(tmp_path, cfg, "-n", "--config", f"subcascade={flat}", cores=2)
    assert re.search(r"process_ab\s+3", dry.stdout), dry.stdout
    assert mtimes(dfo) == before  # a dry-run changes nothing
    run_snakemake(tmp_path, cfg, "--config", f"subcascade={flat}", cores=2)
    after = mtimes(dfo)
    changed = sorted(f.removesuffix(".json") for f in after if after[f] != before[f])
    assert changed == sorted([flat, names[4], names[5]])
    recs = records(state(dfo))
    assert recs[flat]["generation"] == 1 and recs[names[2]]["generation"] == 0
    again = run_snakemake(tmp_path, cfg, "-n", cores=2)
    assert "abflow: nothing to do: every AB" in again.stdout + again.stderr
    bad = run_snakemake(tmp_path, cfg, "-n", "--config", "subcascade=NOPE.ab", check=False)
    assert bad.returncode != 0 and "subcascade=NOPE.ab: no such AB" in bad.stdout + bad.stderr


def test_forcerun_on_a_record_is_the_plain_snakemake_form(tmp_path, dfo) -> None:
    cfg, names = night(tmp_path, dfo, [1, 3, 6], drs_type="CON")
    run_snakemake(tmp_path, cfg, cores=2)
    record = os.path.join(state(dfo), "records", names[1] + ".json")
    dry = run_snakemake(tmp_path, cfg, "-n", "--forcerun", record, cores=2)
    jobs = re.findall(r"^  (\S+\.ab)\s+\w+\s+(.+)$", dry.stdout + dry.stderr, re.M)
    assert sorted(jobs) == sorted(
        [
            (names[1], "forced (--forcerun / --forceall)"),
            (names[4], "an AB it takes calibrations from runs first"),
            (names[5], "an AB it takes calibrations from runs first"),
        ]
    )


def test_failed_ab_leaves_siblings_done_children_unrun_and_rerun_does_the_rest(
    tmp_path, dfo
) -> None:
    specs_names = [s.name for s in fan_cascade([1, 3, 6])]
    failing = specs_names[1]
    command = f"case {{ab}} in {failing}) echo recipe crashed; exit 2;; esac; sleep 0.2"
    cfg, names = night(tmp_path, dfo, [1, 3, 6], drs_type="CON", commands={"process_ab": command})
    proc = run_snakemake(tmp_path, cfg, cores=3, check=False)
    assert proc.returncode != 0
    done = set(records(state(dfo)))
    assert done == set(names) - {failing, names[4], names[5]}
    note = Path(state(dfo), "failed", failing + ".json")
    assert "recipe crashed" in note.read_text()
    assert re.search(rf"^\[\s*\d+/10\] {re.escape(failing)}\s+\w+ FAILED [\d.]+ s: command "
                     "exited 2$", proc.stdout + proc.stderr, re.M), proc.stderr  # fmt: skip
    before = mtimes(dfo)
    cfg = write_config(tmp_path / "config.yaml", dfo, drs_type="CON")
    run_snakemake(tmp_path, cfg, cores=3)
    after = mtimes(dfo)
    assert set(records(state(dfo))) == set(names)
    assert all(after[f] == before[f] for f in before)  # nothing done twice
    assert not note.exists()


def test_dry_run_dag_and_rulegraph(tmp_path, dfo) -> None:
    cfg, _ = night(tmp_path, dfo, [1, 3, 6])
    dry = run_snakemake(tmp_path, cfg, "-n")
    assert re.search(r"process_ab\s+10", dry.stdout)
    assert not os.path.exists(os.path.join(state(dfo), "records"))
    dag = run_snakemake(tmp_path, cfg, "--dag")
    assert dag.stdout.lstrip().startswith("digraph")
    assert dag.stdout.count("process_ab") == 10
    # cascade edges, edges into "all", one download per raw file (3 per AB), and the
    # benchmark table (summarize_benchmarks) after every AB, itself an input of "all"
    assert len(re.findall(r"\d+ -> \d+", dag.stdout)) == 9 + 10 + 30 + 10 + 1
    rulegraph = run_snakemake(tmp_path, cfg, "--rulegraph")
    assert "process_ab" in rulegraph.stdout and "all" in rulegraph.stdout


def test_bad_night_fails_before_anything_runs_with_file_and_line(tmp_path, dfo) -> None:
    cfg, names = night(tmp_path, dfo, [1, 2])
    ab = Path(dfo["ab_dir"]) / names[1]
    ab.write_text(ab.read_text() + "RAWFILE $DFO_RAW_DIR/x.fits;reboot BIAS\n")
    proc = run_snakemake(tmp_path, cfg, check=False)
    assert proc.returncode != 0
    line = len(ab.read_text().splitlines())
    out = proc.stdout + proc.stderr
    assert f"{ab}:{line}: path" in out and "unsafe characters" in out
    assert "nothing was run" in out
    assert not os.path.exists(state(dfo))


def test_changing_the_execution_flavour_does_not_rerun_a_finished_night(tmp_path, dfo) -> None:
    cfg, _ = night(tmp_path, dfo, [1, 2])
    run_snakemake(tmp_path, cfg)
    again = run_snakemake(tmp_path, cfg, "-n", "--config", "drs_type=CON", cores=4)
    assert "abflow: nothing to do: every AB" in again.stdout + again.stderr


def test_job_environment_carries_the_dfo_directories_and_the_run_config(tmp_path, dfo) -> None:
    command = (
        'echo "$DFO_RAW_DIR|$DFS_PRODUCT|$OMP_NUM_THREADS" > {ab}.env; '
        "abflow check > check.out; cp {ab}.env check.out $ABFLOW_WORKDIR/../.."
    )
    cfg, names = night(tmp_path, dfo, [1], commands={"process_ab": command})
    run_snakemake(tmp_path, cfg)
    env = Path(state(dfo), names[0] + ".env").read_text().strip()
    assert env == f"{dfo['raw_dir']}|{dfo['product_dir']}|1"
    # abflow called from a job reads that run's configuration, not the bundled example
    said = Path(state(dfo), "check.out").read_text().splitlines()
    assert said[0].startswith("configuration: ") and "$ABFLOW_CONFIG" in said[0]
    assert said[1].startswith(f"CALIB_{DATE}: 1 ABs")


def test_an_edited_ab_is_rerun_with_its_descendants(tmp_path, dfo) -> None:
    cfg, names = night(tmp_path, dfo, [1, 2, 2], drs_type="CON")
    run_snakemake(tmp_path, cfg, cores=2)
    before = mtimes(dfo)
    ab = Path(dfo["ab_dir"]) / names[1]
    ab.write_text(ab.read_text() + "RECIPE_PARAM --new-option=1\n")
    run_snakemake(tmp_path, cfg, cores=2)
    after = mtimes(dfo)
    changed = sorted(f.removesuffix(".json") for f in after if after[f] != before[f])
    assert changed == sorted([names[1], names[3]])


def test_subcascade_and_edits_work_from_another_working_directory(tmp_path, dfo) -> None:
    cfg, names = night(tmp_path, dfo, [1, 2, 2], drs_type="CON")
    run_snakemake(tmp_path, cfg, cores=2)
    before = mtimes(dfo)
    elsewhere = tmp_path / "elsewhere"  # no Snakemake metadata there
    elsewhere.mkdir()
    again = run_snakemake(elsewhere, cfg, "-n", cores=2)
    assert "abflow: nothing to do: every AB" in again.stdout + again.stderr
    run_snakemake(elsewhere, cfg, "--config", f"subcascade={names[1]}", cores=2)
    after = mtimes(dfo)
    changed = sorted(f.removesuffix(".json") for f in after if after[f] != before[f])
    assert changed == sorted([names[1], names[3]])
    assert not list(Path(state(dfo), "requests").glob("*"))  # served requests are removed
    other = tmp_path / "third"
    other.mkdir()
    ab = Path(dfo["ab_dir"]) / names[2]
    ab.write_text(ab.read_text() + "RECIPE_PARAM --changed=1\n")
    before = mtimes(dfo)
    run_snakemake(other, cfg, cores=2)
    after = mtimes(dfo)
    changed = sorted(f.removesuffix(".json") for f in after if after[f] != before[f])
    assert changed == sorted([names[2], names[4]])
