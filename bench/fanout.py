"""Fan-out nights on this machine: abflow against bare Snakemake with the same DAG and stand-ins.

Nights (every job a ``--seconds`` stand-in, bench/standin.sh, that writes its AB's products):

* ``cascade``: bias -> 3 flats -> 6 std (10 jobs), at 1, 2 and 6 slots;
* ``mef``: a bias split over 32 detectors (32 jobs and a join), a flat split over 32 on it
  (66 jobs), at 6 and 32 slots;
* ``both``: the two side by side sharing 32 and 33 slots.

For each night and slot count both run back to back (``--repeat`` times, interleaved):

* bare: a Snakefile of generic rules whose inputs come from a dict (the DAG as JSON), each
  job the stand-in, run by ``snakemake --cores SLOTS`` with Snakemake's defaults;
* abflow: ``snakemake --profile profiles/local --cores SLOTS`` on the AB files, DRS_TYPE CON.

The makespan is read off the stand-ins' own start/end lines (first start to last end) and
given in job-lengths; beside it the critical-path bound (the longer of the critical path and
the jobs spread over the slots) and abflow's plan (its list schedule, what the scheduler
aims for). The bound can be unreachable: with 32 slots the ``both`` night needs 5 job-lengths
(the 32 detector jobs of each split fill every slot twice, leaving the 1 -> 3 -> 6 cascade
only the two join rounds), which the plan shows.

Then the CPU abflow spends per job outside the recipe's own command, for a one-AB night whose
command is ``true``, run ``--cpu-runs`` times: in a thread (how the workflow runs jobs on this
machine: the process's CPU around the job, the command's not counted), and as a process of its
own (``python -m abflow.job``, how a pool runs it: its CPU, user + system, with its children's,
os.wait4, minus that of ``sh -c true`` run the same way).

    python bench/fanout.py --seconds 4 --repeat 1
    python bench/fanout.py --nights cascade --slots 2 --seconds 1   # one case, quick

Results go to stdout and bench/results/fanout.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from abflow.example.generate import ABSpec, ab_name, fan_cascade, make_dfo_tree, write_night
from abflow.job.main import execute
from abflow.model.config import resolve, write_run_config
from abflow.model.load import load_night
from abflow.model.plan import job_graph, job_priorities, list_schedule, lower_bound
from abflow.run.pool_job import encode, pool_job_program
from abflow.run.rules import NightRules
from abflow.state.layout import JobId, Step

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / "bench" / "standin.sh"
DATE = "2013-02-12"
NIGHTS = {"cascade": (1, 2, 6), "mef": (6, 32), "both": (32, 33)}

BARE_SNAKEFILE = """
import json

NIGHT = json.load(open(config["dag"]))
STATE = config["state"]
STANDIN = "DFS_PRODUCT={product_dir} sh {standin} {times}".format(**config)


rule all:
    input:
        expand(STATE + "/records/{ab}.done", ab=list(NIGHT)),


def ab_inputs(wildcards):
    ab = NIGHT[wildcards.ab]
    if ab["dets"] > 1:
        return [STATE + f"/dets/{wildcards.ab}/{k}.done" for k in range(1, ab["dets"] + 1)]
    return [STATE + f"/records/{p}.done" for p in ab["parents"]]


def det_inputs(wildcards):
    return [STATE + f"/records/{p}.done" for p in NIGHT[wildcards.ab]["parents"]]


rule process_ab_det:
    input:
        det_inputs,
    output:
        STATE + "/dets/{ab}/{det}.done",
    params:
        ab_file=lambda w: NIGHT[w.ab]["file"],
    shell:
        STANDIN + " {params.ab_file} " + str(config["seconds"]) + " {wildcards.det}"
        " && touch {output}"


rule process_ab:
    input:
        ab_inputs,
    output:
        STATE + "/records/{ab}.done",
    params:
        ab_file=lambda w: NIGHT[w.ab]["file"],
    shell:
        STANDIN + " {params.ab_file} " + str(config["seconds"]) + " && touch {output}"
