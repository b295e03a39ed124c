"""What abflow's protections cost a run (README: What abflow protects), against a baseline.

Two measurements, each run in a fresh Python process for this checkout and for a baseline
checkout (``--baseline DIR``, e.g. a ``git worktree`` of an earlier commit) in the same run,
interleaved, and reported as medians and as the ratio to the baseline:

* **loading a night** (``load_night``: parse, link, check; the protections add the product
  and directory checks on resolved paths and a scan of the completion records of the state
  directory) for a generated night of ``--abs`` ABs whose every product and record exist (a
  night run before, as on a rerun), and ``--records`` more records of other nights kept in
  the same state directory;
* **the CPU of one AB job** outside its command (``abflow.job.main.execute`` in a thread, as
  the workflow runs jobs on this machine), with ``check_products`` on: its command writes its
  product, and the job checks it (the protections add the attempt markers and the freshness
  and completeness checks).

    python bench/protects.py --baseline /tmp/wt-before --abs 1000 --records 3000

Results go to stdout and bench/results/protects.json.
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
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATE = "2013-02-12"


def _night(tmp: str, n_abs: int, n_records: int) -> object:
    """Settings of a generated night whose products and records exist."""
    from abflow.example.generate import calib_night, make_dfo_tree, write_night
    from abflow.model.config import resolve

    dfo = make_dfo_tree(tmp)
    specs = calib_night(n_abs)
    write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
    settings = resolve({"date": DATE, "dfo": dfo})
    records = Path(settings.state_dir, "records")
    records.mkdir(parents=True)
    for spec in specs:
        Path(dfo["raw_dir"], DATE).mkdir(parents=True, exist_ok=True)
        for name in spec.raw_names():
            Path(dfo["raw_dir"], DATE, name).touch()
        products = []
        for i in range(spec.n_products):
            path = Path(dfo["product_dir"], spec.raw_type, DATE, f"{spec.root}_{i:04d}.fits")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x")
            products.append({"path": str(path), "tag": "T", "bytes": 1})
        record = {"ab": spec.name, "status": "SUCCESSFUL", "products": products}
        (records / f"{spec.name}.json").write_text(json.dumps(record))
    for i in range(n_records):  # other nights' records in the same state directory
        other = {
            "ab": f"OTHER.{i}.ab",
            "status": "SUCCESSFUL",
            "products": [{"path": f"/elsewhere/r.OTHER.{i}_0000.fits"}],
        }
        (records / f"OTHER.{i}.ab.json").write_text(json.dumps(other))
    return settings


def _median_seconds(clock: Callable[[], float], work: Callable[[], object], n: int) -> float:
    """The median of ``n`` runs of ``work``, each timed by ``clock``."""
    times = []
    for _ in range(n):
        t0 = clock()
        work()
        times.append(clock() - t0)
    return statistics.median(times)


def measure_load(n_abs: int, n_records: int, repeat: int) -> float:
    """Median seconds of load_night for the generated night."""
    from abflow.model.load import load_night

    with tempfile.TemporaryDirectory(prefix="abflow-bench-") as tmp:
        settings = _night(tmp, n_abs, n_records)
        return _median_seconds(time.perf_counter, lambda: load_night(settings), repeat)


def measure_job(runs: int) -> float:
    """Median CPU seconds of one AB job outside its command, products checked."""
    from abflow.example.generate import ABSpec, ab_name, make_dfo_tree, write_night
    from abflow.job.main import execute
    from abflow.model.config import resolve, write_run_config
    from abflow.model.load import load_night
    from abflow.run.rules import NightRules
    from abflow.state.layout import JobId, Step

    with tempfile.TemporaryDirectory(prefix="abflow-bench-") as tmp:
        spec = ABSpec(ab_name(0))
        dfo = make_dfo_tree(tmp)
        write_night([spec], dfo["ab_dir"], dfo["mon_dir"], DATE)
        Path(dfo["raw_dir"], DATE).mkdir(parents=True, exist_ok=True)
        for name in spec.raw_names():
            Path(dfo["raw_dir"], DATE, name).touch()
        product = Path(dfo["product_dir"], spec.raw_type, DATE, f"{spec.root}_0000.fits")
        settings = resolve(
            {
                "date": DATE,
                "dfo": dfo,
                "check_products": True,
                "commands": {"process_ab": f"mkdir -p {product.parent} && printf x > {product}"},
            }
        )
        rules = NightRules(load_night(settings), write_run_config(settings))
        command = rules.job_command(JobId(Step.PROCESS_AB, spec.name))
        return _median_seconds(time.process_time, lambda: execute(command), runs)


def _measure_in(checkout: Path, args: argparse.Namespace) -> dict[str, float]:
    """The measurements in a fresh process running ``checkout``'s abflow."""
    env = dict(os.environ, PYTHONPATH=str(checkout / "src"), PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--measure",
            "--abs",
            str(args.abs),
            "--records",
            str(args.records),
            "--repeat",
            str(args.repeat),
            "--runs",
            str(args.runs),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """Measure this checkout against the baseline; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="a checkout to compare with")
    parser.add_argument("--abs", type=int, default=1000)
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=5, help="loads per process")
    parser.add_argument("--runs", type=int, default=30, help="jobs per process")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved processes per side")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "protects.json"))
    args = parser.parse_args(argv)
    if args.measure:
        print(
            json.dumps(
                {
                    "load_s": measure_load(args.abs, args.records, args.repeat),
                    "job_cpu_s": measure_job(args.runs),
                }
            )
        )
        return 0
    sides = {"this": ROOT, **({"baseline": args.baseline} if args.baseline else {})}
    found: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    for _ in range(args.rounds):
        for side, checkout in sides.items():
            found[side].append(_measure_in(checkout, args))
    table = {
        side: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        for side, runs in found.items()
    }
    print(
        f"{args.abs} ABs (+{args.records} other records): load_night, median; one AB job's "
        f"CPU outside its command, products checked, median of {args.runs}"
    )
    for side, values in table.items():
        job_ms = values["job_cpu_s"] * 1000
        print(f"  {side:>8}: load {values['load_s']:.3f} s, job {job_ms:.2f} ms")
    if "baseline" in table:
        ratio = {k: table["this"][k] / table["baseline"][k] for k in table["this"]}
        print(f"  ratio this/baseline: load {ratio['load_s']:.2f}, job {ratio['job_cpu_s']:.2f}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {"args": {"abs": args.abs, "records": args.records}, "runs": found, "medians": table},
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
