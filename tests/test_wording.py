"""Snakemake's wording that the console and the dry-run view decide by
(abflow.upstream.snakemake.WORDING), checked against the log records of real runs of the pinned
Snakemake (recorded with $ABFLOW_LOG_RECORDS) and against the installed packages' source: a
rewording upstream fails here instead of turning abflow's lines into noise or losing them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import DATE, ROOT, SNAKEFILE, place_raw_files, write_config

from abflow.example.generate import fan_cascade, write_night
from abflow.upstream.snakemake import WORDING, contains, says

STANDIN = f"{sys.executable} {ROOT / 'tests' / 'standins' / 'standin_job.py'}"

# Each entry: a text the upstream package says, which must be in its installed source and which
# the pattern must match (the routine's alternatives are checked against real records below).
SAID = {
    "nothing_to_do": ("snakemake", "Nothing to be done"),
    "dry_run_done": ("snakemake", "This was a dry-run"),
    "failed_exit": ("snakemake", "Exiting because a job execution failed"),
    "will_exit": ("snakemake", "Will exit after finishing currently running jobs"),
    "cancelling": ("snakemake", "Cancelling snakemake on user request"),
    "terminating": ("snakemake", "Terminating processes on user request"),
    "complete_log": ("snakemake", "Complete log(s):"),
    "incomplete_run": ("snakemake", "At least one job did not complete successfully"),
    "remote_error_suffix": (  # (the source writes it as two literals)
        "snakemake_interface_executor_plugins",
        "For further error details see the cluster/cloud log and the log files of the involved "
        "rule(s).",
        "log and the log files of the involved rule(s).",
    ),
    "update_output": ("snakemake", "/raw/X.fits (update)", 'return annotate(f_str, "update")'),
    "reason_forced": ("snakemake", "Forced execution"),
    "reason_incomplete": ("snakemake", "Incomplete output files"),
    "reason_params": ("snakemake", "Params have changed"),
    "reason_missing_output": ("snakemake", "Missing output files"),
    "reason_updated_by_job": ("snakemake", "Input files updated by another job"),
    "reason_updated_input": ("snakemake", "Updated input files"),
    "reason_code": ("snakemake", "Code has changed"),
    "reason_input_set": ("snakemake", "Set of input files has changed"),
}


def _source_text(package: str) -> str:
    import importlib

    root = Path(importlib.import_module(package).__file__).parent  # type: ignore[arg-type]
    return "\n".join(p.read_text(errors="replace") for p in root.rglob("*.py"))


def test_every_pattern_is_what_the_installed_packages_say() -> None:
    assert set(SAID) == set(WORDING) - {"routine"}
    sources: dict[str, str] = {}
    for name, (package, text, *fragment) in SAID.items():
        source = sources.setdefault(package, _source_text(package))
        assert (fragment[0] if fragment else text) in source, (
            f"{package} no longer says {text!r} ({name}): see WORDING"
        )
        assert says(name, text), name


def _snakemake(workdir: Path, cfg: Path, log: Path, *args: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(workdir),
           "--profile", str(ROOT / "profiles" / "local"), "--configfile", str(cfg), "--cores",
           "2", *args]  # fmt: skip
    env = dict(os.environ, ABFLOW_LOG_RECORDS=str(log), PYTHONWARNINGS="ignore")
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def _records(log: Path) -> list[dict[str, Any]]:
    lines = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> dict[str, list[dict[str, Any]]]:
    """The records of real runs: a night with a failing AB, the same command again, a dry-run
    with a subcascade and an edited AB, a forced rerun, and a run interrupted with SIGINT."""
    from abflow.example.generate import make_dfo_tree

    base = tmp_path_factory.mktemp("wording")
    dfo = make_dfo_tree(base / "dfo")
    specs = fan_cascade([1, 2, 2])
    names = [s.name for s in specs]
    write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
    place_raw_files(dfo)
    job = f"{STANDIN} {base / 'jobs.log'} {{ab_file}} --seconds 0.2 --fail-if {names[4]}"
    cfg = write_config(base / "config.yaml", dfo, commands={"process_ab": job},
                       check_products=False, qc_mode="IMPLICIT")  # fmt: skip
    log = base / "records.jsonl"
    out: dict[str, list[dict[str, Any]]] = {}

    def run(name: str, *args: str) -> None:
        proc = _snakemake(base, cfg, log, *args)
        proc.communicate(timeout=300)
        out[name] = _records(log)

    run("failing", "--config", f"date={DATE}")
    slow = write_config(base / "slow.yaml", dfo, commands={"process_ab": job.replace("0.2", "30")},
                        check_products=False, qc_mode="IMPLICIT")  # fmt: skip
    cfg = write_config(base / "ok.yaml", dfo, commands={"process_ab": job.split(" --fail-if")[0]},
                       check_products=False, qc_mode="IMPLICIT")  # fmt: skip
    run("ok", "--config", f"date={DATE}")
    run("nothing", "--config", f"date={DATE}")
    edited = Path(dfo["ab_dir"], names[3])
    edited.write_text(edited.read_text().replace("\nDRS_TYPE", "\nRECIPE_PARAM --x=1\nDRS_TYPE"))
    run("dry", "-n", "--config", f"date={DATE}", f"subcascade={names[1]}")
    run("forced", "-n", "--forcerun", "process_ab", "--config", f"date={DATE}")
    proc = _snakemake(base, slow, log, "--config", f"date={DATE}", f"subcascade={names[0]}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(Path(dfo["job_dir"]).rglob("running/**/*.json")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    out["interrupted"] = _records(log)
    return out


def _messages(records: list[dict[str, Any]]) -> list[str]:
    return [r["msg"] for r in records if not r.get("event") and r["msg"] not in ("", "None")]


@pytest.mark.slow
def test_the_records_of_real_runs_say_what_the_console_decides_by(recorded) -> None:
    def seen(run: str, name: str) -> bool:
        return any(says(name, m) for m in _messages(recorded[run]))

    assert seen("failing", "failed_exit") and seen("failing", "complete_log")
    assert any(contains("incomplete_run", r["msg"]) for r in recorded["failing"]
               if r.get("event") == "error")  # fmt: skip
    assert seen("nothing", "nothing_to_do") and not seen("ok", "nothing_to_do")
    assert seen("dry", "dry_run_done")
    reasons = {r["reason"] for run in ("dry", "forced") for r in recorded[run]
               if r.get("event") == "job_info" and r.get("reason")}  # fmt: skip
    for name in ("reason_missing_output", "reason_updated_by_job", "reason_forced"):
        assert any(contains(name, r) for r in reasons), (name, reasons)
    assert any(".rerun" in r for r in reasons)  # a subcascade's and an edited AB's requests
    assert (
        seen("interrupted", "cancelling")
        or seen("interrupted", "will_exit")
        or any(r.get("event") == "error" for r in recorded["interrupted"])
    )


@pytest.mark.slow
def test_nothing_snakemake_says_in_routine_leaks_onto_the_console(recorded) -> None:
    """Every plain message Snakemake sent is either abflow's own line, a pattern of the table,
    or routine: a reworded routine message would show here as a leak."""
    known = [n for n in WORDING if not n.startswith("reason_") and n != "incomplete_run"]
    leaks = sorted({
        m.splitlines()[0] for run in recorded.values() for m in _messages(run)
        if not m.startswith(("abflow", "[", "  ")) and not any(says(n, m) for n in known)
    })  # fmt: skip
    assert leaks == []
