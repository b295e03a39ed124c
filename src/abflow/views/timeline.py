"""The timeline of a run: a Gantt chart (PNG and SVG) from the completion records.

One row per slot of each host (jobs placed on the first free row), one bar per job (processing,
per-detector, join, download and QC jobs in distinct colours), the critical path outlined (the
chain of jobs that set the finish time, from the recorded durations), and two vertical lines:
the achieved makespan and the one ``abflow plan`` predicts for this night on as many slots, from
the same recorded durations.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
from dataclasses import dataclass
from typing import Any

from abflow.model.night import Night
from abflow.model.plan import critical_path, job_graph, job_priorities, list_schedule
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


def _epoch(iso: str) -> float:
    return _dt.datetime.fromisoformat(iso).timestamp()


def bars(night: Night) -> tuple[list[Bar], float, float | None]:
    """The bars, when the last AB job ended (s) and when the plan predicts it (s, from the
    recorded durations and as many slots as the run used; None without AB jobs)."""
    records = job_records(night)
    if not records:
        return [], 0.0, None
    t0 = min(_epoch(r["start"]) for r in records)
    _, deps = job_graph(night)
    durations = {r["job"]: duration_of(night.settings, r) for r in records if r["job"] in deps}
    done = {j: ps for j, ps in deps.items() if j in durations}
    done = {j: [p for p in ps if p in done] for j, ps in done.items()}
    chain, _ = critical_path(done, durations) if done else ([], 0.0)
    critical = set(chain)
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
        out.append(Bar(rec["job"], rec["kind"], host, row, start, end, rec["job"] in critical))
    ab_bars = [b for b in out if b.job in deps]
    achieved = max((b.end for b in ab_bars), default=0.0)
    predicted = None
    if done:
        slots = max(sum(1 for o in ab_bars if o.start <= b.start < o.end) for b in ab_bars)
        first = min(b.start for b in ab_bars)
        sched = list_schedule(done, job_priorities(night), max(slots, 1), durations)
        predicted = first + sched.makespan
    return out, achieved, predicted


def draw(night: Night, png: str, svg: str) -> tuple[list[Bar], float, float | None]:
    """Draw the timeline into ``png`` and ``svg`` (and the bars drawn into the ``.json``
    beside them); return what was drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from abflow.state.fsutil import atomic_write_bytes

    items, achieved, predicted = bars(night)
    offsets, total = _row_offsets(items)
    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.35 * max(total, 1)))
    _draw_bars(ax, items, offsets)
    ax.axvline(achieved, color="black", linewidth=1.5, label=f"AB jobs done {achieved:.1f} s")
    if predicted is not None:
        ax.axvline(predicted, color="#d62728", linestyle="--", linewidth=1.5,
                   label=f"plan {predicted:.1f} s")  # fmt: skip
    _legend(ax)
    ax.set_title(f"{night.settings.batch_id}: {len(items)} jobs")
    fig.tight_layout()
    for path, fmt in ((png, "png"), (svg, "svg")):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=90)
        atomic_write_bytes(path, buf.getvalue())
    plt.close(fig)
    drawn = {"achieved": achieved, "predicted": predicted, "bars": [b.__dict__ for b in items]}
    atomic_write_bytes(os.path.splitext(png)[0] + ".json", json.dumps(drawn, indent=1).encode())
    return items, achieved, predicted


def _row_offsets(items: list[Bar]) -> tuple[dict[str, int], int]:
    """The first row of each host, and how many rows there are."""
    offsets: dict[str, int] = {}
    total = 0
    for host in sorted({b.host for b in items}):
        offsets[host] = total
        total += 1 + max(b.row for b in items if b.host == host)
    return offsets, total


def _draw_bars(ax: Any, items: list[Bar], offsets: dict[str, int]) -> None:
    for b in items:
        patch = ax.barh(
            offsets[b.host] + b.row, b.end - b.start, left=b.start, height=0.8,
            color=COLOURS.get(b.kind, "#dd8452"),
            edgecolor="#d62728" if b.critical else "white",
            linewidth=2.5 if b.critical else 0.5,
        )[0]  # fmt: skip
        patch.set_gid(f"bar-{b.job}")
    ax.set_yticks(
        [offsets[b.host] + b.row for b in items],
        [f"{b.host} slot {b.row + 1}" for b in items],
        fontsize=7,
    )
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the first job started")


def _legend(ax: Any) -> None:
    import matplotlib.patches

    handles = [matplotlib.patches.Patch(color=c, label=k) for k, c in COLOURS.items()]
    handles.append(matplotlib.patches.Patch(facecolor="white", edgecolor="#d62728",
                                            linewidth=2.5, label="critical path"))  # fmt: skip
    ax.legend(handles=handles + ax.get_legend_handles_labels()[0], fontsize=7,
              loc="upper left", bbox_to_anchor=(1.01, 1))  # fmt: skip
