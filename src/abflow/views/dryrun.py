"""A dry-run as a QC scientist reads it: the cascade's levels with counts, and which ABs would
run and why (from the reasons Snakemake gives each AB's job, in abflow's words)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from abflow.upstream.snakemake import contains

# the first of Snakemake's reasons (abflow.upstream.snakemake.WORDING) found decides; None: a
# subcascade or an edited AB file (see why)
REASONS = (
    ("reason_forced", "forced (--forcerun / --forceall)"),
    ("reason_incomplete", "its last run did not finish (crash or interruption)"),
    ("reason_params", None),
    ("reason_missing_output", "not processed yet"),
    ("reason_updated_by_job", "an AB it takes calibrations from runs first"),
    ("reason_updated_input", "an input is newer than its products (raw file or calibration)"),
    ("reason_code", "abflow's code changed since it ran"),
    ("reason_input_set", "its input list changed"),
)
LIST_LIMIT = 60  # ABs listed one per line; above, grouped by reason


def why(ab: str, reason: str, requested: frozenset[str]) -> str:
    """abflow's words for why ``ab`` would run, from Snakemake's reason for its job."""
    rerun = "subcascade rerun requested" if ab in requested else "its AB file changed since it ran"
    if ".rerun" in reason:  # its rerun request (abflow.state.layout: requests/) is written first
        return rerun
    for name, words in REASONS:
        if contains(name, reason):
            return words or rerun
    return reason or "it would run"


def render(run: Any, jobs: Sequence[Any], stats: Mapping[str, int]) -> str:
    """The dry-run's text. ``run`` is the console's RunInfo (None: Snakemake's counts only),
    ``jobs`` the jobs Snakemake would run (abflow.views.console.Seen)."""
    reasons: dict[str, str] = {}
    for job in jobs:
        if job.rule in ("process_ab", "process_ab_det") and job.ab not in reasons:
            reasons[job.ab] = job.reason
    counts = Counter(job.rule for job in jobs)
    extra = [
        f"{n} {what}"
        for what, n in (
            ("downloads", counts["download_raw"] + counts["download_mcal"]),
            ("QC jobs", counts["process_qc"]),
            ("detector jobs", counts["process_ab_det"]),
        )
        if n
    ]
    if run is None:
        return f"dry-run: {len(reasons)} ABs would run" + (
            f" ({', '.join(extra)})" if extra else ""
        )
    total = sum(len(level) for level in run.levels)
    lines = [
        f"dry-run of {run.batch}: {len(reasons)} of {total} ABs would run, "
        f"cascade of {len(run.levels)} level{'s' if len(run.levels) != 1 else ''}"
        + (f" (and {', '.join(extra)})" if extra else "")
    ]
    lines += _levels(run, reasons)
    words = {ab: why(ab, r, run.requested) for ab, r in reasons.items()}
    if words:
        lines += _would_run(run, words)
    jobs = [f"{rule} {n}" for rule, n in stats.items() if rule not in ("all", "total")]
    if jobs:
        lines.append(f"jobs ({stats.get('total', sum(counts.values()))}): {', '.join(jobs)}")
    lines.append(
        "Nothing was run. Every job as Snakemake lists it: add --verbose "
        "(or --logger-abflow-snakemake)."
    )
    return "\n".join(lines)


def _levels(run: Any, reasons: Mapping[str, str]) -> list[str]:
    """``level 2   6 ABs (flat 3, dark 3)   6 would run``, one per level."""
    out = []
    width = len(str(max((len(level) for level in run.levels), default=0)))
    for k, level in enumerate(run.levels):
        kinds = Counter(run.labels.get(ab, "") for ab in level)
        kind_text = ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items()))
        n_run = sum(1 for ab in level if ab in reasons)
        plural = "s" if len(level) != 1 else ""
        out.append(
            f"  level {k:<2} {len(level):>{width}} AB{plural:1} ({kind_text}): "
            f"{n_run or 'none'} would run"
        )
    return out


def _would_run(run: Any, words: Mapping[str, str]) -> list[str]:
    """Each AB that would run and why (grouped by reason for a long list)."""
    order = [ab for level in run.levels for ab in level if ab in words]
    if len(order) <= LIST_LIMIT:
        width = max(len(ab) for ab in order)
        lab = max(len(run.labels.get(ab, "")) for ab in order)
        return ["would run, and why:"] + [
            f"  {ab:<{width}}  {run.labels.get(ab, ''):<{lab}}  {words[ab]}" for ab in order
        ]
    groups: dict[str, list[str]] = {}
    for ab in order:
        groups.setdefault(words[ab], []).append(ab)
    out = ["would run, by reason (abflow plan lists every AB):"]
    for reason, abs_ in groups.items():
        shown = ", ".join(abs_[:3]) + (f", ... ({len(abs_) - 3} more)" if len(abs_) > 3 else "")
        out.append(f"  {len(abs_)} {reason}: {shown}")
    return out
