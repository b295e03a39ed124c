"""run_step: the AB job's working directory, log, completion record and failure note."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from abflow.job.runner import StepFailed, StepRun, run_step
from abflow.state.fsutil import read_json_object as read_record


def make_step(tmp_path: Path, command: str, **kw) -> StepRun:
    return StepRun(
        ab="A.ab",
        step="process_ab",
        command=command,
        workdir=str(tmp_path / "work" / "A.ab"),
        log_path=str(tmp_path / "logs" / "A.ab.log"),
        record_path=str(tmp_path / "records" / "A.ab.json"),
        failed_path=str(tmp_path / "failed" / "A.ab.json"),
        **kw,
    )


def test_success_writes_the_record_with_products_and_runs_in_a_fresh_workdir(tmp_path) -> None:
    product = tmp_path / "products" / "r.A_0000.fits"
    stale = tmp_path / "work" / "A.ab" / "half_written.fits"
    stale.parent.mkdir(parents=True)
    stale.write_text("torn")
    step = make_step(
        tmp_path,
        f"ls; echo $MY_VAR; mkdir -p {product.parent} && printf data > {product}",
        env={"MY_VAR": "hello"},
        products=[(str(product), "MASTER_BIAS")],
        info={"recipe": "x"},
        files={"inputs.json": {"k": 1}},
    )
    record = run_step(step)
    on_disk = json.loads(Path(step.record_path).read_text())
    assert on_disk == record
    assert record["status"] == "SUCCESSFUL" and record["exit_code"] == 0
    assert record["products"] == [{"path": str(product), "tag": "MASTER_BIAS", "bytes": 4}]
    assert record["recipe"] == "x" and record["command"] == step.command
    log = Path(step.log_path).read_text()
    assert "half_written" not in log  # the workdir was emptied first
    assert "inputs.json" in log and "hello" in log
    assert "SUCCESSFUL" in log.splitlines()[-1]
    assert not os.path.exists(step.failed_path)
    assert [p.name for p in Path(step.record_path).parent.iterdir()] == ["A.ab.json"]


def test_failure_writes_no_record_but_a_failure_note_with_the_log_tail(tmp_path) -> None:
    step = make_step(tmp_path, "echo recipe output; echo boom >&2; exit 3")
    with pytest.raises(StepFailed) as info:
        run_step(step)
    assert "command exited 3" in str(info.value) and "boom" in str(info.value)
    assert not os.path.exists(step.record_path)
    note = json.loads(Path(step.failed_path).read_text())
    assert note["status"] == "FAILED" and note["exit_code"] == 3
    assert "boom" in note["log_tail"]


def test_missing_products_fail_the_step_unless_the_check_is_off(tmp_path) -> None:
    products = [(str(tmp_path / "nope.fits"), "X")]
    step = make_step(tmp_path, "true", products=products)
    with pytest.raises(StepFailed, match="expected product"):
        run_step(step)
    assert not os.path.exists(step.record_path)
    step = make_step(tmp_path, "true", products=products, check_products=False)
    record = run_step(step)
    assert record["missing_products"] == [products[0][0]]
    assert not os.path.exists(step.failed_path)  # a success clears the earlier failure note


def test_killed_command_is_reported_as_a_signal(tmp_path) -> None:
    step = make_step(tmp_path, "kill -SEGV $$")
    with pytest.raises(StepFailed, match="signal 11"):
        run_step(step)


def test_read_record_treats_torn_or_missing_records_as_absent(tmp_path) -> None:
    torn = tmp_path / "r.json"
    torn.write_text('{"ab": "A.ab", "sta')
    assert read_record(torn) is None
    assert read_record(tmp_path / "missing.json") is None
    torn.write_text('{"ab": "A.ab"}')
    assert read_record(torn) == {"ab": "A.ab"}
