"""Unit tests of the AB parser (abflow.model.ab)."""

from __future__ import annotations

from pathlib import Path

import pytest

from abflow.model.ab import PathPolicy, parse_ab, read_ab, stem

ROOT = Path(__file__).resolve().parents[1]
VARS = {
    "DFO_RAW_DIR": "/data/raw",
    "DFO_CAL_DIR": "/data/cal",
    "DFS_PRODUCT": "/data/products",
}
POLICY = PathPolicy(
    inputs=("/data/raw", "/data/cal", "/data/products"), outputs=("/data/products",)
)

FLAT = """\
TOOL_VERSION    3.9
INSTRUMENT      GIRAFFE
DATE            2013-02-12
DPR_CATG        CALIB
RAW_TYPE        FLAT
RECIPE          gimasterflat
DRS_TYPE        CON
AB_NAME         GIRAF.2013-02-13T10:41:17.512_tpl.ab
AB_EVENT        TPL_D   # grouping rule
PROD_ROOT_NAME  r.GIRAF.2013-02-13T10:41:17.512_tpl
# pipeline product path
PROD_PATH       $DFS_PRODUCT/FLAT/2013-02-12
RAW_MATCH_KEY   INS_SLIT_NAME=Medusa1
RAW_MATCH_KEY   INS_GRAT_NAME=LR
RAWFILE   $DFO_RAW_DIR/2013-02-12/GIRAF.2013-02-13T10:41:17.512.fits  FLAT
RAWFILE   ${DFO_RAW_DIR}/2013-02-12/GIRAF.2013-02-13T10:42:05.118.fits  FLAT
MCALIB    VIRTUAL  $DFO_CAL_DIR/VCAL/r.GIRAF.2013-02-13T10:02:03.123_tpl_0000.hdr  MASTER_BIAS
MCALIB    REAL     $DFO_CAL_DIR/2013-02-10/GI_MDRK_130210A_1x1.fits  MASTER_DARK
PRODUCTS  $DFS_PRODUCT/FLAT/2013-02-12/r.GIRAF.2013-02-13T10:41:17.512_tpl_0000.fits  FF_LOCCENTROID
PRODUCTS  $DFS_PRODUCT/FLAT/2013-02-12/r.GIRAF.2013-02-13T10:41:17.512_tpl_0001.fits  FF_LOCWIDTH
PARAM         INS_SLIT_NAME=Medusa1
RECIPE_PARAM  --stack-method=ksigma
MEF_FACTOR      4
"""
NAME = "/data/ab/GIRAF.2013-02-13T10:41:17.512_tpl.ab"


def parse(text: str, name: str = NAME, policy: PathPolicy | None = POLICY):
    return parse_ab(text, name, VARS, policy)


def messages(problems) -> str:
    return "\n".join(str(p) for p in problems)


def test_parses_all_documented_fields() -> None:
    ab, problems = parse(FLAT)
    assert problems == []
    assert ab.name == "GIRAF.2013-02-13T10:41:17.512_tpl.ab"
    assert (ab.recipe, ab.raw_type, ab.drs_type, ab.instrument) == (
        "gimasterflat",
        "FLAT",
        "CON",
        "GIRAFFE",
    )
    assert ab.prod_root_name == "r.GIRAF.2013-02-13T10:41:17.512_tpl"
    assert ab.prod_path == "/data/products/FLAT/2013-02-12"
    assert [(f.path, f.tag, f.line) for f in ab.rawfiles] == [
        ("/data/raw/2013-02-12/GIRAF.2013-02-13T10:41:17.512.fits", "FLAT", 15),
        ("/data/raw/2013-02-12/GIRAF.2013-02-13T10:42:05.118.fits", "FLAT", 16),
    ]
    assert [(c.kind, c.path, c.tag) for c in ab.mcalibs] == [
        ("VIRTUAL", "/data/cal/VCAL/r.GIRAF.2013-02-13T10:02:03.123_tpl_0000.hdr", "MASTER_BIAS"),
        ("REAL", "/data/cal/2013-02-10/GI_MDRK_130210A_1x1.fits", "MASTER_DARK"),
    ]
    assert ab.mcalibs[0].virtual and not ab.mcalibs[1].virtual
    assert [f.tag for f in ab.products] == ["FF_LOCCENTROID", "FF_LOCWIDTH"]
    assert ab.params == ["INS_SLIT_NAME=Medusa1"]
    assert ab.recipe_params == ["--stack-method=ksigma"]
    assert ab.mef_factor == 4
    assert ab.runs_recipe