"""


def night_specs(name: str) -> list[ABSpec]:
    """The ABs of one of the NIGHTS."""
    cascade = fan_cascade([1, 3, 6])
    bias = ABSpec(ab_name(0, prefix="MEF"), mef_factor=32)
    flat = ABSpec(ab_name(1, prefix="MEF"), raw_type="FLAT", parents=[bias.name], mef_factor=32)
    return {"cascade": cascade, "mef": [bias, flat], "both": [bias, flat, *cascade]}[name]


def setup(base: Path, specs: list[ABSpec], seconds: float) -> tuple[dict[str, str], Path]:
    """The DFOS tree with the night (raw files in place: no downloads) and abflow's config."""
    dfo = make_dfo_tree(base / "dfo")
    write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
    raw = Path(dfo["raw_dir"], DATE)
    raw.mkdir(parents=True, exist_ok=True)
    for spec in specs:
        for name in spec.raw_names():
            (raw / name).touch()
    times = base / "times.log"
    standin = f"sh {STANDIN} {times} {{ab_file}} {seconds:g}"
    cfg = {
        "date": DATE, "dfo": dfo, "drs_type": "CON", "qc_mode": "IMPLICIT",
        "commands": {"process_ab": standin, "mef_join": standin,
                     "process_ab_det": standin + " {det}"},
    }  # fmt: skip
    (base / "config.yaml").write_text(yaml.safe_dump(cfg))
    return dfo, base / "config.yaml"


def makespan(times: Path) -> float:
    """First start to last end of the stand-ins (seconds)."""
    starts, ends = [], []
    for line in times.read_text().splitlines():
        what, _job, when = line.split()
        (starts if what == "start" else ends).append(float(when))
    return max(ends) - min(starts)


def run_case(kind: str, specs: list[ABSpec], slots: int, seconds: float) -> float:
    """One run of a night; its makespan in job-lengths."""
    with tempfile.TemporaryDirectory(prefix=f"abflow-fanout-{kind}-") as tmp:
        base = Path(tmp)
        dfo, configfile = setup(base, specs, seconds)
        snakemake = [sys.executable, "-m", "snakemake", "--cores", str(slots)]
        if kind == "abflow":
            cmd = [*snakemake, "-s", str(ROOT / "Snakefile"), "--profile",
                   str(ROOT / "profiles" / "local"), "--configfile", str(configfile)]  # fmt: skip
        else:
            dag = {
                s.name: {"parents": list(s.parents), "dets": s.mef_factor or 1,
                         "file": os.path.join(dfo["ab_dir"], s.name)}
                for s in specs
            }  # fmt: skip
            (base / "dag.json").write_text(json.dumps(dag))
            (base / "Snakefile.bare").write_text(BARE_SNAKEFILE)
            cmd = [*snakemake, "-s", str(base / "Snakefile.bare"), "--config",
                   f"dag={base / 'dag.json'}", f"state={base / 'bare'}",
                   f"product_dir={dfo['product_dir']}", f"standin={STANDIN}",
                   f"times={base / 'times.log'}", f"seconds={seconds:g}"]  # fmt: skip
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True,
                              env=dict(os.environ, PYTHONWARNINGS="ignore"))  # fmt: skip
        if proc.returncode != 0:
            raise SystemExit(f"{kind} failed:\n{proc.stderr[-3000:]}")
        return makespan(base / "times.log") / seconds


def plan_of(specs: list[ABSpec], slots: int) -> tuple[float, float]:
    """(critical-path bound, abflow's plan) in job-lengths."""
    with tempfile.TemporaryDirectory() as tmp:
        dfo = make_dfo_tree(tmp)
        write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
        night = load_night(resolve({"date": DATE, "dfo": dfo, "drs_type": "CON"}))
        _, deps = job_graph(night)
        plan = list_schedule(deps, job_priorities(night), slots).makespan
        return lower_bound(deps, slots), plan


def _cpu_of(cmd: list[str], env: dict[str, str]) -> float:
    """CPU seconds (user + system) of ``cmd`` and all its children."""
    pid = os.posix_spawn(cmd[0], cmd, env)
    _, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return usage.ru_utime + usage.ru_stime


