"""DRS_TYPE CON on a live HTCondor pool: real schedd, real executor plugin, real jobs.

Every test here submits through `snakemake --profile profiles/condor`, typed as in the checkout,
to the pool that CONDOR_CONFIG names (CI starts a personal pool; .ci/run). Without a pool
they skip, saying how to point them at one; with ABFLOW_REQUIRE_POOL=1 they fail instead.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import DATE, ROOT, SNAKEFILE, all_step_records, example_config, records, write_config

from abflow.example.generate import ABSpec, ab_name, fan_cascade, make_dfo_tree, write_night
from abflow.state.layout import JobId
from abflow.state.schedd import run_constraint

pytestmark = [pytest.mark.pool, pytest.mark.slow]

BIN = Path(sys.executable).parent
STANDIN = ROOT / "tests" / "standins" / "standin_job.py"


# ----------------------------------------------------------------------------- helpers
def snakemake_cmd(workdir: Path, cfg: Path, *args: str, profile: str = "condor") -> list[str]:
    """The command a QC scientist types in the checkout (the night's tree via --configfile)."""
    return [
        str(BIN / "snakemake"), "-s", str(SNAKEFILE), "--directory", str(workdir),
        "--profile", f"profiles/{profile}", "--configfile", str(cfg), *args,
    ]  # fmt: skip


def user_env() -> dict[str, str]:
    return dict(os.environ, PWD=str(ROOT))


def on_pool(workdir: Path, cfg: Path, *args: str, timeout: int = 900, check: bool = True):
    """Run a night on the pool to its end; return the finished process (all its output, from
    Snakemake and abflow, in ``stdout``)."""
    proc = subprocess.run(
        ["timeout", "-k", "10", str(timeout), *snakemake_cmd(workdir, cfg, *args)],
        cwd=ROOT, env=user_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        check=False,
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-6000:]}")
    return proc


def start_on_pool(workdir: Path, cfg: Path, *args: str) -> subprocess.Popen:
    """Start a night on the pool in the background (output in workdir/snakemake.out)."""
    out = open(workdir / "snakemake.out", "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        snakemake_cmd(workdir, cfg, *args), cwd=ROOT, env=user_env(), stdout=out,
        stderr=subprocess.STDOUT,
    )  # fmt: skip


def abflow(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "abflow"), *args], capture_output=True, text=True, check=check, timeout=300
    )


def queue(state_dir: str) -> list[dict[str, Any]]:
    """This night store's jobs in the pool's queue (through the bindings)."""
    import htcondor2

    ads = htcondor2.Schedd().query(
        constraint=run_constraint(state_dir),
        projection=["ClusterId", "JobStatus", "AbflowJob", "AbflowOwner", "HoldReason"],
    )
    return [dict(ad) for ad in ads]


def history(state_dir: str, expected: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    """This night store's finished jobs from the schedd's history (waiting for ``expected``);
    not the controller job of a night handed over with abflow submit."""
    import htcondor2

    deadline = time.monotonic() + timeout
    while True:
        ads = htcondor2.Schedd().history(
            constraint=f"{run_constraint(state_dir)} && AbflowJob =!= undefined",
            projection=["ClusterId", "AbflowJob", "ExitCode", "JobStatus"],
        )
        rows = [dict(ad) for ad in ads]
        if len(rows) >= expected or time.monotonic() > deadline:
            return rows
        time.sleep(1)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.5)


def standin_config(
    base: Path,
    dfo: dict[str, str],
    seconds: float,
    fail_if: str = "",
    quick: str = "",
    seconds_if: dict[str, float] | None = None,
    **kw,
):
    """A night whose AB command is the stand-in job (logs start/end/killed per AB); ABs whose
    name contains ``quick`` take 1 s, those containing a key of ``seconds_if`` its value."""
    command = f"{sys.executable} {STANDIN} {base / 'jobs.log'} {{ab_file}} --seconds {seconds}"
    if fail_if:
        command += f" --fail-if {fail_if}"
    for name, value in {**(seconds_if or {}), **({quick: 1} if quick else {})}.items():
        command += f" --seconds-if {name}={value}"
    return write_config(base / "config.yaml", dfo, commands={"process_ab": command}, **kw)


