"""A dry-run, --lint and --dag only look: they write nothing into the night store, also where a
rerun is asked for (subcascade) or an AB file changed since it ran; the run that follows writes
the rerun requests and the run configuration, and reruns what the dry-run said."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import DATE, place_raw_files, run_snakemake, write_config

from abflow.example.generate import fan_cascade, write_night


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and directory below ``root``: (size, mtime in ns)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath, name)
            st = path.lstat()
            out[str(path.relative_to(root))] = (st.st_size if path.is_file() else 0, st.st_mtime_ns)
    return out


@pytest.mark.slow
def test_dry_run_lint_and_dag_write_nothing_into_the_night_store(tmp_path, dfo) -> None:
    specs = fan_cascade([1, 2, 2])
    write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
    place_raw_files(dfo)
    cfg = write_config(tmp_path / "config.yaml", dfo, commands={"process_ab": "true"},
                       check_products=False, qc_mode="IMPLICIT")  # fmt: skip
    run_snakemake(tmp_path, cfg, "--config", f"date={DATE}")
    store = Path(dfo["job_dir"], "abflow")
    edited = Path(dfo["ab_dir"], specs[2].name)
    edited.write_text(
        edited.read_text().replace("\nDRS_TYPE", "\nRECIPE_PARAM --extra=1\nDRS_TYPE")
    )
    before = snapshot(store)
    first = specs[0].name
    looks = [
        ["-n", "--config", f"date={DATE}", f"subcascade={first}"],
        ["-n", "--config", f"date={DATE}"],
        ["--lint", "--config", f"subcascade={first}"],
        ["--dag", "--config", f"subcascade={first}"],
        ["--rulegraph"],
    ]
    for args in looks:
        proc = run_snakemake(tmp_path, cfg, *args, check=False)
        assert proc.returncode == 0 or args[0] == "--lint", (args, proc.stderr[-2000:])
        assert snapshot(store) == before, args
    dry = run_snakemake(tmp_path, cfg, "-n", "--config", f"date={DATE}", f"subcascade={first}")
    assert "subcascade rerun requested" in dry.stdout + dry.stderr
    # the run does what the dry-run said: the subcascade (the whole fan) runs again, and the
    # edited AB runs as well; the requests it wrote are gone once their ABs succeeded
    run_snakemake(tmp_path, cfg, "--config", f"date={DATE}", f"subcascade={first}")
    assert list(store.joinpath("requests").glob("*.rerun")) == []
    after = snapshot(store)
    records = [k for k in after if k.startswith("records/") and k.endswith(".ab.json")]
    assert len(records) == 5 and all(after[k][1] > before[k][1] for k in records)
    configs = [k for k in after if k.startswith("config/")]
    assert len(configs) == 2  # the first run's, and the subcascade run's (written as it started)
