"""Configuration: schema defaults, directory resolution, overrides, template checks."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
import yaml

from abflow.model.commands import TemplateError, check_template, fill
from abflow.model.config import (
    DFO_DIRS,
    ConfigError,
    load_schema,
    load_settings,
    normalize,
    resolve,
)


def test_every_key_of_the_interface_contract_is_documented_with_a_default() -> None:
    schema = load_schema()
    props = schema["properties"]
    for key in (
        "mode",
        "drs_type",
        "qc_mode",
        "full_rawdownload",
        "cal_cleanup",
        "mef_factor",
        "subcascade",
        "dfo",
        "commands",
        "limits",
    ):
        assert "default" in props[key], key
        assert props[key]["description"], key
    assert set(props["dfo"]["properties"]) == set(DFO_DIRS)
    assert set(props["commands"]["properties"]) == {
        "process_ab",
        "process_qc",
        "download",
        "process_ab_det",
        "mef_join",
        "monitor",
        "dfo_monitor",
    }
    assert set(props["limits"]["properties"]) == {"downloads", "qc", "jobs"}
    for sub in ("dfo", "commands", "limits"):
        for name, spec in props[sub]["properties"].items():
            assert "default" in spec and spec.get("description"), f"{sub}.{name}"


def test_defaults_are_filled_and_dfos_tools_are_the_default_commands() -> None:
    s = resolve({"date": "2013-02-12"}, root="/checkout", environ={})
    assert (s.mode, s.drs_type, s.qc_mode, s.mef_factor) == ("CALIB", "CPL", "SER", 1)
    assert s.commands["process_ab"] == "processAB -a {ab}"
    assert s.commands["process_qc"] == "processQC -a {ab}"
    assert s.commands["download"] == "ngasClient -f {file}"
    assert s.limits == {"downloads": 8, "qc": 4, "jobs": 0}
    assert s.batch_id == "CALIB_2013-02-12"


def test_directories_come_from_config_then_environment_then_example_tree() -> None:
    environ = {env: f"/env/{key}" for key, (env, _sub) in DFO_DIRS.items()}
    s = resolve(
        {"date": "2013-02-12", "dfo": {"raw_dir": "rel/raw", "cal_dir": "/abs/cal"}},
        root="/checkout",
        environ=environ,
    )
    assert s.dfo["raw_dir"] == "/checkout/rel/raw"  # relative to the checkout, not the cwd
    assert s.dfo["cal_dir"] == "/abs/cal"  # config wins over the environment
    assert s.dfo["ab_dir"] == "/env/ab_dir"
    assert s.state_dir == s.dfo["job_dir"] + "/abflow"
    assert s.variables["DFO_RAW_DIR"] == "/checkout/rel/raw"
    assert s.variables["DFS_PRODUCT"] == s.dfo["product_dir"] == "/env/product_dir"
    # no DFOS environment at all: the example tree for what the configuration leaves out
    bare = resolve({"date": "2013-02-12", "dfo": {"raw_dir": "/abs/raw"}}, environ={})
    assert bare.dfo["mon_dir"].endswith("resources/example/mon")
    # a DFOS machine missing some variables: an error naming each, never the example tree
    del environ["DFS_PRODUCT"], environ["DFO_LOG_DIR"]
    with pytest.raises(ConfigError) as err:
        resolve({"date": "2013-02-12"}, environ=environ)
    assert [p.split(" is not")[0] for p in err.value.problems] == [
        "dfo.log_dir",
        "dfo.product_dir",
    ]
    assert "$DFS_PRODUCT is not set, on a DFOS machine" in str(err.value)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, "date: no date given"),
        ({"date": "12.02.2013"}, "date: '12.02.2013' does not match"),
        ({"date": "2013-02-12", "mode": "NIGHT"}, "mode: 'NIGHT' is not one of"),
        ({"date": "2013-02-12", "drs_type": "FAST"}, "drs_type: 'FAST' is not one of"),
        ({"date": "2013-02-12", "qc_mode": "X"}, "qc_mode: 'X' is not one of"),
        ({"date": "2013-02-12", "limits": {"downloads": 0}}, "limits.downloads: 0 is less"),
        ({"date": "2013-02-12", "mef_factor": 1000}, "mef_factor: 1000 is greater"),
        ({"date": "2013-02-12", "colour": 1}, "'colour' was unexpected"),
        ({"date": "2013-02-12", "commands": {"process_ab": "run {nope}"}}, "unknown placeholder"),
        ({"date": "2013-02-12", "commands": {"download": "get {ab}"}}, "{ab}"),
        ({"date": "2013-02-12", "commands": {"process_ab": "run {ab"}}, "malformed"),
    ],
)
def test_invalid_configurations_are_refused_with_the_key(config, expected) -> None:
    with pytest.raises(ConfigError) as info:
        resolve(config, root="/x", environ={})
    assert expected in str(info.value)


def test_all_config_problems_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        resolve({"date": "x", "mode": "y", "drs_type": "z"}, root="/x", environ={})
    assert len(info.value.problems) == 3


def test_yaml_dates_and_dotted_keys_are_normalised() -> None:
    cfg = normalize({"date": dt.date(2013, 2, 12), "limits.jobs": 3, "limits": {"qc": 2}})
    assert cfg == {"date": "2013-02-12", "limits": {"qc": 2, "jobs": 3}}
    s = resolve({"date": dt.date(2013, 2, 12), "limits.jobs": 3}, root="/x", environ={})
    assert s.date == "2013-02-12" and s.limits["jobs"] == 3


def test_load_settings_applies_overrides_and_reports_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "site.yaml"
    cfg.write_text(yaml.safe_dump({"date": "2013-02-12", "limits": {"qc": 2}}))
    s = load_settings(cfg, ["mode=SCIENCE", "limits.jobs=5", "date=2014-01-01"])
    assert (s.mode, s.date, s.limits["jobs"], s.limits["qc"]) == ("SCIENCE", "2014-01-01", 5, 2)
    bad = tmp_path / "bad.yaml"
    bad.write_text("date: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml"):
        load_settings(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "none.yaml")


def test_fill_quotes_every_value_so_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hostile = f"x; touch {marker}; echo $(touch {marker}) `touch {marker}`"
    command = fill("printf '%s\\n' {ab} {date}", {"ab": hostile, "date": "2013-02-12"})
    out = subprocess.run(command, shell=True, capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [hostile, "2013-02-12"]
    assert not marker.exists()


def test_templates_check_placeholders_and_keep_literal_braces() -> None:
    assert fill("awk '{{print $1}}' {file}", {"file": "a b"}) == "awk '{print $1}' 'a b'"
    assert check_template("process_ab", "processAB -a {ab} -t {threads}") is None
    assert "unknown placeholder(s) {dest}" in check_template("process_ab", "x {dest}")
    assert check_template("process_ab", "  ") == "commands.process_ab is empty"
    with pytest.raises(TemplateError):
        fill("x {ab}", {})
    with pytest.raises(TemplateError):
        fill("x {ab!r}", {"ab": "y"})


def test_nested_config_strings_from_snakemake_are_coerced() -> None:
    s = resolve(
        {"date": "2013-02-12", "limits": {"jobs": "4", "downloads": "2"},
         "fetch": {"timeout": "7.5"}, "cal_cleanup": "true"},
        root="/x", environ={},
    )  # fmt: skip
    assert (s.limits["jobs"], s.limits["downloads"], s.fetch["timeout"]) == (4, 2, 7.5)
    assert s.cal_cleanup is True
    with pytest.raises(ConfigError, match=r"limits\.jobs: 'four' is not of type 'integer'"):
        resolve({"date": "2013-02-12", "limits": {"jobs": "four"}}, root="/x", environ={})


def test_a_qc_reports_pattern_with_an_unknown_placeholder_is_refused(dfo) -> None:
    from conftest import DATE

    from abflow.model.config import ConfigError, resolve

    ok = resolve({"date": DATE, "dfo": dfo, "qc_reports": "{log_dir}/{date}/{ab_stem}.qc.*"})
    assert ok.raw["qc_reports"].endswith("{ab_stem}.qc.*")
    with pytest.raises(ConfigError, match=r"qc_reports: .* uses \{night\}; it may use \{date\}"):
        resolve({"date": DATE, "dfo": dfo, "qc_reports": "{log_dir}/{night}.html"})