def test_unknown_and_repeated_qualifiers_are_kept_verbatim_without_comments() -> None:
    ab, problems = parse(FLAT + "FUTURE_KEY   some value  with  spaces # note\n")
    assert problems == []
    keys = [(q.name, q.value) for q in ab.qualifiers if q.name in ("RAW_MATCH_KEY", "AB_EVENT")]
    assert keys == [
        ("AB_EVENT", "TPL_D"),
        ("RAW_MATCH_KEY", "INS_SLIT_NAME=Medusa1"),
        ("RAW_MATCH_KEY", "INS_GRAT_NAME=LR"),
    ]
    assert ab.qualifiers[-1].name == "FUTURE_KEY"
    assert ab.qualifiers[-1].value == "some value with spaces"


def test_variables_come_from_the_mapping_then_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("MY_CALS", "/data/cal/static")
    text = FLAT.replace(
        "$DFO_CAL_DIR/2013-02-10/GI_MDRK_130210A_1x1.fits", "$MY_CALS/GI_MDRK_130210A_1x1.fits"
    )
    ab, problems = parse(text)
    assert problems == []
    assert ab.mcalibs[1].path == "/data/cal/static/GI_MDRK_130210A_1x1.fits"


def test_undefined_variable_is_reported_with_its_line() -> None:
    text = FLAT.replace("$DFO_RAW_DIR/2013", "$DFO_NOPE_DIR/2013", 1)
    _, problems = parse(text)
    assert len(problems) == 1
    assert problems[0].line == 15
    assert "undefined variable $DFO_NOPE_DIR" in problems[0].message


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("123 not a qualifier", "malformed line"),
        ("=RAWFILE x", "malformed line"),
        ("MCALIB FAKE $DFO_CAL_DIR/x.fits MASTER_BIAS", "unknown MCALIB flag 'FAKE'"),
        ("MCALIB VIRTUAL", "MCALIB needs"),
        ("MCALIB VIRTUAL $DFO_CAL_DIR/VCAL/x.hdr", "MCALIB has no tag"),
        ("RAWFILE a b c", "RAWFILE needs"),
        ("PRODUCTS $DFS_PRODUCT/x.fits TAG extra", "PRODUCTS needs"),
        ("RECIPE_PARAM --x=$(touch/tmp/pwned)", "invalid recipe option"),
        ("RECIPE_PARAM ;rm", "invalid recipe option"),
        ("RAWFILE $DFO_RAW_DIR/a.fits BAD;TAG", "invalid tag"),
    ],
)
def test_malformed_lines_are_reported_with_line_numbers(line: str, expected: str) -> None:
    _, problems = parse(FLAT + line + "\n")
    assert [p.line for p in problems] == [FLAT.count("\n") + 1], messages(problems)
    assert expected in problems[0].message
    assert problems[0].file == NAME


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("DRS_TYPE        CON", "DRS_TYPE        FAST", "unknown DRS_TYPE 'FAST'"),
        ("DRS_TYPE        CON", "DRS_TYPE        RBS", "historic DRS_TYPE 'RBS'"),
        ("MEF_FACTOR      4", "MEF_FACTOR      0", "invalid MEF_FACTOR '0'"),
        ("MEF_FACTOR      4", "MEF_FACTOR      100000", "invalid MEF_FACTOR '100000'"),
        ("MEF_FACTOR      4", "MEF_FACTOR      four", "invalid MEF_FACTOR 'four'"),
        ("DATE            2013-02-12", "DATE            12/02/2013", "invalid DATE"),
        ("RECIPE          gimasterflat", "RECIPE          rm;ls", "invalid RECIPE"),
        (
            "RAW_TYPE        FLAT",
            "RAW_TYPE        FLAT\nRAW_TYPE        BIAS",
            "RAW_TYPE given twice",
        ),
        (
            "AB_NAME         GIRAF.2013-02-13T10:41:17.512_tpl.ab",
            "AB_NAME         OTHER.ab",
            "does not match the file name",
        ),
    ],
)
def test_unknown_qualifier_values_are_errors(old: str, new: str, expected: str) -> None:
    _, problems = parse(FLAT.replace(old, new))
    assert len(problems) == 1, messages(problems)
    assert expected in problems[0].message
    assert problems[0].line is not None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$DFO_RAW_DIR/2013-02-12/a.fits;rm", "unsafe characters"),
        ("$DFO_RAW_DIR/$(id).fits", "unsafe characters"),
        ("$DFO_RAW_DIR/$HOME_NOT_SET_X/a.fits", "undefined variable"),
        ("$DFO_RAW_DIR/`id`.fits", "unsafe characters"),
        ("$DFO_RAW_DIR/a|b.fits", "unsafe characters"),
        ("$DFO_RAW_DIR/../../etc/passwd", "not normalised"),
        ("$DFO_RAW_DIR//a.fits", "not normalised"),
        ("relative/a.fits", "not absolute"),
        ("/etc/passwd", "outside the configured directories"),
    ],
)
def test_unsafe_input_paths_are_refused(path: str, expected: str) -> None:
    _, problems = parse(FLAT + f"RAWFILE {path} FLAT\n")
    assert len(problems) == 1, messages(problems)
    assert expected in problems[0].message


