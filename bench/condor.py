"""DRS_TYPE CON on a live HTCondor pool: makespan against the critical path and the pool's round
trip, and where the time goes.

Needs a pool (CONDOR_CONFIG names its configuration; a personal pool on this machine will
do). In the same run it measures two baselines:

* the pool's round trip: one ``/bin/true`` job, submit to completion (median of 3);
* Snakemake's own start, ``snakemake --version`` (what each pool job paid before its command
  while pool jobs started a Snakemake of their own; now they run abflow's job directly);

then runs each night through ``snakemake --profile profiles/condor`` in a fresh temporary tree:

* ``cascade``: bias -> 3 flats -> 6 std of ``--seconds`` stand-in jobs (``sleep``);
* ``example``: the bundled example night with the real recipes (``--example``; needs esorex).

With ``--outlive`` it also measures a night that outlives its controller (issue 20): the cascade
night with ``--outlive-seconds`` stand-in recipes whose controller is SIGKILLed while the three
flats run, then restarted with the same command (the recipe-seconds lost, goal 0, against what
the flats had run at the kill, which removing their jobs used to throw away; the time from the
restart to the first adopted result, and how long after that job's own end the controller took
it), and the same night handed over with ``abflow submit --wait`` against run interactively.

Reported per night: the makespan on the pool (first submission to last completion) and the
wall time of the snakemake command; the critical path (recorded command durations along the
longest chain) and the goal, critical path + 2 round trips per cascade level; and the median
per job of: waiting in the queue, the job's start before its command (the wrapper and abflow's
job), the command,
the job's end after the command, and the gap between a job's last parent ending and its
submission (the executor plugin noticing it: status checks every 2 s).

With ``--throughput N`` it measures only throughput: N independent ABs of
``--throughput-seconds`` (1 s) each, against the bound N x length / slots (the pool's CPUs),
with the controller's CPU per job (the snakemake process and its children) and the rate at
which the first 200 jobs were submitted; in the same run, the pool's own floor: N plain
``/bin/sleep`` jobs of the same length submitted at once in one cluster (no controller at
all), and the CPU of a dry run of the same night (what Snakemake spends before any job).

    python bench/condor.py --repeat 1 --example
    python bench/condor.py --outlive
    python bench/condor.py --throughput 1000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
DATE = "2013-02-12"
BIN = Path(sys.executable).parent


def round_trip() -> float:
    """Seconds from submitting one /bin/true job to its completion."""
    import htcondor2

    sd = htcondor2.Schedd()
    t0 = time.monotonic()
    cluster = sd.submit(htcondor2.Submit({"executable": "/bin/true"})).cluster()
    while list(sd.query(constraint=f"ClusterId == {cluster}", projection=["JobStatus"])):
        time.sleep(0.05)
    return time.monotonic() - t0


def snakemake_start() -> float:
    t0 = time.monotonic()
    subprocess.run([str(BIN / "snakemake"), "--version"], check=True, capture_output=True)
    return time.monotonic() - t0


def _epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


def run_night(base: Path, cfg: Path) -> float:
    """Run the night on the pool as a user types it; return the command's wall time."""
    cmd = [
        str(BIN / "snakemake"), "-s", str(ROOT / "Snakefile"), "--directory", str(base),
        "--profile", "profiles/condor", "--configfile", str(cfg), "--config", f"date={DATE}",
    ]  # fmt: skip
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PWD=str(ROOT)),
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"the night failed:\n{proc.stderr[-4000:]}")
    return time.monotonic() - t0


