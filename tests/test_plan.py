"""The plan: list schedule, critical path, history durations; predicted equals achieved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import DATE, intervals, place_raw_files, run_snakemake, waves, write_config

from abflow.cli import main
from abflow.example.generate import ABSpec, ab_name, fan_cascade, write_night
from abflow.model.config import resolve
from abflow.model.load import load_night
from abflow.model.plan import (
    critical_path,
    job_graph,
    job_priorities,
    list_schedule,
    lower_bound,
    optimal_unit_makespan,
    plan_night,
)
from abflow.views.history import history_durations


def test_critical_path_on_hand_checked_cascades() -> None:
    # bias -> flat -> science is longer than bias -> dark
    deps = {"bias": [], "flat": ["bias"], "dark": ["bias"], "sci": ["flat"], "std": []}
    chain, length = critical_path(deps)
    assert (chain, length) == (["bias", "flat", "sci"], 3)
    # with durations the long dark wins
    chain, length = critical_path(deps, {"dark": 5})
    assert (chain, length) == (["bias", "dark"], 6)
    # a join waits for its slowest detector
    deps = {"d1": [], "d2": [], "join": ["d1", "d2"], "child": ["join"]}
    assert critical_path(deps, {"d2": 3}) == (["d2", "join", "child"], 5)


def test_list_schedule_follows_priorities_and_slots() -> None:
    deps = {"a": [], "b": ["a"], "c": ["b"], "x": [], "y": [], "z": []}
    prio = {"a": 9, "b": 8, "c": 7, "x": 1, "y": 1, "z": 1}
    s = list_schedule(deps, prio, slots=2)
    assert s.start == {"a": 0, "x": 0, "b": 1, "y": 1, "c": 2, "z": 2}
    assert s.makespan == 3
    assert {s.slot[j] for j in deps} == {0, 1}
    low = list_schedule(deps, {**prio, "a": 0}, slots=2)  # the chain starts late: 4 rounds
    assert low.makespan == 4
    timed = list_schedule(deps, prio, slots=2, durations={"a": 2.5, "x": 0.5})
    assert timed.start["y"] == 0.5 and timed.start["b"] == 2.5 and timed.makespan == 4.5
    assert lower_bound(deps, 2) == 3 and lower_bound(deps, 6) == 3


def test_abflow_priorities_reach_the_optimum_on_shared_slot_nights(dfo) -> None:
    mef = ABSpec(ab_name(0, prefix="MEF"), mef_factor=8)
    flat = ABSpec(ab_name(1, prefix="MEF"), raw_type="FLAT", parents=[mef.name], mef_factor=8)
    b = ABSpec(ab_name(2))
    flats = [ABSpec(ab_name(3 + i), raw_type="FLAT", parents=[b.name]) for i in range(3)]
    write_night([mef, flat, b, *flats], dfo["ab_dir"], dfo["mon_dir"], DATE)
    night = load_night(resolve({"date": DATE, "dfo": dfo, "drs_type": "CON"}))
    _, deps = job_graph(night)
    prio = job_priorities(night)
    for slots in (2, 3, 5, 9):
        assert list_schedule(deps, prio, slots).makespan == optimal_unit_makespan(deps, slots)


def test_history_durations_come_from_records(dfo) -> None:
    specs = fan_cascade([1, 2])
    specs[2].recipe = "other"
    write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
    settings = resolve({"date": DATE, "dfo": dfo})
    records = Path(settings.state_dir, "records")
    records.mkdir(parents=True)
    for ab, recipe, seconds in [(specs[0].name, "standin", 10.0), (specs[1].name, "standin", 20.0)]:
        (records / f"{ab}.json").write_text(
            json.dumps({"ab": ab, "recipe": recipe, "step": "process_ab", "duration_s": seconds})
        )
    # records of other steps are not AB durations
    (records / "downloads").mkdir()
    (records / "downloads" / "x.fits.json").write_text(
        json.dumps({"step": "download", "file": "x.fits", "duration_s": 99.0})
    )
    (records / "process_qc").mkdir()
    (records / "process_qc" / f"{specs[2].name}.json").write_text(
        json.dumps({"ab": specs[2].name, "step": "process_qc", "duration_s": 99.0})
    )
    durations, known = history_durations(load_night(settings))
    assert durations[specs[0].name] == 10 and durations[specs[1].name] == 20
    assert durations[specs[2].name] == 15  # no history of its recipe: median of all
    assert known == 2
    plan = plan_night(load_night(settings), [1, 2], *history_durations(load_night(settings)))
    assert plan["unit"] == "seconds"
    assert [r["schedule"] for r in plan["predictions"]] == [45, 30]


def test_plan_command_prints_levels_path_and_predictions(tmp_path, dfo, capsys) -> None:
    write_night(fan_cascade([1, 3, 6]), dfo["ab_dir"], dfo["mon_dir"], DATE)
    cfg = write_config(tmp_path / "c.yaml", dfo, drs_type="CON")
    assert main(["plan", "--configfile", str(cfg), "--slots", "1", "3", "6"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"CALIB_{DATE}: 10 ABs, 10 jobs, levels 1 / 3 / 6"
    assert out[1].startswith("critical path (3, 3 jobs): ")
    assert [line.split() for line in out[3:]] == [
        ["1", "10", "10"],
        ["3", "4", "4"],
        ["6", "3", "3"],
    ]


def mixed(dfo: dict[str, str]) -> None:
    mef = ABSpec(ab_name(0, prefix="MEF"), mef_factor=4)
    a = ABSpec(ab_name(1))
    b = ABSpec(ab_name(2), raw_type="FLAT", parents=[a.name])
    c = ABSpec(ab_name(3), raw_type="SCIENCE", parents=[b.name])
    d = ABSpec(ab_name(4), raw_type="SCIENCE", parents=[b.name])
    write_night([mef, a, b, c, d], dfo["ab_dir"], dfo["mon_dir"], DATE)


def fan(dfo: dict[str, str]) -> None:
    write_night(fan_cascade([1, 3, 6]), dfo["ab_dir"], dfo["mon_dir"], DATE)


@pytest.mark.slow
@pytest.mark.parametrize(("shape", "slots"), [(fan, 2), (fan, 4), (mixed, 2), (mixed, 3)])
def test_predicted_makespan_is_the_one_achieved(tmp_path, dfo, shape, slots) -> None:
    shape(dfo)
    place_raw_files(dfo)  # equal-length AB jobs only: no downloads sharing the slots
    sleep = "sleep 1.5"
    cfg = write_config(
        tmp_path / "c.yaml", dfo, drs_type="CON",
        commands={"process_ab": sleep, "process_ab_det": sleep, "mef_join": sleep},
    )  # fmt: skip
    night = load_night(resolve(yaml.safe_load(cfg.read_text())))
    predicted = plan_night(night, [slots])["predictions"][0]["schedule"]
    run_snakemake(tmp_path, cfg, cores=slots)
    recs = []
    for path in Path(dfo["job_dir"], "abflow", "records").rglob("*.json"):
        rec = json.loads(path.read_text())
        recs.append({**rec, "ab": rec["ab"] + (f"#{rec['det']}" if "det" in rec else "")})
    assert len(recs) == len(job_graph(night)[0])
    assert waves(intervals(recs)) == predicted
