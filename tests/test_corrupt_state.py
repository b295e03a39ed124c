"""A damaged night store never ends a reader in a traceback (issue 26, point 8).

A small night (bias -> two flats) with the state files a run leaves, written in the formats
abflow writes them (abflow.job.runner's completion records and failure notes, the run lock, the
run history, the submission record, memory retries, a running marker, a download record, the
download progress, the run configuration, a benchmark). Each case damages one of them, in one
way (empty, truncated JSON, JSON of the wrong type, a string where a number belongs, invalid
UTF-8, a directory in its place), and runs the readers in-process: ``abflow status`` (-r, -F),
``abflow watch`` (one pass), ``abflow plan --from-history``, ``abflow cascade``,
``abflow timeline --runs``, ``abflow stop`` and ``abflow unlock``. Each must exit 0, 1 or 2,
raise nothing, and where it matters say which file cannot be read.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import DATE, write_config

from abflow.cli import main
from abflow.example.generate import fan_cascade, make_dfo_tree, write_night
from abflow.model.config import load_settings
from abflow.state.layout import JobId, StateLayout, Step

BATCH = f"CALIB_{DATE}"
SPECS = fan_cascade([1, 2])  # A -> B, C
A, B, C = (s.name for s in SPECS)


def _dead_pid() -> int:
    """The pid of a process that has ended (its lock is stale)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


DEAD = _dead_pid()
HOST = socket.gethostname()


def _record(ab: str, step: str = "process_ab", **more: Any) -> dict[str, Any]:
    """A completion record as abflow.job.runner._record writes it."""
    return {"ab": ab, "step": step, "status": "SUCCESSFUL", "start": f"{DATE}T20:00:00.000+00:00",
            "end": f"{DATE}T20:00:03.500+00:00", "duration_s": 3.5, "host": HOST,
            "command": f"processAB -a {ab}", "threads": 1, "exit_code": 0, "workdir": "/tmp",
            "log": "", "products": [], "missing_products": [], "generation": 0, **more}  # fmt: skip


def _files(settings: Any) -> dict[str, tuple[str, Any]]:
    """Every state file of the night: name -> (path, content: JSON-ready, or bytes)."""
    from abflow.job.download import download_failure
    from abflow.model.load import load_night

    layout, dfo = settings.layout, settings.dfo
    raw = sorted(load_night(settings)[C].raw_inputs)[0]
    product = {"median": 1.5, "noise": 0.25, "hot_pixels": 3}
    qc = _record(A, "process_qc", results={"QC.MEDIAN": 201.4, "products": [product]})
    b_log = layout.log(JobId(Step.PROCESS_AB, B))
    failure = {**_record(B), "status": "FAILED", "exit_code": 3, "log": b_log,
               "reason": "command exited 3", "log_tail": ["esorex: boom"]}  # fmt: skip
    fetch = {"ab": os.path.basename(raw), "step": "download", "status": "FAILED",
             "end": f"{DATE}T20:00:01+00:00", "reason": "download failed (exit 1): no such file",
             "log": "", "log_tail": ["no such file"]}  # fmt: skip
    lock = {"pid": DEAD, "host": HOST, "start": f"{DATE}T19:59:00", "proc_start": 1.0,
            "batches": [BATCH], "command": "snakemake"}  # fmt: skip
    run = {"pid": DEAD, "host": HOST, "start": f"{DATE}T19:59:00", "executor": "local",
           "command": "snakemake", "since": f"{DATE}T19:59:00.000+00:00",
           "end": f"{DATE}T20:01:00.000+00:00", "ended": "failed"}  # fmt: skip
    submission = {"batch": BATCH, "argv": ["snakemake"], "cwd": "/tmp", "pid": DEAD,
                  "log": layout.console_log(BATCH), "host": HOST, "proc_start": 1.0,
                  "submitted": f"{DATE}T19:58:00"}  # fmt: skip
    retry = {"time": 1.0, "cluster": 7, "from_mb": 100, "to_mb": 200, "used_mb": 150,
             "reason": "memory"}  # fmt: skip
    marker = {"name": f"process_ab/{C}", "host": HOST, "pid": DEAD, "start": 1.0}
    fetched = {"step": "download", "file": "raw1.fits", "dest": raw, "bytes": 5,
               "start": f"{DATE}T19:59:30+00:00", "end": f"{DATE}T19:59:31+00:00",
               "duration_s": 1.0, "host": HOST}  # fmt: skip
    benchmark = b"s\th:m:s\tmax_rss\n3.6\t0:00:03\t10.0\n"
    return {
        "record": (layout.record(JobId(Step.PROCESS_AB, A)), _record(A)),
        "qc record": (layout.record(JobId(Step.PROCESS_QC, A)), qc),
        "failure note": (layout.failure(JobId(Step.PROCESS_AB, B)), failure),
        "download failure": (download_failure(layout, dfo, raw), fetch),
        "lock": (layout.lock(BATCH), lock),
        "history": (layout.run_history(BATCH), [run]),
        "submission": (layout.submission(BATCH), submission),
        "retries": (layout.retries(JobId(Step.PROCESS_AB, A)), {"retries": [retry]}),
        "marker": (layout.marker(JobId(Step.PROCESS_AB, C)), marker),
        "download record": (os.path.join(layout.download_records_dir, "raw1.json"), fetched),
        "progress": (layout.progress("token"), b"5 raw1.fits\n"),
        "run config": (layout.run_config("0123456789abcdef"), {"date": DATE, "dfo": dfo}),
        "benchmark": (layout.benchmark(JobId(Step.PROCESS_AB, A)), benchmark),
    }