def measure(base: Path, cfg: Path) -> dict[str, Any]:
    """Run one night and take it apart (records, the schedd's history)."""
    import htcondor2
    from conftest import all_step_records

    from abflow.model.config import load_settings
    from abflow.model.load import load_night
    from abflow.model.plan import critical_path, job_graph
    from abflow.state.layout import JobId
    from abflow.state.schedd import run_constraint

    wall = run_night(base, cfg)
    settings = load_settings(cfg)
    night = load_night(settings)
    recs = [r for r in all_step_records(settings.state_dir) if r["step"] != "process_qc"]
    hist = {
        ad["AbflowJob"]: dict(ad)
        for ad in htcondor2.Schedd().history(
            constraint=run_constraint(settings.state_dir),
            projection=["AbflowJob", "QDate", "JobStartDate", "CompletionDate"],
        )
    }
    key = {JobId.of_record(r).name: r for r in recs}
    plan_key = {n: (f"{r['ab']}#{r['det']}" if "det" in r else r["ab"]) for n, r in key.items()}
    _jobs, deps = job_graph(night)
    durations = {plan_key[n]: float(r["duration_s"]) for n, r in key.items()}
    chain, length = critical_path(deps, durations)
    by_plan = {plan_key[n]: n for n in key}
    queue_wait, start, command, end, gap = [], [], [], [], []
    for name, rec in key.items():
        ad = hist[name]
        queue_wait.append(ad["JobStartDate"] - ad["QDate"])
        start.append(_epoch(rec["start"]) - ad["JobStartDate"])
        command.append(float(rec["duration_s"]))
        end.append(ad["CompletionDate"] - _epoch(rec["end"]))
        parents = [by_plan[p] for p in deps[plan_key[name]]]
        if parents:
            gap.append(ad["QDate"] - max(hist[p]["CompletionDate"] for p in parents))
    makespan = max(a["CompletionDate"] for a in hist.values()) - min(
        a["QDate"] for a in hist.values()
    )
    med = statistics.median
    return {
        "jobs": len(key), "levels": len(night.levels()), "wall": wall, "makespan": makespan,
        "critical_path": length, "chain": len(chain), "queue_wait": med(queue_wait),
        "job_start": med(start), "command": med(command), "job_end": med(end),
        "submit_gap": med(gap) if gap else 0.0,
    }  # fmt: skip


def cascade_night(tmp: Path, seconds: float) -> Path:
    from conftest import write_config

    from abflow.example.generate import fan_cascade, make_dfo_tree, write_night

    dfo = make_dfo_tree(tmp / "dfo")
    write_night(fan_cascade([1, 3, 6]), dfo["ab_dir"], dfo["mon_dir"], DATE)
    return write_config(tmp / "config.yaml", dfo, commands={"process_ab": f"sleep {seconds}"})


def example_night(tmp: Path, archive: Path) -> Path:
    from conftest import example_config

    cfg, _dfo = example_config(tmp, archive)
    data = yaml.safe_load(cfg.read_text())
    data["qc_mode"] = "IMPLICIT"  # the cascade only (QC jobs are leaves)
    cfg.write_text(yaml.safe_dump(data))
    return cfg


def report(rows: list[tuple[str, dict[str, Any]]], trip: float, sm_start: float) -> list[dict]:
    """Print the table of the measured nights; return them with their goals."""
    head = (
        "| night | jobs | levels | makespan | snakemake wall | critical path | goal (CP + 2 RT "
        "x levels) | makespan / goal | queue wait | job start before command | command | job end | "
        "submit gap |"
    )
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    results = []
    for name, m in rows:
        goal = m["critical_path"] + 2 * trip * m["levels"]
        m.update(night=name, round_trip=trip, snakemake_start=sm_start, goal=goal)
        results.append(m)
        print(
            f"| {name} | {m['jobs']} | {m['levels']} | {m['makespan']:.0f} s | {m['wall']:.0f} s"
            f" | {m['critical_path']:.1f} s | {goal:.1f} s | {m['makespan'] / goal:.2f} | "
            f"{m['queue_wait']:.1f} s | {m['job_start']:.1f} s | {m['command']:.1f} s | "
            f"{m['job_end']:.1f} s | {m['submit_gap']:.1f} s |"
        )
    return results


def standin_night(base: Path, seconds: float) -> Path:
    """The cascade night whose recipes are the stand-in job (it logs start, end, killed)."""
    from conftest import write_config

    from abflow.example.generate import fan_cascade, make_dfo_tree, write_night

    dfo = make_dfo_tree(base / "dfo")
    write_night(fan_cascade([1, 3, 6]), dfo["ab_dir"], dfo["mon_dir"], DATE)
    standin = ROOT / "tests" / "standins" / "standin_job.py"
    command = f"{sys.executable} {standin} {base / 'jobs.log'} {{ab_file}} --seconds {seconds}"
    return write_config(base / "config.yaml", dfo, commands={"process_ab": command})


