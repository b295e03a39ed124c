"""Planning a night: the cascade as levels, the job graph, priorities, and predicted makespans.

The workflow takes its job priorities from :func:`job_priorities`; :func:`list_schedule`
simulates how the scheduler then fills the slots, so ``abflow plan`` predicts the makespan of a
run (in job-lengths for equal durations, or in time from the durations of earlier runs).
"""

from __future__ import annotations

import heapq
import math
import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from abflow.model.night import Night
from abflow.state.fsutil import iter_json_objects
from abflow.state.fsutil import read_json_object as read_record
from abflow.state.layout import JobId, Step


def cascade_summary(night: Night) -> dict[str, Any]:
    """Levels of the night with counts, as a JSON-ready dict."""
    levels = night.levels()
    jobs = sum(n + 1 if n > 1 else 1 for n in map(night.detectors, night.names))
    return {
        "batch": night.settings.batch_id,
        "abs": len(night),
        "jobs": jobs,
        "edges": sum(len(p) for p in night.parents.values()),
        "levels": [
            {
                "level": k,
                "count": len(names),
                "abs": [
                    {
                        "ab": name,
                        "raw_type": night.ab_objects[name].raw_type,
                        "recipe": night.ab_objects[name].recipe,
                        "mef_factor": night.mef_factor(name),
                        "detector_jobs": night.detectors(name) if night.detectors(name) > 1 else 0,
                        "waits_for": list(night.parents[name]),
                    }
                    for name in names
                ],
            }
            for k, names in enumerate(levels)
        ],
        "max_width": max((len(lv) for lv in levels), default=0),
    }


def format_cascade(night: Night, verbose: bool = True) -> str:
    """The cascade as text: one block per level, each AB with raw type, recipe and parents."""
    summary = cascade_summary(night)
    jobs = summary["jobs"]
    lines = [
        f"{summary['batch']}: {summary['abs']} ABs"
        + (f" ({jobs} jobs)" if jobs != summary["abs"] else "")
        + f", {summary['edges']} dependencies, {len(summary['levels'])} levels, "
        f"at most {summary['max_width']} ABs can run at once",
    ]
    for level in summary["levels"]:
        lines.append(
            f"level {level['level']}: {level['count']} AB{'s' if level['count'] != 1 else ''}"
        )
        if not verbose:
            continue
        width = max(len(a["ab"]) for a in level["abs"])
        for a in level["abs"]:
            waits = f"  <- {', '.join(a['waits_for'])}" if a["waits_for"] else ""
            if a["detector_jobs"]:
                mef = f"  {a['detector_jobs']} detector jobs + join"
            elif a["mef_factor"] > 1:
                mef = f"  {a['mef_factor']} detectors in one job (INT)"
            else:
                mef = ""
            lines.append(f"  {a['ab']:<{width}}  {a['raw_type']:<10} {a['recipe']}{mef}{waits}")
    return "\n".join(lines)


def job_graph(night: Night) -> tuple[list[str], dict[str, list[str]]]:
    """The night's AB jobs and their dependencies: (jobs in cascade order, job -> prerequisites).

    A job is ``<AB>`` or, for a multi-detector AB, ``<AB>#<det>`` per detector plus ``<AB>``
    for its join. Downloads and QC jobs are left out (they do not hold the cascade).
    """
    jobs: list[str] = []
    deps: dict[str, list[str]] = {}
    for ab in night.names:
        parents = list(night.parents[ab])
        n = night.detectors(ab)
        if n > 1:
            dets = [f"{ab}#{k}" for k in range(1, n + 1)]
            for det in dets:
                jobs.append(det)
                deps[det] = parents
            jobs.append(ab)
            deps[ab] = dets
        else:
            jobs.append(ab)
            deps[ab] = parents
    return jobs, deps


