"""Shared fixtures: temporary DFOS trees, configs, and real snakemake runs."""

from __future__ import annotations

import datetime as dt
import glob
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "Snakefile"
DATE = "2013-02-12"


def pytest_configure(config: pytest.Config) -> None:
    """In CI (ABFLOW_REQUIRE_TOOLS=1, set by .ci/run) the external tools must be there, so that
    no test that needs them is silently skipped."""
    import shutil

    if os.environ.get("ABFLOW_REQUIRE_TOOLS") == "1":
        missing = [t for t in ("esorex", "chromium") if shutil.which(t) is None]
        if missing:
            raise pytest.UsageError(f"ABFLOW_REQUIRE_TOOLS=1 but not installed: {missing}")


POOL_HELP = (
    "no HTCondor pool answers: point CONDOR_CONFIG at a live pool's configuration to run the "
    "live-pool tests (a personal pool on this machine will do: see the README, On an HTCondor "
    "pool); CI sets ABFLOW_REQUIRE_POOL=1"
)


@pytest.fixture(scope="session")
def pool() -> str:
    """A live HTCondor pool (the one CONDOR_CONFIG names); returns the condor_config path.

    Without one the test is skipped with how to point it at a pool, unless
    ABFLOW_REQUIRE_POOL=1 (CI, which starts a pool): then it fails.
    """
    config = os.environ.get("CONDOR_CONFIG", "")
    problem = ""
    if not config or not os.path.isfile(config):
        problem = "CONDOR_CONFIG is not set to a file"
    else:
        try:
            import htcondor2

            htcondor2.Schedd().query(constraint="False", projection=["ClusterId"])
        except Exception as exc:
            problem = f"the schedd of {config} does not answer: {exc}"
    if problem:
        if os.environ.get("ABFLOW_REQUIRE_POOL") == "1":
            pytest.fail(f"ABFLOW_REQUIRE_POOL=1 but {problem}", pytrace=False)
        pytest.skip(f"{problem}; {POOL_HELP}")
    return config


@pytest.fixture(autouse=True)
def _isolate_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the caller's DFOS environment or a running night's config."""
    for name in list(os.environ):
        if name.startswith(("DFO_", "DFS_", "ABFLOW_")):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
def dfo(tmp_path: Path) -> dict[str, str]:
    """A fresh DFOS directory tree under tmp_path (directories created)."""
    from abflow.example.generate import make_dfo_tree

    return make_dfo_tree(tmp_path / "dfo")


def write_config(path: Path, dfo: dict[str, str], **overrides: Any) -> Path:
    """Write a config YAML for a synthetic night: stand-in commands, no product check, no QC.

    The stand-in download (a test double for ngasClient) writes a few bytes to {dest}.
    """
    cfg: dict[str, Any] = {
        "date": DATE,
        "dfo": dict(dfo),
        "commands": {"process_ab": "sleep 0", "download": "printf raw > {dest}"},
        "check_products": False,
        "qc_mode": "IMPLICIT",
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    path.write_text(yaml.safe_dump(cfg))
    return path


def place_raw_files(dfo: dict[str, str]) -> int:
    """Create every RAWFILE of the night's ABs in $DFO_RAW_DIR (no download jobs); return count."""
    from abflow.model.config import resolve
    from abflow.model.load import load_night

    night = load_night(resolve({"date": DATE, "dfo": dfo}))
    paths = {p for record in night for p in record.raw_inputs}
    for path in paths:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Path(path).touch()
    return len(paths)


def run_snakemake(
    workdir: Path,
    configfile: Path,
    *args: str,
    cores: int | str = 1,
    profile: str = "local",
    timeout: int = 300,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run the real snakemake on abflow's Snakefile in ``workdir``; return the finished process."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(SNAKEFILE),
        "--directory",
        str(workdir),
        "--profile",
        str(ROOT / "profiles" / profile),
        "--configfile",
        str(configfile),
        "--cores",
        str(cores),
        *args,
    ]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        ["timeout", "-k", "10", str(timeout), *cmd],
        capture_output=True,
        text=True,
        env=env,
        cwd=workdir,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


def records(state_dir: str) -> dict[str, dict[str, Any]]:
    """Completion records by AB name."""
    out = {}
    for path in glob.glob(os.path.join(state_dir, "records", "*.json")):
        with open(path) as fh:
            rec = json.load(fh)
        out[rec["ab"]] = rec
    return out


def intervals(recs: Iterable[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """(start, end) in seconds since the first start, per AB."""
    recs = list(recs)
    t0 = min(dt.datetime.fromisoformat(r["start"]) for r in recs)
    return {
        r["ab"]: (
            (dt.datetime.fromisoformat(r["start"]) - t0).total_seconds(),
            (dt.datetime.fromisoformat(r["end"]) - t0).total_seconds(),
        )
        for r in recs
    }


def waves(spans: dict[str, tuple[float, float]]) -> int:
    """Makespan in job-lengths of a run of equal-length jobs.

    wave(j) = 1 + max wave(i) over jobs i that ended before j started: the longest chain of
    jobs that ran one after another. With equal job lengths and short gaps this is the number of
    job-lengths the run took.
    """
    order = sorted(spans, key=lambda k: spans[k][0])
    wave: dict[str, int] = {}
    for j in order:
        start = spans[j][0]
        wave[j] = 1 + max((wave[i] for i in wave if spans[i][1] <= start + 1e-3), default=0)
    return max(wave.values(), default=0)


@pytest.fixture
def snakemake_runner() -> Callable[..., subprocess.CompletedProcess[str]]:
    """The run_snakemake helper as a fixture."""
    return run_snakemake


def example_config(base: Path, archive: Path | None = None) -> tuple[Path, dict[str, str]]:
    """The example night's configuration with the checkout's ABs and everything it writes in a
    DFOS tree under ``base`` (the raw-frame archive too, unless ``archive`` is given)."""
    import shutil

    from abflow.example.generate import make_dfo_tree

    dfo = make_dfo_tree(base / "dfo")
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["dfo"] = dict(dfo)
    cfg["dfo"]["ab_dir"] = str(ROOT / "resources" / "example" / "ab")
    cfg["dfo"]["mon_dir"] = str(base / "mon")
    os.makedirs(cfg["dfo"]["mon_dir"], exist_ok=True)
    shutil.copy(
        ROOT / "resources" / "example" / "mon" / f"AB_list_CALIB_{DATE}", cfg["dfo"]["mon_dir"]
    )
    cfg["archive"] = str(archive or base / "archive")
    path = base / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, cfg["dfo"]


@pytest.fixture(scope="session")
def example_local(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The bundled example night, run once per session on this machine (DRS_TYPE CON on
    4 cores) with the real recipes: its configuration, tree, archive and outputs."""
    import shutil

    if shutil.which("esorex") is None:
        pytest.skip("esorex is not installed")
    base = tmp_path_factory.mktemp("example-local")
    cfg, dfo = example_config(base)
    made = subprocess.run(
        ["abflow", "example", "--configfile", str(cfg)], capture_output=True, text=True, check=True
    )
    run = run_snakemake(base, cfg, "--config", "drs_type=CON", cores=4, timeout=900)
    return {"base": base, "config": cfg, "dfo": dfo, "made": made, "run": run,
            "archive": base / "archive"}  # fmt: skip


def all_step_records(state_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every completion record of a night: ABs and joins, detector jobs, QC."""
    base = Path(state_dir, "records")
    return [json.loads(p.read_text()) for p in sorted(base.rglob("*.json"))]
