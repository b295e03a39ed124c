"""Several dates in one run (reprocessing campaigns): one DAG over the nights of all dates."""

from __future__ import annotations

import itertools
import json
import os
import re
from pathlib import Path

import pytest
from conftest import records, run_snakemake, write_config

from abflow.cli import main
from abflow.example.generate import fan_cascade, write_night
from abflow.model.config import ConfigError, resolve
from abflow.model.load import load_night
from abflow.model.night import NightError

DATES = ["2013-02-12", "2013-02-13", "2013-02-14"]


def three_nights(dfo: dict[str, str]) -> dict[str, list[str]]:
    return {
        d: write_night(fan_cascade([1, 2], prefix=f"N{i}"), dfo["ab_dir"], dfo["mon_dir"], d)
        for i, d in enumerate(DATES)
    }


def test_dates_as_a_list_or_an_inclusive_range() -> None:
    assert resolve({"dates": DATES}).dates == tuple(DATES)
    assert resolve({"dates": "2013-02-12..2013-02-14"}).dates == tuple(DATES)
    assert resolve({"date": "2013-02-12"}).dates == ("2013-02-12",)
    s = resolve({"dates": "2013-02-12..2013-02-14"})
    assert s.date == "2013-02-12" and s.batch_id == "CALIB_2013-02-12..2013-02-14"
    with pytest.raises(ConfigError, match="ends before it starts"):
        resolve({"dates": "2013-02-14..2013-02-12"})
    with pytest.raises(ConfigError, match="2013-02-30"):
        resolve({"dates": ["2013-02-12", "2013-02-30"]})
    with pytest.raises(ConfigError, match="more than once"):
        resolve({"dates": ["2013-02-12", "2013-02-12"]})


def test_the_nights_of_all_dates_form_one_cascade(dfo) -> None:
    names = three_nights(dfo)
    night = load_night(resolve({"dates": DATES, "dfo": dfo, "drs_type": "CON"}))
    assert night.names == [n for d in DATES for n in names[d]]
    for d in DATES:
        assert {night.date(n) for n in names[d]} == {d}
    assert [len(level) for level in night.levels()] == [3, 6]


def test_problems_of_every_date_are_reported_together(dfo) -> None:
    three_nights(dfo)
    os.unlink(os.path.join(dfo["mon_dir"], "AB_list_CALIB_2013-02-13"))
    with open(os.path.join(dfo["mon_dir"], "AB_list_CALIB_2013-02-14"), "a") as fh:
        fh.write("GONE.ab\n")
    with pytest.raises(NightError) as err:
        load_night(resolve({"dates": DATES, "dfo": dfo}))
    text = str(err.value)
    assert "AB_list_CALIB_2013-02-13: AB list does not exist" in text
    assert "AB_list_CALIB_2013-02-14:4: AB GONE.ab is listed" in text


def test_days_of_a_range_without_an_ab_list_are_skipped_a_listed_date_is_not(dfo) -> None:
    three_nights(dfo)
    os.unlink(os.path.join(dfo["mon_dir"], "AB_list_CALIB_2013-02-13"))
    night = load_night(resolve({"dates": "2013-02-11..2013-02-14", "dfo": dfo}))
    assert len(night) == 6 and sorted(night.parts) == ["2013-02-12", "2013-02-14"]
    skipped = [str(w) for w in night.warnings if "date skipped" in str(w)]
    assert len(skipped) == 2 and "AB_list_CALIB_2013-02-11" in skipped[0]
    with pytest.raises(NightError, match="AB list does not exist"):
        load_night(resolve({"dates": DATES, "dfo": dfo}))  # an explicit list: an error
    with pytest.raises(NightError, match="no AB list for any date"):
        load_night(resolve({"dates": "2013-03-01..2013-03-02", "dfo": dfo}))


def test_an_ab_listed_on_two_dates_is_refused(dfo) -> None:
    names = three_nights(dfo)
    with open(os.path.join(dfo["mon_dir"], "AB_list_CALIB_2013-02-14"), "a") as fh:
        fh.write(f"{names['2013-02-12'][0]}\n")
    with pytest.raises(NightError, match="also listed for 2013-02-12"):
        load_night(resolve({"dates": DATES, "dfo": dfo}))


@pytest.mark.slow
def test_a_multi_date_run_is_one_dag(tmp_path, dfo, capsys) -> None:
    names = three_nights(dfo)
    cfg = write_config(
        tmp_path / "config.yaml", dfo, drs_type="CON", dates="2013-02-11..2013-02-14",
        commands={"process_ab": "sleep 1"},
    )  # fmt: skip
    assert main(["cascade", "--configfile", str(cfg)]) == 0
    assert "9 ABs" in capsys.readouterr().out
    dry = run_snakemake(tmp_path, cfg, "-n", cores=3)
    assert re.search(r"process_ab\s+9", dry.stdout), dry.stdout
    run = run_snakemake(tmp_path, cfg, cores=3)
    assert "AB_list_CALIB_2013-02-11: no AB list: date skipped" in run.stdout + run.stderr
    state = os.path.join(dfo["job_dir"], "abflow")
    runs = os.listdir(os.path.join(state, "runs"))
    # every lock released (a lock's flock guard stays: removing it would race)
    assert [n for n in runs if not n.endswith((".history.json", ".guard"))] == []
    for name in [n for n in runs if n.endswith(".history.json")]:  # each date's run, ended
        history = json.loads(Path(state, "runs", name).read_text())
        assert len(history) == 1 and history[0]["end"] is not None
    recs = records(state)
    assert sorted(recs) == sorted(n for d in DATES for n in names[d])
    for d in DATES:
        assert {recs[n]["date"] for n in names[d]} == {d}
    # one DAG, not date after date: ABs of later dates started before earlier dates were done
    for earlier, later in itertools.pairwise(DATES):
        done = max(recs[n]["end"] for n in names[earlier])
        assert min(recs[n]["start"] for n in names[later]) < done
    # the status of each date can be asked separately
    assert main(["status", "--configfile", str(cfg), "-d", "2013-02-13"]) == 0
    assert os.path.exists(os.path.join(dfo["mon_dir"], "status_2013-02-13.html"))