def _night_cmd(base: Path, cfg: Path) -> list[str]:
    return [
        str(BIN / "snakemake"), "-s", str(ROOT / "Snakefile"), "--directory", str(base),
        "--profile", "profiles/condor", "--configfile", str(cfg), "--config", f"date={DATE}",
    ]  # fmt: skip


def _runs(log: Path) -> list[tuple[str, float, float | None, str]]:
    """(AB, start, end, how) of every recipe run the stand-in logged."""
    runs: list[tuple[str, float, float | None, str]] = []
    for line in log.read_text().splitlines():
        what, ab, t = line.split()
        if what == "start":
            runs.append((ab, float(t), None, "running"))
        else:
            i = max(k for k, r in enumerate(runs) if r[0] == ab)
            runs[i] = (ab, runs[i][1], float(t), what)
    return runs


def crash_and_restart(base: Path, seconds: float) -> dict[str, Any]:
    """SIGKILL the controller while the flats run, start the same command again; measure."""
    cfg = standin_night(base, seconds)
    log = base / "jobs.log"
    env = dict(os.environ, PWD=str(ROOT))
    first = subprocess.Popen(_night_cmd(base, cfg), cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    while not (log.exists() and log.read_text().count("start ") >= 4):  # bias + 3 flats
        time.sleep(0.1)
    time.sleep(seconds / 2)
    first.kill()
    first.wait()
    killed = time.time()
    ran_at_kill = sum(killed - s for _ab, s, e, _h in _runs(log) if e is None)
    restart = time.time()
    second = subprocess.Popen(_night_cmd(base, cfg), cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    adopted: set[str] = set()
    first_result = None
    assert second.stdout is not None
    for line in second.stdout:
        # an AB's line: "[ 3/10] <AB>  flat adopted (...)"
        words = line.split("]", 1)[1].split() if line.startswith("[") else []
        if "adopted" in words:
            adopted.add(words[0])
        if first_result is None and "succeeded" in words and words[0] in adopted:
            first_result = (time.time(), words[0])
    if second.wait() != 0:
        raise SystemExit("the restarted night failed")
    runs = _runs(log)
    last = {ab: s for ab, s, _e, _h in runs}  # the run of each AB that counted (its last)
    lost = sum((e or killed) - s for ab, s, e, _h in runs if s != last[ab])
    took_at, ab = first_result or (time.time(), "")
    ended = max(e for a, _s, e, how in runs if a == ab and e is not None) if ab else took_at
    return {"lost": lost, "ran_at_kill": ran_at_kill, "adopted": len(adopted),
            "to_first_result": took_at - restart, "after_job_end": took_at - ended,
            "runs": len(runs)}  # fmt: skip


def submitted_vs_interactive(base: Path, seconds: float) -> tuple[float, float]:
    """Wall time of the same night run interactively and handed over with abflow submit
    --wait (the same stand-in recipes)."""
    times = []
    for how in ("interactive", "submit"):
        night_base = base / how
        night_base.mkdir()
        cfg = standin_night(night_base, seconds)
        submit = [str(BIN / "abflow"), "submit", "--wait", "--configfile", str(cfg), "-d", DATE]
        cmd = _night_cmd(night_base, cfg) if how == "interactive" else submit
        t0 = time.monotonic()
        subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PWD=str(ROOT)), check=True,
                       capture_output=True)  # fmt: skip
        times.append(time.monotonic() - t0)
    return times[0], times[1]


def outlive(tmp: Path, seconds: float) -> None:
    """Print the rows of issue 20: a SIGKILLed controller, and submit against interactive."""
    crash = crash_and_restart(tmp / "crash", seconds)
    print(f"| controller SIGKILLed mid-night ({seconds:.0f} s recipes) | recipe-seconds lost "
          f"{crash['lost']:.1f} (goal 0; the {crash['adopted']} adopted jobs had run "
          f"{crash['ran_at_kill']:.1f} s at the kill) | restart to first adopted result "
          f"{crash['to_first_result']:.1f} s, {crash['after_job_end']:.1f} s after that job "
          f"ended | {crash['runs']} recipe runs for 10 ABs |")  # fmt: skip
    (tmp / "pair").mkdir()
    interactive, submitted = submitted_vs_interactive(tmp / "pair", seconds)
    print(f"| the same night, abflow submit --wait vs interactive | {submitted:.1f} s vs "
          f"{interactive:.1f} s | ratio {submitted / interactive:.2f} |")  # fmt: skip


