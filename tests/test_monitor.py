"""The AB monitor page (checked in headless Chromium), its refresh, export, timeline, report."""

from __future__ import annotations

import datetime as dt
import html.parser
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import DATE, place_raw_files, run_snakemake, write_config

from abflow.cli import main
from abflow.example.generate import fan_cascade, write_night
from abflow.model.config import resolve
from abflow.model.load import load_night
from abflow.state.layout import JobId, Step
from abflow.views.monitor import PageRefresher, page_path, timeline_paths

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REQUIRE = os.environ.get("ABFLOW_REQUIRE_TOOLS") == "1"  # set by .ci/run: no silent skips


def chromium_dom(page: Path, profile: Path) -> tuple[str, str]:
    """The DOM of ``page`` after load, as headless Chromium renders it, and its log."""
    if CHROMIUM is None:
        if REQUIRE:
            pytest.fail("chromium is not installed (.ci/run installs the Debian package)")
        pytest.skip("chromium is not installed (Debian package chromium)")
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
        "--virtual-time-budget=2000", "--dump-dom", page.as_uri(),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, proc.stderr


class Links(html.parser.HTMLParser):
    """hrefs, row states and count texts of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.states: list[str] = []
        self.body: dict[str, str] = {}
        self.counts: dict[str, str] = {}
        self._count: str | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "a":
            self.hrefs.append(a["href"])
        if tag == "tr" and "data-state" in a:
            self.states.append(a["data-state"])
        if tag == "body":
            self.body = a
        if tag == "span" and str(a.get("id", "")).startswith("count-"):
            self._count = a["id"][len("count-") :]

    def handle_data(self, data: str) -> None:
        if self._count and data.strip().isdigit():
            self.counts[self._count] = data.strip()
            self._count = None


def night_with_one_failure(tmp_path: Path, dfo: dict[str, str]) -> tuple[list, Path]:
    specs = fan_cascade([1, 2, 2])  # bias -> 2 flats -> 2 science (one per flat)
    write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
    place_raw_files(dfo)
    failing = specs[1].name
    qc = "mkdir -p $DFO_LOG_DIR && printf 'qc report' > $DFO_LOG_DIR/{ab}_qc.png"
    cfg = write_config(
        tmp_path / "config.yaml", dfo, drs_type="CON", qc_mode="PAR",
        commands={"process_ab": f"case {{ab}} in {failing}) exit 4;; esac; sleep 0.2",
                  "process_qc": qc},
    )  # fmt: skip
    proc = run_snakemake(tmp_path, cfg, cores=2, check=False)
    assert proc.returncode != 0
    return specs, cfg


@pytest.mark.slow
def test_page_in_a_headless_browser_shows_counts_states_and_working_links(tmp_path, dfo) -> None:
    specs, cfg = night_with_one_failure(tmp_path, dfo)
    assert main(["status", "--configfile", str(cfg)]) == 0
    page = Path(dfo["mon_dir"], f"status_{DATE}.html")
    dom, log = chromium_dom(page, tmp_path / "chromium-profile")
    parsed = Links()
    parsed.feed(dom)
    assert parsed.body.get("data-ready") == "1"  # the page's script ran without error
    assert "Uncaught" not in log
    assert parsed.counts == {
        "all": "5", "succeeded": "3", "failed": "1", "running": "0", "held": "0", "blocked": "1",
        "queued": "0", "created": "0",
    }  # fmt: skip
    by_ab = dict(zip([s.name for s in specs], parsed.states, strict=True))
    assert by_ab[specs[1].name] == "failed" and by_ab[specs[3].name] == "blocked"
    assert [by_ab[s.name] for s in (specs[0], specs[2], specs[4])] == ["succeeded"] * 3
    assert "command exited 4" in dom
    assert len(parsed.hrefs) >= 5  # a log per AB that ran, timeline PNG/SVG
    for href in parsed.hrefs:
        assert not href.startswith("/") and (page.parent / href).resolve().is_file(), href
        linked, _ = chromium_dom((page.parent / href).resolve(), tmp_path / "p2")
        assert "ERR_FILE_NOT_FOUND" not in linked
    assert any(h.startswith("timeline_") for h in parsed.hrefs)


@pytest.mark.slow
def test_page_is_refreshed_during_a_run_and_written_at_the_end(tmp_path, dfo) -> None:
    write_night(fan_cascade([1, 1]), dfo["ab_dir"], dfo["mon_dir"], DATE)
    place_raw_files(dfo)
    cfg = write_config(tmp_path / "config.yaml", dfo, commands={"process_ab": "sleep 2"})
    page = Path(dfo["mon_dir"], f"status_{DATE}.html")
    cmd = ["python", "-m", "snakemake", "-s", str(Path(__file__).parents[1] / "Snakefile"),
           "--directory", str(tmp_path), "--profile",
           str(Path(__file__).parents[1] / "profiles" / "local"), "--configfile", str(cfg),
           "--cores", "1"]  # fmt: skip
    with open(tmp_path / "out.txt", "w") as out:
        run = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not page.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        during = page.read_text()
        assert run.wait(timeout=120) == 0
    assert 'data-state="running"' in during or 'data-state="queued"' in during
    after = page.read_text()
    assert after.count('data-state="succeeded"') == 2
    assert Path(timeline_paths(load_night(resolve({"date": DATE, "dfo": dfo})))[0]).exists()


def test_refresher_rewrites_the_page_at_its_interval_without_busy_waiting(dfo) -> None:
    write_night(fan_cascade([1]), dfo["ab_dir"], dfo["mon_dir"], DATE)
    night = load_night(resolve({"date": DATE, "dfo": dfo}))
    writes: list[float] = []
    refresher = PageRefresher(night, interval=0.2)
    original = refresher._write

    def counting() -> None:
        writes.append(time.monotonic())
        original()

    refresher._write = counting  # type: ignore[method-assign]
    cpu = time.process_time()
    refresher.start()
    time.sleep(1.1)
    refresher.stop()
    assert 5 <= len(writes) <= 8  # at start, every 0.2 s, and once at the end
    assert time.process_time() - cpu < 0.5  # waits, does not spin
    assert Path(page_path(night)).is_file()


def test_export_copies_the_page_and_the_files_it_links(tmp_path, dfo) -> None:
    write_night(fan_cascade([1]), dfo["ab_dir"], dfo["mon_dir"], DATE)
    settings = resolve({"date": DATE, "dfo": dfo})
    log = Path(settings.layout.log(JobId(Step.PROCESS_AB, fan_cascade([1])[0].name)))
    log.parent.mkdir(parents=True)
    log.write_text("the log")
    cfg = write_config(tmp_path / "c.yaml", dfo, status_export_dir=str(tmp_path / "web"))
    assert main(["status", "--configfile", str(cfg), "-F"]) == 0
    exported = tmp_path / "web" / DATE / f"status_{DATE}.html"
    parsed = Links()
    parsed.feed(exported.read_text())
    assert parsed.hrefs == [f"files/{log.name}"]
    assert (exported.parent / parsed.hrefs[0]).read_text() == "the log"


@pytest.mark.slow
def test_timeline_bars_match_the_completion_records(tmp_path, dfo) -> None:
    specs = fan_cascade([1, 2])
    specs[0].mef_factor = 2
    write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
    cfg = write_config(
        tmp_path / "config.yaml", dfo, drs_type="CON", qc_mode="SER",
        commands={"process_ab": "sleep 0.3", "process_ab_det": "sleep 0.3",
                  "mef_join": "true", "process_qc": "true"},
    )  # fmt: skip
    run_snakemake(tmp_path, cfg, cores=2)
    assert main(["timeline", "--configfile", str(cfg)]) == 0
    png, svg = timeline_paths(load_night(resolve({"date": DATE, "dfo": dfo})))
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(Path(png).with_suffix(".json").read_text())
    state = Path(dfo["job_dir"], "abflow")
    records = [
        json.loads(p.read_text())
        for base in (state / "records", state / "downloads" / "records")
        for p in base.rglob("*.json")
    ]
    assert len(data["bars"]) == len(records) == 3 + 2 + 3 + 3 * 3  # ABs, dets, QC, downloads
    t0 = min(dt.datetime.fromisoformat(r["start"]).timestamp() for r in records)
    by_job = {b["job"]: b for b in data["bars"]}
    for rec in records:
        step = rec["step"]
        names = {
            "download": f"download:{rec.get('file')}",
            "process_qc": f"qc:{rec.get('ab')}",
            "process_ab_det": f"{rec.get('ab')}#{rec.get('det')}",
        }
        job = names.get(step, rec.get("ab"))
        bar = by_job[job]
        assert bar["start"] == pytest.approx(
            dt.datetime.fromisoformat(rec["start"]).timestamp() - t0, abs=1e-3
        )
        assert bar["end"] == pytest.approx(
            dt.datetime.fromisoformat(rec["end"]).timestamp() - t0, abs=1e-3
        )
    svg_text = Path(svg).read_text()
    assert all(f'id="bar-{b["job"]}"' in svg_text for b in data["bars"])
    assert data["achieved"] > 0 and data["predicted"] is not None
    assert any(b["critical"] for b in data["bars"])


@pytest.mark.slow
def test_snakemake_report_includes_the_benchmarks(tmp_path, dfo) -> None:
    specs = fan_cascade([1, 2])
    write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
    cfg = write_config(tmp_path / "config.yaml", dfo, commands={"process_ab": "sleep 0.1"})
    run_snakemake(tmp_path, cfg)
    table = Path(dfo["job_dir"], "abflow", "benchmarks", f"CALIB_{DATE}.tsv").read_text()
    rows = table.splitlines()
    assert rows[0].split("\t")[:6] == ["ab", "step", "det", "recipe", "host", "s"]
    assert sorted(r.split("\t")[0] for r in rows[1:]) == sorted(s.name for s in specs)
    report = tmp_path / "report.html"
    run_snakemake(tmp_path, cfg, "--report", str(report))
    text = report.read_text()
    assert "Benchmarks" in text and "max_rss" in text


def _record_times(dfo: dict[str, str]) -> dict[str, tuple[float, float, dict]]:
    """Plan name -> (start, end, record) of every completion record (downloads included)."""
    state = Path(dfo["job_dir"], "abflow")
    out = {}
    for base in (state / "records", state / "downloads" / "records"):
        for p in base.rglob("*.json"):
            rec = json.loads(p.read_text())
            step = rec["step"]
            name = {
                "download": f"download:{rec.get('file')}",
                "process_qc": f"qc:{rec.get('ab')}",
                "process_ab_det": f"{rec.get('ab')}#{rec.get('det')}",
            }.get(step, rec.get("ab"))
            out[name] = (dt.datetime.fromisoformat(rec["start"]).timestamp(),
                         dt.datetime.fromisoformat(rec["end"]).timestamp(), rec)  # fmt: skip
    return out


@pytest.mark.slow
def test_the_timeline_shows_the_last_run_with_names_and_plans_qc_and_downloads(
    tmp_path, dfo
) -> None:
    """A night stopped after its first AB, then run to its end: the timeline is the second
    run's (no idle gap, the first run's AB left out), every bar carries its AB's name as a
    tooltip, and the plan's line accounts for the QC and download jobs it ran."""
    specs = fan_cascade([1, 3, 6])
    write_night(specs, dfo["ab_dir"], dfo["mon_dir"], DATE)
    cfg = write_config(
        tmp_path / "config.yaml", dfo, drs_type="CON", qc_mode="SER",
        commands={"process_ab": "sleep 1", "process_qc": "sleep 4",
                  "download": "sleep 0.5; printf raw > {dest}"},
    )  # fmt: skip
    # run 1: only the bias (its completion record as the target)
    bias_record = Path(dfo["job_dir"], "abflow", "records", f"{specs[0].name}.json")
    run_snakemake(tmp_path, cfg, str(bias_record), cores=2)
    time.sleep(2.0)  # an idle gap between the runs
    run_snakemake(tmp_path, cfg, cores=2)
    assert main(["timeline", "--configfile", str(cfg)]) == 0
    png, svg = timeline_paths(load_night(resolve({"date": DATE, "dfo": dfo})))
    data = json.loads(Path(png).with_suffix(".json").read_text())
    history = json.loads(Path(dfo["job_dir"], "abflow", "runs", f"CALIB_{DATE}.history.json")
                         .read_text())  # fmt: skip
    assert len(history) == 2
    since = dt.datetime.fromisoformat(history[1]["since"]).timestamp()
    times = _record_times(dfo)
    last = {job: t for job, t in times.items() if t[0] >= since}
    assert sorted(b["job"] for b in data["bars"]) == sorted(last)  # exactly the last run's jobs
    assert specs[0].name in times and specs[0].name not in last  # the bias ran in run 1
    t0 = min(t[0] for t in last.values())
    for bar in data["bars"]:
        assert bar["start"] == pytest.approx(last[bar["job"]][0] - t0, abs=1e-3)
        assert bar["end"] == pytest.approx(last[bar["job"]][1] - t0, abs=1e-3)
    assert data["achieved"] == pytest.approx(max(t[1] for t in last.values()) - t0, abs=1e-3)
    # every AB of the run is named in the SVG's tooltips
    text = Path(svg).read_text()
    for spec in specs[1:]:
        assert f"<title>{spec.name} (process_ab)" in text and f"<title>QC {spec.name}" in text
    # the plan: no schedule of these jobs ends before its longest chain, which here runs
    # through a download, a flat, a science AB and that AB's 4 s QC
    dur = {job: t[1] - t[0] for job, t in last.items()}
    chains = []
    for sci in specs[4:]:
        flat = sci.parents[0]
        fetched = max(dur[j] for j in dur if j.startswith(f"download:{flat.removesuffix('.ab')}"))
        chains.append(fetched + dur[flat] + dur[sci.name] + dur[f"qc:{sci.name}"])
    assert data["predicted"] >= max(chains) - 0.01
    assert data["predicted"] <= data["achieved"] + 0.5
    runs = subprocess.run(["abflow", "timeline", "--runs", "--configfile", str(cfg)],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert runs.startswith("run 1: ") and "\nrun 2: " in runs
    assert main(["timeline", "--run", "1", "--configfile", str(cfg)]) == 0
    one = json.loads(Path(png).with_suffix(".json").read_text())
    assert [b["job"] for b in one["bars"] if b["kind"] == "process_ab"] == [specs[0].name]
