"""Notes the controller writes about a job that its own record cannot carry.

* A **failure note** (``failed/...``, abflow.state.layout) for a job that failed on the pool
  without writing one itself: HTCondor held it (its input unreadable, its memory exceeded at the
  cap), or it failed while no controller ran. Jobs write their own notes through
  abflow.job.runner; these have the same fields (``ab``, ``step``, ``det``, ``status``, ``end``,
  ``host``, ``reason``, ``log``, ``log_tail``), plus the HTCondor ``cluster``.
* A **retry note** (``retries/...``) for a job the pool ran again with more memory: each retry's
  time, HTCondor job, memory asked before and after, and memory used.
"""

from __future__ import annotations

import time
from typing import Any

from abflow.state.fsutil import atomic_write_json, read_json_object, remove_file
from abflow.state.layout import JobId, StateLayout
from abflow.state.units import now_iso


def write_failure(
    layout: StateLayout,
    job: JobId,
    reason: str,
    log: str = "",
    log_tail: list[str] | None = None,
    **fields: Any,
) -> str:
    """Write the failure note of ``job`` (``reason``: why, as the summary says it; ``fields``:
    more, e.g. ``cluster`` and ``host``, or a ``step`` that says it better); return its
    path."""
    note: dict[str, Any] = {"ab": job.target, "step": job.step.value}
    if job.det is not None:
        note["det"] = job.det
    note.update(
        status="FAILED",
        end=now_iso(),
        reason=reason,
        log=log,
        log_tail=log_tail or [reason],
        **fields,
    )
    path = layout.failure(job)
    atomic_write_json(path, note)
    return path


def add_retry(layout: StateLayout, job: JobId, **entry: Any) -> list[dict[str, Any]]:
    """Note one more memory retry of ``job`` (``entry``: cluster, from_mb, to_mb, used_mb,
    reason); return all of its retries."""
    retries = retries_of(layout, job)
    retries.append({"time": time.time(), **entry})
    atomic_write_json(layout.retries(job), {"job": job.name, "retries": retries})
    return retries


def retries_of(layout: StateLayout, job: JobId) -> list[dict[str, Any]]:
    """The memory retries of ``job`` (oldest first; [] if none, or if its note cannot be
    read)."""
    return _retries_in(layout.retries(job))


def _retries_in(path: str) -> list[dict[str, Any]]:
    """The retries a retry note holds (those that are objects)."""
    found = (read_json_object(path) or {}).get("retries")
    return [r for r in found if isinstance(r, dict)] if isinstance(found, list) else []


def _when(retry: dict[str, Any]) -> float:
    """When a retry was noted (epoch s; 0 if its note does not say it as a number)."""
    value = retry.get("time")
    return float(value) if isinstance(value, int | float) and value == value else 0.0


def clear_retries(layout: StateLayout, job: JobId) -> None:
    """Forget ``job``'s retries (it is submitted afresh)."""
    remove_file(layout.retries(job))


def retries_of_ab(layout: StateLayout, ab: str) -> list[dict[str, Any]]:
    """The memory retries of every job of ``ab`` (its own, its join's, its detector jobs' and
    its QC's), oldest first."""
    import os

    found: list[dict[str, Any]] = []
    top = os.path.join(layout.root, "retries")
    try:
        steps = os.listdir(top)
    except OSError:
        return []
    for step in steps:
        try:
            names = os.listdir(os.path.join(top, step))
        except OSError:
            continue
        for name in names:
            stem = name.removesuffix(".json")
            det = stem[len(ab) + 1 :] if stem.startswith(ab + ".") else ""
            if stem == ab or det.isdigit():
                found += _retries_in(os.path.join(top, step, name))
    return sorted(found, key=_when)