def pool_slots() -> int:
    """The CPUs of the pool's execute slots (a partitionable slot counts its CPUs)."""
    import htcondor2

    ads = htcondor2.Collector().query(
        htcondor2.AdType.Startd, projection=["Cpus", "SlotType", "PartitionableSlot"]
    )
    return sum(int(ad.get("Cpus", 0)) for ad in ads if ad.get("SlotType") != "Dynamic")


def throughput_night(base: Path, n: int, seconds: float) -> Path:
    """``n`` independent ABs whose command is ``sleep seconds``, their raw files in place (no
    downloads) and QC left out: pool jobs only."""
    from conftest import write_config

    from abflow.example.generate import fan_cascade, make_dfo_tree, write_night

    dfo = make_dfo_tree(base / "dfo")
    specs = fan_cascade([n])
    write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
    raw = Path(dfo["raw_dir"], DATE)
    raw.mkdir(parents=True, exist_ok=True)
    for spec in specs:
        for name in spec.raw_names():
            (raw / name).write_bytes(b"raw")
    return write_config(
        base / "config.yaml",
        dfo,
        qc_mode="IMPLICIT",
        commands={"process_ab": f"sleep {seconds}"},
    )


def _makespan(ads: list[Any], n: int) -> tuple[int, list[int]]:
    """First submission to last completion of ``n`` jobs' history ads, and their QDates."""
    if len(ads) != n:
        raise SystemExit(f"the pool's history has {len(ads)} of the {n} jobs")
    queued = sorted(int(ad["QDate"]) for ad in ads)
    return max(int(ad["CompletionDate"]) for ad in ads) - queued[0], queued


def pool_floor(n: int, seconds: float) -> int:
    """The makespan of ``n`` plain ``/bin/sleep seconds`` jobs submitted straight to the
    schedd in one cluster (no Snakemake, no abflow): what the pool itself achieves."""
    import htcondor2

    sd = htcondor2.Schedd()
    description = {"executable": "/bin/sleep", "arguments": f"{seconds:g}"}
    description |= {"request_memory": "2048", "request_disk": "4GB"}  # as profiles/condor
    cluster = sd.submit(htcondor2.Submit(description), count=n).cluster()
    while list(sd.query(constraint=f"ClusterId == {cluster}", projection=["ProcId"])):
        time.sleep(1)
    projection = ["QDate", "CompletionDate"]
    ads = list(sd.history(constraint=f"ClusterId == {cluster}", projection=projection, match=n))
    return _makespan(ads, n)[0]


