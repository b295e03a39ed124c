"""The Night: a batch of ABs, their files and the cascade edges between them.

:func:`load_night` reads ``AB_list_<MODE>_<DATE>`` and the AB files, validates everything and
derives the edges (design.md §1): AB B depends on AB A when the stem of one of B's ``MCALIB
VIRTUAL`` entries equals the stem of one of A's PRODUCTS, or, failing that, starts with A's
PROD_ROOT_NAME. Every problem found is collected and raised at once as :class:`NightError`.

The Night is the single source of truth for the cascade: the Snakefile, the legacy job files,
the plan and the status page all read it.
"""

from __future__ import annotations

import glob
import heapq
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from abflow.model.ab import AB, AB_NAME_RE, PathPolicy, Problem, read_ab, split_line, stem
from abflow.model.config import Settings

if TYPE_CHECKING:
    import pandas as pd


class NightError(ValueError):
    """The night cannot be processed; ``problems`` lists everything found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        n = len(problems)
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(
            f"{n} problem{'s' if n != 1 else ''} in the night, nothing was run:\n{lines}"
        )


@dataclass(frozen=True)
class VirtualInput:
    """A resolved ``MCALIB VIRTUAL`` entry: who makes it and where the real product lands."""

    child: str
    parent: str | None
    vcal_path: str
    product_path: str
    tag: str
    line: int


@dataclass
class Night:
    """A validated batch of ABs.

    Plain dictionaries give O(1) access for the workflow's input functions: ``ab_objects``
    (name -> AB, in cascade order), ``parents``/``children``, ``virtual_inputs``, ``level`` and
    ``run_order``. The same content as pandas tables, built on first use (so that building the
    Snakemake DAG does not pay for pandas): ``abs`` (one row per AB, index ``ab``, in cascade
    order), ``files`` (one row per RAWFILE/MCALIB/PRODUCTS entry) and ``edges`` (parent, child,
    via).
    """

    settings: Settings
    ab_objects: dict[str, AB]
    parents: dict[str, tuple[str, ...]]
    children: dict[str, tuple[str, ...]]
    virtual_inputs: dict[str, list[VirtualInput]]
    level: dict[str, int]
    run_order: dict[str, int]
    list_line: dict[str, int]
    edge_list: list[tuple[str, str, str]]
    file_rows: list[tuple[str, str, str, str, str, int, str | None]]
    raw_inputs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    cal_inputs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    warnings: list[Problem] = field(default_factory=list)
    # a run of several dates: the date of each AB's AB list, and the night of each date
    batch_date: dict[str, str] = field(default_factory=dict)
    parts: dict[str, Night] = field(default_factory=dict)

    def nights(self) -> list[Night]:
        """The single-date nights of this run: itself, or one per date of a multi-date run."""
        return list(self.parts.values()) or [self]

    def batch_ids(self) -> list[str]:
        """BATCH_ID of every date that has a night in this run (the run locks these)."""
        return [night.settings.batch_id for night in self.nights()]

    @property
    def names(self) -> list[str]:
        """AB names in cascade (AB list) order."""
        return list(self.ab_objects)

    def __len__(self) -> int:
        return len(self.ab_objects)

    def __contains__(self, ab: object) -> bool:
        return ab in self.ab_objects

    def mef_factor(self, ab: str) -> int:
        """Detectors of ``ab``: its MEF_FACTOR qualifier, else the config's ``mef_factor``."""
        return self.ab_objects[ab].mef_factor or self.settings.mef_factor

    def detectors(self, ab: str) -> int:
        """Per-detector jobs ``ab`` runs as: its MEF factor, except under DRS_TYPE INT (one job
        with all cores, the recipe fans out itself) or for an AB that runs no recipe."""
        n = self.mef_factor(ab)
        if n <= 1 or self.settings.drs_type == "INT" or not self.ab_objects[ab].runs_recipe:
            return 1
        return n

    def batch_of(self, ab: str) -> str:
        """BATCH_ID (``<MODE>_<DATE>``) of the AB list that lists ``ab``."""
        return f"{self.settings.mode}_{self.batch_date.get(ab) or self.settings.date}"

    def date(self, ab: str) -> str:
        """DFO date of ``ab``: its DATE qualifier, else the date of its AB list."""
        return self.ab_objects[ab].date or self.batch_date.get(ab) or self.settings.date

    @cached_property
    def abs(self) -> pd.DataFrame:
        """One row per AB (index ``ab``), in cascade order."""
        import pandas as pd

        rows = [
            {
                "ab": name,
                "order": i,
                "file": ab.path,
                "list_line": self.list_line[name],
                "recipe": ab.recipe,
                "raw_type": ab.raw_type,
                "drs_type": ab.drs_type,
                "instrument": ab.instrument,
                "date": self.date(name),
                "prod_root_name": ab.prod_root_name,
                "prod_path": ab.prod_path,
                "runs_recipe": ab.runs_recipe,
                "mef_factor": self.mef_factor(name),
                "level": self.level[name],
                "run_order": self.run_order[name],
                "n_parents": len(self.parents[name]),
                "n_children": len(self.children[name]),
            }
            for i, (name, ab) in enumerate(self.ab_objects.items())
        ]
        columns = {
            "ab": "str", "order": "int64", "file": "str", "list_line": "int64", "recipe": "str",
            "raw_type": "str", "drs_type": "str", "instrument": "str", "date": "str",
            "prod_root_name": "str", "prod_path": "str", "runs_recipe": "bool",
            "mef_factor": "int64", "level": "int64", "run_order": "int64", "n_parents": "int64",
            "n_children": "int64",
        }  # fmt: skip
        table = pd.DataFrame(rows, columns=list(columns)).astype(columns)
        return table.set_index("ab")

    @cached_property
    def files(self) -> pd.DataFrame:
        """One row per RAWFILE, MCALIB (kind REAL/VIRTUAL, with the producing AB) and PRODUCTS."""
        import pandas as pd

        columns = ["ab", "role", "kind", "path", "tag", "line", "parent"]
        return pd.DataFrame(self.file_rows, columns=columns).astype({"line": "int64"})

    @cached_property
    def edges(self) -> pd.DataFrame:
        """One row per dependency: parent AB, child AB, and the product stem that links them."""
        import pandas as pd

        return pd.DataFrame(self.edge_list, columns=["parent", "child", "via"], dtype="str")

    def descendants(self, ab: str, include_self: bool = True) -> list[str]:
        """``ab`` and every AB depending on it, directly or not, in cascade order."""
        seen = {ab}
        stack = [ab]
        while stack:
            for child in self.children[stack.pop()]:
                if child not in seen:
                    seen.add(child)
                    stack.append(child)
        if not include_self:
            seen.discard(ab)
        return [name for name in self.names if name in seen]

    def ancestors(self, ab: str) -> list[str]:
        """Every AB that ``ab`` depends on, directly or not, in cascade order."""
        seen: set[str] = set()
        stack = [ab]
        while stack:
            for parent in self.parents[stack.pop()]:
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        return [name for name in self.names if name in seen]

    def levels(self) -> list[list[str]]:
        """The cascade as levels: level k holds the ABs whose longest parent chain has k ABs."""
        out: dict[int, list[str]] = {}
        for name, level in self.level.items():
            out.setdefault(level, []).append(name)
        return [out[k] for k in sorted(out)]


