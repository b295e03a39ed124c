"""What abflow protects (README), with real Snakemake runs: two nights at once from one state
directory (a stop, a crashed night's restart, a second state directory), a file another night
placed while a run waited to download it, an empty completion record, a rerun on a full disk,
and the property test: random cascades with random kills of their recipes change nothing
outside the night's directories, and no AB is SUCCESSFUL without whole products of its own
attempt.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import DATE, ROOT, SNAKEFILE, run_snakemake, write_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abflow.example.generate import ABSpec, ab_name, fan_cascade, write_night
from abflow.state.layout import JobId, StateLayout, Step

STANDINS = Path(__file__).parent / "standins"
RECIPE = STANDINS / "recipe_standin.py"
DOWNLOAD = STANDINS / "download_standin.py"
OTHER_DATE = "2013-02-14"


def wait_for(condition: Callable[[], object], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def start_snakemake(workdir: Path, cfg: Path, *args: str, out: str) -> subprocess.Popen:
    """A real Snakemake run in the background (its console in ``workdir/out``)."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(SNAKEFILE),
        "--directory",
        str(workdir),
        "--profile",
        str(ROOT / "profiles" / "local"),
        "--configfile",
        str(cfg),
        "--cores",
        "2",
        *args,
    ]
    with open(workdir / out, "w") as fh:
        return subprocess.Popen(cmd, cwd=workdir, stdout=fh, stderr=subprocess.STDOUT)


def recipe(tmp_path: Path) -> tuple[str, Path, Path]:
    """The process_ab command of the recipe stand-in, its plan and its log."""
    plan, log = tmp_path / "plan.json", tmp_path / "recipe.log"
    plan.write_text("{}")
    return f"{sys.executable} {RECIPE} {{ab_file}} {plan} {log}", plan, log


# ------------------------------------------------------------------- two nights at once
def test_two_nights_from_one_state_directory_stay_apart(tmp_path, dfo) -> None:
    """Night Y and night X both download the same calibration. X's controller is killed
    (SIGKILL) while its download runs, and X is started again: its take-over ends X's
    orphaned download, never Y's Snakemake (the markers' owners, not their file names, decide).
    The same night from a second state directory is refused meanwhile. `abflow stop -d X`
    stops X only: Y finishes its night."""
    control = tmp_path / "control"
    control.mkdir()
    (control / "hold").touch()
    shared = os.path.join(dfo["cal_dir"], "2013-02-10", "SY_MDRK_130210A.fits")
    for date, i in ((DATE, 1), (OTHER_DATE, 2)):
        spec = ABSpec(ab_name(i, date=date), real_mcalibs=[(shared, "MASTER_DARK")], n_raw=1)
        write_night([spec], dfo["ab_dir"], dfo["mon_dir"], date)
        Path(dfo["raw_dir"], date).mkdir(parents=True)
        Path(dfo["raw_dir"], date, spec.raw_names()[0]).write_bytes(b"raw")
    download = f"{sys.executable} {DOWNLOAD} {{file}} {{dest}} {control}"
    cfg = write_config(
        tmp_path / "c.yaml", dfo, commands={"process_ab": "true", "download": download}
    )
    layout = StateLayout(str(Path(dfo["job_dir"], "abflow")))
    started = lambda: len(list(control.glob("started.*")))  # noqa: E731
    night_y = start_snakemake(tmp_path, cfg, "--config", f"date={OTHER_DATE}", out="y.out")
    night_x = None
    try:
        wait_for(lambda: started() == 1, "night Y's download")
        night_x = start_snakemake(tmp_path, cfg, out="x1.out")
        wait_for(lambda: started() == 2, "night X's download")
        other = tmp_path / "other.yaml"
        other.write_text(cfg.read_text() + f"state_dir: {tmp_path / 'elsewhere'}\n")
        refused = run_snakemake(tmp_path, other, check=False)
        assert refused.returncode != 0
        assert f"with the state directory {layout.root}" in refused.stdout + refused.stderr
        orphan = [int(p.name.rsplit(".", 1)[1]) for p in control.glob("started.*")]
        night_x.send_signal(signal.SIGKILL)
        night_x.wait()
        night_x = start_snakemake(tmp_path, cfg, out="x2.out")
        wait_for(lambda: started() == 3, "night X's download, again")
        alive = [pid for pid in orphan if _alive(pid)]
        assert len(alive) == 1, "X's orphaned download was ended, Y's runs"
        assert night_y.poll() is None, (tmp_path / "y.out").read_text()
        stop = subprocess.run(
            ["abflow", "stop", "--configfile", str(cfg)], capture_output=True, text=True, check=True
        )
        assert "to start no new job" in stop.stdout
        (control / "release").touch()
        assert night_y.wait(120) == 0, (tmp_path / "y.out").read_text()
        night_x.wait(120)
    finally:
        for run in (night_y, night_x):
            if run is not None and run.poll() is None:
                run.kill()
                run.wait()
    done = {p.stem for p in Path(layout.records_dir).glob("*.json")}
    assert done == {ab_name(2, date=OTHER_DATE)}, done  # X stopped before its AB
    history = json.loads(Path(layout.run_history(f"CALIB_{DATE}")).read_text())
    assert [h.get("ended") for h in history] == ["crashed", "stopped"]
    assert not os.path.exists(layout.stop_flag(f"CALIB_{OTHER_DATE}"))
    assert Path(shared).read_text().startswith("data ")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split(") ", 1)[1][0] != "Z"