def spans(log: Path) -> dict[str, list[tuple[float, float | None, str]]]:
    """Per AB, the (start, end, how) of each run of its stand-in job (how: end or killed)."""
    out: dict[str, list[tuple[float, float | None, str]]] = {}
    for line in log.read_text().splitlines():
        what, ab, t = line.split()
        if what == "start":
            out.setdefault(ab, []).append((float(t), None, "running"))
        else:
            start, _, _ = out[ab][-1]
            out[ab][-1] = (start, float(t), what)
    return out


def job_names(state_dir: str) -> list[str]:
    """The name of every job that wrote a record (its AbflowJob on the pool)."""
    return sorted(JobId.of_record(r).name for r in all_step_records(state_dir))


def data_arrays(path: str) -> list[np.ndarray]:
    from astropy.io import fits

    with fits.open(path) as hdus:
        return [np.array(hdu.data) for hdu in hdus if hdu.data is not None]


# ----------------------------------------------------------------------------- the example night
@pytest.mark.esorex
def test_example_night_on_the_pool_matches_a_local_run(pool, example_local, tmp_path) -> None:
    """`snakemake --profile profiles/condor --config date=...`: every AB and MUSE per-IFU job
    an HTCondor job, all succeed, products equal to a local run's."""
    cfg, dfo = example_config(tmp_path, archive=example_local["archive"])
    proc = on_pool(tmp_path, cfg, "--config", f"date={DATE}")
    assert "DRS_TYPE CON (from profile condor)" in proc.stdout
    state = os.path.join(dfo["job_dir"], "abflow")
    recs = records(state)
    assert len(recs) == 10 and all(r["status"] == "SUCCESSFUL" for r in recs.values())
    # abflow's console: an AB is submitted, then succeeds; the executor's routine is left out
    said = proc.stdout
    submitted = re.findall(
        r"^\[\s*\d+/10\] (\S+)\s+\w+ submitted \(HTCondor job \d+\)$", said, re.M
    )
    assert sorted(submitted) == sorted(recs)
    assert sorted(re.findall(r"^\[\s*\d+/10\] (\S+)\s+\w+ succeeded", said, re.M)) == sorted(recs)
    assert "submitted to HTCondor Cluster ID" not in said and "Requesting memory" not in said
    assert "10 of 10 ABs succeeded" in said
    # one HTCondor job per Snakemake job that is not a local rule, each exit 0
    names = job_names(state)
    assert len(names) == 10 + 48 + 10  # ABs (MUSE joins included), MUSE per-IFU jobs, QC
    done = history(state, len(names))
    assert sorted(ad["AbflowJob"] for ad in done) == names
    assert all(ad["ExitCode"] == 0 and ad["JobStatus"] == 4 for ad in done)
    # the same products as the local run: file names, PRO.CATG, data arrays
    local = records(os.path.join(example_local["dfo"]["job_dir"], "abflow"))
    assert set(local) == set(recs)
    for ab, rec in recs.items():
        mine = [(os.path.basename(p["path"]), p["tag"]) for p in rec["products"]]
        theirs = [(os.path.basename(p["path"]), p["tag"]) for p in local[ab]["products"]]
        assert mine == theirs, ab
        for a, b in zip(rec["products"], local[ab]["products"], strict=True):
            arrays_a, arrays_b = data_arrays(a["path"]), data_arrays(b["path"])
            assert len(arrays_a) == len(arrays_b) > 0, a["path"]
            for x, y in zip(arrays_a, arrays_b, strict=True):
                assert np.array_equal(x, y, equal_nan=True), a["path"]


