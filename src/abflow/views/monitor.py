"""The AB monitor page (DFOS getStatusAB): ``<mon_dir>/status_<DATE>.html``, static, no server.

Header counts, one row per AB in cascade order (raw type, recipe, state, start, end, duration,
host, the ABs it waits for, links to its log and QC report, QC1 numbers), links to the timeline.
The page reloads itself every 300 s; during a run the workflow rewrites it at least every 60 s
(:class:`PageRefresher`, started by the workflow's ``onstart`` handler) and once at the end.
"""

from __future__ import annotations

import datetime as _dt
import html
import os
import shutil
import threading
from collections.abc import Callable

from abflow import __version__
from abflow.model.night import Night
from abflow.state.fsutil import atomic_write_text
from abflow.state.layout import JobId, Step
from abflow.views.status import STATES, ABState, NightState, night_state

RELOAD_SECONDS = 300
REFRESH_SECONDS = 60

STYLE = """
body { font-family: sans-serif; font-size: 13px; margin: 1em; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: left; white-space: nowrap; }
th { background: #eee; }
.counts span { display: inline-block; margin-right: 1.5em; font-size: 15px; }
.succeeded { background: #d9f2d9; } .failed { background: #f7c6c6; }
.running { background: #fff2b3; } .queued { background: #e6eefc; }
.blocked { background: #eee0f7; } .created { background: #ffffff; }
td.reason { white-space: normal; max-width: 40em; color: #900; }
"""

SCRIPT = """
(function () {
  var made = Date.parse(document.body.getAttribute("data-written"));
  var el = document.getElementById("age");
  function tick() {
    var s = Math.round((Date.now() - made) / 1000);
    el.textContent = s < 120 ? s + " s ago" : Math.round(s / 60) + " min ago";
  }
  tick();
  setInterval(tick, 5000);
  document.body.setAttribute("data-ready", "1");
})();
"""


def page_path(night: Night) -> str:
    """Where the page of the night is written."""
    s = night.settings
    return os.path.join(s.dfo["mon_dir"], f"status_{s.date}.html")


def timeline_paths(night: Night) -> tuple[str, str]:
    """Where ``abflow timeline`` writes the night's PNG and SVG."""
    s = night.settings
    base = os.path.join(s.dfo["mon_dir"], f"timeline_{s.date}")
    return base + ".png", base + ".svg"


def _time(iso: object) -> str:
    if not iso:
        return ""
    return _dt.datetime.fromisoformat(str(iso)).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: object) -> str:
    if seconds in (None, ""):
        return ""
    value = float(seconds)  # type: ignore[arg-type]
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min"


QC1_SHOWN = 3


def _qc1(a: ABState) -> tuple[str, str]:
    """(cell text, full list for the tooltip) of the AB's QC1 numbers: abflow's own QC, else
    the parameters the site's processQC handed over (runner.site_qc1)."""
    results = (a.qc or {}).get("results") or {}
    products = results.get("products") or []
    if products:
        first = products[0]
        text = (
            f"median {first['median']:.4g}, noise {first['noise']:.4g}, hot {first['hot_pixels']}"
        )
        return text + (f" (+{len(products) - 1} products)" if len(products) > 1 else ""), ""
    qc1 = (a.qc or {}).get("qc1") or {}
    if not qc1:
        return "", ""
    items = [f"{k}={v}" for k, v in qc1.items()]
    more = f" (+{len(items) - QC1_SHOWN})" if len(items) > QC1_SHOWN else ""
    return ", ".join(items[:QC1_SHOWN]) + more, "\n".join(items)


Link = Callable[[str], str | None]