def optimal_unit_makespan(deps: dict[str, list[str]], slots: int, limit: int = 22) -> int:
    """The least number of rounds in which ``slots`` machines run jobs of equal length.

    Exact (breadth-first over the sets of finished jobs, each round running up to ``slots``
    ready jobs; only maximal choices are tried), so meant for small graphs: at most ``limit``
    jobs.
    """
    from itertools import combinations

    jobs = list(deps)
    if len(jobs) > limit:
        raise ValueError(f"{len(jobs)} jobs: too many for the exact search (limit {limit})")
    index = {j: i for i, j in enumerate(jobs)}
    need = [sum(1 << index[p] for p in deps[j]) for j in jobs]
    full = (1 << len(jobs)) - 1
    frontier = {0}
    rounds = 0
    while full not in frontier:
        rounds += 1
        nxt = set()
        for done in frontier:
            ready = [i for i in range(len(jobs)) if not done >> i & 1 and need[i] & done == need[i]]
            take = min(slots, len(ready))
            for chosen in combinations(ready, take):
                nxt.add(done | sum(1 << i for i in chosen))
        frontier = nxt
    return rounds


def job_priorities(night: Night) -> dict[str, int]:
    """Snakemake priority of every job of :func:`job_graph` (the workflow uses these).

    CPL: cascade (AB list) order. Otherwise highest level first: the number of job-lengths
    from the job to the end of the night along its longest chain (a per-detector job counts
    one, its join one more), ties broken by cascade order. With equal job lengths this keeps
    the critical chain moving while other jobs fill the free slots.
    """
    n = len(night)
    out: dict[str, int] = {}
    if night.settings.drs_type == "CPL":
        for ab, r in night.run_order.items():
            out[ab] = n - r
            for k in range(1, night.detectors(ab) + 1 if night.detectors(ab) > 1 else 1):
                out[f"{ab}#{k}"] = n - r
        return out
    bottom: dict[str, int] = {}
    for ab in sorted(night.names, key=night.run_order.__getitem__, reverse=True):
        below = max((bottom[c] for c in night.children[ab]), default=0)
        split = night.detectors(ab) > 1
        bottom[ab] = below + (2 if split else 1)
        tie = n - night.run_order[ab]
        if split:
            out[ab] = (bottom[ab] - 1) * (n + 1) + tie
            for k in range(1, night.detectors(ab) + 1):
                out[f"{ab}#{k}"] = bottom[ab] * (n + 1) + tie
        else:
            out[ab] = bottom[ab] * (n + 1) + tie
    return out


@dataclass
class Schedule:
    """A schedule of jobs on slots: start and end per job, the slot each ran on."""

    start: dict[str, float]
    end: dict[str, float]
    slot: dict[str, int]

    @property
    def makespan(self) -> float:
        """When the last job ends."""
        return max(self.end.values(), default=0.0)


def list_schedule(
    deps: Mapping[str, Sequence[str]],
    priority: Mapping[str, int],
    slots: int,
    durations: Mapping[str, float] | None = None,
) -> Schedule:
    """Simulate the scheduler: whenever slots are free, start the ready jobs of highest priority.

    ``durations`` default to 1 (equal job lengths). Jobs ending at the same time free their
    slots together, before the next choice (as the plan assumes the run does; the abflow
    scheduler plugin makes the run behave so).
    """
    if slots < 1:
        raise ValueError("at least one slot")
    durations = durations or {}
    remaining = {j: len(deps[j]) for j in deps}
    children: dict[str, list[str]] = {j: [] for j in deps}
    for j, ps in deps.items():
        for p in ps:
            children[p].append(j)
    ready = [(-priority.get(j, 0), i, j) for i, j in enumerate(deps) if remaining[j] == 0]
    heapq.heapify(ready)
    order = {j: i for i, j in enumerate(deps)}
    running: list[tuple[float, int, str]] = []  # (end, slot, job)
    free = list(range(slots))
    heapq.heapify(free)
    start: dict[str, float] = {}
    end: dict[str, float] = {}
    slot_of: dict[str, int] = {}
    now = 0.0
    while ready or running:
        while ready and free:
            _, _, job = heapq.heappop(ready)
            s = heapq.heappop(free)
            start[job] = now
            end[job] = now + float(durations.get(job, 1.0))
            slot_of[job] = s
            heapq.heappush(running, (end[job], s, job))
        if not running:
            break
        now = running[0][0]
        while running and running[0][0] <= now + 1e-9:
            _, s, job = heapq.heappop(running)
            heapq.heappush(free, s)
            for child in children[job]:
                remaining[child] -= 1
                if remaining[child] == 0:
                    heapq.heappush(ready, (-priority.get(child, 0), order[child], child))
    if len(start) != len(deps):
        raise ValueError("the dependencies contain a cycle")
    return Schedule(start, end, slot_of)