def _read_ab_list(path: str) -> tuple[list[tuple[str, int]], list[Problem]]:
    problems: list[Problem] = []
    entries: list[tuple[str, int]] = []
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return [], [
            Problem(
                path,
                None,
                "AB list does not exist: check mode, date and dfo.mon_dir, or run createAB "
                "for this date first",
            )
        ]
    except OSError as exc:
        return [], [Problem(path, None, f"cannot read AB list: {exc.strerror}")]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return [], [Problem(path, line, "AB list is not UTF-8/ASCII text")]
    first_seen: dict[str, int] = {}
    for lineno, raw in enumerate(text.split("\n"), start=1):
        if "\x00" in raw:
            problems.append(Problem(path, lineno, "binary content (NUL byte) in the AB list"))
            break
        cols = split_line(raw)
        if not cols:
            continue
        name = cols[0]
        if not AB_NAME_RE.match(name):
            problems.append(
                Problem(
                    path,
                    lineno,
                    f"malformed line: {name!r} is not a valid AB name (expected '<name>.ab' "
                    "using only letters, digits and . _ : + -)",
                )
            )
            continue
        if name in first_seen:
            problems.append(
                Problem(
                    path,
                    lineno,
                    f"duplicate AB {name} (first listed on line {first_seen[name]}): "
                    "list each AB once",
                )
            )
            continue
        first_seen[name] = lineno
        entries.append((name, lineno))
    if not entries and not problems:
        problems.append(Problem(path, None, "AB list is empty: there is nothing to process"))
    return entries, problems