def render(state: NightState, link: Link) -> str:
    """The page as HTML. ``link(path)`` gives the href of a file (None: no link)."""
    night = state.night
    s = night.settings
    counts = state.counts()
    written = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    esc = html.escape

    def a(path: str | None, text: str) -> str:
        href = link(path) if path else None
        return f'<a href="{esc(href)}">{esc(text)}</a>' if href else ""

    if state.run and state.run_alive:
        run = f"running: snakemake pid {state.run['pid']} on {esc(str(state.run['host']))}"
    else:
        run = "no run going on"
    head = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{RELOAD_SECONDS}">',
        f"<title>AB monitor {esc(s.batch_id)}</title>",
        f"<style>{STYLE}</style></head>",
        f'<body data-written="{written}">',
        f"<h1>AB monitor: {esc(s.mode)} {esc(s.date)}</h1>",
        f'<p>{run}; page written {esc(written)} (<span id="age"></span>), '
        f"reloads every {RELOAD_SECONDS} s. abflow {__version__}</p>",
        '<p class="counts">'
        + f'<span id="count-all">all: <b>{counts["all"]}</b></span>'
        + "".join(
            f'<span id="count-{st}" class="{st}">{st}: <b>{counts[st]}</b></span>' for st in STATES
        )
        + "</p>",
    ]
    png, svg = timeline_paths(night)
    if os.path.exists(png):
        head.append(f"<p>timeline: {a(png, 'PNG')} {a(svg, 'SVG')}</p>")
    rows = [
        "<table><thead><tr><th>#</th><th>AB</th><th>raw type</th><th>recipe</th><th>state</th>"
        "<th>start</th><th>end</th><th>duration</th><th>host</th><th>HTCondor</th>"
        "<th>waits for</th>"
        "<th>log</th><th>QC report</th><th>QC1</th><th>reason</th></tr></thead><tbody>"
    ]
    for i, item in enumerate(state.abs, start=1):
        ab = night.ab_objects[item.ab]
        rec = item.record or item.failure or {}
        log = str(rec.get("log") or s.layout.log(JobId(Step.PROCESS_AB, item.ab)))
        results = (item.qc or {}).get("results") or {}
        qc_links = " ".join(
            x for x in (a(results.get("png"), "PNG"), a(results.get("paf"), "PAF")) if x
        )
        if item.qc_failure:
            qc_links = (qc_links + " QC failed").strip()
        reason = (item.failure or {}).get("reason", "") if item.state == "failed" else ""
        host = item.host or str(rec.get("host", ""))
        qc1, qc1_all = _qc1(item)
        rows.append(
            f'<tr id="ab-{i}" class="{item.state}" data-state="{item.state}">'
            f"<td>{i}</td><td>{esc(item.ab)}</td><td>{esc(ab.raw_type)}</td>"
            f"<td>{esc(ab.recipe)}</td><td>{item.state}</td>"
            f"<td>{_time(rec.get('start'))}</td><td>{_time(rec.get('end'))}</td>"
            f"<td>{_duration(rec.get('duration_s'))}</td><td>{esc(host)}</td>"
            f'<td class="pool">{esc(item.pool)}</td>'
            f"<td>{esc(', '.join(night.parents[item.ab]))}</td>"
            f"<td>{a(log if os.path.exists(log) else None, 'log')}</td>"
            f'<td>{qc_links}</td><td class="qc1" title="{esc(qc1_all)}">{esc(qc1)}</td>'
            f'<td class="reason">{esc(str(reason))}</td></tr>'
        )
    rows.append("</tbody></table>")
    tail = [f"<script>{SCRIPT}</script>", "</body></html>"]
    return "\n".join(head + rows + tail) + "\n"


def relative_link(page: str) -> Link:
    """Links relative to the page's directory (they resolve from file:// and a web server)."""
    base = os.path.dirname(page)

    def link(path: str) -> str | None:
        return os.path.relpath(path, base) if os.path.exists(path) else None

    return link


Queue = Callable[[], list | None]


def pool_queue(night: Night) -> list | None:
    """The night's jobs in the HTCondor queue (None: no pool configured or none answers)."""
    from abflow.run.condor import night_queue

    try:
        return night_queue(night.settings.state_dir)
    except Exception:  # the page must never fail on the pool
        return None


def write_page(night: Night, queue: list | None = None) -> str:
    """Write the night's page (with its jobs in the HTCondor ``queue``); return its path."""
    path = page_path(night)
    atomic_write_text(path, render(night_state(night, queue), relative_link(path)))
    return path


def export_page(night: Night, export_dir: str) -> str:
    """Copy the page with every file it links into ``export_dir/<DATE>/``; return the page."""
    target = os.path.join(export_dir, night.settings.date)
    files = os.path.join(target, "files")
    os.makedirs(files, exist_ok=True)
    copied: dict[str, str] = {}

    def link(path: str) -> str | None:
        if not os.path.isfile(path):
            return None
        if path not in copied:
            name = os.path.basename(path)
            if name in copied.values():
                name = f"{len(copied)}-{name}"
            shutil.copyfile(path, os.path.join(files, name))
            copied[path] = name
        return f"files/{copied[path]}"

    page = os.path.join(target, os.path.basename(page_path(night)))
    atomic_write_text(page, render(night_state(night), link))
    return page


class PageRefresher:
    """Rewrite the night's page every ``interval`` seconds from a background thread.

    Waits on an event between refreshes (no busy loop); :meth:`stop` ends it and writes the
    page a last time.
    """

    def __init__(
        self, night: Night, interval: float = REFRESH_SECONDS, queue: Queue | None = None
    ) -> None:
        self.night = night
        self.interval = interval
        self.queue = queue  # asked at every refresh (a run on a pool: pool_queue)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="abflow-status", daemon=True)

    def _write(self) -> None:
        queue = self.queue() if self.queue else None
        for night in self.night.nights():  # one page per date
            try:
                write_page(night, queue)
            except Exception as exc:  # the page must never break the night
                print(f"abflow: could not write the status page: {exc}", flush=True)

    def _loop(self) -> None:
        self._write()
        while not self._stop.wait(self.interval):
            self._write()

    def start(self, queue: Queue | None = None) -> PageRefresher:
        """Start refreshing (showing the HTCondor ``queue`` if given)."""
        self.queue = queue or self.queue
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop refreshing and write the final page."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self._write()
