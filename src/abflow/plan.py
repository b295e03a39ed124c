"""The cascade as levels: which ABs can run together, and how wide the night is."""

from __future__ import annotations

from typing import Any

from abflow.night import Night


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