def test_a_file_another_night_placed_meanwhile_is_kept_not_downloaded_again(tmp_path, dfo) -> None:
    """Snakemake removes a job's existing output before the job runs: a downloaded file is
    an update() output, so a file that another night placed after this run planned its
    download stays, and the download job keeps it (one download at a time: the second file
    is placed while the first download is held)."""
    control = tmp_path / "control"
    control.mkdir()
    (control / "hold").touch()
    spec = ABSpec(ab_name(1), n_raw=1)
    shared = os.path.join(dfo["cal_dir"], "2013-02-10", "SY_MDRK_130210A.fits")
    spec.real_mcalibs = [(shared, "MASTER_DARK")]
    write_night([spec], dfo["ab_dir"], dfo["mon_dir"], DATE)
    raw = os.path.join(dfo["raw_dir"], DATE, spec.raw_names()[0])
    download = f"{sys.executable} {DOWNLOAD} {{file}} {{dest}} {control}"
    commands = {"process_ab": "true", "download": download}
    cfg = write_config(tmp_path / "c.yaml", dfo, limits={"downloads": 1}, commands=commands)
    run = start_snakemake(tmp_path, cfg, out="run.out")
    try:
        wait_for(lambda: list(control.glob("started.*")), "the first download")
        first = next(control.glob("started.*")).name
        other = raw if os.path.basename(shared) in first else shared
        os.makedirs(os.path.dirname(other), exist_ok=True)
        Path(other).write_text("placed by another night\n")
        (control / "release").touch()
        assert run.wait(120) == 0, (tmp_path / "run.out").read_text()
    finally:
        if run.poll() is None:
            run.kill()
    assert Path(other).read_text() == "placed by another night\n"
    step = Step.DOWNLOAD_MCAL if other == shared else Step.DOWNLOAD_RAW
    target = os.path.relpath(other, dfo["cal_dir" if other == shared else "raw_dir"])
    log = StateLayout(str(Path(dfo["job_dir"], "abflow"))).log(JobId(step, target))
    assert "already in place" in Path(log).read_text()


# ------------------------------------------------------------------- records and products
def test_an_empty_record_is_not_done_it_is_said_and_the_ab_runs_again(tmp_path, dfo) -> None:
    specs = fan_cascade([1, 1])
    write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
    command, _plan, log = recipe(tmp_path)
    cfg = write_config(
        tmp_path / "c.yaml", dfo, check_products=True, commands={"process_ab": command}
    )
    run_snakemake(tmp_path, cfg)
    layout = StateLayout(str(Path(dfo["job_dir"], "abflow")))
    parent = Path(layout.record(JobId(Step.PROCESS_AB, specs[0].name)))
    parent.write_bytes(b"")  # a crash, a full disk
    dry = run_snakemake(tmp_path, cfg, "-n")
    said = dry.stdout + dry.stderr
    assert f"the completion record of {specs[0].name}" in said and "empty, unreadable" in said
    run_snakemake(tmp_path, cfg)
    assert json.loads(parent.read_text())["status"] == "SUCCESSFUL"
    runs = [line.split()[0] for line in log.read_text().splitlines()]
    assert runs == [specs[0].name, specs[1].name] * 2  # the child after its parent, again