# a string where the file has a number (JSON files) or a list where it has an object
WRONG_FIELD = {"record": ("duration_s", "long"), "qc record": ("results", [1, 2]),
               "failure note": ("log_tail", 5), "download failure": ("reason", ["x"]),
               "lock": ("pid", "4711"), "submission": ("pid", "4711"),
               "retries": ("retries", 5), "marker": ("start", "soon"),
               "download record": ("duration_s", "1 s"), "run config": ("date", 2013)}  # fmt: skip


def _damage(path: str, content: Any, how: str, name: str) -> None:
    """Damage the file ``path`` (good ``content``) as ``how`` says."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    good = content if isinstance(content, bytes) else json.dumps(content, indent=2).encode()
    if how == "directory":
        os.makedirs(path)
        Path(path, "x").write_text("{}")
        return
    data = {
        "empty": b"",
        "truncated": good[: len(good) // 2],
        "invalid utf-8": b'{"ab": "\xff\xfe\x80", ' + good[1:],
        "wrong type": b"[1, 2, 3]\n" if not isinstance(content, list) else b'{"runs": 1}\n',
    }.get(how)
    if how == "wrong field":
        if isinstance(content, list):
            data = json.dumps([{**content[0], "since": 5, "pid": "x"}]).encode()
        elif isinstance(content, bytes):
            data = content.replace(b"3.6", b"soon").replace(b"5 ", b"five ")
        else:
            key, value = WRONG_FIELD[name]
            data = json.dumps({**content, key: value}).encode()
    Path(path).write_bytes(data)  # type: ignore[arg-type]


def _prepare(base: Path, damaged: str, how: str) -> tuple[Path, StateLayout]:
    """The night under ``base`` with its state files, ``damaged`` damaged ``how``."""
    dfo = make_dfo_tree(base / "dfo")
    write_night(SPECS, dfo["ab_dir"], dfo["mon_dir"], DATE)
    cfg = write_config(base / "config.yaml", dfo, status_export_dir=str(base / "web"))
    settings = load_settings(str(cfg))
    files = _files(settings)
    Path(files["failure note"][1]["log"]).parent.mkdir(parents=True, exist_ok=True)
    Path(files["failure note"][1]["log"]).write_text("esorex: boom\n")
    for name, (path, content) in files.items():
        if name == damaged:
            _damage(path, content, how, damaged)
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data = content if isinstance(content, bytes) else json.dumps(content).encode()
        Path(path).write_bytes(data)
    return cfg, settings.layout


COMMANDS = [  # (status -r and -F write the page as status does; watch's one pass, as --once)
    ["status", "-r", "--wait", "0", "--interval", "0.01"],
    ["status", "-F"],
    ["watch", "--interval", "0"],
    ["plan", "--from-history", "--slots", "1", "2"],
    ["cascade"],
    ["timeline", "--runs"],
    ["stop"],
    ["unlock"],
]
DAMAGE = ["empty", "truncated", "wrong type", "wrong field", "invalid utf-8", "directory"]
FILES = [*WRONG_FIELD, "history", "progress", "benchmark"]
# what a reader says of a damaged file (where it matters): file -> (command, words)
SAID = {
    "record": ("watch", f"unreadable {A}: not done (record unreadable"),
    "qc record": ("watch", f"unreadable {A}: (QC record unreadable"),
    "failure note": ("watch", f"failed   {B}: failed; its failure note is unreadable"),
    "download failure": ("watch", "download failure note is unreadable"),
    "lock": ("watch", "is unreadable"),
    "history": ("watch", "is unreadable"),
    "submission": ("watch", "the submission record"),
}


def _run(argv: list[str], cfg: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run ``abflow <argv>`` in-process (10 s at most); its exit code and output."""

    def hang(*_: object) -> None:
        raise TimeoutError(f"abflow {' '.join(argv)} did not end")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(10)
    try:
        code = main([*argv, "--configfile", str(cfg)])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.fixture(autouse=True)