def find_existing_product(vcal_path: str, product_dir: str) -> str | None:
    """A real product already on disk for a virtual calibration, if any."""
    if not vcal_path.endswith(".hdr") and os.path.isfile(vcal_path):
        return vcal_path
    name = stem(vcal_path) + ".fits"
    candidate = os.path.join(os.path.dirname(vcal_path), name)
    if os.path.isfile(candidate):
        return candidate
    # DFOS product layout: $DFS_PRODUCT/<RAW_TYPE>/<DATE>/<file>
    found = sorted(glob.glob(os.path.join(glob.escape(product_dir), "*", "*", glob.escape(name))))
    return found[0] if found else None


def path_policy(settings: Settings) -> PathPolicy:
    """Where AB paths may point: inputs under raw/cal/product dirs, outputs under product."""
    d = settings.dfo
    return PathPolicy(
        inputs=(d["raw_dir"], d["cal_dir"], d["product_dir"], *settings.inputs.values()),
        outputs=(d["product_dir"],),
    )


def load_night(settings: Settings) -> Night:
    """Read, validate and link the night described by ``settings``.

    With several dates (``dates``), the nights of all dates become one Night (one DAG): each
    date's AB list is read and validated on its own, then they are joined in date order.
    Raises NightError with every problem found (file, line, what to do), of every date.
    """
    if len(settings.dates) > 1:
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
                nights.append(_load_one_night(one))
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
        merged, more = _merge_nights(settings, nights)
        if problems or more:
            raise NightError(problems + more)
        merged.warnings = skipped + merged.warnings
        return merged
    return _load_one_night(settings)


