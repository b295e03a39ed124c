"""The profile decides the DRS_TYPE flavour, also with a --config on the command line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATE, ROOT, SNAKEFILE, write_config

from abflow.example.generate import ABSpec, ab_name, write_night
from abflow.run.flavour import decide, executor_problem
from abflow.upstream.snakemake import CommandLine, command_line

SNAKEMAKE = "/venv/bin/snakemake"  # what sys.argv[0] looks like for the console script


def test_the_command_line_is_read_as_snakemake_reads_it(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # Snakemake has changed into --directory when it reads us
    found = command_line([SNAKEMAKE, "--profile", str(ROOT / "profiles" / "condor"), "-n"], {})
    assert found.profile_config == {"drs_type": "CON"} and found.executor == "abflow-htcondor"
    # relative to the directory the command started in, --profile=X spelling, later wins
    env = {"PWD": str(ROOT)}
    both = command_line(
        [SNAKEMAKE, "--profile=profiles/condor", "--profile", "profiles/int", "-e", "local"], env
    )
    assert both.profile_config == {"drs_type": "INT"} and both.executor == "local"
    # an abbreviation Snakemake accepts is the same option
    short = command_line([SNAKEMAKE, "--prof", "profiles/condor", "--config", "drs_type=CPL"], env)
    assert short.profile_config == {"drs_type": "CON"} and short.config == {"drs_type": "CPL"}
    assert short.executor == "abflow-htcondor"
    environ = {"SNAKEMAKE_PROFILE": str(ROOT / "profiles" / "int"), "PWD": str(ROOT)}
    assert command_line([SNAKEMAKE], environ).profile_config == {"drs_type": "INT"}
    assert command_line([SNAKEMAKE, "--profile", "profiles/local"], env).profile_config == {}
    # not a snakemake command (e.g. the Python API): nothing
    assert command_line(["pytest", "--profile", "profiles/int"], env) == CommandLine()


def test_profile_entries_are_defaults_beneath_the_command_line() -> None:
    def condor(given: dict) -> CommandLine:
        return CommandLine(("profiles/condor",), {"drs_type": "CON"}, given, "htcondor")

    # Snakemake dropped the profile's list because of --config date=...: abflow restores it
    got = decide({"date": DATE, "qc_mode": "SER"}, condor({"date": DATE}))
    assert got.config["drs_type"] == "CON" and not got.problem and not got.warnings
    # a config file's drs_type is overruled, with a warning that names both
    got = decide({"date": DATE, "drs_type": "CPL"}, condor({"date": DATE}))
    assert got.config["drs_type"] == "CON"
    assert "drs_type CPL" in got.warnings[0] and "runs DRS_TYPE CON" in got.warnings[0]
    # a command-line drs_type that contradicts the profile is refused
    got = decide({"drs_type": "CPL"}, condor({"drs_type": "CPL"}))
    assert "contradicts condor" in got.problem and "profiles/local" in got.problem
    # one that agrees is fine; profiles/local leaves the choice to the configuration
    assert not decide({"drs_type": "CON"}, condor({"drs_type": "CON"})).problem
    local = CommandLine(("profiles/local",), {}, {"drs_type": "CON"}, "")
    assert decide({"drs_type": "CON"}, local).config["drs_type"] == "CON"


def test_only_con_runs_on_an_executor_that_submits_elsewhere() -> None:
    assert "serial night on the pool" in executor_problem("CPL", "htcondor")
    assert "profiles/int" in executor_problem("INT", "htcondor")
    assert executor_problem("CON", "htcondor") == ""
    assert executor_problem("CPL", "local") == executor_problem("INT", "dryrun") == ""


def mef_night(dfo: dict[str, str]) -> None:
    bias = ABSpec(ab_name(0), raw_type="BIAS", mef_factor=4)
    flat = ABSpec(ab_name(1), raw_type="FLAT", parents=[bias.name])
    write_night([bias, flat], dfo["ab_dir"], dfo["mon_dir"], DATE)


def dry_run(
    tmp_path: Path, cfg: Path, profile: str, *args: str, option: str = "--profile"
) -> subprocess.CompletedProcess:
    """`snakemake --profile profiles/<profile> ... -n` as typed in the checkout, with
    Snakemake's own job listing (the tests read each job's threads from it)."""
    cmd = [
        sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(tmp_path),
        option, f"profiles/{profile}", "--configfile", str(cfg), *args, "-n",
        "--logger-abflow-snakemake",
    ]  # fmt: skip
    env = dict(os.environ, PWD=str(ROOT), PYTHONWARNINGS="ignore")
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def flavour_line(proc: subprocess.CompletedProcess) -> str:
    """abflow's line saying how the night's AB jobs run."""
    return next(x for x in proc.stdout.splitlines() if x.startswith("abflow: CALIB_"))


def det_jobs(proc: subprocess.CompletedProcess) -> int:
    match = re.search(r"process_ab_det\s+(\d+)", proc.stdout)
    return int(match.group(1)) if match else 0


@pytest.mark.slow
def test_profiles_keep_their_flavour_with_a_config_on_the_command_line(tmp_path, dfo) -> None:
    mef_night(dfo)
    cfg = write_config(tmp_path / "config.yaml", dfo)
    # condor: CON (per-detector jobs), no cap on AB jobs beyond --jobs
    proc = dry_run(tmp_path, cfg, "condor", "--config", f"date={DATE}")
    assert proc.returncode == 0, proc.stderr
    assert det_jobs(proc) == 4
    assert (
        "DRS_TYPE CON (from profile condor): as many AB jobs at once as the cascade and "
        "--jobs 200 allow, on abflow-htcondor" in flavour_line(proc)
    )
    # int: INT (the MEF AB is one job with all cores), one AB at a time
    proc = dry_run(tmp_path, cfg, "int", "--config", f"date={DATE}", "--cores", "3")
    assert proc.returncode == 0, proc.stderr
    assert det_jobs(proc) == 0 and "threads: 3" in proc.stdout
    assert "DRS_TYPE INT (from profile int): one AB at a time, each given all 3 cores" in (
        flavour_line(proc)
    )
    # local: CPL unless asked otherwise
    proc = dry_run(tmp_path, cfg, "local", "--config", "drs_type=CON", "limits={jobs: 2}")
    assert proc.returncode == 0, proc.stderr
    assert det_jobs(proc) == 4
    assert "DRS_TYPE CON (from --config): up to 2 AB jobs at once" in flavour_line(proc)
    proc = dry_run(tmp_path, cfg, "local", "--config", f"date={DATE}")
    assert "DRS_TYPE CPL (from default): one AB at a time" in flavour_line(proc)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("profile", "args", "message"),
    [
        ("condor", ["--config", "drs_type=CPL"], "contradicts condor, which runs DRS_TYPE CON"),
        ("int", ["--config", "drs_type=CON"], "contradicts int, which runs DRS_TYPE INT"),
        ("local", ["--executor", "htcondor", "--jobs", "4"], "serial night on the pool"),
    ],
)
def test_contradictory_flavours_are_refused_before_anything_runs(
    tmp_path, dfo, profile, args, message
) -> None:
    mef_night(dfo)
    cfg = write_config(tmp_path / "config.yaml", dfo)
    proc = dry_run(tmp_path, cfg, profile, *args)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    # the same with the abbreviation Snakemake accepts (--prof): refused as well
    proc = dry_run(tmp_path, cfg, profile, *args, option="--prof")
    assert proc.returncode != 0 and message in proc.stdout + proc.stderr
    assert not Path(dfo["job_dir"], "abflow", "records").exists()


@pytest.mark.slow
@pytest.mark.parametrize("drs_type", ["CPL", "CON", "INT"])
def test_the_start_line_names_the_source_abflow_check_names(tmp_path, dfo, drs_type) -> None:
    """A DRS_TYPE from the site's config.createAB: the run's first line and abflow check name
    the same file and line."""
    mef_night(dfo)
    config_dir = tmp_path / "dfo-config"
    config_dir.mkdir()
    (config_dir / "config.createAB").write_text(f"# site settings\nDRS_TYPE  {drs_type}\n")
    cfg = write_config(tmp_path / "config.yaml", {**dfo, "config_dir": str(config_dir)})
    check = subprocess.run([str(Path(sys.executable).parent / "abflow"), "check",
                            "--configfile", str(cfg)], capture_output=True, text=True)  # fmt: skip
    assert check.returncode == 0, check.stderr
    line = next(x for x in check.stdout.splitlines() if x.startswith("drs_type = "))
    source = re.fullmatch(rf"drs_type = {drs_type} \(from (.+)\)", line).group(1)  # type: ignore[union-attr]
    assert source.endswith("config.createAB:2 DRS_TYPE")
    proc = dry_run(tmp_path, cfg, "local")
    assert proc.returncode == 0, proc.stderr
    assert f"DRS_TYPE {drs_type} (from {source}):" in flavour_line(proc)
