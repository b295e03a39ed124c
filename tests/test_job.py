"""The job contract: a job's command line as a round trip, what a job imports (its CPU at the
start of every job), the job identity and the state layout's JSON writer."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATE, place_raw_files
from hypothesis import given, settings
from hypothesis import strategies as st

from abflow.job.command import ENTRY, JobCommand
from abflow.model.config import resolve, write_run_config
from abflow.model.load import load_night
from abflow.run.rules import NightRules
from abflow.state.fsutil import json_text
from abflow.state.layout import JobId, Step


def _full(step: Step, det: int | None = None) -> JobCommand:
    return JobCommand(
        JobId(step, "GIRAF.2013-02-13T09:58:11.218_tpl.ab", det),
        "/s/config/abc.json",
        state_dir="/s",
        run="processAB -a 'GIRAF.x.ab' && echo \"done\"",
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
        JobCommand(JobId(Step.PROCESS_QC, "Q.ab"), "/c.json", state_dir="/s", run="true"),
        JobCommand(
            JobId(Step.DOWNLOAD_RAW, "2013-02-12/GIRAF.x.fits"),
            "/c.json",
            state_dir="/s",
            run="ngasClient -f GIRAF.x.fits",
            dest="/raw/x.fits",
            progress="/s/downloads/p.progress",
            total=12,
            log="/s/l.log",
        ),
    ],
    ids=lambda c: c.job.name,
)
def test_a_job_command_line_parses_back_into_the_same_job(command: JobCommand) -> None:
    argv = command.argv()
    assert argv[:3] == [sys.executable, "-S", ENTRY]
    assert JobCommand.parse(argv[3:]) == command
    # as the rules give it: without the paths, which the rule appends from its declarations
    short = command.argv(with_paths=False)
    assert "--record" not in short and "--log" not in short
    tail = ["--record", command.record] if command.record else []
    tail += ["--log", command.log, "--threads", str(command.threads)]
    assert JobCommand.parse(short[3:] + tail) == command


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["process_ab", "A.ab", "--config", "c", "--state-dir", "s"], "--run is required"),
        (["process_ab", "A.ab", "--run", "x", "--state-dir", "s"], "--config RUN_CONFIG"),
        (["nosuch", "A.ab", "--config", "c", "--state-dir", "s", "--run", "x"], "unknown step"),
        (["process_ab", "--config", "c", "--state-dir", "s", "--run", "x"], "STEP and TARGET"),
        (
            ["process_ab", "A.ab", "--config", "c", "--state-dir", "s", "--run", "x", "--bogus"],
            "unknown option --bogus",
        ),
        (
            [
                "process_ab",
                "A.ab",
                "--config",
                "c",
                "--state-dir",
                "s",
                "--run",
                "x",
                "--threads",
                "many",
            ],
            "--threads expects a number",
        ),
        (
            [
                "process_ab",
                "A.ab",
                "--config",
                "c",
                "--state-dir",
                "s",
                "--run",
                "x",
                "--rerun-key",
                "x",
            ],
            "GENERATION:CHECKSUM",
        ),
        (
            [
                "process_ab",
                "A.ab",
                "--config",
                "c",
                "--state-dir",
                "s",
                "--run",
                "x",
                "--virtual",
                "/only/one",
            ],
            "--virtual expects 2 values",
        ),
    ],
)
def test_a_malformed_job_command_line_is_refused_with_what_is_wrong(argv, message) -> None:
    with pytest.raises(ValueError, match=message.replace("-", r"\-")):
        JobCommand.parse(argv)


def test_the_job_program_says_what_is_wrong_with_its_command_line() -> None:
    proc = subprocess.run([sys.executable, ENTRY, "process_ab"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "python -m abflow.job" in proc.stderr and "STEP and TARGET" in proc.stderr
    same = subprocess.run(
        [sys.executable, "-m", "abflow.job", "process_ab"], capture_output=True, text=True
    )
    assert same.returncode == 2 and same.stderr == proc.stderr


# Modules a job must not import: each costs it milliseconds of CPU at its start (bench/fanout.py
# measures the total), and a 32-way fan-out on a small machine queues behind them.
HEAVY = (
    "json",
    "re",
    "enum",
    "subprocess",
    "dataclasses",
    "typing",
    "argparse",
    "contextlib",
    "socket",
    "collections",
    "signal",
    "tempfile",
    "shutil",
    "pathlib",
    "yaml",
    "snakemake",
    "abflow.model.config",
    "abflow.model.ab",
    "abflow.model.night",
    "abflow.model.commands",
)


def _night(dfo: dict[str, str], tmp_path: Path, **config: object) -> NightRules:
    from abflow.example.generate import fan_cascade, write_night

    write_night(fan_cascade([1, 1]), dfo["ab_dir"], dfo["mon_dir"], DATE)
    place_raw_files(dfo)
    settings = resolve({"date": DATE, "dfo": dfo, **config})
    return NightRules(load_night(settings), write_run_config(settings))


def _imports(argv: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess, set]:
    proc = subprocess.run(
        [argv[0], "-X", "importtime", *argv[1:]], capture_output=True, text=True, env=env
    )
    loaded = {
        line.split("|")[-1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:")
    }
    return proc, loaded


def test_an_ab_job_imports_nothing_heavy_and_writes_its_record(dfo, tmp_path) -> None:
    rules = _night(
        dfo, tmp_path, commands={"process_ab": "echo hello {ab} {threads}"}, check_products=False
    )
    ab = rules.night.names[0]
    job = JobId(Step.PROCESS_AB, ab)
    argv = rules.job_command(job, threads=3).argv()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DFO_", "DFS_"))}
    proc, loaded = _imports(argv, env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "abflow.job.runner" in loaded
    assert sorted(loaded & set(HEAVY)) == []
    record = json.loads(Path(rules.layout.record(job)).read_text())
    assert record["status"] == "SUCCESSFUL" and record["command"] == f"echo hello {ab} 3"
    assert record["threads"] == 3 and record["batch"] == f"CALIB_{DATE}"
    assert "hello" in Path(rules.layout.log(job)).read_text()
    assert not list(Path(rules.settings.state_dir, "running").rglob("*.json"))  # marker gone


def test_a_download_job_imports_nothing_heavy_and_gives_its_command_the_nights_directories(
    dfo, tmp_path
) -> None:
    rules = _night(dfo, tmp_path, commands={"download": "printf $DFO_RAW_DIR > {dest}"})
    job = JobId(Step.DOWNLOAD_RAW, f"{DATE}/some.fits")
    command = rules.job_command(job)
    argv = command.argv()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DFO_", "DFS_"))}
    proc, loaded = _imports(argv, env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "abflow.job.download" in loaded and sorted(loaded & set(HEAVY)) == []
    assert Path(command.dest).read_text() == dfo["raw_dir"]
    assert json.loads(Path(rules.layout.record(job)).read_text())["bytes"] == len(dfo["raw_dir"])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_records_are_written_exactly_as_json_dumps_writes_them(value) -> None:
    assert json_text(value) == json.dumps(value, indent=2)


def test_json_text_refuses_what_json_cannot_write() -> None:
    with pytest.raises(TypeError):
        json_text({"a": object()})
    with pytest.raises(TypeError):
        json_text({("a",): 1})


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
    with pytest.raises(ValueError, match="not a step"):
        Step("process")
    job = JobId(Step.PROCESS_AB_DET, "A.ab", 3)
    assert JobId.parse(job.name) == job and pickle.loads(pickle.dumps(job)) == job
    assert {job: 1}[JobId("process_ab_det", "A.ab", 3)] == 1
    with pytest.raises(ValueError, match="detector"):
        JobId(Step.PROCESS_AB, "A.ab", 2)
    with pytest.raises(ValueError, match="detector"):
        JobId(Step.PROCESS_AB_DET, "A.ab")