def _cpu_of(command: list[str]) -> float:
    """The CPU (user + system) of ``command`` and its children, run to its end."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{command[0]} failed:\n{proc.stderr[-4000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def throughput(tmp: Path, n: int, seconds: float) -> dict[str, Any]:
    """Run ``n`` independent ``seconds``-long ABs through profiles/condor; measure the
    makespan against n x seconds / slots and against the pool's own floor (the same number
    of plain sleep jobs, measured in the same run), the controller's CPU per job (the
    snakemake process and its children: the pool's processes are not its children), also
    beyond a dry-run of the same night (Snakemake's start and DAG), and the submission rate
    over the first 200 jobs (the schedd's QDate, whole seconds)."""
    import htcondor2

    from abflow.model.config import load_settings
    from abflow.state.schedd import run_constraint

    base = tmp / "throughput"
    base.mkdir()
    cfg = throughput_night(base, n, seconds)
    slots = pool_slots()
    floor = pool_floor(n, seconds)
    command = [
        str(BIN / "snakemake"),
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(base),
        "--profile",
        "profiles/condor",
        "--configfile",
        str(cfg),
        "--config",
        f"date={DATE}",
    ]
    dry = _cpu_of([*command, "-n"])
    t0 = time.monotonic()
    cpu = _cpu_of(command)
    wall = time.monotonic() - t0
    ads = htcondor2.Schedd().history(
        constraint=run_constraint(load_settings(cfg).state_dir),
        projection=["QDate", "CompletionDate"],
        match=n + 1,
    )
    makespan, queued = _makespan(list(ads), n)
    first = queued[: min(200, n)]
    bound = n * seconds / slots
    return {
        "jobs": n,
        "seconds": seconds,
        "slots": slots,
        "makespan": makespan,
        "bound": bound,
        "ratio": makespan / bound,
        "floor": floor,
        "vs_floor": makespan / floor,
        "wall": wall,
        "cpu": cpu,
        "cpu_ms_per_job": 1000 * cpu / n,
        "dryrun_cpu": dry,
        "run_cpu_ms_per_job": 1000 * (cpu - dry) / n,
        "submitted_per_s": len(first) / max(first[-1] - first[0], 1),
    }


def report_throughput(m: dict[str, Any]) -> None:
    """Print the throughput row."""
    print(
        "| jobs | slots | bound (jobs x length / slots) | pool floor (plain sleep jobs) | "
        "makespan | / bound | / floor | snakemake wall | controller CPU per job | beyond a "
        "dry-run | submitted per s (first 200) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {m['jobs']} x {m['seconds']:g} s | {m['slots']} | {m['bound']:.0f} s | "
        f"{m['floor']:.0f} s | {m['makespan']:.0f} s | {m['ratio']:.2f} | {m['vs_floor']:.2f} | "
        f"{m['wall']:.0f} s | {m['cpu_ms_per_job']:.1f} ms | {m['run_cpu_ms_per_job']:.1f} ms |"
        f" {m['submitted_per_s']:.0f} |"
    )


def write_results(name: str, results: Any) -> None:
    """Write ``results`` to bench/results/<name>-<time>.json and say where."""
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    path = out / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")


def main() -> int:
    """Run the benchmark on the pool CONDOR_CONFIG names and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="stand-in job length")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--example", action="store_true", help="also the example night")
    parser.add_argument(
        "--outlive",
        action="store_true",
        help="only the rows of a night that "
        "outlives its controller (crash and restart, submit vs interactive)",
    )
    parser.add_argument(
        "--outlive-seconds", type=float, default=8.0, help="stand-in recipe length for --outlive"
    )
    parser.add_argument(
        "--throughput",
        type=int,
        metavar="N",
        help="only the throughput row: N independent ABs of --throughput-seconds each",
    )
    parser.add_argument("--throughput-seconds", type=float, default=1.0)
    args = parser.parse_args()
    if not os.environ.get("CONDOR_CONFIG"):
        raise SystemExit("no pool: set CONDOR_CONFIG (see the docstring)")
    if args.throughput:
        with tempfile.TemporaryDirectory(prefix="abflow-throughput-bench-") as tmpdir:
            m = throughput(Path(tmpdir), args.throughput, args.throughput_seconds)
        report_throughput(m)
        write_results("condor-throughput", m)
        return 0
    if args.outlive:
        with tempfile.TemporaryDirectory(prefix="abflow-outlive-bench-") as tmpdir:
            outlive(Path(tmpdir), args.outlive_seconds)
        return 0
    trips = sorted(round_trip() for _ in range(3))
    trip = trips[1]
    sm_start = statistics.median(snakemake_start() for _ in range(3))
    rows: list[tuple[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="abflow-condor-bench-") as tmpdir:
        tmp = Path(tmpdir)
        if args.example:
            archive = tmp / "archive"
            cfg = example_night(tmp / "seed", archive)
            subprocess.run([str(BIN / "abflow"), "example", "--configfile", str(cfg)],
                           check=True, capture_output=True)  # fmt: skip
        for i in range(args.repeat):
            base = tmp / f"cascade{i}"
            base.mkdir()
            rows.append(("cascade", measure(base, cascade_night(base, args.seconds))))
            if args.example:
                base = tmp / f"example{i}"
                base.mkdir()
                rows.append(("example", measure(base, example_night(base, archive))))
    print(f"pool round trip (/bin/true, median of 3): {trip:.2f} s; snakemake --version: "
          f"{sm_start:.2f} s")  # fmt: skip
    write_results("condor", report(rows, trip, sm_start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