def _load_one_night(settings: Settings) -> Night:
    """load_night for one date."""
    list_path = settings.ab_list_path
    entries, problems = _read_ab_list(list_path)
    variables = settings.variables
    policy = path_policy(settings)

    abs_: dict[str, AB] = {}
    list_line: dict[str, int] = {}
    dir_cache: dict[tuple[str, int], tuple[str, str | None]] = {}
    missing: list[str] = []
    notices: list[Problem] = []
    for name, lineno in entries:
        ab_path = settings.ab_file(name)
        if not os.path.isfile(ab_path):
            if settings.missing_abs == "skip":
                missing.append(name)
                notices.append(
                    Problem(list_path, lineno, f"AB {name} is listed but {ab_path} does not "
                            "exist: left out (missing_abs: skip)")
                )  # fmt: skip
                continue
            problems.append(
                Problem(
                    list_path,
                    lineno,
                    f"AB {name} is listed but {ab_path} does not exist: restore the AB or "
                    "remove it from the list (or set missing_abs: skip to run every AB that "
                    "does not depend on it)",
                )
            )
            continue
        ab, ab_problems = read_ab(ab_path, variables, policy, dir_cache)
        problems.extend(ab_problems)
        if ab is not None:
            abs_[name] = ab
            list_line[name] = lineno
    unknown = _unknown_qualifiers(settings, abs_)
    if settings.unknown_qualifiers == "error":
        problems.extend(unknown)
    else:
        notices.extend(unknown)
    for name in settings.exclude:
        if name not in abs_ and name not in missing:
            problems.append(Problem(list_path, None, f"exclude: {name} is not an AB of this list"))

    # Products: who makes which file
    by_product_stem: dict[str, tuple[str, str]] = {}
    by_root: dict[str, str] = {}
    for name, ab in abs_.items():
        for frame in ab.products:
            key = stem(frame.path)
            other = by_product_stem.get(key)
            if other is not None and other[0] != name:
                problems.append(
                    Problem(
                        ab.path,
                        frame.line,
                        f"product {key} is also predicted by AB {other[0]}: two ABs cannot "
                        "make the same product",
                    )
                )
                continue
            by_product_stem[key] = (name, frame.path)
        if ab.prod_root_name:
            other_ab = by_root.get(ab.prod_root_name)
            if other_ab is not None:
                problems.append(
                    Problem(
                        ab.path,
                        ab.first_line("PROD_ROOT_NAME"),
                        f"PROD_ROOT_NAME {ab.prod_root_name} is also used by AB {other_ab}",
                    )
                )
            else:
                by_root[ab.prod_root_name] = name

    edges: list[tuple[str, str, str]] = []
    unresolved: dict[str, str] = {}
    virtual_inputs: dict[str, list[VirtualInput]] = {name: [] for name in abs_}
    file_rows: list[dict[str, object]] = []
    raw_inputs: dict[str, tuple[str, ...]] = {}
    cal_inputs: dict[str, tuple[str, ...]] = {}
    raw_root = settings.dfo["raw_dir"].rstrip("/") + "/"
    cal_root = settings.dfo["cal_dir"].rstrip("/") + "/"
    for name, ab in abs_.items():
        raws = []
        for frame in ab.rawfiles:
            file_rows.append((name, "RAWFILE", "", frame.path, frame.tag, frame.line, None))
            raws.append(frame.path)
            if not frame.path.startswith(raw_root) and not os.path.exists(frame.path):
                problems.append(
                    Problem(
                        ab.path,
                        frame.line,
                        f"RAWFILE {frame.path} does not exist and lies outside dfo.raw_dir, "
                        "where raw files are downloaded to: provide the file or fix the path",
                    )
                )
        raw_inputs[name] = tuple(raws) if ab.runs_recipe else ()
        for frame in ab.products:
            file_rows.append((name, "PRODUCTS", "", frame.path, frame.tag, frame.line, None))
        cals = []
        for cal in ab.mcalibs:
            if not cal.virtual:
                needed = cal.needed_path
                file_rows.append((name, "MCALIB", "REAL", needed, cal.tag, cal.line, None))
                cals.append(needed)
                if not needed.startswith(cal_root) and not os.path.exists(needed):
                    problems.append(
                        Problem(
                            ab.path,
                            cal.line,
                            f"MCALIB REAL {needed} does not exist and lies outside dfo.cal_dir, "
                            "where calibrations are downloaded to: nobody can provide it",
                        )
                    )
                continue
            key = stem(cal.path)
            parent, product = _match_virtual(key, by_product_stem, by_root, abs_)
            if parent == name:
                problems.append(
                    Problem(
                        ab.path,
                        cal.line,
                        f"AB {name} depends on its own product {key}: an AB cannot be its "
                        "own calibration",
                    )
                )
                continue
            if parent is None:
                existing = find_existing_product(cal.path, settings.dfo["product_dir"])
                if existing is None and missing:
                    unresolved.setdefault(name, key)  # maybe made by a missing AB: left out
                    continue
                if existing is None:
                    problems.append(
                        Problem(
                            ab.path,
                            cal.line,
                            f"MCALIB VIRTUAL {key}: no AB of batch {settings.batch_id} produces "
                            "it and no such product exists: add the producing AB to the AB "
                            "list, or associate a REAL calibration",
                        )
                    )
                    continue
                virtual_inputs[name].append(
                    VirtualInput(name, None, cal.path, existing, cal.tag, cal.line)
                )
                file_rows.append((name, "MCALIB", "VIRTUAL", existing, cal.tag, cal.line, None))
                continue
            virtual_inputs[name].append(
                VirtualInput(name, parent, cal.path, product, cal.tag, cal.line)
            )
            file_rows.append((name, "MCALIB", "VIRTUAL", product, cal.tag, cal.line, parent))
            edges.append((parent, name, key))
        cal_inputs[name] = tuple(cals) if ab.runs_recipe else ()

    names = [name for name, _ in entries if name in abs_]
    parents: dict[str, list[str]] = {n: [] for n in names}
    children: dict[str, list[str]] = {n: [] for n in names}
    for parent, child, _via in edges:
        if parent not in parents[child]:
            parents[child].append(parent)
            children[parent].append(child)

    for cycle in _find_cycles(names, children):
        chain = " -> ".join([*cycle, cycle[0]])
        first = abs_[cycle[0]]
        problems.append(
            Problem(
                first.path,
                None,
                f"dependency cycle between {len(cycle)} ABs: {chain}; no order can satisfy "
                "it: fix the MCALIB VIRTUAL entries of these ABs",
            )
        )

    if problems:
        raise NightError(problems)
    names, more = _leave_out(settings, list_path, names, parents, children, unresolved, missing)
    if more:
        notices += more
        kept = set(names)
        edges = [e for e in edges if e[0] in kept and e[1] in kept]
        file_rows = [row for row in file_rows if row[0] in kept]

    order = {name: i for i, name in enumerate(names)}
    topo = _stable_topological_order(names, parents, children, order)
    rank = {name: i for i, name in enumerate(topo)}
    level: dict[str, int] = {}
    for name in topo:
        level[name] = 1 + max((level[p] for p in parents[name]), default=-1)

    warnings = notices + [
        Problem(
            list_path,
            list_line[name],
            f"AB {name} is listed before its calibration source "
            f"{', '.join(p for p in parents[name] if order[p] > order[name])}: "
            "running it after that AB",
        )
        for name in names
        if any(order[p] > order[name] for p in parents[name])
    ]

    return Night(
        settings=settings,
        ab_objects={n: abs_[n] for n in names},
        parents={n: tuple(parents[n]) for n in names},
        children={n: tuple(children[n]) for n in names},
        virtual_inputs=virtual_inputs,
        level={n: level[n] for n in names},
        run_order=rank,
        list_line=list_line,
        edge_list=edges,
        file_rows=file_rows,
        raw_inputs=raw_inputs,
        cal_inputs=cal_inputs,
        warnings=warnings,
    )


