"""The bad-input corpus (tests/data/bad/) and random AB text: refused with file, line and reason.

Every case is refused by load_night with the problems its ``expect`` file lists, and a real
snakemake run on it runs no command and writes nothing outside the job directory.
"""

from __future__ import annotations

import os
import re
import shutil
import string
from pathlib import Path

import pytest
from conftest import run_snakemake, write_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abflow.cli import main
from abflow.example.generate import make_dfo_tree
from abflow.model.ab import Problem, parse_ab, read_ab
from abflow.model.config import resolve
from abflow.model.load import load_night
from abflow.model.night import NightError

CORPUS = Path(__file__).parent / "data" / "bad"
CORPUS_DATE = "2013-02-13"
LIST_NAME = f"AB_list_CALIB_{CORPUS_DATE}"
CASES = sorted(p.name for p in CORPUS.iterdir() if p.is_dir())


def expectations(case: str) -> list[tuple[str, int | None, str]]:
    """(file, line or None, message fragment) from the case's ``expect`` file."""
    out = []
    for raw in (CORPUS / case / "expect").read_text().splitlines():
        if not raw.strip() or raw.startswith("#"):
            continue
        # the file name itself may contain ':' (GIRAF.2013-02-13T09:58:11.218_tpl.ab)
        found = re.match(r"^(list|.+?\.ab):(-|\d+):(.*)$", raw)
        assert found, f"{case}/expect: malformed line {raw!r}"
        file, line, text = found.groups()
        out.append(
            (LIST_NAME if file == "list" else file, None if line == "-" else int(line), text)
        )
    return out


def install(case: str, root: Path) -> dict[str, str]:
    """A DFOS tree under ``root`` holding the case's AB list and AB files."""
    dfo = make_dfo_tree(root / "dfo")
    for item in (CORPUS / case).iterdir():
        if item.name == "list":
            shutil.copy(item, Path(dfo["mon_dir"], LIST_NAME))
        elif item.name != "expect":
            shutil.copy(item, Path(dfo["ab_dir"], item.name))
    return dfo


def matches(problem: Problem, file: str, line: int | None, text: str) -> bool:
    return (
        os.path.basename(problem.file) == file and problem.line == line and text in problem.message
    )


def test_the_corpus_is_large_and_every_case_says_what_it_expects() -> None:
    assert len(CASES) >= 25
    for case in CASES:
        assert expectations(case), f"{case}: empty expect file"


@pytest.mark.parametrize("case", CASES)
def test_load_night_refuses_the_case_naming_file_line_and_problem(tmp_path, case: str) -> None:
    dfo = install(case, tmp_path)
    with pytest.raises(NightError) as err:
        load_night(resolve({"date": CORPUS_DATE, "dfo": dfo}))
    problems = err.value.problems
    for file, line, text in expectations(case):
        assert any(matches(p, file, line, text) for p in problems), (
            f"{case}: expected {file}:{line}: ...{text}... among:\n{err.value}"
        )
    # every problem names the file it is about (an AB or the AB list), never a bare message
    assert all(os.path.isabs(p.file) for p in problems)


@pytest.mark.parametrize("case", CASES)
def test_abflow_check_reports_the_case(tmp_path, case: str, capsys) -> None:
    dfo = install(case, tmp_path)
    cfg = write_config(tmp_path / "config.yaml", dfo, date=CORPUS_DATE)
    assert main(["check", "--configfile", str(cfg)]) != 0
    err = capsys.readouterr().err
    for file, line, text in expectations(case):
        where = file if line is None else f"{file}:{line}"
        assert where in err and text in err, err


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_a_real_run_of_the_case_runs_nothing_and_writes_only_in_the_job_dir(
    tmp_path, case: str
) -> None:
    dfo = install(case, tmp_path)
    marker = tmp_path / "ran"
    hostile = f"touch {marker}"
    cfg = write_config(
        tmp_path / "config.yaml", dfo, date=CORPUS_DATE, qc_mode="SER",
        commands={name: hostile for name in ("process_ab", "process_qc", "download", "monitor")},
    )  # fmt: skip
    workdir = Path(dfo["job_dir"], "run")
    workdir.mkdir()
    before = snapshot(tmp_path)
    proc = run_snakemake(workdir, cfg, check=False, timeout=120)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "nothing was run" in output
    for file, line, text in expectations(case):
        assert (file if line is None else f"{file}:{line}") in output and text in output, output
    assert not marker.exists()
    new = snapshot(tmp_path) - before
    outside = sorted(p for p in new if not (tmp_path / p).is_relative_to(dfo["job_dir"]))
    assert outside == [], outside


# ----- random AB text ------------------------------------------------------------------------
QUALIFIERS = ["RAWFILE", "MCALIB", "PRODUCTS", "RECIPE", "RAW_TYPE", "DRS_TYPE", "PROD_PATH",
              "PROD_ROOT_NAME", "MEF_FACTOR", "RECIPE_PARAM", "DATE", "PARAM", "#", "VIRTUAL",
              "REAL", "$DFO_RAW_DIR/", "$DFS_PRODUCT", "${DFO_CAL_DIR}", "..", "/", ";", "$(", "`",
              "\t", " ", "\n", "\r\n", "\x00", "\ufeff", "é", "1", "-1", "100000"]  # fmt: skip
ab_text = st.lists(
    st.one_of(
        st.sampled_from(QUALIFIERS), st.text(string.printable, max_size=12), st.text(max_size=6)
    ),
    max_size=40,
).map("".join)
VARIABLES = {"DFO_RAW_DIR": "/d/raw", "DFO_CAL_DIR": "/d/cal", "DFS_PRODUCT": "/d/prod"}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=ab_text)
def test_random_ab_text_gives_problems_never_an_exception(text: str) -> None:
    ab, problems = parse_ab(text, "/d/ab/X.ab", VARIABLES)
    assert ab.name == "X.ab"
    for p in problems:
        assert isinstance(p, Problem) and p.file == "/d/ab/X.ab" and p.message
        assert p.line is None or 1 <= p.line <= text.count("\n") + 1
    if not problems:  # accepted: then everything the workflow uses is well formed
        assert ab.recipe and all(f.path.startswith("/") for f in ab.rawfiles)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=400))
def test_random_bytes_as_an_ab_file_give_problems_never_an_exception(
    tmp_path_factory, data
) -> None:
    path = tmp_path_factory.mktemp("ab") / "X.ab"
    path.write_bytes(data)
    ab, problems = read_ab(str(path), VARIABLES)
    assert ab is not None or problems
    assert all(isinstance(p, Problem) and p.file == str(path) for p in problems)
