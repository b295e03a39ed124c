"""What the runs of a night recorded: every finished job's completion record and benchmark.

:func:`job_records` lists the records of the night's jobs (AB, detector, QC and download jobs),
each named as the plan names jobs; :func:`job_table` is the AB and detector jobs among them as a
pandas table, with their benchmarks (Snakemake's format, written by the jobs themselves). The
report's benchmark table (:func:`benchmark_table`) and the durations ``abflow plan
--from-history`` predicts with (:func:`history_durations`) are read off that table; the
timeline draws :func:`job_records`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from abflow.model.config import Settings
from abflow.model.night import Night
from abflow.model.plan import job_graph
from abflow.state.fsutil import iter_json_checked
from abflow.state.layout import JobId
from abflow.state.units import as_number

BENCHMARK_COLUMNS = ("s", "max_rss", "max_vms", "io_in", "io_out", "mean_load", "cpu_time")
JOB_COLUMNS = {
    "job": "str",
    "ab": "str",
    "step": "str",
    "det": "Int64",
    "recipe": "str",
    "host": "str",
    "duration_s": "float64",
}


def plan_job(record: Mapping[str, Any]) -> str:
    """The name the plan gives a record's job: ``<AB>``, ``<AB>#<det>``, ``qc:<AB>`` or
    ``download:<file>``."""
    step = str(record.get("step", ""))
    if step == "download":
        return f"download:{record.get('file', '')}"
    if step == "process_ab_det":
        return f"{record.get('ab')}#{record.get('det')}"
    if step == "process_qc":
        return f"qc:{record.get('ab')}"
    return str(record.get("ab"))


def well_formed(record: Mapping[str, Any]) -> bool:
    """True if the fields a plan and a timeline read, where a completion record has them, are
    of the types abflow writes: ISO ``start`` and ``end``, a number ``duration_s``, a string
    ``step`` and ``ab``, an integer ``det``. Others (written by another program, or damaged)
    are left out, and said so."""
    import datetime as _dt

    try:
        for key in ("start", "end"):
            if key in record:
                _dt.datetime.fromisoformat(record[key])
    except (TypeError, ValueError):
        return False
    det = record.get("det")
    return (
        (det is None or (isinstance(det, int) and not isinstance(det, bool)))
        and isinstance(record.get("step", ""), str)
        and isinstance(record.get("ab", ""), str)
        and ("duration_s" not in record or as_number(record["duration_s"]) is not None)
    )


def read_records(
    *directories: str, unreadable: list[str] | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """(path, record) of every well-formed completion record under ``directories``; each file
    that cannot be read, or is no record (:func:`well_formed`), is added to ``unreadable``
    (``<path>: <what is wrong>``)."""
    out = []
    for path, rec, problem in iter_json_checked(*directories):
        if rec is not None and not well_formed(rec):
            problem = "not a completion record (a field is missing or of the wrong type)"
        if problem:
            if unreadable is not None:
                unreadable.append(f"{path}: {problem}")
            continue
        out.append((path, rec))
    return out  # type: ignore[return-value]


def job_records(night: Night, unreadable: list[str] | None = None) -> list[dict[str, Any]]:
    """Every completion record of the night's jobs (downloads included, whatever AB needed
    them), with its plan name under ``job`` and its step under ``kind``; records that cannot
    be read go to ``unreadable`` (:func:`read_records`)."""
    layout = night.settings.layout
    out = []
    for path, rec in read_records(
        layout.records_dir, layout.download_records_dir, unreadable=unreadable
    ):
        if "start" not in rec or "end" not in rec:
            continue
        if rec.get("step") == "download":
            rec.setdefault("file", os.path.basename(path).removesuffix(".json"))
        elif str(rec.get("ab")) not in night:
            continue
        out.append({**rec, "job": plan_job(rec), "kind": str(rec.get("step", ""))})
    return out


def benchmark_of(settings: Settings, record: Mapping[str, Any]) -> dict[str, str]:
    """The benchmark of a record's job (column -> value as written), {} if there is none."""
    try:
        path = settings.layout.benchmark(JobId.of_record(record))
        if not os.path.isfile(path):  # (a directory or a FIFO in its place: not read)
            return {}
        with open(path, encoding="utf-8") as fh:
            header, values = fh.read().splitlines()[:2]
    except (KeyError, ValueError, OSError):
        return {}
    return dict(zip(header.split("\t"), values.split("\t"), strict=False))