def test_a_rerun_on_a_full_disk_keeps_every_previous_product(tmp_path, dfo) -> None:
    """`abflow process-ab` installs a rerun's products all at once or not at all: the second
    product does not fit on the product filesystem (a 256 KiB tmpfs), and the first,
    staged already, replaces nothing."""
    products = Path(dfo["product_dir"])
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(products)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        if os.environ.get("ABFLOW_REQUIRE_TOOLS") == "1":
            pytest.fail(f"cannot mount a tmpfs: {mounted.stderr}")
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        _full_disk_rerun(tmp_path, dfo, products)
    finally:
        subprocess.run(["umount", str(products)], check=False)


def _full_disk_rerun(tmp_path: Path, dfo: dict[str, str], products: Path) -> None:
    spec = ABSpec(ab_name(1), n_raw=1, n_products=2)
    write_night([spec], dfo["ab_dir"], dfo["mon_dir"], DATE)
    for name in spec.raw_names():
        Path(dfo["raw_dir"], DATE).mkdir(parents=True, exist_ok=True)
        Path(dfo["raw_dir"], DATE, name).write_bytes(b"raw")
    esorex = tmp_path / "esorex"
    esorex.write_text(f'#!/bin/sh\nexec {sys.executable} {STANDINS / "esorex_standin.py"} "$@"\n')
    esorex.chmod(esorex.stat().st_mode | stat.S_IEXEC)
    cfg = write_config(tmp_path / "c.yaml", dfo)
    env = dict(os.environ, ABFLOW_ESOREX=str(esorex))

    def process(sizes: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["abflow", "process-ab", spec.name, "--configfile", str(cfg)],
            env={**env, "STANDIN_PRODUCTS": sizes},
            capture_output=True,
            text=True,
            check=False,
            cwd=tmp_path,
        )

    assert process("MASTER_BIAS:8000,PRODUCT_1:8000").returncode == 0
    made = sorted(products.rglob("*.fits"))
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in made}
    assert len(before) == 2
    rerun = process("MASTER_BIAS:8000,PRODUCT_1:400000")
    assert rerun.returncode == 1
    assert "No space left on device" in rerun.stderr
    assert "previous ones are in place" in rerun.stderr
    after = {
        p: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(products.rglob("*"))
        if p.is_file()
    }
    assert after == before  # both previous products, and nothing else


# ------------------------------------------------------------------- the property
MODES = ("ok", "ok", "ok", "nothing", "empty", "truncated", "killed", "fail")
HAZARDS = ("nothing", "killed", "empty", "truncated", "fail", "ok")
LINKS = ("work", "log", "staging", "products", "none")