def _unknown_qualifiers(settings: Settings, abs_: dict[str, AB]) -> list[Problem]:
    """One problem per qualifier abflow does not know (with how many ABs use it)."""
    seen: dict[str, list[tuple[str, int]]] = {}
    for ab in abs_.values():
        for qualifier, line in ab.unknown_qualifiers:
            seen.setdefault(qualifier, []).append((ab.path, line))
    out = []
    for qualifier, where in seen.items():
        path, line = where[0]
        n = len(where)
        if settings.unknown_qualifiers == "error":
            message = f"unknown qualifier {qualifier!r} (unknown_qualifiers: error)"
        else:
            message = (
                f"unknown qualifier {qualifier!r} (in {n} AB{'s' if n != 1 else ''}): kept but "
                "not used by abflow; set unknown_qualifiers: error to refuse such ABs"
            )
        out.append(Problem(path, line, message))
    return out


def _leave_out(
    settings: Settings,
    list_path: str,
    names: list[str],
    parents: dict[str, list[str]],
    children: dict[str, list[str]],
    unresolved: dict[str, str],
    missing: list[str],
) -> tuple[list[str], list[Problem]]:
    """The ABs left to run once the excluded ones, the ones whose virtual calibration only a
    missing AB can make, and everything depending on them are left out; and what was left out
    (as notices)."""
    roots = [n for n in names if n in settings.exclude or n in unresolved]
    if not roots:
        return names, []
    dropped: dict[str, str] = {}
    for root in roots:
        why = (
            "exclude"
            if root in settings.exclude
            else f"its MCALIB VIRTUAL {unresolved[root]} is made by no AB of the list, maybe by "
            f"a missing one ({', '.join(missing)})"
        )
        stack = [root]
        while stack:
            ab = stack.pop()
            if ab in dropped:
                continue
            dropped[ab] = why if ab == root else f"it depends on {root}"
            stack.extend(children[ab])
    kept = [n for n in names if n not in dropped]
    for ab in kept:
        parents[ab] = [p for p in parents[ab] if p not in dropped]
        children[ab] = [c for c in children[ab] if c not in dropped]
    notices = [Problem(list_path, None, f"AB {ab} left out: {why}") for ab, why in dropped.items()]
    return kept, notices