def _quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """No HTCondor pool is asked (the state is what the test is about)."""
    monkeypatch.setattr("abflow.state.schedd.pool_configured", lambda: False)


@pytest.mark.parametrize("how", DAMAGE)
@pytest.mark.parametrize("damaged", FILES)
def test_every_reader_survives_a_damaged_state_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damaged: str, how: str
) -> None:
    if how == "wrong field" and damaged == "progress":
        how = "invalid utf-8"  # (a text file: no fields)
    cfg, _ = _prepare(tmp_path, damaged, how)
    said: dict[str, str] = {}
    for argv in COMMANDS:
        code, out = _run(argv, cfg, capsys)
        assert code in (0, 1, 2), (argv, code, out)
        assert "Traceback" not in out, (argv, out)
        said[argv[0]] = said.get(argv[0], "") + out
    command, words = SAID.get(damaged, ("", ""))
    if command and how != "wrong field":
        assert words in said[command], said[command]
    if damaged == "record" and how != "wrong field":  # not done: the page says so too
        page = Path(tmp_path, "dfo", "mon", f"status_{DATE}.html").read_text()
        assert "not done (record unreadable" in page


def test_an_undamaged_night_reads_as_it_is(tmp_path: Path, capsys) -> None:
    """The baseline the damaged cases differ from: nothing said unreadable."""
    cfg, _ = _prepare(tmp_path, "", "")
    code, out = _run(["watch", "--once"], cfg, capsys)
    assert code == 0 and "unreadable" not in out, out
    assert f"failed   {B}: command exited 3" in out and "QC.MEDIAN=201.4" in out
    code, out = _run(["plan", "--from-history", "--slots", "1"], cfg, capsys)
    assert code == 0 and "left out" not in out, out


def test_the_timeline_draws_around_damaged_records(tmp_path: Path, capsys) -> None:
    """``abflow timeline`` (matplotlib: one case, not the whole matrix) with a record, the run
    history and a download record damaged at once: drawn from what can be read."""
    cfg, layout = _prepare(tmp_path, "record", "wrong field")
    Path(layout.run_history(BATCH)).write_text('[{"since": 5, "end": [1]}, "x"]')
    record = Path(layout.download_records_dir, "raw1.json")
    record.write_bytes(record.read_bytes()[:20])
    code, out = _run(["timeline"], cfg, capsys)
    assert code in (0, 1) and "Traceback" not in out, out


