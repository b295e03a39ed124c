"""What abflow protects (README), the fast part: refusals at `abflow check`, products that
count only when this attempt wrote them whole, removals and writes that never follow a link
out of the configured directories, locks, stops and take-overs that belong to one night, and a
rerun's products installed all at once or not at all.

The cases that need real Snakemake runs, a full filesystem and the property test are in
tests/test_protects_runs.py.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import DATE, write_config

from abflow.cli import main
from abflow.example.generate import ABSpec, ab_name, write_night
from abflow.job.command import JobCommand
from abflow.job.main import JobFailed, execute
from abflow.model.config import resolve
from abflow.model.load import load_night
from abflow.model.night import NightError
from abflow.state.fsutil import remove_tree, replace_all
from abflow.state.layout import JobId, StateLayout, Step

BATCH = f"CALIB_{DATE}"


def problems_of(dfo: dict[str, str], **config: object) -> list[str]:
    """The problems load_night finds in the night of ``dfo`` ([] if it loads)."""
    try:
        load_night(resolve({"date": DATE, "dfo": dfo, **config}))
    except NightError as exc:
        return [str(p) for p in exc.problems]
    return []


def product_of(dfo: dict[str, str], spec: ABSpec, i: int = 0) -> Path:
    return Path(dfo["product_dir"], spec.raw_type, DATE, f"{spec.root}_{i:04d}.fits")


# ----------------------------------------------------------------------- 1. abflow check
def test_a_product_that_is_a_certified_calibration_of_the_night_is_refused(dfo, capsys) -> None:
    """An AB whose PRODUCTS names the master bias another AB reads as MCALIB REAL (an
    earlier night's, still in the product tree): refused by abflow check, with file and
    line, and the file is untouched."""
    bias = Path(dfo["product_dir"], "BIAS", "2013-01-20", "r.SYNTH.2013-01-20T00:00:01.000.fits")
    bias.parent.mkdir(parents=True)
    bias.write_bytes(b"certified")
    reader = ABSpec(ab_name(2), "DARK", real_mcalibs=[(str(bias), "MASTER_BIAS")])
    writer = ABSpec(ab_name(1), extra_lines=[f"PRODUCTS  {bias}  MASTER_BIAS"])
    write_night([writer, reader], dfo["ab_dir"], dfo["mon_dir"], DATE)
    cfg = write_config(Path(dfo["ab_dir"]).parent / "c.yaml", dfo)
    assert main(["check", "--configfile", str(cfg)]) != 0
    err = capsys.readouterr().err
    where = f"{dfo['ab_dir']}/{writer.name}:"
    line = [ln for ln in err.splitlines() if where in ln and str(bias) in ln]
    assert line, err
    assert "is an input of the night (MCALIB REAL" in line[0]
    assert bias.read_bytes() == b"certified"


def test_a_rawfile_that_another_ab_writes_is_refused(dfo) -> None:
    """B reads A's product as a RAWFILE: no dependency would order them, and A's run would
    replace a file B reads; refused at A's PRODUCTS line, naming B's RAWFILE line."""
    a = ABSpec(ab_name(1))
    b = ABSpec(ab_name(2), "FLAT")
    b.extra_lines = [f"RAWFILE  {product_of(dfo, a)}  FLAT"]
    write_night([a, b], dfo["ab_dir"], dfo["mon_dir"], DATE)
    found = problems_of(dfo)
    assert any(f"{a.name}:" in p and f"RAWFILE of {dfo['ab_dir']}/{b.name}:" in p for p in found), (
        found
    )


def test_a_product_directory_linked_into_the_calibrations_is_refused(dfo, tmp_path) -> None:
    """The product tree's FLAT directory is a link into $DFO_CAL_DIR: resolved, the products
    would land among certified calibrations."""
    os.symlink(dfo["cal_dir"], os.path.join(dfo["product_dir"], "FLAT"))
    write_night([ABSpec(ab_name(1), "FLAT")], dfo["ab_dir"], dfo["mon_dir"], DATE)
    found = problems_of(dfo)
    assert any("lies under $DFO_CAL_DIR (certified calibrations)" in p for p in found), found


def test_another_nights_product_is_refused_with_its_record(dfo) -> None:
    """The records of the state directory (every night kept there) say who made a file."""
    mine = ABSpec(ab_name(1))
    write_night([mine], dfo["ab_dir"], dfo["mon_dir"], DATE)
    settings = resolve({"date": DATE, "dfo": dfo})
    target = product_of(dfo, mine)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"theirs")
    record = StateLayout(settings.state_dir).record(JobId(Step.PROCESS_AB, "OTHER.ab"))
    os.makedirs(os.path.dirname(record))
    Path(record).write_text(
        json.dumps({"ab": "OTHER.ab", "status": "SUCCESSFUL", "products": [{"path": str(target)}]})
    )
    found = problems_of(dfo)
    assert any("is the product of AB OTHER.ab" in p and record in p for p in found), found
    # the AB's own record: its earlier product, replaced as usual
    Path(record).write_text(
        json.dumps({"ab": mine.name, "status": "SUCCESSFUL", "products": [{"path": str(target)}]})
    )
    assert problems_of(dfo) == []


def test_an_existing_file_without_record_is_replaced_only_under_the_abs_own_root_name(
    dfo,
) -> None:
    spec = ABSpec(ab_name(1))
    foreign = Path(dfo["product_dir"], "BIAS", DATE, "GI_MBIA_130212A.fits")
    spec.extra_lines = [f"PRODUCTS  {foreign}  X"]
    write_night([spec], dfo["ab_dir"], dfo["mon_dir"], DATE)
    assert problems_of(dfo) == []  # absent: nothing to protect
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"someone's")
    found = problems_of(dfo)
    assert any(
        str(foreign) in p and "does not carry the AB's PROD_ROOT_NAME" in p for p in found
    ), found
    # its own earlier product (a run of DFOS itself, a lost state directory): fine
    foreign.unlink()
    product_of(dfo, spec).write_bytes(b"earlier")
    assert problems_of(dfo) == []


def test_a_directory_linking_outside_every_root_is_refused_a_linked_root_is_fine(
    dfo, tmp_path
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(outside, os.path.join(dfo["raw_dir"], DATE))
    spec = ABSpec(ab_name(1))
    write_night([spec], dfo["ab_dir"], dfo["mon_dir"], DATE)
    found = problems_of(dfo)
    assert any(
        f"{dfo['raw_dir']}/{DATE} resolves to {outside}" in p and f"{spec.name}:" in p
        for p in found
    ), found
    # the raw root itself a link to a big disk (as DFOS trees have it): fine
    os.unlink(os.path.join(dfo["raw_dir"], DATE))
    disk = tmp_path / "bigdisk"
    os.rename(dfo["raw_dir"], disk)
    os.symlink(disk, dfo["raw_dir"])
    assert problems_of(dfo) == []


def test_a_virtual_calibration_bound_by_root_name_needs_a_place(dfo) -> None:
    """A parent matched only by PROD_ROOT_NAME must say where its product lands; when it
    does, its job must leave that product too (the child would read a file nobody made)."""
    parent = ABSpec(ab_name(1), n_products=0)
    child = ABSpec(ab_name(2), "FLAT", parents=[parent.name])
    write_night([parent, child], dfo["ab_dir"], dfo["mon_dir"], DATE)
    night = load_night(resolve({"date": DATE, "dfo": dfo}))
    implied = night[parent.name].implied_products
    assert implied == ((str(product_of(dfo, parent)), "MASTER_CAL"),)
    ab_file = Path(dfo["ab_dir"], parent.name)
    ab_file.write_text(ab_file.read_text().replace("PROD_PATH", "#PROD_PATH"))
    found = problems_of(dfo)
    assert any(
        "has neither PROD_PATH nor PRODUCTS" in p and f"{child.name}:" in p for p in found
    ), found


# ----------------------------------------------------------------------- 2. this attempt's
FITS_HEADER = (b"SIMPLE  =                    T" + b" " * 50 + b"END" + b" " * 77).ljust(2880)


def ab_command(dfo: dict[str, str], state: str, spec: ABSpec, shell: str, **extra) -> JobCommand:
    """The job of ``spec`` checking its products, as the workflow builds it."""
    products = [(str(product_of(dfo, spec)), "MASTER_BIAS")]
    env = [("DFS_PRODUCT", dfo["product_dir"])]
    return JobCommand(
        JobId(Step.PROCESS_AB, spec.name),
        config="c",
        state_dir=state,
        shell=shell,
        env=env,
        products=products,
        batch=BATCH,
        log=str(Path(state, "logs", spec.name + ".log")),
        record=str(Path(state, "records", spec.name + ".json")),
        **extra,
    )


@pytest.mark.parametrize(
    ("write", "why"),
    [
        (":", "not written by this attempt"),  # a rerun that writes nothing
        ("printf '' > {p}", "empty"),
        ("head -c 1000 {fits} > {p}", "incomplete FITS file (1000 bytes"),
        ("head -c 2880 {fits} | sed s/END/XYZ/ > {p}", "a header without its END card"),
        ("cp {fits} {p}", ""),
        ("printf text > {p}", ""),  # not FITS: the recipe's business
    ],
)
def test_an_ab_succeeds_only_on_whole_products_this_attempt_wrote(dfo, tmp_path, write, why):
    spec = ABSpec(ab_name(1))
    state = str(tmp_path / "state")
    fits = tmp_path / "whole.fits"
    fits.write_bytes(FITS_HEADER)
    target = product_of(dfo, spec)
    target.parent.mkdir(parents=True)
    target.write_bytes(FITS_HEADER)  # the previous run's good product
    shell = write.format(p=target, fits=fits)
    record = Path(state, "records", spec.name + ".json")
    if why:
        with pytest.raises(JobFailed, match="do not count"):
            execute(ab_command(dfo, state, spec, shell))
        assert not record.exists()
        note = json.loads(
            Path(StateLayout(state).failure(JobId(Step.PROCESS_AB, spec.name))).read_text()
        )
        assert why in note["reason"] and str(target) in note["reason"]
    else:
        execute(ab_command(dfo, state, spec, shell))
        assert json.loads(record.read_text())["status"] == "SUCCESSFUL"
    assert not list(target.parent.glob(".*abflow-attempt"))  # the markers are gone


def test_a_stale_product_with_a_future_modification_time_does_not_count(dfo, tmp_path) -> None:
    """`touch -d tomorrow`, `cp -p` from a host whose clock is ahead: the modification time
    says nothing; the inode change time, which nobody can set, does."""
    spec = ABSpec(ab_name(1))
    target = product_of(dfo, spec)
    target.parent.mkdir(parents=True)
    target.write_bytes(FITS_HEADER)
    future = time.time() + 86400
    os.utime(target, (future, future))
    time.sleep(0.02)
    with pytest.raises(JobFailed, match="not written by this attempt"):
        execute(ab_command(dfo, str(tmp_path / "state"), spec, "true"))


def test_a_join_counts_what_its_detectors_wrote_before_it_started(dfo, tmp_path) -> None:
    """A multi-detector AB's join installs what its detector jobs wrote (renamed: their
    modification time is the detectors'); it compares with the detectors' marks."""
    spec = ABSpec(ab_name(1))
    state = str(tmp_path / "state")
    target = product_of(dfo, spec)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"previous")
    time.sleep(0.02)
    staged = tmp_path / "det1.fits"
    det = ab_command(dfo, state, spec, f"printf det > {staged}")
    det = det.replace(
        job=JobId(Step.PROCESS_AB_DET, spec.name, 1),
        record=StateLayout(state).record(JobId(Step.PROCESS_AB_DET, spec.name, 1)),
    )
    execute(det)
    marks = json.loads(Path(det.record).read_text())["attempt_marks"]
    assert list(marks) == [str(target.parent)]
    time.sleep(0.02)
    join = ab_command(dfo, state, spec, f"mv {staged} {target}")
    execute(join.replace(job=JobId(Step.MEF_JOIN, spec.name)))
    assert target.read_bytes() == b"det"
    # a join that installs nothing does not pass on the previous run's product (its detector
    # jobs ran again after it: their marks are later)
    time.sleep(0.02)
    execute(det.replace(shell=f"printf det > {staged}"))
    with pytest.raises(JobFailed, match="not written by this attempt"):
        execute(join.replace(job=JobId(Step.MEF_JOIN, spec.name), shell="true"))


# ----------------------------------------------------------------------- 3. resolved paths
def test_removing_a_link_removes_the_link_never_what_it_points_to(tmp_path) -> None:
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "keep").write_text("x")
    link = tmp_path / "staging"
    link.symlink_to(sentinel)
    remove_tree(str(link))
    assert not link.exists() and (sentinel / "keep").read_text() == "x"


def test_a_staging_directory_that_is_a_link_empties_nothing_outside(dfo, tmp_path) -> None:
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "keep").write_text("x")
    dest = Path(dfo["raw_dir"], DATE, "X.fits")
    dest.parent.mkdir(parents=True)
    staged = dest.parent / ".X.fits.abflow-download.h:1:1" / "X.fits"
    staged.parent.symlink_to(sentinel)
    state = str(tmp_path / "state")
    command = JobCommand(
        JobId(Step.DOWNLOAD_RAW, f"{DATE}/X.fits"),
        config="c",
        state_dir=state,
        shell=f"printf data > {staged}",
        dest=str(dest),
        staged=str(staged),
        env=[("DFO_RAW_DIR", dfo["raw_dir"])],
        batch=BATCH,
        log=str(Path(state, "logs", "x.log")),
    )
    execute(command)
    assert dest.read_text() == "data"
    assert sorted(p.name for p in sentinel.iterdir()) == ["keep"]


@pytest.mark.parametrize("where", ["work", "log"])
def test_a_job_never_writes_through_a_link_out_of_its_directories(dfo, tmp_path, where) -> None:
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "keep").write_text("x")
    spec = ABSpec(ab_name(1))
    state = str(tmp_path / "state")
    command = ab_command(dfo, state, spec, f"cp /dev/null {product_of(dfo, spec)}")
    layout = StateLayout(state)
    if where == "work":
        os.makedirs(os.path.dirname(layout.work(command.job)), exist_ok=True)
        os.symlink(sentinel, layout.work(command.job))  # the work directory, linked out
        expected = "outside the configured directories"
    else:
        os.makedirs(os.path.dirname(command.log))
        os.symlink(sentinel / "keep", command.log)  # the log, linked to a file outside
        expected = "outside the configured directories"
    with pytest.raises(JobFailed, match=expected):
        execute(command)
    assert sorted(p.name for p in sentinel.iterdir()) == ["keep"]
    assert (sentinel / "keep").read_text() == "x"


# ----------------------------------------------------------------------- 4. nights apart
def test_a_stop_belongs_to_one_night_and_a_start_clears_only_its_own(tmp_path) -> None:
    from abflow.state.runstate import register_run, request_stop, stop_requested

    state = str(tmp_path / "state")
    request_stop(state, ["CALIB_2013-02-12"])
    assert stop_requested(state, ["CALIB_2013-02-12"])
    assert not stop_requested(state, ["CALIB_2013-02-13"])  # another night runs on
    register_run(state, ["CALIB_2013-02-13"])  # another night starting
    assert stop_requested(state, ["CALIB_2013-02-12"])  # does not clear it


def _contend(state: str, mon: str, go: str, out: str) -> None:
    """A run taking the night's locks once ``go`` exists (another process)."""
    from abflow.state.runstate import RunLocked, register_run

    while not os.path.exists(go):
        time.sleep(0.001)
    try:
        register_run(state, [BATCH], mon_dir=mon)
        result = "took"
    except RunLocked:
        result = "refused"
    Path(out).write_text(result)
    time.sleep(1.5)  # alive while the other one looks


def test_of_two_runs_taking_over_a_stale_lock_exactly_one_gets_it(tmp_path, monkeypatch) -> None:
    """The take-over reads and replaces the lock under its guard's flock: a contender that
    read the stale lock cannot replace the lock the other has just taken. A pause injected
    between the read and the write (process_alive) makes the race certain without it."""
    from abflow.state import runstate

    state, mon = str(tmp_path / "state"), str(tmp_path / "mon")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = {"pid": dead.pid, "host": os.uname().nodename, "start": "x", "proc_start": 1.0}
    for path in (StateLayout(state).lock(BATCH), runstate.night_lock(mon, BATCH)):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Path(path).write_text(json.dumps(stale))
    slow = runstate.process_alive

    def pausing(info: dict) -> bool:
        time.sleep(0.3)  # both contenders have read the stale lock by now, unguarded
        return slow(info)

    monkeypatch.setattr(runstate, "process_alive", pausing)
    go = str(tmp_path / "go")
    ctx = multiprocessing.get_context("fork")
    outs = [str(tmp_path / f"out{i}") for i in range(2)]
    procs = [ctx.Process(target=_contend, args=(state, mon, go, o)) for o in outs]
    for proc in procs:
        proc.start()
    Path(go).touch()
    for proc in procs:
        proc.join(20)
    assert sorted(Path(o).read_text() for o in outs) == ["refused", "took"]


def _hold(state: str, mon: str, held: str) -> None:
    """A run holding the night (another process) until it is killed."""
    from abflow.state.runstate import register_run

    register_run(state, [BATCH], mon_dir=mon)
    Path(held).touch()
    time.sleep(60)


def test_the_same_night_from_a_second_state_directory_is_refused(dfo, tmp_path) -> None:
    """One lock per night (beside its AB list), whatever state directory a run uses."""
    from abflow.state.runstate import RunLocked, register_run

    held = tmp_path / "held"
    other = multiprocessing.get_context("fork").Process(
        target=_hold, args=(str(tmp_path / "one"), dfo["mon_dir"], str(held))
    )
    other.start()
    try:
        while not held.exists():
            time.sleep(0.01)
        with pytest.raises(RunLocked, match=f"with the state directory {tmp_path / 'one'}"):
            register_run(str(tmp_path / "two"), [BATCH], mon_dir=dfo["mon_dir"])
        assert not os.path.exists(StateLayout(str(tmp_path / "two")).lock(BATCH))
    finally:
        other.kill()
        other.join()
    run = register_run(str(tmp_path / "two"), [BATCH], mon_dir=dfo["mon_dir"])
    # taken over from the crashed run, which used the other state directory: its orphans are
    # ended there (abflow.run.lifecycle)
    assert [r["state_dir"] for r in run["replaced"]] == [str(tmp_path / "one")]
    assert run["lineage"]


def test_two_nights_downloading_one_file_the_losers_failure_keeps_the_winners(
    dfo, tmp_path
) -> None:
    """Each night stages its own copy; the loser fails once the winner placed the file: the
    file stays, and the loser's download counts as done (the file is complete)."""

    dest = Path(dfo["cal_dir"], "2013-02-10", "M.fits")
    dest.parent.mkdir(parents=True)
    state = str(tmp_path / "state")
    errors: list[BaseException] = []

    def download(owner: str, shell: str) -> None:
        staged = str(dest.parent / f".M.fits.abflow-download.{owner}" / "M.fits")
        command = JobCommand(
            JobId(Step.DOWNLOAD_MCAL, "2013-02-10/M.fits"),
            config="c",
            state_dir=state,
            shell=shell.format(s=staged),
            dest=str(dest),
            staged=staged,
            env=[("DFO_CAL_DIR", dfo["cal_dir"])],
            log=str(Path(state, "logs", owner + ".log")),
        )
        try:
            execute(command)
        except BaseException as exc:
            errors.append(exc)

    loser = threading.Thread(
        target=download,
        args=("h:2:2", f"while [ ! -e {dest} ]; do sleep 0.01; done; printf half > {{s}}; exit 1"),
    )
    loser.start()
    download("h:1:1", "printf winner > {s}")
    loser.join(10)
    assert dest.read_text() == "winner" and errors == []
    assert not [p for p in dest.parent.iterdir() if p.name != "M.fits"]  # no staging left


# ----------------------------------------------------------------------- 5. all or nothing
def test_a_failed_install_puts_every_previous_product_back(tmp_path, monkeypatch) -> None:
    products = tmp_path / "products"
    products.mkdir()
    old = {products / f"p{i}.fits": f"old{i}" for i in range(3)}
    for path, text in old.items():
        path.write_text(text)
    new = []
    for i, path in enumerate(old):
        source = tmp_path / f"new{i}"
        source.write_text(f"new{i}")
        new.append((str(source), str(path)))
    real_replace = os.replace
    calls = []

    def failing(src, dst):  # the third swap fails (a full disk, a yanked mount)
        calls.append(dst)
        if len([c for c in calls if str(c).endswith(".fits")]) == 3:
            raise OSError(28, "No space left on device", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError):
        replace_all(new)
    monkeypatch.setattr(os, "replace", real_replace)
    assert {p: p.read_text() for p in old} == old
    assert sorted(p.name for p in products.iterdir()) == sorted(p.name for p in old)


# ----------------------------------------------------------------------- an operator's attacks
def test_process_ab_never_works_through_a_linked_working_directory(dfo, tmp_path) -> None:
    """`abflow process-ab` in the state layout's working directory, which is a link out:
    refused before anything is removed or written there."""
    from abflow.example.processab import ProcessError, process_ab

    sentinel = tmp_path / "sentinel"
    (sentinel / "out").mkdir(parents=True)
    (sentinel / "out" / "precious.fits").write_text("precious")
    spec = ABSpec(ab_name(1), n_raw=1)
    write_night([spec], dfo["ab_dir"], dfo["mon_dir"], DATE)
    settings = resolve({"date": DATE, "dfo": dfo})
    work = Path(settings.layout.work(JobId(Step.PROCESS_AB, spec.name)))
    work.parent.mkdir(parents=True)
    work.symlink_to(sentinel)
    with pytest.raises(ProcessError, match="outside the configured directories"):
        process_ab(os.path.join(dfo["ab_dir"], spec.name), settings)
    assert sorted(p.name for p in sentinel.rglob("*")) == ["out", "precious.fits"]


def test_status_export_never_writes_through_a_link(dfo, tmp_path, capsys) -> None:
    spec = ABSpec(ab_name(1))
    write_night([spec], dfo["ab_dir"], dfo["mon_dir"], DATE)
    export = tmp_path / "export"
    export.mkdir()
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (export / DATE).symlink_to(sentinel)
    cfg = write_config(tmp_path / "c.yaml", dfo, status_export_dir=str(export))
    assert main(["status", "-F", "--configfile", str(cfg)]) == 1
    assert "not exported (-F)" in capsys.readouterr().err
    assert list(sentinel.iterdir()) == []


def test_a_crashed_nights_orphans_are_ended_from_another_state_directory(dfo, tmp_path) -> None:
    """The night crashed with state directory one and starts again with two: the night's own
    lock names the crashed run and where its jobs are marked; its orphan is ended."""
    from abflow.run.lifecycle import finish_run, start_run
    from abflow.state.fsutil import atomic_write_json
    from abflow.state.runstate import night_lock

    spec = ABSpec(ab_name(1))
    write_night([spec], dfo["ab_dir"], dfo["mon_dir"], DATE)
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = os.uname().nodename
    crashed = {
        "pid": dead.pid,
        "host": here,
        "start": "x",
        "proc_start": 1.0,
        "owner": f"{here}:{dead.pid}:1",
        "state_dir": one,
        "batch": BATCH,
    }
    atomic_write_json(night_lock(dfo["mon_dir"], BATCH), crashed)
    orphan = subprocess.Popen(["sleep", "60"], start_new_session=True)
    job = JobId(Step.PROCESS_AB, spec.name)
    atomic_write_json(
        StateLayout(one).marker(job, "x"),
        {
            "name": job.name,
            "host": here,
            "pid": orphan.pid,
            "start": time.time(),
            "pgid": orphan.pid,
            "owner": crashed["owner"],
        },
    )
    night = load_night(resolve({"date": DATE, "dfo": dfo, "state_dir": two}))
    said: list[str] = []
    reaped: list[int] = []  # (reaped at once, as init reaps a real orphan)
    reaper = threading.Thread(target=lambda: reaped.append(orphan.wait()))
    reaper.start()
    try:
        lock = start_run(night, "local", said.append)
        reaper.join(20)
        assert reaped == [-15], said
        assert any("ended process_ab/" in s for s in said), said
    finally:
        orphan.kill()
        orphan.wait()

    class Page:
        def stop(self) -> None:
            pass

    finish_run(night, Page(), lock)
    assert not os.path.exists(night_lock(dfo["mon_dir"], BATCH))


def test_two_jobs_writing_one_product_at_once_the_second_is_refused(dfo, tmp_path) -> None:
    """Another night's AB names this AB's product while this one runs: the attempt markers
    say which products a running job writes, and the second job refuses to start."""

    a, b = ABSpec(ab_name(1)), ABSpec(ab_name(2))
    go, product = tmp_path / "go", product_of(dfo, a)
    waits = f"while [ ! -e {go} ]; do sleep 0.02; done; cp {tmp_path}/w {product}"
    first = ab_command(dfo, str(tmp_path / "s1"), a, waits)
    (tmp_path / "w").write_bytes(FITS_HEADER)
    second = ab_command(dfo, str(tmp_path / "s2"), b, f"cp {tmp_path}/w {product}")
    second = second.replace(products=first.products)
    errors: list[BaseException] = []
    runner = threading.Thread(target=lambda: execute(first))
    runner.start()
    while not list(product.parent.glob(".*abflow-attempt")):
        time.sleep(0.01)
    try:
        execute(second)
    except JobFailed as exc:
        errors.append(exc)
    go.touch()
    runner.join(20)
    assert errors and "is being written by process_ab/" + a.name in str(errors[0])
    assert json.loads(Path(first.record).read_text())["status"] == "SUCCESSFUL"


def test_process_ab_installs_neither_another_abs_product_nor_over_a_predicted_name(
    dfo, tmp_path
) -> None:
    from abflow.example.processab import ProcessError, Product, assign_products, install_products
    from abflow.model.ab import read_ab

    a, b = ABSpec(ab_name(1)), ABSpec(ab_name(2))
    write_night([a, b], dfo["ab_dir"], dfo["mon_dir"], DATE)
    settings = resolve({"date": DATE, "dfo": dfo})
    theirs = product_of(dfo, a)
    theirs.parent.mkdir(parents=True)
    theirs.write_text("certified")
    record = Path(settings.layout.record(JobId(Step.PROCESS_AB, a.name)))
    record.parent.mkdir(parents=True)
    record.write_text(
        json.dumps({"ab": a.name, "status": "SUCCESSFUL", "products": [{"path": str(theirs)}]})
    )
    ab_b, _ = read_ab(os.path.join(dfo["ab_dir"], b.name), settings.variables)
    ab_b.products[0] = ab_b.products[0]._replace(path=str(theirs))
    out = tmp_path / "out.fits"
    out.write_text("new")
    with pytest.raises(ProcessError, match=f"is the product of AB {a.name}"):
        install_products(ab_b, settings, [Product(str(out), "MASTER_BIAS")], print)
    assert theirs.read_text() == "certified"
    # an output the AB did not predict never lands on a PRODUCTS path (another tag's)
    ab_a, _ = read_ab(os.path.join(dfo["ab_dir"], a.name), settings.variables)
    named = str(tmp_path / os.path.basename(ab_a.products[0].path))
    moves, missing = assign_products(
        ab_a, [Product(str(out), "MASTER_BIAS"), Product(named, "QC_TABLE")]
    )
    assert missing == [] and [d for _s, d in moves] == [ab_a.products[0].path]


def test_process_ab_downloads_in_a_staging_directory(dfo, tmp_path) -> None:
    """A failed download of a missing input leaves nothing under its name."""
    from abflow.example.processab import ProcessError, fetch_missing
    from abflow.model.ab import read_ab

    spec = ABSpec(ab_name(1), n_raw=1)
    write_night([spec], dfo["ab_dir"], dfo["mon_dir"], DATE)
    settings = resolve(
        {"date": DATE, "dfo": dfo, "commands": {"download": "printf HALF > {dest}; exit 1"}}
    )
    ab, _ = read_ab(os.path.join(dfo["ab_dir"], spec.name), settings.variables)
    with pytest.raises(ProcessError, match="download failed"):
        fetch_missing(ab, settings, print)
    raw = Path(dfo["raw_dir"], DATE)
    assert list(raw.iterdir()) == []


def test_a_run_does_not_start_where_a_state_directory_links_out(dfo, tmp_path) -> None:
    """Snakemake itself creates its jobs' log directories and empty logs: a directory of the
    state directory that links outside refuses the run before anything is written."""
    from abflow.run.lifecycle import StartRefused, start_run

    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    write_night([ABSpec(ab_name(1))], dfo["ab_dir"], dfo["mon_dir"], DATE)
    night = load_night(resolve({"date": DATE, "dfo": dfo}))
    logs = Path(night.settings.state_dir, "logs")
    logs.parent.mkdir(parents=True)
    logs.symlink_to(sentinel)
    with pytest.raises(StartRefused, match=f"{logs} is a symbolic link to {sentinel}"):
        start_run(night, "local", print)
    assert list(sentinel.iterdir()) == []
    assert not os.path.exists(night.settings.layout.lock(BATCH))


@pytest.mark.parametrize("date", ["2013-02-30", "2013-13-01"])
def test_an_impossible_date_is_a_message(dfo, tmp_path, capsys, date) -> None:
    cfg = write_config(tmp_path / "c.yaml", dfo)
    cfg.write_text(cfg.read_text().replace(f"'{DATE}'", date).replace(DATE, date))
    for argv in (["check"], ["status", "-d", date]):
        assert main([*argv, "--configfile", str(cfg)]) == 2
        assert f"'{date}' is not a calendar date" in capsys.readouterr().err


def test_a_log_tail_starts_lines_only_at_newlines(tmp_path) -> None:
    from abflow.job.runner import tail

    log = tmp_path / "x.log"
    log.write_text("progress 50%\rabflow: 2 of 2 ABs succeeded\nx\x0cy\u2028z\n")
    assert tail(str(log)) == ["progress 50%\rabflow: 2 of 2 ABs succeeded", "x\x0cy\u2028z"]


def test_status_of_a_night_run_from_another_state_directory_leaves_its_page(
    dfo, tmp_path, capsys
) -> None:
    from abflow.state.fsutil import atomic_write_json
    from abflow.state.runstate import night_lock, owner_id, process_start

    write_night([ABSpec(ab_name(1))], dfo["ab_dir"], dfo["mon_dir"], DATE)
    atomic_write_json(
        night_lock(dfo["mon_dir"], BATCH),
        {
            "pid": os.getpid(),
            "host": os.uname().nodename,
            "start": "now",
            "batch": BATCH,
            "proc_start": process_start(os.getpid()),
            "owner": owner_id(),
            "state_dir": str(tmp_path / "elsewhere"),
        },
    )
    cfg = write_config(tmp_path / "c.yaml", dfo)
    assert main(["status", "--configfile", str(cfg)]) == 1
    assert f"with the state directory {tmp_path / 'elsewhere'}" in capsys.readouterr().err
    assert not Path(dfo["mon_dir"], f"status_{DATE}.html").exists()


@pytest.mark.parametrize("content", [{}, {"status": "FAILED"}, {"ab": "OTHER.ab"}])
def test_a_record_that_does_not_say_this_ab_succeeded_is_not_done(dfo, content) -> None:
    from abflow.run.rules import RunScope

    spec = ABSpec(ab_name(1))
    write_night([spec], dfo["ab_dir"], dfo["mon_dir"], DATE)
    settings = resolve({"date": DATE, "dfo": dfo})
    path = Path(settings.layout.record(JobId(Step.PROCESS_AB, spec.name)))
    path.parent.mkdir(parents=True)
    good = {"ab": spec.name, "status": "SUCCESSFUL", "products": []}
    path.write_text(json.dumps({**good, **content} if content else {}))
    scope = RunScope(load_night(settings))  # (another AB's record content claims nothing)
    assert scope.unreadable == {spec.name} and spec.name in scope.to_run
    assert scope.rerun_request(spec.name)


@pytest.mark.parametrize("content", [{}, {"status": "FAILED"}, {"ab": "OTHER.ab"}, None])
def test_cal_cleanup_keeps_the_raw_files_of_an_ab_whose_record_is_not_its_success(
    dfo, content
) -> None:
    """A record copied from another AB, failed or empty does not make the AB finished: its
    raw files stay for its rerun (None: its own success, whose raw files go)."""
    from abflow.run.cleanup import removable_raw_files

    spec = ABSpec(ab_name(1))
    write_night([spec], dfo["ab_dir"], dfo["mon_dir"], DATE)
    settings = resolve({"date": DATE, "dfo": dfo, "qc_mode": "IMPLICIT"})
    path = Path(settings.layout.record(JobId(Step.PROCESS_AB, spec.name)))
    path.parent.mkdir(parents=True)
    good = {"ab": spec.name, "status": "SUCCESSFUL", "products": []}
    path.write_text(json.dumps(good if content is None else {**good, **content} if content else {}))
    night = load_night(settings)
    removed, kept = removable_raw_files(night)
    raw = sorted(night[spec.name].raw_inputs)
    assert raw and kept == []
    assert removed == (raw if content is None else [])


def test_a_configured_directory_with_shell_characters_is_refused(dfo, tmp_path, capsys) -> None:
    """A command that parses its arguments again (eval, sh -c, ssh) must not find anything
    a shell would act on in a directory name."""
    hostile = tmp_path / "ab$(touch PWNED)"
    hostile.mkdir()
    cfg = write_config(tmp_path / "c.yaml", dfo)
    assert main(["check", "--configfile", str(cfg), "--config", f"dfo.ab_dir={hostile}"]) == 2
    assert "a configured directory may use only letters" in capsys.readouterr().err