def _merge_nights(settings: Settings, nights: list[Night]) -> tuple[Night, list[Problem]]:
    """One Night of the nights of several dates (a campaign): their ABs in date order, one DAG.

    An AB may belong to one date only, and no two ABs of the campaign may make the same product.
    """
    problems: list[Problem] = []
    seen: dict[str, Night] = {}
    producer: dict[str, tuple[str, Night]] = {}
    merged = Night(
        settings=settings, ab_objects={}, parents={}, children={}, virtual_inputs={}, level={},
        run_order={}, list_line={}, edge_list=[], file_rows=[], raw_inputs={}, cal_inputs={},
        warnings=[], batch_date={}, parts={},
    )  # fmt: skip
    for night in nights:
        date = night.settings.date
        merged.parts[date] = night
        offset = len(merged.run_order)
        for name in night.names:
            if name in seen:
                other = seen[name]
                problems.append(
                    Problem(
                        night.settings.ab_list_path,
                        night.list_line[name],
                        f"AB {name} is also listed for {other.settings.date} "
                        f"({other.settings.ab_list_path}:{other.list_line[name]}): an AB "
                        "belongs to one date; remove it from one of the lists",
                    )
                )
                continue
            seen[name] = night
            merged.ab_objects[name] = night.ab_objects[name]
            merged.parents[name] = night.parents[name]
            merged.children[name] = night.children[name]
            merged.virtual_inputs[name] = night.virtual_inputs[name]
            merged.level[name] = night.level[name]
            merged.run_order[name] = offset + night.run_order[name]
            merged.list_line[name] = night.list_line[name]
            merged.raw_inputs[name] = night.raw_inputs[name]
            merged.cal_inputs[name] = night.cal_inputs[name]
            merged.batch_date[name] = date
        for row in night.file_rows:
            ab, kind, _flag, path, _tag, line, _parent = row
            if kind == "PRODUCTS" and seen.get(ab) is night:
                if path in producer and producer[path][0] != ab:
                    other_ab, other = producer[path]
                    problems.append(
                        Problem(
                            night.ab_objects[ab].path,
                            line,
                            f"product {path} is also made by AB {other_ab} of "
                            f"{other.settings.date}: two ABs cannot make the same product",
                        )
                    )
                producer.setdefault(path, (ab, night))
        merged.edge_list += night.edge_list
        merged.file_rows += night.file_rows
        merged.warnings += night.warnings
    return merged, problems


def _match_virtual(
    key: str,
    by_product_stem: dict[str, tuple[str, str]],
    by_root: dict[str, str],
    abs_: dict[str, AB],
) -> tuple[str | None, str]:
    """(parent AB, real product path) for a virtual calibration stem, or (None, "")."""
    hit = by_product_stem.get(key)
    if hit is not None:
        return hit
    # Fallback: the longest PROD_ROOT_NAME that the stem starts with, at a '_' boundary.
    candidate = key
    while candidate:
        parent = by_root.get(candidate)
        if parent is not None and (candidate == key or key[len(candidate)] == "_"):
            ab = abs_[parent]
            directory = ab.prod_path or (
                os.path.dirname(ab.products[0].path) if ab.products else ""
            )
            return parent, os.path.join(directory, key + ".fits") if directory else ""
        cut = candidate.rfind("_")
        if cut <= 0:
            break
        candidate = candidate[:cut]
    return None, ""


def _find_cycles(names: list[str], children: dict[str, list[str]]) -> list[list[str]]:
    """One concrete cycle (list of ABs) per strongly connected component that has one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in names:
        if root in index:
            continue
        work = [(root, iter(children[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            advanced = False
            for child in it:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(children[child])))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)
    order = {n: i for i, n in enumerate(names)}
    cycles = []
    for component in components:
        members = set(component)
        start = min(component, key=order.__getitem__)
        cycles.append(_cycle_from(start, members, children))
    cycles.sort(key=lambda c: order[c[0]])
    return cycles


def _cycle_from(start: str, members: set[str], children: dict[str, list[str]]) -> list[str]:
    """A simple cycle through ``start`` inside one strongly connected component."""
    parent_of: dict[str, str] = {}
    queue = [start]
    seen = {start}
    while queue:
        node = queue.pop(0)
        for child in children[node]:
            if child not in members:
                continue
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent_of[path[-1]])
                return list(reversed(path))
            if child not in seen:
                seen.add(child)
                parent_of[child] = node
                queue.append(child)
    return [start]


def _stable_topological_order(
    names: Iterable[str],
    parents: dict[str, list[str]],
    children: dict[str, list[str]],
    order: dict[str, int],
) -> list[str]:
    """Topological order that keeps the AB list order wherever the edges allow."""
    indegree = {n: len(parents[n]) for n in names}
    ready = [(order[n], n) for n, d in indegree.items() if d == 0]
    heapq.heapify(ready)
    out = []
    while ready:
        _, node = heapq.heappop(ready)
        out.append(node)
        for child in children[node]:
            indegree[child] -= 1
            if indegree[child] == 0:
                heapq.heappush(ready, (order[child], child))
    return out
