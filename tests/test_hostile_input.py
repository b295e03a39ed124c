"""Hostile or broken configuration and input files: refused with file (and line) or key and a
clear message, before anything runs; never a traceback, a hang, a silent choice, or a command
that executes (issue 26, points 7 and 8, input side)."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DATE, run_snakemake, write_config

from abflow.cli import main
from abflow.example.generate import calib_night, write_night
from abflow.model import config as config_module
from abflow.model.ab import MAX_AB_BYTES, PathPolicy, parse_ab
from abflow.model.commands import PLACEHOLDERS, TemplateError, check_template, fill
from abflow.model.config import (
    DEFAULT_CONFIGFILE,
    DFO_DIRS,
    ConfigError,
    check_config_files,
    load_settings,
    resolve,
    validate,
)
from abflow.model.load import MAX_LIST_BYTES, load_night
from abflow.model.night import NightError

ROOT = Path(__file__).resolve().parents[1]
INJECTED = "$(touch pwned)"  # what a directory name would run inside the template's quotes


@contextlib.contextmanager
def no_hang(seconds: int = 20) -> Iterator[None]:
    """Fail (instead of hanging the suite) if the block takes longer than ``seconds``."""

    def expired(_signum: int, _frame: object) -> None:
        raise AssertionError(f"hung for {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def refusal(config: dict, **kwargs) -> str:
    """The ConfigError message resolve gives ``config`` (it must give one)."""
    with pytest.raises(ConfigError) as info:
        resolve(config, root="/x", environ=kwargs.get("environ", {}))
    return str(info.value)


# ----- 1. command templates ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("step", "template", "name", "where"),
    [
        ("process_ab", 'processAB -a "{ab_file}"', "ab_file", 'double quotes "..."'),
        ("process_qc", "processQC -a '{ab}'", "ab", "single quotes '...'"),
        ("download", 'ngasClient -f {file} --out="{dest}"', "dest", 'double quotes "..."'),
        ("process_ab_det", 'x "$(cat {ab_file})" -x {det}', "ab_file", "within $(...)"),
        ("mef_join", 'x "`basename {ab_file}`"', "ab_file", "within $(...) or backquotes"),
        ("monitor", 'getStatusAB -d "{date}"', "date", 'double quotes "..."'),
        ("dfo_monitor", "dfoMonitor -m '{mode}'", "mode", "single quotes '...'"),
        ("process_ab", "processAB -a $'{ab}'", "ab", "quotes $'...'"),
        ("process_ab", "processAB -a {ab} # was {ab_file}", "ab_file", "a # comment"),
        ("process_ab", "processAB -a \\{ab}", "ab", "after a backslash"),
        ("process_ab", "processAB -a ${ab}", "ab", "after a '$'"),
    ],
)
def test_a_template_that_quotes_a_placeholder_is_refused(step, template, name, where) -> None:
    message = refusal({"date": DATE, "commands": {step: template}})
    assert f"commands.{step}: placeholder {{{name}}} is " in message
    assert where in message and repr(template) in message
    assert "abflow shell-quotes every value itself" in message
    if "quotes" in where:
        assert f"write {{{name}}} without quotes around it" in message
    with pytest.raises(TemplateError):  # and fill never builds such a command
        fill(template, dict.fromkeys(PLACEHOLDERS[step], "a$(touch pwned)"))


@pytest.mark.parametrize(
    "template",
    [
        "awk '{{print $1}}' {ab_file}",  # literal braces inside quotes
        'echo "fixed text" {ab} "more"',  # quotes closed before the placeholder
        "echo 'it''s' {ab} \\\"x\\\"",  # escaped quotes outside quotes open nothing
        "x $(basename {ab_file}) `dirname {ab_file}` $(( 1 + 2 ))",  # unquoted substitutions
        "printf '%s\\n' {ab} {date} # a comment's 'quote'",
    ],
)
def test_templates_that_quote_only_fixed_text_pass(template: str) -> None:
    assert check_template("process_ab", template) is None


def test_the_bundled_configuration_profiles_and_schema_defaults_pass(tmp_path) -> None:
    check_config_files([DEFAULT_CONFIGFILE, *ROOT.glob("profiles/*/config.yaml")])
    settings = load_settings(DEFAULT_CONFIGFILE)
    assert set(PLACEHOLDERS) <= set(settings.commands)
    defaults = validate({"date": DATE})["commands"]
    assert all(check_template(step, defaults[step]) is None for step in PLACEHOLDERS)


def test_an_unterminated_quote_and_control_characters_in_templates_are_refused() -> None:
    assert "leaves single quotes '...' open" in refusal(
        {"date": DATE, "commands": {"process_ab": "processAB -a {ab} 'x"}}
    )
    message = refusal({"date": DATE, "commands": {"monitor": "getStatusAB -d {date}\n"}})
    assert "commands.monitor" in message and "a line break (U+000A)" in message
    assert "job file line (JOBS_NIGHT)" in message
    message = refusal({"date": DATE, "commands": {"process_ab": "processAB\x1b[2J -a {ab}"}})
    assert "commands.process_ab" in message and "an escape character (U+001B)" in message
    # a multi-line script (YAML's `>` ends in a line break) stays fine where a shell runs it
    assert check_template("process_ab", "processAB -a {ab}\n") is None


def test_a_quoted_placeholder_runs_nothing_from_check_nor_snakemake(tmp_path, dfo, capsys):
    """A directory name with $(...) and a template that quotes {ab_file}: refused by
    `abflow check` and by a real run (not a dry run: without the refusal it would run)."""
    dfo["ab_dir"] = str(tmp_path / "dfo" / f"ab{INJECTED}")
    write_night(calib_night(2), dfo["ab_dir"], dfo["mon_dir"], DATE)
    cfg = write_config(tmp_path / "config.yaml", dfo, commands={"process_ab": 'cat "{ab_file}"'})
    assert main(["check", "--configfile", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"invalid configuration ({cfg})" in err
    assert "commands.process_ab: placeholder {ab_file} is inside double quotes" in err
    proc = run_snakemake(tmp_path, cfg, check=False, timeout=120)
    assert proc.returncode != 0
    said = proc.stdout + proc.stderr
    assert "commands.process_ab: placeholder {ab_file} is inside double quotes" in said
    assert "Traceback" not in said
    assert not list(tmp_path.rglob("pwned")), "the injected command ran"


# ----- 2. control characters in names ----------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        ("dfo.job_dir", "/data/jobs\n# x", "a line break (U+000A)"),
        ("dfo.config_dir", "/data/conf\x7f", "a control character (U+007F)"),
        ("state_dir", "/data/state\x1b]0;x\x07", "an escape character (U+001B)"),
        ("inputs.GEN_CALDIR", "/data/gen\x85cal", "a control character (U+0085)"),
        ("status_export_dir", "/www/\tnight", "a tab (U+0009)"),
        ("archive", "/data/arch\rive", "a carriage return (U+000D)"),
        ("plugin", "/bin/plug\x00in", "a NUL character (U+0000)"),
        ("exclude", ["A.ab\n"], "a line break"),
    ],
)
def test_a_name_with_a_control_character_is_refused_naming_the_key(key, value, shown) -> None:
    config: dict = {"date": DATE}
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    message = refusal(config)
    where = f"{key}[0]" if isinstance(value, list) else key
    assert f"{where}: " in message and shown in message
    assert "must be printable" in message
    assert "\n# x" not in message and "\x1b" not in message  # shown escaped


def test_a_control_character_from_the_environment_is_refused_naming_the_variable() -> None:
    # a DFOS machine sets every $DFO_* directory; one of them carries a line break
    environ = {env: f"/data/{key}" for key, (env, _) in DFO_DIRS.items()}
    environ["DFO_JOB_DIR"] = "/data/jobs\nrm -rf /"
    message = refusal({"date": DATE}, environ=environ)
    assert "$DFO_JOB_DIR (the environment's dfo.job_dir)" in message
    assert "a line break (U+000A)" in message
    os.environ["ABFLOW_TEST_EVIL"] = "x\ny"
    try:
        message = refusal({"date": DATE, "state_dir": "/data/$ABFLOW_TEST_EVIL/state"})
    finally:
        del os.environ["ABFLOW_TEST_EVIL"]
    assert "state_dir (with its environment variables expanded)" in message


def legacy_tree(dfo: dict[str, str], tmp_path: Path, **files: str) -> dict[str, str]:
    """``dfo`` with a config_dir holding ``files`` (config.createAB=... as createAB=...)."""
    config_dir = tmp_path / "dfoconfig"
    config_dir.mkdir()
    for name, text in files.items():
        (config_dir / f"config.{name}").write_bytes(text.encode("latin-1"))
    return {**dfo, "config_dir": str(config_dir)}


@pytest.mark.parametrize(
    ("files", "line", "expected"),
    [
        ({"createAB": "DRS_TYPE CPL\nGEN_CALDIR /data/gen\x1bcal\n"}, 2, "escape character"),
        ({"createAB": "GEN_CALDIR $ABFLOW_TEST_EVIL\n"}, 1, "with its $VARIABLES expanded"),
        ({"createJob": "PLUGIN /bin/plug\xe9\n"}, 1, "not UTF-8 text"),
        ({"createAB": "DRS_TYPE CPL\n# c\nDRS_TYPE CON\n"}, 3,
         "DRS_TYPE given twice (first on line 1)"),
        ({"createJob": "MAX_JOBS 2\nMAX_JOBS 4\n"}, 2, "MAX_JOBS given twice (first on line 1)"),
        ({"processQC": "QCBQS_TYPE PAR\nQC_MODE SER\n"}, 2,
         "QC_MODE SER contradicts QCBQS_TYPE on line 1 (both set qc_mode): keep one"),
    ],
)  # fmt: skip
def test_a_dfos_config_file_value_is_refused_with_file_and_line(
    tmp_path, dfo, monkeypatch, files, line, expected
) -> None:
    monkeypatch.setenv("ABFLOW_TEST_EVIL", "/data/x\ny")
    dfo = legacy_tree(dfo, tmp_path, **files)
    message = refusal({"date": DATE, "dfo": dfo}, environ=os.environ)
    name = next(iter(files))
    assert f"{dfo['config_dir']}/config.{name}:{line}: " in message and expected in message


def test_keys_abflow_does_not_read_may_repeat_in_a_dfos_config_file(tmp_path, dfo) -> None:
    text = "DRS_TYPE CON\nPROD_STEP2 a b\nPROD_STEP2 c d\n# caf\xe9 (a Latin-1 comment)\n"
    agreeing = "QCBQS_TYPE CON\nQC_MODE PAR\n"  # two keys of one setting that agree (CON = PAR)
    dfo = legacy_tree(dfo, tmp_path, createAB=text, processQC=agreeing)
    settings = resolve({"date": DATE, "dfo": dfo})
    assert (settings.drs_type, settings.qc_mode) == ("CON", "PAR")


# ----- 3. duplicated keys ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "key", "first", "second"),
    [
        (f"date: {DATE}\nmode: CALIB\nqc_mode: SER\nmode: SCIENCE\n", "mode", 2, 4),
        (f"date: {DATE}\ndfo:\n  raw_dir: /a\n  cal_dir: /c\n  raw_dir: /b\n", "raw_dir", 3, 5),
        (f'{{"date": "{DATE}", "limits": {{"jobs": 1, "jobs": 2}}}}\n', "jobs", 1, 1),
    ],
)
def test_a_key_given_twice_is_refused_naming_both_lines(tmp_path, capsys, text, key, first, second):
    cfg = tmp_path / "site.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    expected = f"{cfg}:{second}: key {key!r} given twice in one mapping (first on line {first})"
    assert expected in str(info.value)
    assert main(["check", "--configfile", str(cfg)]) == 2
    assert expected in capsys.readouterr().err


def test_yaml_merge_keys_may_still_be_overridden(tmp_path) -> None:
    cfg = tmp_path / "site.yaml"
    cfg.write_text(f"date: {DATE}\nlimits:\n  <<: {{jobs: 1, qc: 2}}\n  jobs: 3\n")
    assert load_settings(cfg).limits["jobs"] == 3


def test_the_workflow_refuses_a_key_given_twice_in_its_config_files(tmp_path, dfo, monkeypatch):
    write_night(calib_night(2), dfo["ab_dir"], dfo["mon_dir"], DATE)
    cfg = write_config(tmp_path / "config.yaml", dfo)
    cfg.write_text(cfg.read_text() + "qc_mode: SER\n")  # write_config wrote qc_mode: IMPLICIT
    lines = cfg.read_text().splitlines()
    first = next(i for i, line in enumerate(lines, 1) if line.startswith("qc_mode:"))
    proc = run_snakemake(tmp_path, cfg, "-n", check=False, timeout=120)
    assert proc.returncode != 0
    assert (
        f"{cfg}:{len(lines)}: key 'qc_mode' given twice in one mapping (first on line {first})"
        in proc.stdout + proc.stderr
    )
    # without --configfile the Snakefile reads config/config.yaml: that one is checked too
    default = tmp_path / "default.yaml"
    default.write_text("mode: CALIB\nmode: SCIENCE\n")
    monkeypatch.setattr(config_module, "DEFAULT_CONFIGFILE", default)
    with pytest.raises(ConfigError, match=r"default\.yaml:2: key 'mode' given twice"):
        check_config_files([])


# ----- 4. numbers ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "overrides", "key"),
    [
        ("fetch: {timeout: .nan}\n", [], "fetch.timeout"),
        ("fetch: {backoff: .inf}\n", [], "fetch.backoff"),
        ("limits: {jobs: .inf}\n", [], "limits.jobs"),
        ("memory_retry: {factor: -.inf}\n", [], "memory_retry.factor"),
        ("", ["fetch.timeout=nan"], "fetch.timeout"),
        ("", ["fetch={timeout: inf}"], "fetch.timeout"),
    ],
)
def test_nan_or_infinity_is_refused_naming_the_key(tmp_path, text, overrides, key) -> None:
    cfg = tmp_path / "site.yaml"
    cfg.write_text(f"date: {DATE}\n{text}")
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, overrides)
    assert f"  - {key}: " in str(info.value)
    assert "is not a number abflow can use: give a finite number" in str(info.value)


# ----- 5. encoding -----------------------------------------------------------------------------
def test_a_configuration_that_is_not_utf8_is_refused_with_file_and_line(tmp_path, capsys):
    cfg = tmp_path / "site.yaml"
    cfg.write_bytes(f"date: {DATE}\n# Jos\xe9's night\nmode: CALIB\n".encode("latin-1"))
    assert main(["check", "--configfile", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}:2: not UTF-8 text (byte 0xe9, Latin-1 perhaps): save the file as UTF-8" in err
    with pytest.raises(ConfigError, match=r"site\.yaml:2: not UTF-8"):
        check_config_files([cfg])


# ----- 6. what an AB list or an AB file may be -------------------------------------------------
def _night(dfo: dict[str, str]) -> tuple[str, str]:
    """A two-AB night; (its AB list, the path of its first AB)."""
    names = write_night(calib_night(2), dfo["ab_dir"], dfo["mon_dir"], DATE)
    return os.path.join(dfo["mon_dir"], f"AB_list_CALIB_{DATE}"), os.path.join(
        dfo["ab_dir"], names[0]
    )


def _make(kind: str, path: str, limit: int) -> str:
    """Replace ``path`` by a FIFO, a symlink to /dev/zero, a directory or a sparse file larger
    than ``limit``; return what the refusal says it is."""
    os.remove(path)
    if kind == "fifo":
        os.mkfifo(path)
        return "is a FIFO (named pipe), not a regular file"
    if kind == "device":
        os.symlink("/dev/zero", path)
        return "is a character device, not a regular file"
    if kind == "directory":
        os.mkdir(path)
        return "is a directory, not a regular file"
    with open(path, "wb") as fh:
        fh.truncate(limit + 1)
    return f"is {limit + 1} bytes, more than the {limit >> 20} MiB allowed"


def _night_problems(dfo: dict[str, str]) -> str:
    with no_hang(), pytest.raises(NightError) as info:
        load_night(resolve({"date": DATE, "dfo": dfo}))
    return str(info.value)


@pytest.mark.parametrize("kind", ["fifo", "device", "directory", "large"])
def test_an_ab_list_that_is_no_text_file_is_refused_without_hanging(dfo, kind) -> None:
    listing, _ab = _night(dfo)
    said = _make(kind, listing, MAX_LIST_BYTES)
    assert f"{listing}: AB list {said}: it must be a text file" in _night_problems(dfo)


@pytest.mark.parametrize("kind", ["fifo", "device", "directory", "large"])
def test_an_ab_file_that_is_no_text_file_is_refused_without_hanging(dfo, kind) -> None:
    _listing, ab = _night(dfo)
    said = _make(kind, ab, MAX_AB_BYTES)
    problems = _night_problems(dfo)
    assert f"{ab}: AB file {said}: an AB is a small text file" in problems
    assert "is listed but" not in problems  # not mistaken for a missing AB


def test_a_configuration_that_is_a_fifo_is_refused_without_hanging(tmp_path, capsys) -> None:
    cfg = tmp_path / "site.yaml"
    os.mkfifo(cfg)
    with no_hang():
        assert main(["check", "--configfile", str(cfg)]) == 2
    assert (
        f"config file {cfg} is a FIFO (named pipe), not a regular file" in capsys.readouterr().err
    )


# ----- 7. AB paths -----------------------------------------------------------------------------
VARS = {"DFO_RAW_DIR": "/data/raw", "DFO_CAL_DIR": "/data/cal", "DFS_PRODUCT": "/data/products"}
POLICY = PathPolicy(inputs=tuple(VARS.values()), outputs=("/data/products",))
AB_NAME = "/data/ab/SYNTH.2013-02-13T00:00:00.000_tpl.ab"
AB_HEAD = "RECIPE standin\nRAW_TYPE BIAS\n"


@pytest.mark.parametrize(
    ("line", "part"),
    [
        ("RAWFILE $DFO_RAW_DIR/2013-02-12/-rf.fits BIAS", "-rf.fits"),
        ("RAWFILE /data/raw/--delete/a.fits BIAS", "--delete"),
        ("MCALIB REAL $DFO_CAL_DIR/2013-02-12/-o.fits MASTER_BIAS", "-o.fits"),
        ("PRODUCTS $DFS_PRODUCT/BIAS/-x_0000.fits MASTER_BIAS", "-x_0000.fits"),
    ],
)
def test_an_ab_path_component_starting_with_a_dash_is_refused(line: str, part: str) -> None:
    text = AB_HEAD + "RAWFILE $DFO_RAW_DIR/2013-02-12/a.fits BIAS\n" + line + "\n"
    _ab, problems = parse_ab(text, AB_NAME, VARS, POLICY)
    said = [str(p) for p in problems]
    assert any(
        s.startswith(f"{AB_NAME}:4: ") and f"component starting with '-' ({part!r})" in s
        for s in said
    ), said


def test_the_same_rawfile_twice_in_one_ab_is_refused_naming_both_lines() -> None:
    text = (
        AB_HEAD
        + "RAWFILE $DFO_RAW_DIR/2013-02-12/a.fits BIAS\n"
        + "RAWFILE $DFO_RAW_DIR/2013-02-12/b.fits BIAS\n"
        + "RAWFILE /data/raw/2013-02-12/a.fits BIAS\n"  # the same file, written out
    )
    _ab, problems = parse_ab(text, AB_NAME, VARS, POLICY)
    assert [str(p) for p in problems] == [
        f"{AB_NAME}:5: RAWFILE '/data/raw/2013-02-12/a.fits' listed twice (also line 3): keep one"
    ]
