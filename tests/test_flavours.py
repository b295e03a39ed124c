"""Execution flavours: INT, multi-detector split/join, optimal makespans, profiles, stop."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import (
    DATE,
    ROOT,
    SNAKEFILE,
    intervals,
    place_raw_files,
    records,
    run_snakemake,
    waves,
    write_config,
)

from abflow.example.generate import ABSpec, ab_name, fan_cascade, write_night
from abflow.model.config import resolve
from abflow.model.load import load_night
from abflow.model.plan import job_graph, optimal_unit_makespan

pytestmark = pytest.mark.slow


def all_records(dfo: dict[str, str]) -> list[dict]:
    """Every completion record of the night (ABs, detector jobs, joins)."""
    base = Path(dfo["job_dir"], "abflow", "records")
    return [json.loads(p.read_text()) for p in base.rglob("*.json") if "process_qc" not in p.parts]


def job_spans(recs: list[dict]) -> dict[str, tuple[float, float]]:
    keyed = [{**r, "ab": r["ab"] + (f"#{r['det']}" if "det" in r else "")} for r in recs]
    return intervals(keyed)


def mef_chain() -> list[ABSpec]:
    bias = ABSpec(ab_name(0), raw_type="BIAS", mef_factor=4)
    flat = ABSpec(ab_name(1), raw_type="FLAT", parents=[bias.name], mef_factor=4)
    return [bias, flat]


def mixed_night() -> list[ABSpec]:
    """A 4-detector AB listed first, and a plain 3-AB chain beside it."""
    mef = ABSpec(ab_name(0), raw_type="BIAS", mef_factor=4)
    a = ABSpec(ab_name(1), raw_type="BIAS")
    b = ABSpec(ab_name(2), raw_type="FLAT", parents=[a.name])
    c = ABSpec(ab_name(3), raw_type="SCIENCE", parents=[b.name])
    return [mef, a, b, c]


SLEEP = {"process_ab": "sleep 1.5", "process_ab_det": "sleep 1.5", "mef_join": "sleep 1.5"}


@pytest.mark.parametrize(
    ("specs", "cores"),
    [(mef_chain, 2), (mef_chain, 4), (mixed_night, 2), (mixed_night, 3)],
    ids=["mef-chain-2", "mef-chain-4", "mixed-2", "mixed-3"],
)
def test_split_join_makespan_is_the_optimum(tmp_path, dfo, specs, cores) -> None:
    write_night(specs(), dfo["ab_dir"], dfo["mon_dir"], DATE)
    place_raw_files(dfo)  # equal-length AB jobs only: no downloads sharing the slots
    cfg = write_config(tmp_path / "config.yaml", dfo, drs_type="CON", commands=SLEEP)
    _, deps = job_graph(load_night(resolve(yaml.safe_load(cfg.read_text()))))
    optimum = optimal_unit_makespan(deps, cores)
    run_snakemake(tmp_path, cfg, cores=cores)
    spans = job_spans(all_records(dfo))
    assert len(spans) == len(deps)
    assert waves(spans) == optimum, (optimum, spans)


def test_mef_ab_runs_n_detector_jobs_then_a_join_before_its_children(tmp_path, dfo) -> None:
    specs = mef_chain()
    write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
    det_cmd = "echo det {det} of {ab} > det.txt"
    cfg = write_config(
        tmp_path / "config.yaml", dfo, drs_type="CON",
        commands={"process_ab_det": det_cmd, "mef_join": "sleep 0.2", "process_ab": "false"},
    )  # fmt: skip
    dry = run_snakemake(tmp_path, cfg, "-n", cores=4)
    assert re.search(r"process_ab_det\s+8", dry.stdout) and re.search(r"process_ab\s+2", dry.stdout)
    run_snakemake(tmp_path, cfg, cores=4)
    recs = all_records(dfo)
    dets = [r for r in recs if r["step"] == "process_ab_det"]
    joins = {r["ab"]: r for r in recs if r["step"] == "mef_join"}
    assert sorted((r["ab"], r["det"]) for r in dets) == sorted(
        (s.name, k) for s in specs for k in range(1, 5)
    )
    assert set(joins) == {s.name for s in specs}
    spans = job_spans(recs)
    bias, flat = specs[0].name, specs[1].name
    assert spans[bias][0] >= max(spans[f"{bias}#{k}"][1] for k in range(1, 5))
    assert min(spans[f"{flat}#{k}"][0] for k in range(1, 5)) >= spans[bias][1]
    det_log = Path(dfo["job_dir"], "abflow", "logs", "process_ab_det", bias, "3.log")
    assert f"# command echo det 3 of {bias} > det.txt" in det_log.read_text()
    work = Path(dfo["job_dir"], "abflow", "work", "process_ab_det", bias, "3", "det.txt")
    assert work.read_text().strip() == f"det 3 of {bias}"


def test_int_runs_one_ab_at_a_time_with_all_cores(tmp_path, dfo) -> None:
    specs = fan_cascade([1, 3])
    specs[1].mef_factor = 24  # under INT: one job, not 24
    write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
    command = 'echo {threads} "$OMP_NUM_THREADS" > $ABFLOW_WORKDIR/../../{ab}.threads; sleep 0.5'
    cfg = write_config(tmp_path / "config.yaml", dfo, commands={"process_ab": command})
    run_snakemake(tmp_path, cfg, cores=3, profile="int")
    recs = all_records(dfo)
    assert len(recs) == 4 and all(r["step"] == "process_ab" for r in recs)
    for spec in specs:
        got = Path(dfo["job_dir"], "abflow", f"{spec.name}.threads").read_text().split()
        assert got == ["3", "3"]
    ordered = sorted(job_spans(recs).values())
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(ordered))


@pytest.mark.parametrize("profile", ["local", "int", "condor", "default"])
def test_every_profile_loads_and_dry_runs(tmp_path, dfo, profile) -> None:
    write_night(mef_chain(), dfo["ab_dir"], dfo["mon_dir"], DATE)
    cfg = write_config(tmp_path / "config.yaml", dfo)
    proc = run_snakemake(tmp_path, cfg, "-n", cores=2, profile=profile)
    assert "dry-run of CALIB_" in proc.stdout + proc.stderr  # abflow's console, every profile
    if profile == "condor":  # the pool resources reach the jobs (no schedd needed for -n)
        proc = run_snakemake(tmp_path, cfg, "-n", "--logger-abflow-snakemake", cores=2,
                             profile=profile)  # fmt: skip
        assert "This was a dry-run" in proc.stdout + proc.stderr  # Snakemake's own listing
        from abflow.run.pool_job import pool_job_program

        assert f"job_wrapper={pool_job_program()}" in proc.stdout
        assert f"classad_AbflowRun={Path(dfo['job_dir'], 'abflow')}" in proc.stdout
        assert "request_memory=2048" in proc.stdout and "request_disk=4GB" in proc.stdout
        assert re.search(r"process_ab_det\s+8", proc.stdout)  # drs_type=CON from the profile


def test_every_profile_entry_is_commented() -> None:
    for config in (ROOT / "profiles").glob("*/config.yaml"):
        lines = config.read_text().splitlines()
        for i, line in enumerate(lines):
            if re.match(r"^[a-z][a-z-]*:", line):
                above = lines[i - 1] if i else ""
                assert above.startswith("#"), f"{config}: '{line}' has no comment above it"


def test_a_pool_job_gets_the_submitting_tools_and_the_nights_directories(dfo) -> None:
    """What the command of a pool job runs with: the submitting PATH after abflow's Python (the
    DFOS tools), its DFOS variables (the night's directories win) and what pool_env names;
    nothing else of the submitting environment."""
    from abflow.run.pool_job import pool_environment

    settings = resolve({"date": DATE, "dfo": dfo, "pool_env": ["SITE_TOKEN"]})
    submitting = {"PATH": "/opt/dfos/bin:/usr/bin", "DFO_INSTRUMENT": "FORS2", "HOME": "/home/q",
                  "DFO_RAW_DIR": "/elsewhere", "SITE_TOKEN": "t1", "OTHER": "x"}  # fmt: skip
    env = pool_environment(settings, submitting)
    assert env["PATH"] == f"{Path(sys.executable).parent}:/opt/dfos/bin:/usr/bin"
    assert env["DFO_INSTRUMENT"] == "FORS2" and env["SITE_TOKEN"] == "t1"
    assert env["DFO_RAW_DIR"] == dfo["raw_dir"]
    assert "OTHER" not in env and "HOME" not in env
    assert pool_environment(settings, {})["PATH"].endswith(":" + os.defpath)


def test_condor_constraints_select_one_store_and_one_run() -> None:
    """The constraints abflow's queue queries and removals use (a live pool checks what they
    select: tests/test_condor.py)."""
    from abflow.state.schedd import run_constraint

    assert run_constraint("/night/a") == 'AbflowRun == "/night/a"'
    both = 'AbflowRun == "/night/a" && AbflowOwner == "vm:42"'
    assert run_constraint("/night/a", "vm:42") == both
    assert run_constraint('/odd "dir"') == 'AbflowRun == "/odd \\"dir\\""'


def test_stop_now_ends_the_running_command_at_once_and_notes_no_failure(tmp_path, dfo) -> None:
    """Jobs run in threads of Snakemake, their commands in sessions of their own: on SIGINT
    (abflow stop --now, Ctrl-C) the run ends them itself, and the AB is not failed, only not
    done (the next run starts it)."""
    write_night(fan_cascade([1, 1]), dfo["ab_dir"], dfo["mon_dir"], DATE)
    marker = tmp_path / "started"
    cfg = write_config(tmp_path / "config.yaml", dfo,
                       commands={"process_ab": f"touch {marker}; sleep 120"})  # fmt: skip
    cmd = [
        sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(tmp_path),
        "--profile", str(ROOT / "profiles" / "local"), "--configfile", str(cfg), "--cores", "1",
    ]  # fmt: skip
    state = Path(dfo["job_dir"], "abflow")
    out = open(tmp_path / "snakemake.out", "w")  # noqa: SIM115 - closed in finally
    run = subprocess.Popen(cmd, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists()
        t0 = time.monotonic()
        stop = subprocess.run(["abflow", "stop", "--now", "--wait", "30", "--configfile", str(cfg)],
                              capture_output=True, text=True)  # fmt: skip
        assert stop.returncode == 0 and "it has ended" in stop.stdout, stop.stdout + stop.stderr
        assert time.monotonic() - t0 < 20  # not the 120 s of the command
        run.wait(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        out.close()
    left = subprocess.run(["pgrep", "-f", f"touch {marker}; sleep 120"], capture_output=True)
    assert left.stdout == b""  # the command's whole group is gone
    ab = fan_cascade([1, 1])[0].name
    assert not (state / "records" / f"{ab}.json").exists()
    assert not (state / "failed" / f"{ab}.json").exists()  # interrupted, not failed
    assert (
        "interrupted: the command was ended"
        in (state / "logs" / "process_ab" / f"{ab}.log").read_text()
    )
    assert not list((state / "running").rglob("*.json"))


def test_stop_lets_running_jobs_finish_and_starts_no_new_one(tmp_path, dfo) -> None:
    specs = fan_cascade([1, 1, 1, 1, 1])  # a chain of five ABs
    write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
    cfg = write_config(tmp_path / "config.yaml", dfo, commands={"process_ab": "sleep 2"})
    cmd = [
        sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(tmp_path),
        "--profile", str(ROOT / "profiles" / "local"), "--configfile", str(cfg), "--cores", "1",
    ]  # fmt: skip
    state = Path(dfo["job_dir"], "abflow")
    out = open(tmp_path / "snakemake.out", "w")  # noqa: SIM115 - closed in finally
    run = subprocess.Popen(cmd, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not list((state / "running").rglob("*.json")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (state / "runs" / f"CALIB_{DATE}.json").exists()
        watch = subprocess.run(
            ["abflow", "watch", "--once", "--configfile", str(cfg)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert "running 1 | queued 4" in watch.stdout
        stop = subprocess.run(
            ["abflow", "stop", "--configfile", str(cfg), "--wait", "60"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert "to start no new job; running jobs finish" in stop.stdout
        assert stop.returncode == 0 and "it has ended" in stop.stdout
    finally:
        run.kill()
        run.wait()
        out.close()
    assert len(records(str(state))) == 1  # the running AB finished, no other one started
    said = (tmp_path / "snakemake.out").read_text()
    assert said.count("abflow: the night is stopping (abflow stop)") == 1, said
    assert "4 did not run" in said and "Error in rule" not in said
    run_snakemake(tmp_path, cfg)  # the next run clears the flag and does the rest
    assert len(records(str(state))) == 5


def test_the_condor_profile_runs_abflows_htcondor_executor_which_waits_before_its_first_check() -> (
    None
):
    """profiles/condor selects abflow's executor (the htcondor plugin's, subclassed). The
    interface starts the status thread before the executor is set up; with no delay its first
    check can fail the run (AttributeError '_event_logs'): abflow's plugin asks for 1 s in its
    own common settings, and leaves the htcondor plugin's as they are."""
    from snakemake_interface_executor_plugins.registry import ExecutorPluginRegistry

    from abflow.upstream.snakemake import command_line

    profile = command_line(["snakemake", "--profile", str(ROOT / "profiles" / "condor")], {})
    assert profile.executor == "abflow-htcondor"
    registry = ExecutorPluginRegistry()
    ours, theirs = registry.get_plugin("abflow-htcondor"), registry.get_plugin("htcondor")
    assert issubclass(ours.executor, theirs.executor)
    assert ours.common_settings.init_seconds_before_status_checks == 1
    assert theirs.common_settings.init_seconds_before_status_checks == 0
    assert ours.common_settings.non_local_exec is True
