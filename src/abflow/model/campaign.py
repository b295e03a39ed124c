"""Several dates in one run (a reprocessing campaign): the nights of all dates as one Night.

Each date's AB list is read and validated on its own (abflow.model.night), then the nights are
joined in date order into one DAG: their ABs share the slots, a later date does not wait for an
earlier one. An AB belongs to one date, and no two ABs of the campaign make the same product.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

from abflow.model.ab import Problem
from abflow.model.config import Settings
from abflow.model.night import Night, NightError


def load_campaign(settings: Settings, load_one: Callable[[Settings], Night]) -> Night:
    """The Night of every date of ``settings``; days of a date range without an AB list are
    skipped (with a warning); raises NightError with every problem of every date."""
    nights: list[Night] = []
    problems: list[Problem] = []
    skipped: list[Problem] = []
    ranged = isinstance(settings.raw.get("dates"), str)
    for date in settings.dates:
        one = settings.for_date(date)
        if ranged and not os.path.exists(one.ab_list_path):
            # a range covers every day; a day without an AB list has nothing to process
            skipped.append(Problem(one.ab_list_path, None, "no AB list: date skipped"))
            continue
        try:
            nights.append(load_one(one))
        except NightError as exc:
            problems += exc.problems
    if not nights and not problems:
        problems.append(
            Problem(
                settings.dfo["mon_dir"],
                None,
                f"no AB list for any date of {settings.raw.get('dates')}: nothing to process",
            )
        )
    merged, more = merge_nights(settings, nights)
    if problems or more:
        raise NightError(problems + more)
    merged.warnings = skipped + merged.warnings
    return merged


def merge_nights(settings: Settings, nights: list[Night]) -> tuple[Night, list[Problem]]:
    """One Night of the nights of several dates, their ABs in date order; and the problems of
    the join (an AB listed for two dates, a product made by ABs of two dates)."""
    problems: list[Problem] = []
    merged = Night(settings, {})
    producer: dict[str, tuple[str, Night]] = {}
    for night in nights:
        merged.parts[night.settings.date] = night
        offset = len(merged)
        for record in night:
            other = merged.records.get(record.name)
            if other is not None:
                problems.append(
                    Problem(
                        night.settings.ab_list_path,
                        record.list_line,
                        f"AB {record.name} is also listed for {other.batch_date} "
                        f"({merged.parts[other.batch_date].settings.ab_list_path}:{other.list_line}"
                        "): an AB belongs to one date; remove it from one of the lists",
                    )
                )
                continue
            merged.records[record.name] = dataclasses.replace(
                record, run_order=offset + record.run_order
            )
            problems += _shared_products(night, record.name, producer)
        merged.edges += night.edges
        merged.warnings += night.warnings
    return merged, problems


def _shared_products(
    night: Night, ab: str, producer: dict[str, tuple[str, Night]]
) -> list[Problem]:
    """A problem per product of ``ab`` that an AB of another date makes too."""
    out = []
    for frame in night[ab].ab.products:
        made_by = producer.setdefault(frame.path, (ab, night))
        if made_by[0] != ab:
            out.append(
                Problem(
                    night[ab].ab.path,
                    frame.line,
                    f"product {frame.path} is also "
                    f"made by AB {made_by[0]} of {made_by[1].settings.date}: two ABs "
                    "cannot make the same product",
                )
            )
    return out
