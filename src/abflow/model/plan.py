"""Planning a night: the cascade as levels, the job graph, priorities, and predicted makespans.

The workflow takes its job priorities from :func:`job_priorities`; :func:`list_schedule`
simulates how the scheduler then fills the slots, so ``abflow plan`` predicts the makespan of a
run (in job-lengths for equal durations, or in time from the durations of earlier runs).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from abflow.model.night import Night


def cascade_summary(night: Night) -> dict[str, Any]:
    """Levels of the night with counts, as a JSON-ready dict."""
    levels = night.levels()
    jobs = sum(n + 1 if n > 1 else 1 for n in map(night.detectors, night.names))
    return {
        "batch": night.settings.batch_id,
        "abs": len(night),
        "jobs": jobs,
        "edges": night.dependencies(),
        "levels": [
            {
                "level": k,
                "count": len(names),
                "abs": [
                    {
                        "ab": name,
                        "raw_type": night[name].ab.raw_type,
                        "recipe": night[name].ab.recipe,
                        "mef_factor": night.mef_factor(name),
                        "detector_jobs": night.detectors(name) if night.detectors(name) > 1 else 0,
                        "waits_for": list(night[name].parents),
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
        parents = list(night[ab].parents)
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
        for ab, r in ((rec.name, rec.run_order) for rec in night):
            out[ab] = n - r
            for k in range(1, night.detectors(ab) + 1 if night.detectors(ab) > 1 else 1):
                out[f"{ab}#{k}"] = n - r
        return out
    bottom: dict[str, int] = {}
    for ab in sorted(night.names, key=lambda name: night[name].run_order, reverse=True):
        below = max((bottom[c] for c in night[ab].children), default=0)
        split = night.detectors(ab) > 1
        bottom[ab] = below + (2 if split else 1)
        tie = n - night[ab].run_order
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
    children = _children(deps)
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


def _children(deps: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """job -> the jobs that need it."""
    children: dict[str, list[str]] = {j: [] for j in deps}
    for job, prerequisites in deps.items():
        for p in prerequisites:
            children[p].append(job)
    return children


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


def plan_night(
    night: Night,
    slots: Sequence[int],
    durations: Mapping[str, float] | None = None,
    known: int = 0,
) -> dict[str, Any]:
    """The plan of a night: levels, critical path, and per slot count the makespan bounds; in
    job-lengths, or in seconds with the ``durations`` of the jobs (``known`` of them from a
    history of their own or their recipe: abflow.views.history)."""
    jobs, deps = job_graph(night)
    priority = job_priorities(night)
    from_history = durations is not None
    durations = durations or {}
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
