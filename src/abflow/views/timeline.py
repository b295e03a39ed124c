"""The timeline of a run: a Gantt chart (PNG and SVG) from the completion records.

By default the last run of the night (from the date's run history, abflow.state.layout:
``runs/<batch>.history.json``): a stopped run and its restart are two runs, and the idle time
between them is in neither. Earlier runs are selectable (``abflow timeline --run N``); a job
rerun later shows in the run that wrote its record.

One row per slot of each host (jobs placed on the first free row), one bar per job (processing,
per-detector, join, download and QC jobs in distinct colours) with the AB's name on it where it
fits and as the SVG's tooltip, the critical path outlined (the chain of jobs that set the
finish time, from the recorded durations), and two vertical lines: when the run's last job
ended and when ``abflow plan``'s scheduler would have ended the same jobs (AB, QC and download
jobs, with their recorded durations, on as many slots as the run used).
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from abflow.model.night import Night
from abflow.model.plan import critical_path, job_graph, job_priorities, list_schedule
from abflow.state.units import clock_text
from abflow.views.history import duration_of, job_records

COLOURS = {
    "process_ab": "#4c72b0",
    "process_ab_det": "#64b5cd",
    "mef_join": "#8172b2",
    "process_qc": "#55a868",
    "download": "#999999",
}


@dataclass(frozen=True)
class Bar:
    """One job on the timeline (times in seconds from the first start)."""

    job: str
    kind: str
    host: str
    row: int
    start: float
    end: float
    critical: bool
    label: str = ""  # the AB (or the downloaded file) it belongs to


def _epoch(iso: str) -> float:
    return _dt.datetime.fromisoformat(iso).timestamp()


def runs(night: Night) -> list[dict[str, Any]]:
    """The runs of the night, oldest first (``since``, ``end``; see abflow.state.runstate);
    an entry without a readable start time is left out."""
    from abflow.state.runstate import run_history_of

    return [
        e
        for e in run_history_of(night.settings.layout, night.settings.batch_id)
        if _started(e) is not None
    ]


def _started(entry: Mapping[str, Any]) -> float | None:
    """When a run of the history started (epoch s), None if it does not say so readably."""
    try:
        return _epoch(entry.get("since") or entry.get("start"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def run_window(night: Night, run: int = -1) -> tuple[float, float] | None:
    """The epoch interval of run ``run`` (index into :func:`runs`, -1: the last): from its
    start to the next run's start (or its end). None without a run history (every record)."""
    history = runs(night)
    if not history:
        return None
    try:
        chosen = history[run]
    except IndexError:
        raise ValueError(
            f"no run {run} of {night.settings.batch_id}: it has {len(history)} "
            f"run{'s' if len(history) != 1 else ''}"
        ) from None
    k = history.index(chosen)
    start = _started(chosen) or 0.0
    later = history[k + 1] if k + 1 < len(history) else None
    end = (_started(later) or float("inf")) if later else float("inf")
    return start - 1.0, end


def _label(rec: Mapping[str, Any]) -> str:
    if rec.get("step") == "download":
        return str(rec.get("file", ""))
    det = f" det {rec['det']}" if rec.get("det") is not None else ""
    qc = "QC " if rec.get("step") == "process_qc" else ""
    return f"{qc}{rec.get('ab', '')}{det}"


