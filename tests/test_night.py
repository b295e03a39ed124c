"""Unit tests of load_night: edges, levels, tables, and every validation error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import DATE

from abflow.example.generate import ABSpec, ab_text, calib_night, fan_cascade, write_night
from abflow.model.config import resolve
from abflow.model.load import load_night
from abflow.model.night import Edge, NightError


def settings_for(dfo: dict[str, str], **extra):
    return resolve({"date": DATE, "dfo": dfo, **extra})


def make(dfo: dict[str, str], specs: list[ABSpec]):
    write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
    return load_night(settings_for(dfo))


def problems_of(dfo: dict[str, str]) -> list[str]:
    with pytest.raises(NightError) as info:
        load_night(settings_for(dfo))
    return [str(p) for p in info.value.problems]


def list_path(dfo: dict[str, str]) -> str:
    return os.path.join(dfo["mon_dir"], f"AB_list_CALIB_{DATE}")


def test_edges_from_product_stems_and_levels(dfo) -> None:
    night = make(dfo, fan_cascade([1, 3, 6]))
    names = night.names
    assert len(night) == 10 and len(night.edges) == 9
    assert night[names[1]].parents == (names[0],)
    assert night[names[4]].parents == (names[1],)
    assert [len(level) for level in night.levels()] == [1, 3, 6]
    assert night.descendants(names[1]) == [names[1], names[4], names[5]]
    virtual = night[names[1]].virtual[0]
    assert virtual.parent == names[0]
    assert virtual.product_path.startswith(dfo["product_dir"])
    assert virtual.product_path.endswith(names[0][: -len(".ab")] + "_0000.fits")


def test_records_and_edges_describe_every_ab_and_its_files(dfo) -> None:
    night = make(dfo, calib_night(9))
    assert [record.name for record in night] == night.names
    assert all(type(r.level) is int and type(night.mef_factor(r.name)) is int for r in night)
    assert {row[0] for record in night for row in record.files()} == {
        "RAWFILE",
        "MCALIB",
        "PRODUCTS",
    }
    assert all(isinstance(e, Edge) for e in night.edges)
    sci = night.names[2]
    assert sorted(e.parent for e in night.edges if e.child == sci) == sorted(night.names[:2])
    assert night[sci].level == 2
    assert night.dependencies() == 3 * 3  # 3 setups: flat <- bias, science <- bias and flat


def test_prod_root_name_binds_a_virtual_entry_that_matches_no_products_entry(dfo) -> None:
    bias = ABSpec("B.2013-02-13T01:00:00.000.ab", n_products=0)
    flat = ABSpec("F.2013-02-13T02:00:00.000.ab", raw_type="FLAT", parents=[bias.name])
    night = make(dfo, [bias, flat])
    assert night[flat.name].parents == (bias.name,)
    product = night[flat.name].virtual[0].product_path
    assert product == os.path.join(
        dfo["product_dir"], "BIAS", DATE, "r.B.2013-02-13T01:00:00.000_0000.fits"
    )


def test_cascade_order_follows_dependencies_when_the_list_does_not(dfo) -> None:
    specs = fan_cascade([1, 2])
    specs.reverse()  # children listed before their parent
    night = make(dfo, specs)
    assert min(night, key=lambda r: r.run_order).name == specs[-1].name
    assert len(night.warnings) == 2
    assert "listed before its calibration source" in str(night.warnings[0])


def test_missing_ab_list(dfo) -> None:
    problems = problems_of(dfo)
    assert problems == [
        f"{list_path(dfo)}: AB list does not exist: check mode, date and "
        "dfo.mon_dir, or run createAB for this date first"
    ]


def test_empty_ab_list(dfo) -> None:
    Path(list_path(dfo)).write_text("# nothing tonight\n\n")
    assert "AB list is empty" in problems_of(dfo)[0]


def test_listed_but_missing_duplicate_and_malformed_entries_all_reported(dfo) -> None:
    specs = fan_cascade([1, 1])
    write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
    with open(list_path(dfo), "a") as fh:
        fh.write(f"{specs[0].name}  BIAS\n")  # line 3: duplicate
        fh.write("GONE.2013-02-13T00:00:00.000.ab\n")  # line 4: missing file
        fh.write("../../etc/passwd.ab\n")  # line 5: traversal
        fh.write("x;rm -rf ~.ab\n")  # line 6: metacharacters
    problems = problems_of(dfo)
    path = list_path(dfo)
    assert len(problems) == 4, problems
    assert problems[0].startswith(
        f"{path}:3: duplicate AB {specs[0].name} (first listed on line 1)"
    )
    assert problems[1].startswith(f"{path}:5: malformed line: '../../etc/passwd.ab'")
    assert problems[2].startswith(f"{path}:6: malformed line: 'x;rm'")
    assert problems[3].startswith(f"{path}:4: AB GONE.2013-02-13T00:00:00.000.ab is listed but")


def test_virtual_calibration_nobody_produces(dfo) -> None:
    orphan = ABSpec("F.2013-02-13T02:00:00.000.ab", raw_type="FLAT", parents=["NOBODY.ab"])
    write_night([orphan], dfo["ab_dir"], dfo["mon_dir"], DATE)
    problems = problems_of(dfo)
    ab_file = os.path.join(dfo["ab_dir"], orphan.name)
    line = (
        ab_text(orphan, DATE)
        .splitlines()
        .index(next(x for x in ab_text(orphan, DATE).splitlines() if x.startswith("MCALIB")))
        + 1
    )
    assert problems == [
        f"{ab_file}:{line}: MCALIB VIRTUAL r.NOBODY_0000: no AB of batch CALIB_{DATE} produces "
        "it and no such product exists: add the producing AB to the AB list, or associate a "
        "REAL calibration"
    ]


def test_virtual_calibration_that_exists_as_a_product_is_a_plain_input(dfo) -> None:
    existing = Path(dfo["product_dir"]) / "BIAS" / "2013-02-11" / "r.OLD_0000.fits"
    existing.parent.mkdir(parents=True)
    existing.write_bytes(b"x")
    flat = ABSpec("F.2013-02-13T02:00:00.000.ab", raw_type="FLAT", parents=["OLD.ab"])
    night = make(dfo, [flat])
    assert night[flat.name].parents == ()
    assert night[flat.name].virtual[0].product_path == str(existing)
    assert len(night.edges) == 0


def test_self_dependency(dfo) -> None:
    name = "S.2013-02-13T02:00:00.000.ab"
    write_night([ABSpec(name, parents=[name])], dfo["ab_dir"], dfo["mon_dir"], DATE)
    problems = problems_of(dfo)
    assert len(problems) == 1
    assert f"AB {name} depends on its own product" in problems[0]


@pytest.mark.parametrize("length", [2, 3, 12])
def test_dependency_cycles_name_the_abs_in_them(dfo, length: int) -> None:
    names = [f"C{i:02d}.2013-02-13T00:00:00.000.ab" for i in range(length)]
    specs = [ABSpec(n, parents=[names[i - 1]]) for i, n in enumerate(names)]
    specs.append(ABSpec("FREE.2013-02-13T00:00:00.000.ab"))
    write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
    problems = problems_of(dfo)
    assert len(problems) == 1, problems
    assert f"dependency cycle between {length} ABs" in problems[0]
    for n in names:
        assert n in problems[0]
    assert "FREE" not in problems[0]


def test_two_abs_predicting_the_same_product(dfo) -> None:
    a = ABSpec("A.2013-02-13T00:00:00.000.ab")
    b = ABSpec("B.2013-02-13T00:00:00.000.ab")
    write_night([a, b], dfo["ab_dir"], dfo["mon_dir"], DATE)
    # make B predict A's product
    path = Path(dfo["ab_dir"]) / b.name
    path.write_text(path.read_text().replace(b.root + "_0000", a.root + "_0000"))
    problems = problems_of(dfo)
    assert any("is also predicted by AB A.2013-02-13T00:00:00.000.ab" in p for p in problems)


def test_ab_paths_outside_the_configured_directories(dfo) -> None:
    spec = ABSpec("A.2013-02-13T00:00:00.000.ab", extra_lines=["RAWFILE /etc/shadow BIAS"])
    write_night([spec], dfo["ab_dir"], dfo["mon_dir"], DATE)
    problems = problems_of(dfo)
    assert len(problems) == 1
    assert "'/etc/shadow' is outside the configured directories" in problems[0]
    assert problems[0].startswith(os.path.join(dfo["ab_dir"], spec.name) + ":")


def test_all_problems_of_a_night_at_once(dfo) -> None:
    good = ABSpec("G.2013-02-13T00:00:00.000.ab")
    bad1 = ABSpec("B1.2013-02-13T00:00:00.000.ab", parents=["NOBODY.ab"])
    bad2 = ABSpec("B2.2013-02-13T00:00:00.000.ab", extra_lines=["DRS_TYPE XYZ"])
    write_night([good, bad1, bad2], dfo["ab_dir"], dfo["mon_dir"], DATE)
    with open(list_path(dfo), "a") as fh:
        fh.write("MISSING.2013-02-13T00:00:00.000.ab\n")
    problems = problems_of(dfo)
    assert len(problems) == 3, problems
    text = "\n".join(problems)
    for expected in ("MISSING", "NOBODY", "DRS_TYPE given twice"):
        assert expected in text


def test_mef_factor_from_the_ab_overrides_the_config(dfo) -> None:
    specs = [
        ABSpec("A.2013-02-13T00:00:00.000.ab", mef_factor=4),
        ABSpec("B.2013-02-13T00:00:00.000.ab"),
    ]
    write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
    night = load_night(settings_for(dfo, mef_factor=2))
    assert night.mef_factor(specs[0].name) == 4
    assert night.mef_factor(specs[1].name) == 2
