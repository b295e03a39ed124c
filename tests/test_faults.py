"""Faults: a killed Snakemake, a killed recipe, a full product disk, a second run, retries.

Real subprocesses and real signals; the stand-in job (tests/standins/standin_job.py) is a test
double for a pipeline recipe that logs when it starts and ends.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import DATE, ROOT, SNAKEFILE, records, run_snakemake, write_config

from abflow.example.generate import fan_cascade, write_night

pytestmark = pytest.mark.slow

STANDIN_JOB = f"{sys.executable} {ROOT / 'tests' / 'standins' / 'standin_job.py'}"


def state(dfo: dict[str, str]) -> Path:
    return Path(dfo["job_dir"], "abflow")


def snakemake_cmd(workdir: Path, cfg: Path, cores: int = 2) -> list[str]:
    return [
        sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(workdir),
        "--profile", str(ROOT / "profiles" / "local"), "--configfile", str(cfg),
        "--cores", str(cores),
    ]  # fmt: skip


def wait_for(predicate, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def runs_by_ab(log: Path) -> dict[str, list[list[float]]]:
    """[start, end] of every run of every AB from the stand-in's log (end None if killed)."""
    out: dict[str, list[list[float]]] = {}
    for line in log.read_text().splitlines():
        what, ab, t = line.split()
        if what == "start":
            out.setdefault(ab, []).append([float(t), None])
        else:
            out[ab][-1][1] = float(t)
    return out


def test_sigkill_of_snakemake_then_the_same_command_completes_the_night(tmp_path, dfo) -> None:
    specs = fan_cascade([1, 3, 6])
    write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
    log = tmp_path / "jobs.log"
    cfg = write_config(
        tmp_path / "config.yaml", dfo, drs_type="CON",
        commands={"process_ab": f"{STANDIN_JOB} {log} {{ab_file}} --seconds 1.5"},
    )  # fmt: skip
    cmd = snakemake_cmd(tmp_path, cfg)
    with open(tmp_path / "first.out", "w") as out:
        first = subprocess.Popen(cmd, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: len(records(str(state(dfo)))) >= 3, what="three finished ABs")
            wait_for(lambda: list((state(dfo) / "running").rglob("*.json")), what="a running AB")
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
    done_before = {ab: rec["start"] for ab, rec in records(str(state(dfo))).items()}
    assert 3 <= len(done_before) < len(specs)
    lock = json.loads((state(dfo) / "runs" / f"CALIB_{DATE}.json").read_text())
    assert lock["pid"] == first.pid  # the crashed run's lock is still there

    second = run_snakemake(tmp_path, cfg, cores=2)
    output = second.stdout + second.stderr
    assert f"pid {first.pid}" in output and "ended without cleaning up" in output

    recs = records(str(state(dfo)))
    assert sorted(recs) == sorted(s.name for s in specs)
    for ab, start in done_before.items():  # finished ABs were not run again
        assert recs[ab]["start"] == start
    runs = runs_by_ab(log)
    for ab, spans in runs.items():
        # a record stands for a complete run: one that ended, after the record's start
        assert spans[-1][1] is not None, (ab, spans)
        # an AB never ran twice at the same time (the crashed run's orphans are ended first)
        for a, b in itertools.pairwise(spans):
            assert a[1] is None or a[1] <= b[0], (ab, spans)
    assert not list((state(dfo) / "running").rglob("*.json"))
    locks = [p for p in (state(dfo) / "runs").glob("*.json") if ".history" not in p.name]
    assert not locks  # the lock is released at the end
    history = json.loads((state(dfo) / "runs" / f"CALIB_{DATE}.history.json").read_text())
    assert [h["pid"] for h in history] == [first.pid, history[1]["pid"]]  # two runs of the night
    assert history[0]["ended"] == "crashed" and history[0]["end"] <= history[1]["since"]
    assert history[1]["end"] is not None and history[1]["ended"] == "succeeded"


def test_a_killed_recipe_fails_its_ab_clearly_and_the_rerun_completes(tmp_path, dfo) -> None:
    specs = fan_cascade([1, 2])
    write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
    second_time = tmp_path / "second-time"
    command = f"test -e {second_time} && exit 0; echo started; echo $$ > pid; exec sleep 60"
    cfg = write_config(tmp_path / "config.yaml", dfo, commands={"process_ab": command})
    with open(tmp_path / "first.out", "w") as out:
        run = subprocess.Popen(
            snakemake_cmd(tmp_path, cfg), cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT
        )
        pidfile = state(dfo) / "work" / specs[0].name / "pid"
        wait_for(pidfile.exists, what="the recipe to start")
        wait_for(lambda: pidfile.read_text().strip(), what="the pid file")
        os.kill(int(pidfile.read_text()), signal.SIGKILL)  # the recipe dies, not Snakemake
        assert run.wait(timeout=120) != 0
    output = (tmp_path / "first.out").read_text()
    assert records(str(state(dfo))) == {}  # nothing taken as done
    failure = json.loads((state(dfo) / "failed" / f"{specs[0].name}.json").read_text())
    assert "killed by signal 9" in failure["reason"]
    # the final summary names the failed AB, why, its log and its last lines
    summary = output[output.index("abflow: 1 AB failed") :]
    assert specs[0].name in summary and "killed by signal 9" in summary
    assert "started" in summary and failure["log"] in summary
    assert "2 ABs did not run" in summary
    second_time.touch()
    run_snakemake(tmp_path, cfg, cores=2)
    assert len(records(str(state(dfo)))) == 3


def mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    return proc.returncode == 0


@pytest.mark.esorex
@pytest.mark.skipif(shutil.which("esorex") is None, reason="esorex is not installed")
def test_a_full_product_disk_fails_the_ab_cleanly_and_the_rerun_completes(tmp_path, dfo) -> None:
    products = Path(dfo["product_dir"])
    if not mount_tmpfs(products, "256k"):
        pytest.skip("cannot mount a small tmpfs here (needs root): no full disk to test with")
    try:
        cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
        cfg["dfo"] = dict(dfo)
        cfg["dfo"]["ab_dir"] = str(ROOT / "resources" / "example" / "ab")
        cfg["archive"] = str(tmp_path / "archive")
        cfg["qc_mode"] = "IMPLICIT"
        bias = "GIRAF.2013-02-13T09:58:11.218_tpl.ab"
        Path(dfo["mon_dir"], f"AB_list_CALIB_{DATE}").write_text(f"{bias}  BIAS\n")
        cfg_path = tmp_path / "config.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg))
        subprocess.run(["abflow", "example", "--configfile", str(cfg_path)], check=True)
        first = run_snakemake(tmp_path, cfg_path, cores=1, check=False)
        assert first.returncode != 0
        failure = json.loads((state(dfo) / "failed" / f"{bias}.json").read_text())
        log = Path(failure["log"]).read_text()
        assert "No space left on device" in log and str(products) in log
        assert records(str(state(dfo))) == {}
        leftovers = [p for p in products.rglob("*") if p.is_file()]
        assert leftovers == []  # no partial product, no temporary file
        # free space, rerun the same command
        subprocess.run(["mount", "-o", "remount,size=64m", str(products)], check=True)
        run_snakemake(tmp_path, cfg_path, cores=1)
        rec = records(str(state(dfo)))[bias]
        for product in rec["products"]:
            assert Path(product["path"]).stat().st_size == product["bytes"] > 0
    finally:
        subprocess.run(["umount", "-l", str(products)], check=False)


def test_a_second_run_of_the_same_date_is_refused_while_the_first_runs(tmp_path, dfo) -> None:
    specs = fan_cascade([1, 1])
    write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
    cfg = write_config(tmp_path / "config.yaml", dfo, commands={"process_ab": "sleep 3"})
    with open(tmp_path / "first.out", "w") as out:
        first = subprocess.Popen(
            snakemake_cmd(tmp_path, cfg), cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            wait_for(lambda: list((state(dfo) / "running").rglob("*.json")), what="a running AB")
            other = tmp_path / "elsewhere"  # another working directory: Snakemake's lock is no help
            other.mkdir()
            second = run_snakemake(other, cfg, check=False)
        finally:
            first.wait(timeout=120)
    assert first.returncode == 0
    assert second.returncode != 0
    text = second.stdout + second.stderr
    assert f"CALIB_{DATE} is being processed by pid {first.pid} on {socket.gethostname()}" in text
    assert "abflow unlock" in text
    assert len(records(str(state(dfo)))) == 2  # the first run was not disturbed


def test_a_lock_held_on_another_host_needs_abflow_unlock(tmp_path, dfo, capsys) -> None:
    from abflow.cli import main

    write_night(fan_cascade([1]), dfo["ab_dir"], dfo["mon_dir"], DATE)
    cfg = write_config(tmp_path / "config.yaml", dfo)
    lock = state(dfo) / "runs" / f"CALIB_{DATE}.json"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"pid": 4242, "host": "node-that-crashed", "start": "x"}))
    refused = run_snakemake(tmp_path, cfg, check=False)
    assert refused.returncode != 0
    assert "pid 4242 on node-that-crashed" in refused.stdout + refused.stderr
    assert main(["unlock", "--configfile", str(cfg)]) == 0
    assert "removed the lock of pid 4242 on node-that-crashed" in capsys.readouterr().out
    run_snakemake(tmp_path, cfg)
    assert len(records(str(state(dfo)))) == 1


def test_downloads_are_retried_and_recipes_are_not(tmp_path, dfo) -> None:
    specs = fan_cascade([1, 1])
    write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
    attempts = tmp_path / "attempts"
    attempts.mkdir()
    # each download fails on its first attempt; the recipe of the second AB fails every time
    flaky = (
        f"n={attempts}/$(basename {{dest}}); test -e $n || (touch $n; false) || exit 1; "
        "printf r > {dest}"
    )
    recipe = (
        f"case {{ab}} in {specs[1].name}) echo recipe attempt >> {attempts}/recipe; exit 2;; esac"
    )
    cfg = write_config(
        tmp_path / "config.yaml", dfo, commands={"download": flaky, "process_ab": recipe}
    )
    proc = run_snakemake(tmp_path, cfg, check=False)
    assert proc.returncode != 0
    assert set(records(str(state(dfo)))) == {specs[0].name}
    assert (attempts / "recipe").read_text().count("recipe attempt") == 1
    downloaded = [p for p in Path(dfo["raw_dir"]).rglob("*.fits")]
    assert len(downloaded) == 6 and all(p.read_text() == "r" for p in downloaded)