def critical_path(
    deps: Mapping[str, Sequence[str]], durations: Mapping[str, float] | None = None
) -> tuple[list[str], float]:
    """The longest chain of jobs (the one that sets the finish time) and its length."""
    durations = durations or {}
    finish: dict[str, float] = {}
    best_parent: dict[str, str | None] = {}
    for job in _topological(deps):
        parent = max(deps[job], key=lambda p: finish[p], default=None)
        finish[job] = (finish[parent] if parent else 0.0) + float(durations.get(job, 1.0))
        best_parent[job] = parent
    if not finish:
        return [], 0.0
    last = max(finish, key=finish.__getitem__)
    chain = [last]
    while best_parent[chain[-1]] is not None:
        chain.append(best_parent[chain[-1]])  # type: ignore[arg-type]
    return list(reversed(chain)), finish[last]


def _topological(deps: Mapping[str, Sequence[str]]) -> list[str]:
    out: list[str] = []
    done: set[str] = set()
    for job in deps:
        stack = [(job, False)]
        while stack:
            node, expanded = stack.pop()
            if node in done:
                continue
            if expanded:
                done.add(node)
                out.append(node)
                continue
            stack.append((node, True))
            stack.extend((p, False) for p in deps[node] if p not in done)
    return out


def lower_bound(
    deps: Mapping[str, Sequence[str]], slots: int, durations: Mapping[str, float] | None = None
) -> float:
    """No schedule can be shorter: the critical path, or the total work spread on the slots."""
    durations = durations or {}
    work = sum(float(durations.get(j, 1.0)) for j in deps)
    spread = work / slots if durations else math.ceil(work / slots - 1e-9)
    return max(critical_path(deps, durations)[1], spread)


def recorded_duration(settings: Any, record: Mapping[str, Any]) -> float:
    """How long a finished job took: its Snakemake benchmark (the whole job command), else the
    duration of its command in the completion record."""
    try:
        bench = settings.layout.benchmark(JobId.of_record(record))
    except (KeyError, ValueError):
        return float(record["duration_s"])
    try:
        with open(bench, encoding="utf-8") as fh:
            header, values = fh.read().splitlines()[:2]
        return float(dict(zip(header.split("\t"), values.split("\t"), strict=False))["s"])
    except (OSError, ValueError, KeyError):
        return float(record["duration_s"])


BENCHMARK_COLUMNS = ("s", "max_rss", "max_vms", "io_in", "io_out", "mean_load", "cpu_time")


def benchmark_table(settings: Any, record_paths: Sequence[str]) -> str:
    """A TSV of the Snakemake benchmarks of the given AB records (and their detector jobs)."""
    lines = ["\t".join(("ab", "step", "det", "recipe", "host", *BENCHMARK_COLUMNS))]
    for path in record_paths:
        rec = read_record(path)
        if not rec:
            continue
        jobs = [rec]
        if rec.get("step") == "mef_join":
            first = settings.layout.record(JobId(Step.PROCESS_AB_DET, str(rec["ab"]), 1))
            det_dir = os.path.dirname(first)
            for name in sorted(os.listdir(det_dir) if os.path.isdir(det_dir) else []):
                det = read_record(os.path.join(det_dir, name))
                if det:
                    jobs.append(det)
        for job in jobs:
            bench = settings.layout.benchmark(JobId.of_record(job))
            try:
                with open(bench, encoding="utf-8") as fh:
                    header, values = fh.read().splitlines()[:2]
            except (OSError, ValueError):
                continue
            row = dict(zip(header.split("\t"), values.split("\t"), strict=False))
            fields = [job.get(k, "") for k in ("ab", "step", "det", "recipe", "host")]
            fields += [row.get(c, "") for c in BENCHMARK_COLUMNS]
            lines.append("\t".join(str(x) for x in fields))
    return "\n".join(lines) + "\n"


