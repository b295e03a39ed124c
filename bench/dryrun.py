"""Dry-run cost of abflow against a bare Snakefile with the same DAG, measured in the same run.

For each size N a bias/flat/science-shaped night of N ABs is generated
(abflow.example.generate) in a
temporary DFOS tree, its raw files missing (so every AB has download jobs) and QC on (SER).
Two dry-runs (`snakemake -n`) of the same DAG are timed:

* baseline: a bare Snakefile with generic rules whose inputs come from a dict loaded from JSON
  (the encoding that Snakemake builds fastest; docs/upstream.md): one download job per raw file,
  one process job per AB after its parents and its raw files, one QC job per AB after it, a
  summary job after every AB (abflow's benchmark table) and `all`;
* abflow: abflow's own Snakefile on the AB files (parsing, validation, the Night, rerun keys,
  priorities, download planning, the QC and download resource limits).

`--no-downloads` puts the raw files in place and switches QC off (the smaller DAG of the first
measurements).

Each is run --repeat times; the best wall time and the peak memory (max RSS of the snakemake
process tree) are reported, with the ratio abflow / baseline, and the median of the ratios of
the runs made back to back ("paired": this VM's speed drifts by 10 % within minutes, which the
pairs share). Results go to stdout and to
bench/results/dryrun.json.

    python bench/dryrun.py --sizes 1000 5000 20000 --repeat 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from abflow.example.generate import calib_night, make_dfo_tree, write_night

ROOT = Path(__file__).resolve().parents[1]
DATE = "2013-02-12"

BARE_SNAKEFILE = """
import json
import os

NIGHT = json.load(open(config["dag"]))
QC = config["qc"]
RECORDS = expand(config["state"] + "/records/{ab}.json", ab=list(NIGHT))


rule all:
    input:
        RECORDS,
        config["state"] + "/summary.tsv",
        expand(config["state"] + "/qc/{ab}.json", ab=list(NIGHT)) if QC else [],


def ab_inputs(wildcards):
    ab = NIGHT[wildcards.ab]
    missing = [r for r in ab["raw"] if not os.path.exists(r)]
    return [config["state"] + f"/records/{p}.json" for p in ab["parents"]] + missing


rule download:
    output:
        config["raw"] + "/{file}",
    resources:
        download=1,
    shell:
        "touch {output}"


rule qc:
    input:
        config["state"] + "/records/{ab}.json",
    output:
        config["state"] + "/qc/{ab}.json",
    resources:
        qc=1,
    shell:
        "touch {output}"


rule summary:
    input:
        RECORDS,
    output:
        config["state"] + "/summary.tsv",
    shell:
        "touch {output}"


rule process_ab:
    input:
        ab_inputs,
    output:
        config["state"] + "/records/{ab}.json",
    shell:
        "touch {output}"
"""


def run(cmd: list[str], cwd: str) -> tuple[float, float, float]:
    """Run ``cmd``; return (wall s, CPU s, peak RSS MiB) of the process tree."""
    t0 = time.perf_counter()
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    pid = _spawn(cmd, cwd, env)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def _spawn(cmd: list[str], cwd: str, env: dict[str, str]) -> int:
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.chdir(cwd)
            fd = os.open(os.devnull, os.O_WRONLY)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.execve(cmd[0], cmd, env)
        finally:
            os._exit(127)
    return pid


def setup(n: int, base: Path, downloads: bool = True) -> tuple[list[str], list[str]]:
    """Generate the night of ``n`` ABs; return the abflow and baseline commands."""
    dfo = make_dfo_tree(base / "dfo")
    specs = calib_night(n)
    write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
    raw = Path(dfo["raw_dir"], DATE)
    raw.mkdir(parents=True, exist_ok=True)
    if not downloads:  # the smaller DAG: raw files in place (no downloads), no QC jobs
        for spec in specs:
            for name in spec.raw_names():
                (raw / name).touch()
    cfg = base / "config.yaml"
    qc_mode = "SER" if downloads else "IMPLICIT"
    cfg.write_text(yaml.safe_dump({"date": DATE, "dfo": dfo, "qc_mode": qc_mode}))
    dag = {
        s.name: {"parents": list(s.parents), "raw": [str(raw / r) for r in s.raw_names()]}
        for s in specs
    }
    (base / "dag.json").write_text(json.dumps(dag))
    (base / "Snakefile.bare").write_text(BARE_SNAKEFILE)
    snakemake = [sys.executable, "-m", "snakemake", "-n", "--cores", "1"]
    abflow = [*snakemake, "-s", str(ROOT / "Snakefile"), "--configfile", str(cfg)]
    bare = [
        *snakemake,
        "-s",
        str(base / "Snakefile.bare"),
        "--config",
        f"dag={base / 'dag.json'}",
        f"state={dfo['job_dir']}/bare",
        f"raw={dfo['raw_dir']}",
        f"qc={downloads}",
    ]
    return abflow, bare


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--no-downloads", action="store_true", help="raw files in place and no QC (smaller DAG)"
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "dryrun.json"))
    args = parser.parse_args(argv)
    results = []
    print(
        f"{'ABs':>6} {'bare s':>8} {'abflow s':>9} {'ratio':>6} {'paired':>7} {'bare cpu':>9} "
        f"{'abflow cpu':>11} {'ratio':>6} {'bare MiB':>9} {'abflow MiB':>11}"
    )
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix=f"abflow-bench-{n}-") as tmp:
            abflow, bare = setup(n, Path(tmp), downloads=not args.no_downloads)
            times: dict[str, list[tuple[float, float, float]]] = {"bare": [], "abflow": []}
            for _ in range(args.repeat):  # interleave to share machine noise
                times["bare"].append(run(bare, tmp))
                times["abflow"].append(run(abflow, tmp))
        wall = {k: min(t[0] for t in v) for k, v in times.items()}
        cpu = {k: min(t[1] for t in v) for k, v in times.items()}
        mem = {k: max(t[2] for t in v) for k, v in times.items()}
        row = {
            "abs": n,
            "bare_s": round(wall["bare"], 3),
            "abflow_s": round(wall["abflow"], 3),
            "ratio": round(wall["abflow"] / wall["bare"], 3),
            "paired_ratio": round(
                statistics.median(
                    a[0] / b[0] for a, b in zip(times["abflow"], times["bare"], strict=True)
                ),
                3,
            ),
            "bare_cpu_s": round(cpu["bare"], 3),
            "abflow_cpu_s": round(cpu["abflow"], 3),
            "cpu_ratio": round(cpu["abflow"] / cpu["bare"], 3),
            "bare_mib": round(mem["bare"], 1),
            "abflow_mib": round(mem["abflow"], 1),
            "all_wall_s": {k: [round(t[0], 3) for t in v] for k, v in times.items()},
        }
        results.append(row)
        print(
            f"{n:>6} {row['bare_s']:>8.2f} {row['abflow_s']:>9.2f} {row['ratio']:>6.2f} "
            f"{row['paired_ratio']:>7.2f} "
            f"{row['bare_cpu_s']:>9.2f} {row['abflow_cpu_s']:>11.2f} {row['cpu_ratio']:>6.2f} "
            f"{row['bare_mib']:>9.0f} {row['abflow_mib']:>11.0f}",
            flush=True,
        )
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