def test_products_must_stay_inside_the_product_directory() -> None:
    text = FLAT.replace(
        "PROD_PATH       $DFS_PRODUCT/FLAT/2013-02-12", "PROD_PATH       $DFO_RAW_DIR/FLAT"
    )
    text += "PRODUCTS  $DFO_CAL_DIR/r.x_0000.fits  X\n"
    _, problems = parse(text)
    assert len(problems) == 2, messages(problems)
    assert all("outside the configured directories" in p.message for p in problems)


@pytest.mark.parametrize(
    "name",
    ["bad name.ab", "x;rm -rf.ab", "noext", "-flag.ab", "$(id).ab", ".hidden.ab"],
)
def test_unsafe_ab_file_names_are_refused(name: str) -> None:
    _, problems = parse(FLAT.replace("AB_NAME ", "X_AB_NAME "), name=f"/data/ab/{name}")
    assert any("unsafe or invalid AB file name" in p.message for p in problems), messages(problems)


def test_rawfile_without_tag_takes_the_raw_type_and_mcalib_without_flag_is_real() -> None:
    text = (
        FLAT + "RAWFILE $DFO_RAW_DIR/2013-02-12/extra.fits\nMCALIB $DFO_CAL_DIR/x.fits MASTER_X\n"
    )
    ab, problems = parse(text)
    assert problems == []
    assert ab.rawfiles[-1].tag == "FLAT"
    assert (ab.mcalibs[-1].kind, ab.mcalibs[-1].tag) == ("REAL", "MASTER_X")


def test_missing_recipe_and_rawfiles_are_reported() -> None:
    _, problems = parse("INSTRUMENT X\n", name="/data/ab/X.ab")
    text = messages(problems)
    assert "no RECIPE line" in text
    _, problems = parse("RECIPE gimasterbias\n", name="/data/ab/X.ab")
    assert "no RAWFILE line" in messages(problems)
    ab, problems = parse("RECIPE none\n", name="/data/ab/X.ab")
    assert problems == [] and not ab.runs_recipe


def test_all_problems_of_a_file_are_reported_at_once() -> None:
    text = FLAT + "123 junk\nDRS_TYPE CPL\nRAWFILE /etc/passwd FLAT\n"
    _, problems = parse(text)
    assert len(problems) == 3, messages(problems)


def test_read_ab_reports_binary_and_non_utf8_files(tmp_path: Path) -> None:
    binary = tmp_path / "BIN.ab"
    binary.write_bytes(b"RECIPE x\n\x00\x01\x02")
    _, problems = read_ab(str(binary))
    assert problems[0].line == 2 and "binary content" in problems[0].message
    latin = tmp_path / "LATIN.ab"
    latin.write_bytes(b"RECIPE x\nINSTRUMENT caf\xe9\n")
    ab, problems = read_ab(str(latin))
    assert ab is None and problems[0].line == 2 and "not UTF-8" in problems[0].message
    _, problems = read_ab(str(tmp_path / "MISSING.ab"))
    assert "does not exist" in problems[0].message


def test_example_abs_parse_cleanly() -> None:
    variables = {k: "/x" for k in ("DFO_RAW_DIR", "DFO_CAL_DIR", "DFS_PRODUCT")}
    files = sorted((ROOT / "resources" / "example" / "ab").glob("*.ab"))
    assert len(files) >= 8
    for path in files:
        ab, problems = read_ab(str(path), variables)
        assert problems == [], messages(problems)
        assert ab.runs_recipe and ab.rawfiles and ab.products


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/a/r.X_0000.hdr", "r.X_0000"),
        ("/a/r.X_0000.fits", "r.X_0000"),
        ("/a/GI_MBIA_071012A_1x1.fits.fz", "GI_MBIA_071012A_1x1"),
        ("/a/GIRAF.2013-02-13T10:02:03.123.fits", "GIRAF.2013-02-13T10:02:03.123"),
    ],
)
def test_stem_drops_directory_and_extension(path: str, expected: str) -> None:
    assert stem(path) == expected