def history_durations(night: Night) -> tuple[dict[str, float], int]:
    """Expected duration of every job from completion records of earlier runs.

    A job's own record if there is one, else the median of the recorded durations of the same
    recipe and step; jobs with no history at all get the median of everything recorded (or 1).
    Durations are those of :func:`recorded_duration`.
    Returns (durations, number of jobs with a recorded duration of their own or their recipe).
    """
    s = night.settings
    by_kind: dict[tuple[str, str], list[float]] = {}
    own: dict[str, float] = {}
    for _path, rec in iter_json_objects(s.layout.records_dir):
        # AB and detector jobs only: QC and download records have no place in the plan
        if "duration_s" not in rec or "ab" not in rec:
            continue
        if rec.get("step") in ("process_qc", "download"):
            continue
        step = "det" if rec.get("step") == "process_ab_det" else "ab"
        seconds = recorded_duration(s, rec)
        by_kind.setdefault((str(rec.get("recipe", "")), step), []).append(seconds)
        own[str(rec["ab"]) + (f"#{rec['det']}" if step == "det" else "")] = seconds
    everything = [d for ds in by_kind.values() for d in ds]
    fallback = statistics.median(everything) if everything else 1.0
    durations: dict[str, float] = {}
    known = 0
    for job in job_graph(night)[1]:
        ab = job.split("#", 1)[0]
        step = "det" if "#" in job else "ab"
        recipe = night.ab_objects[ab].recipe
        if job in own:
            durations[job] = own[job]
            known += 1
        elif (recipe, step) in by_kind:
            durations[job] = statistics.median(by_kind[(recipe, step)])
            known += 1
        else:
            durations[job] = fallback
    return durations, known


def plan_night(night: Night, slots: Sequence[int], from_history: bool = False) -> dict[str, Any]:
    """The plan of a night: levels, critical path, and per slot count the makespan bounds."""
    jobs, deps = job_graph(night)
    priority = job_priorities(night)
    durations, known = history_durations(night) if from_history else ({}, 0)
    chain, length = critical_path(deps, durations)
    rows = []
    for n in slots:
        sched = list_schedule(deps, priority, n, durations)
        rows.append(
            {
                "slots": n,
                "lower_bound": lower_bound(deps, n, durations),
                "schedule": sched.makespan,
            }
        )
    return {
        "batch": night.settings.batch_id,
        "abs": len(night),
        "jobs": len(jobs),
        "levels": [len(level) for level in night.levels()],
        "unit": "seconds" if from_history else "job-lengths",
        "history_jobs": known,
        "critical_path": chain,
        "critical_length": length,
        "predictions": rows,
    }


def format_plan(plan: dict[str, Any]) -> str:
    """The plan as text."""
    unit = plan["unit"]
    lines = [
        f"{plan['batch']}: {plan['abs']} ABs, {plan['jobs']} jobs, levels "
        + " / ".join(str(n) for n in plan["levels"]),
    ]
    if unit == "seconds":
        lines.append(
            f"durations from earlier runs for {plan['history_jobs']} of {plan['jobs']} jobs "
            "(others: the median of all recorded durations)"
        )
    lines.append(
        f"critical path ({_fmt(plan['critical_length'], unit)}, {len(plan['critical_path'])} "
        "jobs): " + " -> ".join(plan["critical_path"])
    )
    lines.append(f"{'slots':>6}  {'lower bound':>14}  {'abflow schedule':>16}")
    for row in plan["predictions"]:
        lines.append(
            f"{row['slots']:>6}  {_fmt(row['lower_bound'], unit):>14}  "
            f"{_fmt(row['schedule'], unit):>16}"
        )
    return "\n".join(lines)


def _fmt(value: float, unit: str) -> str:
    if unit == "seconds":
        return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"
    return f"{value:g}"
