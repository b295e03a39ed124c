"""The AB monitor page says what is true, read in headless Chromium at 1,280 pixels: how the
last run ended (succeeded, with failures) or that it died (SIGKILL), the QC1 numbers a site's
processQC hands over in $ABFLOW_RESULTS (page, summary, exported copy), the site's QC reports
where qc_reports says, and the columns a QC scientist scans without horizontal scrolling."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import DATE, ROOT, SNAKEFILE, place_raw_files, write_config
from test_monitor import CHROMIUM, REQUIRE

from abflow.cli import main
from abflow.example.generate import fan_cascade, write_night

pytestmark = pytest.mark.slow

# a site's processQC: QC1 numbers as JSON in $ABFLOW_RESULTS, an HTML report in the log tree
SITE_QC = (
    'printf \'{{"QC.MEDIAN": 201.4, "QC.RON": 3.1}}\' > "$ABFLOW_RESULTS"; '
    "name={ab}; mkdir -p $DFO_LOG_DIR/{date}; "
    "printf '<h1>QC</h1>' > $DFO_LOG_DIR/{date}/${{name%.ab}}.qc.html"
)
# what the test adds to its copy of the page: where each header cell ends, once laid out
MEASURE = """<script>
document.body.setAttribute("data-columns", JSON.stringify(Array.from(
  document.querySelectorAll("thead th"),
  th => [th.textContent, th.getBoundingClientRect().right])));
document.body.setAttribute("data-width", String(document.documentElement.clientWidth));
</script></body>"""
SCANNED = ("AB", "state", "start", "end", "duration", "QC1", "log")


def browse(page: Path, profile: Path, measure: bool = True) -> str:
    """The DOM of a copy of ``page`` after load in headless Chromium, 1,280 pixels wide."""
    if CHROMIUM is None:
        if REQUIRE:
            pytest.fail("chromium is not installed (.ci/run installs the Debian package)")
        pytest.skip("chromium is not installed (Debian package chromium)")
    copy = page.with_name("copy-" + page.name)
    text = page.read_text()
    copy.write_text(text.replace("</body>", MEASURE) if measure else text)
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--window-size=1280,1000", "--hide-scrollbars",
           "--virtual-time-budget=2000", "--dump-dom", copy.as_uri()]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    copy.unlink()
    return proc.stdout


def attribute(dom: str, name: str) -> str:
    match = re.search(rf'{name}="([^"]*)"', dom)
    return match.group(1).replace("&quot;", '"') if match else ""


def run_line(dom: str) -> tuple[str, str, str]:
    """The header's run line: (data-run, data-outcome, text)."""
    match = re.search(r'<p id="run" data-run="(\w+)" data-outcome="(\w*)"[^>]*>(.*?)</p>', dom,
                      re.S)  # fmt: skip
    assert match, dom[:3000]
    return match.group(1), match.group(2), re.sub(r"<[^>]+>", "", match.group(3))


def snakemake(tmp_path: Path, cfg: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory",
            str(tmp_path), "--profile", str(ROOT / "profiles" / "local"), "--configfile",
            str(cfg), "--cores", "2", *args]  # fmt: skip


@pytest.fixture
def night(tmp_path: Path, dfo: dict[str, str]) -> tuple[list, Path, Path]:
    specs = fan_cascade([1, 2, 2])  # bias -> 2 flats -> 2 science (one per flat)
    write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
    place_raw_files(dfo)
    failing = specs[2].name
    cfg = write_config(
        tmp_path / "config.yaml", dfo, drs_type="CON", qc_mode="PAR",
        qc_reports="{log_dir}/{date}/{ab_stem}.qc.*", status_export_dir=str(tmp_path / "web"),
        commands={"process_ab": f"case {{ab}} in {failing}) exit 4;; esac; sleep 0.3",
                  "process_qc": SITE_QC},
    )  # fmt: skip
    return specs, cfg, Path(dfo["mon_dir"], f"status_{DATE}.html")