def job_cpu(runs: int) -> dict[str, float]:
    """CPU of one abflow job around ``true`` (seconds, median of ``runs``): as a process of its
    own (``abflow-pool-job``, how a pool runs it) against ``sh -c true``
    alone, and in a thread of this process (how the workflow runs it on this machine; the
    process's own CPU, the command's excluded)."""
    with tempfile.TemporaryDirectory(prefix="abflow-jobcpu-") as tmp:
        specs = [ABSpec(ab_name(0))]
        dfo = make_dfo_tree(tmp)
        write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
        Path(dfo["raw_dir"], DATE).mkdir(parents=True, exist_ok=True)
        for name in specs[0].raw_names():
            Path(dfo["raw_dir"], DATE, name).touch()
        settings = resolve({"date": DATE, "dfo": dfo, "check_products": False,
                            "commands": {"process_ab": "true"}})  # fmt: skip
        rules = NightRules(load_night(settings), write_run_config(settings))
        command = rules.job_command(JobId(Step.PROCESS_AB, specs[0].name))
        env = dict(os.environ, PYTHONWARNINGS="ignore")
        bare = [_cpu_of(["/bin/sh", "-c", "true"], env) for _ in range(runs)]
        pool_env = dict(env, ABFLOW_JOB=encode(command.arguments()), ABFLOW_CLUSTER="1")
        process = [_cpu_of([pool_job_program()], pool_env) for _ in range(runs)]
        thread = []
        for _ in range(runs):
            t0 = time.process_time()
            execute(command)
            thread.append(time.process_time() - t0)
    return {"process_s": statistics.median(process), "sh_true_s": statistics.median(bare),
            "thread_s": statistics.median(thread)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", nargs="+", choices=list(NIGHTS), default=list(NIGHTS))
    parser.add_argument("--slots", type=int, nargs="+", help="instead of each night's own")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of a stand-in job")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--cpu-runs", type=int, default=20)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "fanout.json"))
    args = parser.parse_args(argv)
    rows = []
    print(f"{'night':>8} {'slots':>5} {'bound':>6} {'plan':>5} {'bare':>6} {'abflow':>7} "
          f"{'abflow-bound':>13} {'abflow/bare':>12}", flush=True)  # fmt: skip
    for name in args.nights:
        specs = night_specs(name)
        for slots in args.slots or NIGHTS[name]:
            bound, plan = plan_of(specs, slots)
            runs: dict[str, list[float]] = {"bare": [], "abflow": []}
            for _ in range(args.repeat):  # interleaved, to share the machine's noise
                for kind in runs:
                    runs[kind].append(run_case(kind, specs, slots, args.seconds))
            bare, abflow = statistics.median(runs["bare"]), statistics.median(runs["abflow"])
            rows.append({"night": name, "slots": slots, "bound": bound, "plan": plan,
                         "bare": runs["bare"], "abflow": runs["abflow"]})  # fmt: skip
            print(f"{name:>8} {slots:>5} {bound:>6g} {plan:>5g} {bare:>6.2f} {abflow:>7.2f} "
                  f"{abflow - bound:>+13.2f} {abflow / bare:>12.3f}", flush=True)  # fmt: skip
    cpu = job_cpu(args.cpu_runs) if args.cpu_runs else {}
    if cpu:
        print(
            f"CPU per abflow job outside its command (median of {args.cpu_runs}): in a thread "
            f"of Snakemake (this machine) {cpu['thread_s'] * 1000:.1f} ms; as a process of its "
            f"own (a pool) {(cpu['process_s'] - cpu['sh_true_s']) * 1000:.1f} ms (job around "
            f"'true' {cpu['process_s'] * 1000:.1f} ms, 'sh -c true' "
            f"{cpu['sh_true_s'] * 1000:.1f} ms)"
        )
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    result = {"seconds": args.seconds, "rows": rows, "job_cpu": cpu,
              "at": time.strftime("%Y-%m-%dT%H:%M:%S")}  # fmt: skip
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
