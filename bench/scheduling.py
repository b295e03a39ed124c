"""Makespan of shared-slot nights under Snakemake's greedy and ILP schedulers and abflow's.

A night where a split/join cascade (bias and flat of n detectors each: n jobs, a join, n jobs, a
join) shares the slots with a plain 1 -> 3 -> 6 cascade, all jobs of equal length (``sleep``
stand-ins). For each scheduler the night is run ``--repeat`` times in a fresh temporary tree;
reported: the makespan in job-lengths (the longest chain of jobs run one after another) and in
seconds, the optimum (exact search) and abflow's plan, and each scheduler's makespan relative to
the greedy baseline measured in the same run.

    python bench/scheduling.py --detectors 8 --slots 9 --seconds 2 --repeat 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from abflow.example.generate import ABSpec, ab_name, make_dfo_tree, write_night
from abflow.model.config import resolve
from abflow.model.load import load_night
from abflow.model.plan import job_graph, job_priorities, list_schedule, optimal_unit_makespan

ROOT = Path(__file__).resolve().parents[1]
DATE = "2013-02-12"


def night_specs(detectors: int) -> list[ABSpec]:
    """A split/join cascade listed first, then a plain 1 -> 3 -> 6 cascade beside it."""
    bias = ABSpec(ab_name(0, prefix="MEF"), mef_factor=detectors)
    flat = ABSpec(ab_name(1, prefix="MEF"), raw_type="FLAT", parents=[bias.name],
                  mef_factor=detectors)  # fmt: skip
    b = ABSpec(ab_name(2), raw_type="BIAS")
    flats = [ABSpec(ab_name(3 + i), raw_type="FLAT", parents=[b.name]) for i in range(3)]
    sci = [ABSpec(ab_name(6 + i), raw_type="SCIENCE", parents=[flats[i // 2].name])
           for i in range(6)]  # fmt: skip
    return [bias, flat, b, *flats, *sci]


def waves(spans: list[tuple[float, float]]) -> int:
    """Longest chain of jobs that ran one after another (job-lengths, for equal jobs)."""
    order = sorted(range(len(spans)), key=lambda i: spans[i][0])
    wave: dict[int, int] = {}
    for j in order:
        wave[j] = 1 + max((wave[i] for i in wave if spans[i][1] <= spans[j][0] + 1e-3), default=0)
    return max(wave.values(), default=0)


def run_once(scheduler: str, detectors: int, slots: int, seconds: float) -> tuple[int, float]:
    with tempfile.TemporaryDirectory(prefix="abflow-sched-") as tmp:
        base = Path(tmp)
        dfo = make_dfo_tree(base / "dfo")
        specs = night_specs(detectors)
        write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
        os.makedirs(os.path.join(dfo["raw_dir"], DATE))
        for spec in specs:  # raw files present: no download jobs
            for name in spec.raw_names():
                Path(dfo["raw_dir"], DATE, name).touch()
        sleep = f"sleep {seconds}"
        cfg = {
            "date": DATE, "dfo": dfo, "drs_type": "CON", "qc_mode": "IMPLICIT",
            "check_products": False,
            "commands": {"process_ab": sleep, "process_ab_det": sleep, "mef_join": sleep},
        }  # fmt: skip
        (base / "config.yaml").write_text(yaml.safe_dump(cfg))
        cmd = [
            sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"),
            "--profile", str(ROOT / "profiles" / "local"), "--configfile",
            str(base / "config.yaml"), "--cores", str(slots), "--scheduler", scheduler,
        ]  # fmt: skip
        subprocess.run(cmd, cwd=tmp, check=True, capture_output=True,
                       env=dict(os.environ, PYTHONWARNINGS="ignore"))  # fmt: skip
        spans = []
        for path in Path(dfo["job_dir"], "abflow", "records").rglob("*.json"):
            rec = json.loads(path.read_text())
            spans.append((dt.datetime.fromisoformat(rec["start"]).timestamp(),
                          dt.datetime.fromisoformat(rec["end"]).timestamp()))  # fmt: skip
        t0 = min(s for s, _ in spans)
        return waves(spans), max(e for _, e in spans) - t0


def plan_of(detectors: int, slots: int) -> tuple[int, float]:
    """(exact optimum, abflow's plan) in job-lengths."""
    with tempfile.TemporaryDirectory() as tmp:
        dfo = make_dfo_tree(tmp)
        specs = night_specs(detectors)
        write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
        night = load_night(resolve({"date": DATE, "dfo": dfo, "drs_type": "CON"}))
        _, deps = job_graph(night)
        plan = list_schedule(deps, job_priorities(night), slots).makespan
        optimum = optimal_unit_makespan(deps, slots, limit=40) if len(deps) <= 26 else plan
        return optimum, plan


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detectors", type=int, default=8)
    parser.add_argument("--slots", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--schedulers", nargs="+", default=["greedy", "ilp", "abflow"])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "scheduling.json"))
    args = parser.parse_args(argv)
    optimum, plan = plan_of(args.detectors, args.slots)
    print(f"night: {args.detectors}-detector split/join cascade beside 1 -> 3 -> 6, "
          f"{args.slots} slots, {args.seconds:g} s jobs; optimum {optimum} job-lengths, "
          f"abflow plan {plan:g}")  # fmt: skip
    results: dict[str, list[tuple[int, float]]] = {}
    for _ in range(args.repeat):  # interleave schedulers to share machine noise
        for scheduler in args.schedulers:
            results.setdefault(scheduler, []).append(
                run_once(scheduler, args.detectors, args.slots, args.seconds)
            )
    base = min(s for _, s in results[args.schedulers[0]])
    print(f"{'scheduler':>10} {'job-lengths':>12} {'best s':>8} {'vs ' + args.schedulers[0]:>10}")
    rows = []
    for scheduler, runs in results.items():
        best = min(s for _, s in runs)
        lengths = [w for w, _ in runs]
        seconds = [s for _, s in runs]
        rows.append(
            {
                "scheduler": scheduler,
                "job_lengths": lengths,
                "seconds": seconds,
                "ratio": best / base,
            }
        )
        print(
            f"{scheduler:>10} {'/'.join(map(str, lengths)):>12} {best:>8.1f} {best / base:>10.2f}"
        )
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    Path(args.out).write_text(json.dumps({"optimum": optimum, "plan": plan, "args": vars(args),
                                          "results": rows}, indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