def test_the_last_page_of_a_run_says_how_it_ended_and_shows_the_sites_qc1(
    tmp_path, dfo, night
) -> None:
    specs, cfg, page = night
    run = subprocess.run(snakemake(tmp_path, cfg), capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and page.exists(), run.stdout + run.stderr
    dom = browse(page, tmp_path / "chromium")
    state, outcome, text = run_line(dom)
    assert (state, outcome) == ("ended", "failed"), text
    assert text.startswith("last run ended with failures at ") and "pid" in text
    assert "running: snakemake" not in dom
    # QC1 from $ABFLOW_RESULTS: on the page (every AB whose QC ran), in the run's summary
    cells = re.findall(r'<td class="qc1" title="([^"]*)">([^<]*)</td>', dom)
    shown = [c for c in cells if c[1]]
    assert len(shown) == 3 and all(c[1] == "QC.MEDIAN=201.4, QC.RON=3.1" for c in shown)
    out = run.stdout + run.stderr
    assert "QC1 numbers of 3 ABs" in out and f"{specs[0].name}: QC.MEDIAN=201.4, QC.RON=3.1" in out
    # the site's report, linked where qc_reports says
    reports = re.findall(r'<td class="qc-report"><a href="([^"]+)">([^<]+)</a>', dom)
    assert len(reports) == 3 and all(name.endswith(".qc.html") for _, name in reports)
    for href, _ in reports:
        assert (page.parent / href).resolve().read_text() == "<h1>QC</h1>"
    # the columns a QC scientist scans fit 1,280 pixels; the long lists are folded
    assert attribute(dom, "data-width") in ("1280", "1265")
    columns = dict(json.loads(attribute(dom, "data-columns")))
    assert all(columns[name] <= 1280 for name in SCANNED), columns
    assert re.search(r'<td class="waits" title="[^"]+">1 AB</td>', dom)
    # the exported copy says the same
    assert main(["status", "-F", "--configfile", str(cfg)]) == 0
    exported = browse(Path(tmp_path, "web", DATE, page.name), tmp_path / "chromium2")
    assert run_line(exported)[:2] == ("ended", "failed")
    assert exported.count("QC.MEDIAN=201.4, QC.RON=3.1</td>") == 3
    # the same command after a fix: succeeded
    cfg.write_text(cfg.read_text().replace("exit 4", "true"))
    again = subprocess.run(snakemake(tmp_path, cfg), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    state, outcome, text = run_line(browse(page, tmp_path / "chromium3", measure=False))
    assert (state, outcome) == ("ended", "succeeded") and text.startswith("last run succeeded")


def test_a_killed_run_is_not_shown_as_running(tmp_path, dfo, night) -> None:
    _, cfg, page = night
    cfg.write_text(cfg.read_text().replace("sleep 0.3", "sleep 30"))
    proc = subprocess.Popen(snakemake(tmp_path, cfg), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and 'data-run="running"' not in (
        page.read_text() if page.exists() else ""
    ):
        time.sleep(0.3)
    left = page.read_text()
    assert 'data-run="running"' in left
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    # the page the dead run left: fresh, it says running; once older than three refreshes, the
    # browser says the run has probably died
    assert run_line(browse(page, tmp_path / "c1", measure=False))[0] == "running"
    written = attribute(left, "data-written")
    old = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 600))
    page.write_text(
        left.replace(f'data-written="{written}"', f'data-written="{old}{written[19:]}"')
    )
    state, _, text = run_line(browse(page, tmp_path / "c2", measure=False))
    assert state == "running" and "the run has probably died" in text
    # abflow status, asked afterwards: not running, crashed or killed
    assert main(["status", "--configfile", str(cfg)]) == 0
    state, _, text = run_line(browse(page, tmp_path / "c3", measure=False))
    assert state == "crashed" and "crashed or killed" in text, text
    assert "probably died" not in text