@st.composite
def nights(draw: st.DrawFn) -> tuple[list[list[int]], list[str], list[str], list[bool], str]:
    """A random cascade (each AB's parents among the earlier ones), what each AB's recipe
    does in a first run and in a second one (every hazard spread over the ABs, in a random
    order), which ABs are edited in between (they rerun; the others only if a parent did), and
    where a hostile link waits."""
    n = draw(st.integers(2, 5))
    parents = [
        sorted(draw(st.sets(st.integers(0, i - 1), max_size=2))) if i else [] for i in range(n)
    ]
    first = draw(st.lists(st.sampled_from(MODES), min_size=n, max_size=n))
    hazards = draw(st.permutations(HAZARDS))
    second = [hazards[i % len(hazards)] for i in range(n)]
    edited = draw(st.lists(st.booleans(), min_size=n, max_size=n).filter(any))
    link = draw(st.sampled_from(LINKS))
    return parents, first, second, edited, link


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every file below ``root`` (links not followed): size, mtime, content hash."""
    out = {}
    for path in sorted(root.rglob("*")):
        st_ = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        out[str(path.relative_to(root))] = (st_.st_size, st_.st_mtime_ns, digest)
    return out


@settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(night=nights())
def test_random_cascades_with_killed_recipes_change_nothing_outside_and_fake_no_success(
    tmp_path_factory: pytest.TempPathFactory, night: tuple
) -> None:
    parents, first, second, edited, link = night
    base = tmp_path_factory.mktemp("night")
    from abflow.example.generate import make_dfo_tree

    dfo = make_dfo_tree(base / "dfo")
    sentinel = base / "sentinel"
    (sentinel / "sub").mkdir(parents=True)
    (sentinel / "keep.fits").write_bytes(b"certified")
    (sentinel / "sub" / "data").write_text("x")
    specs = [
        ABSpec(ab_name(i + 1), parents=[ab_name(p + 1) for p in ps], n_raw=1)
        for i, ps in enumerate(parents)
    ]
    write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
    command, plan, log = recipe(base)
    cfg = write_config(
        base / "c.yaml",
        dfo,
        check_products=True,
        commands={"process_ab": command, "download": "printf raw > {dest}"},
    )
    layout = StateLayout(str(Path(dfo["job_dir"], "abflow")))
    _hostile_link(link, sentinel, specs[0], dfo, layout)
    before = snapshot(sentinel)
    for round_, modes in enumerate((first, second)):
        plan.write_text(json.dumps({s.name: m for s, m in zip(specs, modes, strict=True)}))
        if round_:
            for spec, edit in zip(specs, edited, strict=True):
                if edit:
                    path = Path(dfo["ab_dir"], spec.name)
                    path.write_text(path.read_text() + "RECIPE_PARAM --edited=1\n")
        run_snakemake(base, cfg, check=False, timeout=120)
        assert snapshot(sentinel) == before
        _no_success_without_fresh_products(layout, specs, log)


def _hostile_link(link: str, sentinel: Path, spec: ABSpec, dfo: dict, layout: StateLayout) -> None:
    """A symbolic link where abflow writes, pointing into the sentinel tree."""
    job = JobId(Step.PROCESS_AB, spec.name)
    raw = Path(dfo["raw_dir"], DATE, spec.raw_names()[0])
    places = {
        "work": Path(layout.work(job)),
        "log": Path(layout.log(job)),
        "staging": raw.parent / f".{raw.name}.abflow-download.{os.uname().nodename}:1:1",
        "products": Path(dfo["product_dir"], spec.raw_type, DATE, f"{spec.root}_0000.fits"),
    }
    if link in places:
        places[link].parent.mkdir(parents=True, exist_ok=True)
        target = sentinel / ("keep.fits" if link in ("log", "products") else "sub")
        places[link].symlink_to(target)


def _no_success_without_fresh_products(layout: StateLayout, specs: list, log: Path) -> None:
    """Every SUCCESSFUL AB's products are whole and carry the token of its latest attempt."""
    attempts: dict[str, str] = {}
    if log.exists():
        for line in log.read_text().splitlines():
            ab, token, _mode = line.split()
            attempts[ab] = token
    for spec in specs:
        path = Path(layout.record(JobId(Step.PROCESS_AB, spec.name)))
        if not path.exists():
            continue
        record = json.loads(path.read_text())
        assert record["status"] == "SUCCESSFUL"
        for product in record["products"]:
            data = Path(product["path"]).read_bytes()
            assert len(data) == 5760 and b"END" in data[:2880], product
            assert attempts[spec.name].encode() in data, f"{spec.name}: a stale product counted"


def test_a_full_state_directory_refuses_the_run_cleanly(tmp_path, dfo) -> None:
    """The state directory's filesystem is full (a 256 KiB tmpfs, filled): the run says so
    and starts nothing, no traceback, and no lock stays behind."""
    write_night(fan_cascade([1]), dfo["ab_dir"], dfo["mon_dir"], DATE)
    state = Path(dfo["job_dir"], "abflow")
    state.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(state)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        if os.environ.get("ABFLOW_REQUIRE_TOOLS") == "1":
            pytest.fail(f"cannot mount a tmpfs: {mounted.stderr}")
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        subprocess.run(
            ["dd", "if=/dev/zero", f"of={state / 'fill'}", "bs=4k"],
            capture_output=True,
            check=False,
        )
        cfg = write_config(tmp_path / "c.yaml", dfo)
        run = run_snakemake(tmp_path, cfg, check=False)
    finally:
        subprocess.run(["umount", str(state)], check=False)
    said = run.stdout + run.stderr
    assert run.returncode != 0 and "No space left on device" in said and "nothing was run" in said
    assert "Traceback" not in said
    assert not list(Path(dfo["mon_dir"], ".abflow").glob("*.run.json"))