def _graph(
    night: Night, records: Sequence[Mapping[str, Any]]
) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Dependencies and priorities of the recorded jobs: AB jobs as the cascade has them, a
    QC job after its AB, an AB job after the downloads of its inputs made in the run."""
    _, ab_deps = job_graph(night)
    prio = job_priorities(night)
    present = {r["job"] for r in records}
    deps = {j: [p for p in ps if p in present] for j, ps in ab_deps.items() if j in present}
    for rec in records:
        job = rec["job"]
        if rec.get("step") == "process_qc":
            deps[job] = [a for a in [str(rec.get("ab"))] if a in present]
            prio[job] = 0
        elif rec.get("step") == "download":
            deps[job] = []
    for job in list(deps):
        ab = job.split("#", 1)[0]
        if job.startswith("download:") or job.startswith("qc:") or ab not in night:
            continue
        if (night.detectors(ab) > 1) == (job != ab):  # the jobs that read the AB's files
            files = (*night[ab].raw_inputs, *night[ab].cal_inputs)
            fetched = [f"download:{os.path.basename(f)}" for f in files]
            fetched = [d for d in fetched if d in present]
            deps[job] = deps[job] + fetched
            for d in fetched:
                prio[d] = max(prio.get(d, 0), prio.get(job, 0) + 1)
    return deps, prio


@dataclass(frozen=True)
class Timeline:
    """What the chart shows: the bars of one run, when its last job ended (s from its first
    start) and when the plan's scheduler would have ended the same jobs (s; None without
    jobs), and its title."""

    bars: list[Bar]
    achieved: float
    predicted: float | None
    title: str


def timeline_of(night: Night, run: int = -1) -> Timeline:
    """The timeline of run ``run`` (-1: the last; see :func:`run_window`): everything the chart
    needs, read from the run history and the records, with the plan's scheduler rerun on the
    recorded durations. Raises ValueError for a run the night does not have."""
    bars, achieved, predicted = _bars(night, run)
    title = f"{night.settings.batch_id}: {len(bars)} jobs of {_run_title(night, run)}"
    return Timeline(bars, achieved, predicted, title)


def _bars(night: Night, run: int) -> tuple[list[Bar], float, float | None]:
    window = run_window(night, run)
    records = [
        r
        for r in job_records(night)
        if window is None or window[0] <= _epoch(r["start"]) < window[1]
    ]
    if not records:
        return [], 0.0, None
    t0 = min(_epoch(r["start"]) for r in records)
    deps, prio = _graph(night, records)
    durations = {r["job"]: duration_of(night.settings, r) for r in records}
    chain, _ = critical_path(deps, durations) if deps else ([], 0.0)
    out = _placed(records, t0, set(chain))
    achieved = max(b.end for b in out)
    slots = max(sum(1 for o in out if o.start <= b.start < o.end) for b in out)
    first = min(b.start for b in out)
    predicted = first + list_schedule(deps, prio, max(slots, 1), durations).makespan
    return out, achieved, predicted


def _placed(records: Sequence[Mapping[str, Any]], t0: float, critical: set[str]) -> list[Bar]:
    """One bar per record, each on the first free row of its host."""
    rows: dict[str, list[float]] = {}  # host -> end time of the last bar on each row
    out = []
    for rec in sorted(records, key=lambda r: (_epoch(r["start"]), r["job"])):
        start, end = _epoch(rec["start"]) - t0, _epoch(rec["end"]) - t0
        host = str(rec.get("host", ""))
        ends = rows.setdefault(host, [])
        row = next((i for i, e in enumerate(ends) if e <= start + 1e-6), len(ends))
        if row == len(ends):
            ends.append(end)
        else:
            ends[row] = end
        out.append(
            Bar(rec["job"], rec["kind"], host, row, start, end, rec["job"] in critical, _label(rec))
        )
    return out


def draw(timeline: Timeline, png: str, svg: str) -> None:
    """Draw ``timeline`` into ``png`` and ``svg`` (and the bars drawn into the ``.json``
    beside them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from abflow.state.fsutil import atomic_write_bytes

    items, achieved, predicted = timeline.bars, timeline.achieved, timeline.predicted
    offsets, total = _row_offsets(items)
    with plt.rc_context({"svg.fonttype": "none"}):  # text stays text: names searchable
        fig, ax = plt.subplots(figsize=(11, 1.2 + 0.35 * max(total, 1)))
        _draw_bars(ax, items, offsets, max(achieved, predicted or 0.0))
        ax.axvline(achieved, color="black", linewidth=1.5, label=f"run ended {achieved:.1f} s")
        if predicted is not None:
            ax.axvline(
                predicted,
                color="#d62728",
                linestyle="--",
                linewidth=1.5,
                label=f"plan {predicted:.1f} s",
            )
        _legend(ax)
        ax.set_title(timeline.title)
        fig.tight_layout()
        for path, fmt in ((png, "png"), (svg, "svg")):
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt, dpi=90)
            data = buf.getvalue()
            atomic_write_bytes(path, with_tooltips(data, items) if fmt == "svg" else data)
        plt.close(fig)
    drawn = {"achieved": achieved, "predicted": predicted, "bars": [b.__dict__ for b in items]}
    atomic_write_bytes(os.path.splitext(png)[0] + ".json", json.dumps(drawn, indent=1).encode())


