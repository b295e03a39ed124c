"""The job contract: a job's command line as a round trip, a job run as a process of its own
(by hand, and as the pool starts it), and the job identity."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import DATE, place_raw_files

from abflow.job.command import JobCommand
from abflow.model.config import resolve, write_run_config
from abflow.model.load import load_night
from abflow.run.rules import NightRules
from abflow.state.layout import JobId, Step


def _full(step: Step, det: int | None = None) -> JobCommand:
    return JobCommand(
        JobId(step, "GIRAF.2013-02-13T09:58:11.218_tpl.ab", det),
        "/s/config/abc.json",
        state_dir="/s",
        shell="processAB -a 'GIRAF.x.ab' && echo \"done\"",
        env=[("DFO_AB_DIR", "/d/ab"), ("DFS_PRODUCT", "/d/products")],
        record="/s/records/x.json",
        log="/s/logs/x.log",
        parents=["A.ab", "B.ab"],
        virtual=[("/d/cal/VCAL/r.A_0000.hdr", "/d/products/BIAS/r.A_0000.fits")],
        products=[("/d/products/DARK/r.X_0000.fits", "MASTER_DARK")],
        recipe="gimasterdark",
        raw_type="DARK",
        mode="CALIB",
        date=DATE,
        batch=f"CALIB_{DATE}",
        rerun_key="3:p1234",
        threads=4,
        benchmark="/s/benchmarks/x.tsv",
    )


@pytest.mark.parametrize(
    "command",
    [
        _full(Step.PROCESS_AB),
        _full(Step.PROCESS_AB_DET, 7),
        _full(Step.MEF_JOIN),
        JobCommand(JobId(Step.PROCESS_QC, "Q.ab"), "/c.json", state_dir="/s", shell="true"),
        JobCommand(
            JobId(Step.DOWNLOAD_RAW, "2013-02-12/GIRAF.x.fits"),
            "/c.json",
            state_dir="/s",
            shell="ngasClient -f GIRAF.x.fits",
            dest="/raw/x.fits",
            progress="/s/downloads/p.progress",
            total=12,
            log="/s/l.log",
        ),
    ],
    ids=lambda c: c.job.name,
)
def test_a_job_command_line_parses_back_into_the_same_job(command: JobCommand) -> None:
    assert JobCommand.parse(command.arguments()) == command
    assert JobCommand.parse(command.replace(shell="a 'b' \"c\" $d").arguments()).shell == (
        "a 'b' \"c\" $d"
    )


BASE = ["process_ab", "A.ab", "--config", "c", "--state-dir", "s", "--shell", "x"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (BASE[:6], "the following arguments are required: --shell"),
        (["process_ab", "A.ab", *BASE[4:]], "required: --config"),
        (["nosuch", *BASE[1:]], "invalid choice: 'nosuch'"),
        (["process_ab", *BASE[2:]], "the following arguments are required: target"),
        ([*BASE, "--bogus"], "unrecognized arguments: --bogus"),
        ([*BASE, "--threads", "many"], "--threads: invalid int value"),
        ([*BASE, "--rerun-key", "x"], "GENERATION:CHECKSUM"),
        ([*BASE, "--virtual", "/only/one"], "--virtual: expected 2 arguments"),
    ],
)
def test_a_malformed_job_command_line_is_refused_with_what_is_wrong(argv, message) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        JobCommand.parse(argv)


def test_the_job_program_says_what_is_wrong_with_its_command_line() -> None:
    proc = subprocess.run([sys.executable, "-m", "abflow.job", "process_ab"], capture_output=True,
                          text=True)  # fmt: skip
    assert proc.returncode == 2
    assert "python -m abflow.job" in proc.stderr and "required" in proc.stderr


def _night(dfo: dict[str, str], tmp_path: Path, **config: object) -> NightRules:
    from abflow.example.generate import fan_cascade, write_night

    write_night(fan_cascade([1, 1]), dfo["ab_dir"], dfo["mon_dir"], DATE)
    place_raw_files(dfo)
    settings = resolve({"date": DATE, "dfo": dfo, **config})
    return NightRules(load_night(settings), write_run_config(settings))


def _bare(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """A command with nothing of this environment (as a pool starts a job), and ``env``."""
    pairs = [f"{k}={v}" for k, v in env.items()]
    return subprocess.run(["env", "-i", *pairs, *argv], capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def test_an_ab_job_runs_as_a_process_and_writes_its_record(dfo, tmp_path) -> None:
    rules = _night(
        dfo, tmp_path, commands={"process_ab": "echo hello {ab} {threads}"}, check_products=False
    )
    ab = rules.night.names[0]
    job = JobId(Step.PROCESS_AB, ab)
    proc = _bare(sys.executable, "-m", "abflow.job", *rules.job_command(job, threads=3).arguments())
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads(Path(rules.layout.record(job)).read_text())
    assert record["status"] == "SUCCESSFUL" and record["command"] == f"echo hello {ab} 3"
    assert record["threads"] == 3 and record["batch"] == f"CALIB_{DATE}"
    assert "hello" in Path(rules.layout.log(job)).read_text()
    assert not list(Path(rules.settings.state_dir, "running").rglob("*.json"))  # marker gone


def test_a_download_job_gives_its_command_the_nights_directories(dfo, tmp_path) -> None:
    rules = _night(dfo, tmp_path, commands={"download": "printf $DFO_RAW_DIR > {dest}"})
    job = JobId(Step.DOWNLOAD_RAW, f"{DATE}/some.fits")
    command = rules.job_command(job)
    proc = _bare(sys.executable, "-m", "abflow.job", *command.arguments())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert Path(command.dest).read_text() == dfo["raw_dir"]
    assert json.loads(Path(rules.layout.record(job)).read_text())["bytes"] == len(dfo["raw_dir"])


def test_steps_and_job_ids_behave_as_values() -> None:
    assert [s.value for s in Step] == [
        "process_ab",
        "process_ab_det",
        "mef_join",
        "process_qc",
        "download_raw",
        "download_mcal",
    ]
    assert Step("mef_join") is Step.MEF_JOIN and Step.MEF_JOIN.rule == "process_ab"
    assert Step.DOWNLOAD_MCAL.is_download and not Step.PROCESS_QC.is_download
    assert f"{Step.PROCESS_QC}" == "process_qc" and json.dumps(Step.PROCESS_AB) == '"process_ab"'
    with pytest.raises(ValueError, match="not a valid Step"):
        Step("process")
    job = JobId(Step.PROCESS_AB_DET, "A.ab", 3)
    assert JobId.parse(job.name) == job and pickle.loads(pickle.dumps(job)) == job
    assert {job: 1}[JobId("process_ab_det", "A.ab", 3)] == 1
    with pytest.raises(ValueError, match="detector"):
        JobId(Step.PROCESS_AB, "A.ab", 2)
    with pytest.raises(ValueError, match="detector"):
        JobId(Step.PROCESS_AB_DET, "A.ab")


def test_the_pool_starts_a_job_from_its_environment_and_nothing_else(dfo, tmp_path) -> None:
    """abflow-pool-job, as HTCondor starts it (no PATH, no HOME, Snakemake's arguments after
    it), runs the command its environment carries: the recipe finds the tools on the
    submitting PATH and the night's directories, and the record, log and benchmark are written
    as the rule declares."""
    import shlex

    from abflow.run.pool_job import PoolJobs, pool_environment, pool_job_program

    tools = tmp_path / "dfos-bin"
    tools.mkdir()
    (tools / "processAB").write_text('#!/bin/sh\necho "processAB $* in $DFO_AB_DIR home $HOME"\n')
    (tools / "processAB").chmod(0o755)
    rules = _night(dfo, tmp_path, commands={"process_ab": "processAB -a {ab}"},
                   check_products=False)  # fmt: skip
    extra = tuple(pool_environment(rules.settings, {"PATH": f"{tools}:/usr/bin"}).items())
    resources = PoolJobs(rules, pool_job_program(), extra).resources("process_ab")
    ab = rules.night.names[0]
    job = JobId(Step.PROCESS_AB, ab)
    # what HTCondor makes of the environment resource (its quoted syntax; ClusterId filled in)
    given = resources["environment"](SimpleNamespace(ab=ab), 1)
    given = given.strip('"').replace("$(ClusterId)", "7")
    pairs = dict(word.split("=", 1) for word in shlex.split(given))
    program = pool_job_program()
    assert program and os.access(program, os.X_OK)
    proc = _bare(program, "--target-jobs", f"process_ab:ab={ab}", "--mode", "remote",
                 _CONDOR_SCRATCH_DIR=str(tmp_path), **pairs)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    record = json.loads(Path(rules.layout.record(job)).read_text())
    assert record["status"] == "SUCCESSFUL" and record["cluster"] == 7
    log = Path(rules.layout.log(job)).read_text()
    assert f"processAB -a {ab} in {dfo['ab_dir']} home {tmp_path}" in log
    header, values = Path(rules.layout.benchmark(job)).read_text().splitlines()
    assert header.split("\t")[:2] == ["s", "h:m:s"] and float(values.split("\t")[0]) >= 0
    # a job without abflow's command: refused, saying why (no second Snakemake)
    proc = _bare(program, "--mode", "remote")
    assert proc.returncode == 2 and "no $ABFLOW_JOB" in proc.stderr
    assert "not a job's command line" in _bare(program, ABFLOW_JOB="e30=").stderr


def test_a_pool_job_ends_its_command_group_and_all_on_sigterm(dfo, tmp_path) -> None:
    """HTCondor ends a removed job with SIGTERM: the recipe, and what it started, end within
    seconds, and the job leaves no record."""
    import signal
    import time

    from abflow.run.pool_job import encode, pool_job_program

    marker = tmp_path / "started"
    rules = _night(dfo, tmp_path, commands={"process_ab": f"touch {marker}; sleep 317 & wait"},
                   check_products=False)  # fmt: skip
    job = JobId(Step.PROCESS_AB, rules.night.names[0])
    command = encode(rules.job_command(job).arguments())
    proc = subprocess.Popen(["env", "-i", f"ABFLOW_JOB={command}", pool_job_program()],
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.exists()
    t0 = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)  # the starter signals the job's process
    assert proc.wait(timeout=30) != 0 and time.monotonic() - t0 < 10
    time.sleep(0.5)
    left = subprocess.run(["pgrep", "-f", "sleep 317"], capture_output=True, text=True).stdout
    assert left.strip() == "" and not Path(rules.layout.record(job)).exists()


def test_the_command_a_restarted_controller_compares_does_not_depend_on_the_shell(dfo, tmp_path):
    """AbflowCommand (what a restarted controller compares to adopt a queued job) is the same
    from shells with different PATHs; only the job's environment carries the PATH."""
    from abflow.run.pool_job import PoolJobs, pool_environment

    rules = _night(dfo, tmp_path)
    wildcards = SimpleNamespace(ab=rules.night.names[0])
    seen = []
    for path in ("/opt/a/bin:/usr/bin", "/home/q/bin:/usr/bin"):
        extra = tuple(pool_environment(rules.settings, {"PATH": path}).items())
        resources = PoolJobs(rules, "/x/abflow-pool-job", extra).resources("process_ab")
        seen.append(
            (
                resources["classad_AbflowCommand"](wildcards, 1),
                resources["environment"](wildcards, 1),
            )
        )
    assert seen[0][0] == seen[1][0] and seen[0][1] != seen[1][1]
    assert resources["classad_AbflowJob"](wildcards) == f"process_ab/{wildcards.ab}"
