"""The abflow command line: check, cascade, fetch, example."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import DATE, write_config

from abflow.cli import main
from abflow.example.generate import ABSpec, fan_cascade, write_night


@pytest.fixture
def cfg(tmp_path, dfo) -> Path:
    specs = fan_cascade([1, 3, 6])
    specs[1].mef_factor = 4
    write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
    return write_config(tmp_path / "config.yaml", dfo)


def test_cascade_prints_levels_with_counts(cfg, capsys) -> None:
    assert main(["cascade", "--configfile", str(cfg)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        f"CALIB_{DATE}: 10 ABs (14 jobs), 9 dependencies, 3 levels, at most 6 ABs can run at once"
    )
    assert [line for line in out if line.startswith("level")] == [
        "level 0: 1 AB",
        "level 1: 3 ABs",
        "level 2: 6 ABs",
    ]
    flat = next(line for line in out if "4 detector jobs + join" in line)
    assert "FLAT" in flat and "<- SYNTH.2013-02-13T00:00:00.000.ab" in flat


def test_cascade_json_and_brief(cfg, capsys) -> None:
    assert main(["cascade", "--configfile", str(cfg), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [lv["count"] for lv in data["levels"]] == [1, 3, 6]
    assert data["levels"][2]["abs"][0]["waits_for"] == ["SYNTH.2013-02-13T00:00:01.000.ab"]
    assert main(["cascade", "--configfile", str(cfg), "--brief"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4


def test_check_reports_every_problem_and_exits_2(cfg, dfo, capsys) -> None:
    assert main(["check", "--configfile", str(cfg)]) == 0
    assert capsys.readouterr().out.strip().endswith("3 levels: OK")
    ab_list = Path(dfo["mon_dir"], f"AB_list_CALIB_{DATE}")
    ab_list.write_text(ab_list.read_text() + "MISSING.ab\nbad;name.ab\n")
    assert main(["check", "--configfile", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "2 problems in the night, nothing was run" in err
    assert f"{ab_list}:11: AB MISSING.ab is listed but" in err
    assert f"{ab_list}:12: malformed line" in err


def test_config_errors_exit_2_with_the_key(cfg, capsys) -> None:
    assert main(["check", "--configfile", str(cfg), "--config", "drs_type=FAST"]) == 2
    assert "drs_type: 'FAST' is not one of" in capsys.readouterr().err


def test_a_run_configuration_is_a_file_and_no_environment_changes_a_command(
    cfg, monkeypatch, capsys
):
    """Jobs name the run's configuration file on their command line; an abflow command reads
    what it is given (--configfile), whatever the environment says."""
    from abflow.model.config import load_settings, write_run_config

    settings = load_settings(cfg, ["mode=SCIENCE"])
    monkeypatch.setenv("ABFLOW_CONFIG", json.dumps(settings.to_config()))  # the old way: ignored
    assert main(["check", "--configfile", str(cfg)]) == 0
    run_config = write_run_config(settings)
    assert write_run_config(settings) == run_config  # once: the same configuration, one file
    again = load_settings(run_config)  # as a command reads it: --configfile {config}
    for name in settings.__dataclass_fields__:  # the same settings (raw: resolved, notes said)
        if name not in ("raw", "notes", "sources"):
            assert getattr(again, name) == getattr(settings, name), name
    assert main(["check", "--configfile", run_config]) == 2  # SCIENCE: no such AB list
    assert f"AB_list_SCIENCE_{DATE}: AB list does not exist" in capsys.readouterr().err


def test_fetch_copies_atomically_and_names_missing_files(tmp_path, cfg, capsys) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "GIRAF.X.fits").write_bytes(b"0" * 5000)
    dest = tmp_path / "raw" / "GIRAF.X.fits"
    assert (
        main(
            [
                "fetch",
                "--configfile",
                str(cfg),
                "--archive",
                str(archive),
                "GIRAF.X.fits",
                str(dest),
            ]
        )
        == 0
    )
    assert dest.read_bytes() == b"0" * 5000
    assert (
        main(
            [
                "fetch",
                "--configfile",
                str(cfg),
                "--archive",
                str(archive),
                "NOPE.fits",
                str(tmp_path / "raw" / "NOPE.fits"),
            ]
        )
        == 1
    )
    assert "NOPE.fits: not in the archive" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path / "raw")) == ["GIRAF.X.fits"]  # no partial file left


def test_example_generates_one_frame_per_rawfile(tmp_path, dfo, capsys) -> None:
    spec = ABSpec(
        "UVES.2013-02-13T09:45:20.118_tpl.ab",
        instrument="UVES",
        n_raw=0,
        extra_lines=[f"RAWFILE $DFO_RAW_DIR/{DATE}/UVES.2013-02-13T09:45:20.118.fits BIAS_BLUE"],
    )
    write_night([spec], dfo["ab_dir"], dfo["mon_dir"], DATE)
    cfg = write_config(tmp_path / "c.yaml", dfo, archive=str(tmp_path / "arch"))
    assert main(["example", "--configfile", str(cfg)]) == 0
    assert os.listdir(tmp_path / "arch") == ["UVES.2013-02-13T09:45:20.118.fits"]
    assert main(["example", "--configfile", str(cfg)]) == 0
    assert "0 frames written, 1 already present" in capsys.readouterr().out