def _run_title(night: Night, run: int) -> str:
    history = runs(night)
    if not history:
        return "every run"
    k = run % len(history)
    since = clock_text(history[k].get("since"))
    return f"run {k + 1} of {len(history)} (started {since})"


def with_tooltips(svg: bytes, items: Sequence[Bar]) -> bytes:
    """The SVG with a ``<title>`` (the browser's tooltip) in each bar's group: the AB or file,
    the step, the host and the times."""
    tips = {
        escape(f"bar-{b.job}", {'"': "&quot;"}): escape(
            f"{b.label} ({b.kind}) on {b.host or 'this host'}: "
            f"{b.start:.1f}-{b.end:.1f} s ({b.end - b.start:.1f} s)"
        )
        for b in items
    }

    def titled(m: re.Match[str]) -> str:
        tip = tips.pop(m.group(2), None)  # (the first group of each bar only)
        return m.group(1) if tip is None else f"{m.group(1)}\n  <title>{tip}</title>"

    text = re.sub(r'(<g id="(bar-[^"]*)"[^>]*>)', titled, svg.decode("utf-8"))
    return text.encode("utf-8")


def _row_offsets(items: list[Bar]) -> tuple[dict[str, int], int]:
    """The first row of each host, and how many rows there are."""
    offsets: dict[str, int] = {}
    total = 0
    for host in sorted({b.host for b in items}):
        offsets[host] = total
        total += 1 + max(b.row for b in items if b.host == host)
    return offsets, total


# width of the plotting area (pixels at 90 dpi) and of one character of the bar labels
AXES_PIXELS, CHAR_PIXELS = 700.0, 5.2


def _draw_bars(ax: Any, items: list[Bar], offsets: dict[str, int], span: float) -> None:
    per_second = AXES_PIXELS / max(span, 1e-6)
    ys = [offsets[b.host] + b.row for b in items]
    patches = ax.barh(  # all bars in one call (a night of a thousand jobs draws in seconds)
        ys,
        [b.end - b.start for b in items],
        left=[b.start for b in items],
        height=0.8,
        color=[COLOURS.get(b.kind, "#dd8452") for b in items],
        edgecolor=["#d62728" if b.critical else "white" for b in items],
        linewidth=[2.5 if b.critical else 0.5 for b in items],
    )
    for b, y, patch in zip(items, ys, patches, strict=True):
        patch.set_gid(f"bar-{b.job}")
        if len(b.label) * CHAR_PIXELS <= (b.end - b.start) * per_second:
            ax.text(
                b.start + (b.end - b.start) / 2,
                y,
                b.label,
                ha="center",
                va="center",
                fontsize=6,
                color="white",
                gid=f"label-{b.job}",
            )
    rows = {offsets[b.host] + b.row: f"{b.host} slot {b.row + 1}" for b in items}
    ax.set_yticks(list(rows), list(rows.values()), fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the run's first job started")


def _legend(ax: Any) -> None:
    import matplotlib.patches

    handles = [matplotlib.patches.Patch(color=c, label=k) for k, c in COLOURS.items()]
    handles.append(
        matplotlib.patches.Patch(
            facecolor="white", edgecolor="#d62728", linewidth=2.5, label="critical path"
        )
    )
    ax.legend(
        handles=handles + ax.get_legend_handles_labels()[0],
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
    )