# ----------------------------------------------------------------------------- a cascade
@pytest.fixture(scope="module")
def cascade(pool, tmp_path_factory) -> dict[str, Any]:
    """bias -> 3 flats -> 6 std of 3 s stand-in jobs, run on the pool; meanwhile `abflow watch`
    follows it and `abflow status` writes the page once a job runs on the pool."""
    base = tmp_path_factory.mktemp("cascade")
    dfo = make_dfo_tree(base / "dfo")
    specs = fan_cascade([1, 3, 6])
    write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
    cfg = standin_config(base, dfo, 2)
    state = os.path.join(dfo["job_dir"], "abflow")
    run = start_on_pool(base, cfg, "--config", f"date={DATE}")
    wait_for(lambda: os.path.exists(os.path.join(state, "runs", f"CALIB_{DATE}.json")), 60, "lock")
    watch = subprocess.Popen(
        [str(BIN / "abflow"), "watch", "--interval", "1", "--configfile", str(cfg)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    wait_for(lambda: any(j["JobStatus"] == 2 for j in queue(state)), 120, "a running pool job")
    status = abflow("status", "--configfile", str(cfg))
    page = Path(dfo["mon_dir"], f"status_{DATE}.html").read_text()
    assert run.wait(timeout=600) == 0, (base / "snakemake.out").read_text()[-5000:]
    watched, _ = watch.communicate(timeout=120)
    return {
        "base": base, "dfo": dfo, "cfg": cfg, "specs": specs, "state": state, "page": page,
        "watch": watched, "watch_rc": watch.returncode, "status": status,
    }  # fmt: skip


def test_cascade_runs_in_parallel_on_the_pool_in_cascade_order(cascade) -> None:
    runs = spans(cascade["base"] / "jobs.log")
    specs = cascade["specs"]
    assert set(runs) == {s.name for s in specs}
    once = {ab: r[0] for ab, r in runs.items()}
    assert all(len(r) == 1 and r[0][2] == "end" for r in runs.values())
    # several ABs ran at once on the pool
    events = sorted((t, d) for s, e, _ in once.values() for t, d in ((s, 1), (e, -1)))
    level, peak = 0, 0
    for _t, d in events:
        level += d
        peak = max(peak, level)
    assert peak >= 3
    # no AB started before the ABs it takes calibrations from had finished
    for spec in specs:
        for parent in spec.parents:
            assert once[spec.name][0] >= once[parent][1], (spec.name, parent)
    # each AB an HTCondor job of its own, all done
    done = history(cascade["state"], len(specs))
    assert sorted(ad["AbflowJob"] for ad in done) == sorted(f"process_ab/{s.name}" for s in specs)


def test_watch_follows_the_queue_and_ends_with_the_run(cascade) -> None:
    text = cascade["watch"]
    assert cascade["watch_rc"] == 0
    # per-AB queue states from the schedd while the run went on
    assert re.search(r"^  running  SYNTH\.\S+\.ab .*\[running\]", text, re.M), text[-3000:]
    assert re.search(r"^  idle +SYNTH\.\S+\.ab$", text, re.M) or "| queued" in text
    assert re.search(r"HTCondor: (\d+ \w+, )*\d+ running", text)
    assert "the run has ended: 10 of 10 ABs succeeded, 0 failed" in text.splitlines()[-1]
    # the page written during the run showed the pool's view
    assert re.search(r'<td class="pool">(running|idle)', cascade["page"])


def test_subcascade_on_the_pool_reruns_exactly_the_ab_and_its_descendants(cascade) -> None:
    specs, state = cascade["specs"], cascade["state"]
    flat = specs[1].name
    expected = {flat, *(s.name for s in specs if flat in s.parents)}
    before = {ab: Path(state, "records", f"{ab}.json").stat().st_mtime_ns for ab in records(state)}
    log = cascade["base"] / "jobs.log"
    log.write_text("")
    on_pool(cascade["base"], cascade["cfg"], "--config", f"date={DATE}", f"subcascade={flat}")
    assert set(spans(log)) == expected
    after = {ab: Path(state, "records", f"{ab}.json").stat().st_mtime_ns for ab in records(state)}
    assert {ab for ab in after if after[ab] != before[ab]} == expected
    done = history(state, len(specs) + len(expected))
    assert sum(ad["AbflowJob"] == f"process_ab/{flat}" for ad in done) == 2


# ----------------------------------------------------------------------------- faults
def test_failing_recipe_fails_its_ab_and_blocks_only_its_descendants(pool, tmp_path, dfo) -> None:
    bias, flat, std = (ABSpec(ab_name(i)) for i in range(3))
    flat.parents, std.parents = [bias.name], [flat.name]
    bias2, flat2 = ABSpec(ab_name(3)), ABSpec(ab_name(4))
    flat2.parents = [bias2.name]
    write_night([bias, flat, std, bias2, flat2], dfo["ab_dir"], dfo["mon_dir"], DATE)
    cfg = standin_config(tmp_path, dfo, 1, fail_if="T00:00:01")  # flat fails
    proc = on_pool(tmp_path, cfg, "--config", f"date={DATE}", check=False)
    assert proc.returncode != 0
    state = os.path.join(dfo["job_dir"], "abflow")
    assert set(records(state)) == {bias.name, bias2.name, flat2.name}
    note = json.loads(Path(state, "failed", f"{flat.name}.json").read_text())
    assert note["reason"] == "command exited 3"
    assert std.name not in spans(tmp_path / "jobs.log")
    summary = proc.stdout[proc.stdout.index("abflow: 1 AB failed") :]
    assert f"{flat.name} (process_ab): command exited 3" in summary
    assert "1 AB did not run" in summary and std.name in summary
    assert queue(state) == []


def test_held_job_fails_within_the_held_timeout_with_its_reason(pool, tmp_path, dfo) -> None:
    """A job whose input the pool user cannot read goes on hold; with --abflow-htcondor-held-timeout
    5 the AB fails after ~5 s, the hold reason in the message, its job removed from the queue;
    meanwhile watch and the status page show it held, with the reason."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make a file the pool user cannot read")
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the pool\n")
    os.chown(secret, 65534, 65534)  # nobody
    secret.chmod(0o600)
    write_night([ABSpec(ab_name(0))], dfo["ab_dir"], dfo["mon_dir"], DATE)
    cfg = standin_config(tmp_path, dfo, 0)
    state = os.path.join(dfo["job_dir"], "abflow")
    run = start_on_pool(
        tmp_path, cfg, "--config", f"date={DATE}", "--abflow-htcondor-held-timeout", "8",
        "--set-resources", f"process_ab:input='{secret}'",
    )  # fmt: skip
    t0 = time.monotonic()
    wait_for(lambda: any(j["JobStatus"] == 5 for j in queue(state)), 120, "a held job")
    watched = abflow("watch", "--once", "--configfile", str(cfg)).stdout
    abflow("status", "--configfile", str(cfg))
    page = Path(dfo["mon_dir"], f"status_{DATE}.html").read_text()
    assert run.wait(timeout=300) != 0
    elapsed = time.monotonic() - t0
    out = (tmp_path / "snakemake.out").read_text()
    assert "Permission denied" in watched and f"held     {ab_name(0)}" in watched
    assert re.search(r'<td class="pool">held: [^<]*Permission denied', page)
    assert elapsed < 8 + 60  # the held timeout, plus status checks and the run's end
    assert "is held" in out or "has been held" in out  # the plugin's message
    note = json.loads(Path(state, "failed", f"{ab_name(0)}.json").read_text())
    assert "held" in note["reason"] and "standard input: Permission denied" in note["reason"]
    assert f"{ab_name(0)} (process_ab): HTCondor job" in out  # the end summary names it
    assert queue(state) == []  # held leftovers removed


def test_stop_now_removes_this_nights_jobs_and_only_them(pool, tmp_path, dfo) -> None:
    import htcondor2

    sleeper = {"executable": "/bin/sleep", "arguments": "300", "output": "/dev/null"}
    foreign = htcondor2.Schedd().submit(htcondor2.Submit(sleeper)).cluster()
    try:
        write_night(fan_cascade([3, 3]), dfo["ab_dir"], dfo["mon_dir"], DATE)
        cfg = standin_config(tmp_path, dfo, 120)
        state = os.path.join(dfo["job_dir"], "abflow")
        run = start_on_pool(tmp_path, cfg, "--config", f"date={DATE}")
        log = tmp_path / "jobs.log"
        wait_for(lambda: log.exists() and "start" in log.read_text(), 120, "a running recipe")
        stop = abflow("stop", "--now", "--wait", "120", "--configfile", str(cfg))
        assert "removed" in stop.stdout and "it has ended" in stop.stdout, stop.stdout
        assert run.wait(timeout=60) != 0
        wait_for(lambda: queue(state) == [], 60, "the night's jobs to leave the queue")
        alive = htcondor2.Schedd().query(constraint=f"ClusterId == {foreign}",
                                         projection=["JobStatus"])  # fmt: skip
        assert [ad["JobStatus"] for ad in alive] in ([1], [2])  # the foreign job survives
        assert records(state) == {}
        # the recipes running on the pool were ended at once, not left to finish
        ended = spans(tmp_path / "jobs.log")
        assert ended and all(r[-1][2] == "killed" for r in ended.values()), ended
    finally:
        htcondor2.Schedd().act(htcondor2.JobAction.Remove, f"ClusterId == {foreign}")


# ----------------------------------------------------------------------------- DFOS job files
@pytest.mark.parametrize("fails", [False, True])
def test_dfos_job_files_for_con_run_with_bash_e_on_the_pool(pool, tmp_path, dfo, fails) -> None:
    """createjob's JOBS_NIGHT for DRS_TYPE CON, run by `bash -e` with a bare PATH: the night runs
    on the pool; a failed AB costs neither the QC of the others nor the QC flag, and the job
    file ends with status 1 (DFOS job files go on past failures: docs/dfos.md §16.6)."""
    specs = fan_cascade([1, 2])
    write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
    cfg = standin_config(
        tmp_path, dfo, 1, fail_if="T00:00:02" if fails else "", drs_type="CON", qc_mode="SER"
    )
    data = yaml.safe_load(cfg.read_text())
    data["commands"]["process_qc"] = "true"
    data["commands"]["monitor"] = f"{BIN / 'abflow'} status -d {{date}} -m {{mode}} " + (
        f"--configfile {cfg}"
    )
    cfg.write_text(yaml.safe_dump(data))
    abflow("createjob", "-m", "CALIB", "-d", DATE, "--configfile", str(cfg))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CONDOR_CONFIG": pool}
    proc = subprocess.run(
        ["bash", "-e", str(Path(dfo["job_dir"], "JOBS_NIGHT"))],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    status = Path(dfo["mon_dir"], "DFO_STATUS").read_text()
    state = os.path.join(dfo["job_dir"], "abflow")
    done = {ad["AbflowJob"] for ad in history(state, 5 if fails else 6, timeout=10)}
    assert "process_ab/" + specs[0].name in done  # the ABs ran as HTCondor jobs
    assert re.search(rf"^cal_QC {DATE} \S+$", status, re.M)  # always
    succeeded = {s.name for s in (specs[:2] if fails else specs)}
    assert set(records(state)) == succeeded
    assert {f"process_qc/{ab}" for ab in succeeded} <= done  # the QC of every AB that succeeded
    if fails:
        assert proc.returncode == 1 and f"CALIB_{DATE}:execAB" in proc.stderr
        assert f"process_qc/{specs[2].name}" not in done
    else:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_a_dfos_night_written_by_hand_runs_from_its_jobs_night_on_the_pool(pool, tmp_path) -> None:
    """The hand-written FORS2 night (tests/data/dfos_night; config.createAB says DRS_TYPE CON)
    through createjob's JOBS_NIGHT on the pool, with stand-ins for the DFOS tools found through
    the operator's PATH: every AB and its QC is an HTCondor job, processed once, although
    processAB rewrites every AB."""
    from test_dfos_dropin import DATE as NIGHT_DATE
    from test_dfos_dropin import abflow as dfos_abflow
    from test_dfos_dropin import calls, site

    s = site(tmp_path, pool_env=["STANDIN_CALLS"])
    assert dfos_abflow(s, "createjob", "-m", "CALIB", "-d", NIGHT_DATE).returncode == 0
    proc = subprocess.run(
        ["bash", "-e", str(Path(s["dfo"]["job_dir"], "JOBS_NIGHT"))], cwd=tmp_path,
        env=s["env"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1200,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "DRS_TYPE CON (from profile condor)" in proc.stdout
    assert f"vultur_exec_cascade for {NIGHT_DATE} done." in proc.stdout
    every = sorted(p.name for p in Path(s["dfo"]["ab_dir"]).iterdir())
    assert sorted(calls(s, "processAB")) == every and sorted(calls(s, "processQC")) == every
    done = history(s["state"], 16)
    assert sorted(ad["AbflowJob"] for ad in done) == sorted(
        [f"process_ab/{ab}" for ab in every] + [f"process_qc/{ab}" for ab in every]
    )