def duration_of(settings: Settings, record: Mapping[str, Any]) -> float:
    """How long a finished job took: its benchmark (the whole job), else the duration of its
    command in the completion record."""
    measured = as_number(benchmark_of(settings, record).get("s"))
    return measured if measured is not None else as_number(record.get("duration_s")) or 0.0


def job_table(settings: Settings, unreadable: list[str] | None = None) -> pd.DataFrame:
    """One row per finished AB or detector job of the state directory (any night): its plan
    name, AB, step, detector, recipe, host, duration (benchmark, else record) and the
    benchmark's columns (NaN where it has none). Records that cannot be read go to
    ``unreadable`` (:func:`read_records`)."""
    rows = []
    for _path, rec in read_records(settings.layout.records_dir, unreadable=unreadable):
        if "duration_s" not in rec or "ab" not in rec:
            continue
        if rec.get("step") in ("process_qc", "download"):
            continue  # no place in the plan
        bench = benchmark_of(settings, rec)
        rows.append(
            {
                **{k: rec.get(k) for k in JOB_COLUMNS},
                "recipe": str(rec.get("recipe") or ""),
                "host": str(rec.get("host") or ""),
                "job": plan_job(rec),
                "duration_s": duration_of(settings, rec),
                **{c: pd.to_numeric(bench.get(c), errors="coerce") for c in BENCHMARK_COLUMNS},
            }
        )
    columns = [*JOB_COLUMNS, *BENCHMARK_COLUMNS]
    table = pd.DataFrame(rows, columns=columns)
    return table.astype({**JOB_COLUMNS, **dict.fromkeys(BENCHMARK_COLUMNS, "float64")})


def benchmark_table(settings: Settings, record_paths: Sequence[str]) -> str:
    """The TSV of the benchmarks of the ABs whose records are given (with their detector
    jobs), in that order: what ``snakemake --report`` shows."""
    order = {os.path.basename(p).removesuffix(".json"): i for i, p in enumerate(record_paths)}
    table = job_table(settings)
    table = table[table["ab"].isin(order) & table["s"].notna()]
    table = table.assign(_order=table["ab"].map(order), _det=table["det"].fillna(0))
    table = table.sort_values(["_order", "_det"])
    columns = ["ab", "step", "det", "recipe", "host", *BENCHMARK_COLUMNS]
    return table[columns].to_csv(sep="\t", index=False, na_rep="")


def history_durations(
    night: Night, unreadable: list[str] | None = None
) -> tuple[dict[str, float], int]:
    """Expected duration of every job of the night's plan, from the records of earlier runs.

    A job's own record if there is one, else the median duration of the same recipe and step
    (AB or detector job); jobs with no history at all get the median of everything recorded
    (or 1). Returns (durations, number of jobs with a history of their own or their recipe).
    Records that cannot be read are left out and go to ``unreadable``.
    """
    table = job_table(night.settings, unreadable)
    table = table.assign(kind=table["step"].eq("process_ab_det").map({True: "det", False: "ab"}))
    own = table.groupby("job")["duration_s"].last()
    by_recipe = table.groupby(["recipe", "kind"])["duration_s"].median()
    fallback = float(table["duration_s"].median()) if len(table) else 1.0
    durations: dict[str, float] = {}
    known = 0
    for job in job_graph(night)[1]:
        kind = "det" if "#" in job else "ab"
        recipe = night[job.split("#", 1)[0]].ab.recipe
        if job in own.index:
            durations[job] = float(own[job])
        elif (recipe, kind) in by_recipe.index:
            durations[job] = float(by_recipe[(recipe, kind)])
        else:
            durations[job] = fallback
            continue
        known += 1
    return durations, known