@pytest.mark.parametrize(
    ("results", "shown"),
    [
        ([1, 2], {"results": "unreadable (a list, not an object)"}),
        (4.5, {"results": "unreadable (a number, not an object)"}),
        ("done", {"results": "unreadable (a string, not an object)"}),
        ({"products": 5}, {"products": "unreadable (a number, not a list)"}),
        ({"products": {"median": 1}}, {"products": "unreadable (an object, not a list)"}),
        ({"products": ["x", {"median": [1], "noise": 0.5}]}, {"median [2]": "[1]",
                                                               "noise [2]": "0.5"}),
        ({"QC.RON": 3.25, "QC.DEEP": {"a": 1}, "png": 5}, {"QC.RON": "3.25"}),
    ],
)  # fmt: skip
def test_abflow_results_of_any_json_type_are_shown_not_raised(results: Any, shown: dict) -> None:
    """$ABFLOW_RESULTS that is JSON but not the object abflow reads: the QC1 numbers say it is
    unreadable (page, summary, watch all show these), nothing raises."""
    from abflow.views.status import qc1_values

    assert qc1_values({"results": results, "qc1": ["not", "a", "mapping"]}) == shown


# valid JSON objects whose values are of other types than abflow writes (1e400: Infinity)
ODD = {"failure note": {"reason": ["x"], "log": 5}, "record": {"duration_s": 1e400},
       "retries": {"retries": [{"time": "soon", "to_mb": "lots"}, 5]}}  # fmt: skip


@pytest.mark.parametrize("how", [*DAMAGE, "odd values"])
def test_the_console_reads_damaged_notes_records_and_retries(tmp_path: Path, how: str) -> None:
    """The console during a run (on a pool): a failure note, a completion record of an adopted
    job and its memory retries, damaged, give plain lines; nothing raises in the logger."""
    import io
    import logging

    from abflow.views.console import POOL_ATTR, RUN_ATTR, Console, RunInfo

    layout = StateLayout(str(tmp_path / "state"))
    note = {"ab": A, "step": "process_ab", "reason": "command exited 3", "log": "x.log"}
    retries = {"retries": [{"time": 1.0, "to_mb": 200, "reason": "memory"}]}
    damaged = [(layout.failure(JobId(Step.PROCESS_AB, A)), note, "failure note"),
               (layout.record(JobId(Step.PROCESS_AB, B)), _record(B), "record"),
               (layout.retries(JobId(Step.PROCESS_AB, B)), retries, "retries")]  # fmt: skip
    for path, content, name in damaged:
        if how == "odd values":  # valid JSON objects, values of other types than abflow writes
            os.makedirs(os.path.dirname(path), exist_ok=True)
            Path(path).write_text(json.dumps(ODD[name]))
        else:
            _damage(path, content, how, name)
    run = RunInfo(batch=BATCH, labels={A: "bias", B: "flat"}, levels=((A,), (B,)),
                  parents={A: (), B: (A,)}, layout=layout, pool=True)  # fmt: skip
    out = io.StringIO()
    console = Console(out)
    for fields in [
        {RUN_ATTR: run, "msg": "abflow: night"},
        {"event": "run_info", "stats": {"process_ab": 2}},
        {"event": "job_info", "jobid": 1, "rule_name": "process_ab", "wildcards": {"ab": A}},
        {"event": "job_info", "jobid": 2, "rule_name": "process_ab", "wildcards": {"ab": B}},
        {POOL_ATTR: {"what": "adopted", "job": f"process_ab/{B}", "cluster": 7}},
        {"event": "job_error", "jobid": 1, "rule_msg": ""},
        {"event": "job_finished", "job_id": 2},
    ]:
        console.handle(logging.makeLogRecord({"levelno": logging.INFO, **fields}))
    console.close()
    text = out.getvalue()
    assert f"{A}  bias FAILED" in text and f"{B}  flat succeeded" in text, text
