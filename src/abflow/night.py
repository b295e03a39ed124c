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

import pandas as pd

from abflow.ab import AB, AB_NAME_RE, PathPolicy, Problem, read_ab, split_line, stem
from abflow.config import Settings


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

    Tables (pandas): ``abs`` (one row per AB, index ``ab``, in cascade order), ``files`` (one
    row per RAWFILE/MCALIB/PRODUCTS entry) and ``edges`` (parent, child, via). The dictionaries
    ``parents``/``children`` and ``ab_objects`` give O(1) access for the workflow's input
    functions.
    """

    settings: Settings
    abs: pd.DataFrame
    files: pd.DataFrame
    edges: pd.DataFrame
    ab_objects: dict[str, AB]
    parents: dict[str, tuple[str, ...]]
    children: dict[str, tuple[str, ...]]
    virtual_inputs: dict[str, list[VirtualInput]]
    warnings: list[Problem] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        """AB names in cascade (AB list) order."""
        return list(self.abs.index)

    def __len__(self) -> int:
        return len(self.abs)

    def __contains__(self, ab: object) -> bool:
        return ab in self.ab_objects

    def mef_factor(self, ab: str) -> int:
        """Detectors of ``ab``: its MEF_FACTOR qualifier, else the config's ``mef_factor``."""
        return int(self.abs.at[ab, "mef_factor"])

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
        for name, level in self.abs["level"].items():
            out.setdefault(int(level), []).append(name)
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
    for lineno, raw in enumerate(text.splitlines(), start=1):
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


def _policy(settings: Settings) -> PathPolicy:
    d = settings.dfo
    return PathPolicy(
        inputs=(d["raw_dir"], d["cal_dir"], d["product_dir"]),
        outputs=(d["product_dir"],),
    )


def load_night(settings: Settings) -> Night:
    """Read, validate and link the night described by ``settings``.

    Raises NightError with every problem found (file, line, what to do).
    """
    list_path = settings.ab_list_path
    entries, problems = _read_ab_list(list_path)
    variables = settings.variables
    policy = _policy(settings)

    abs_: dict[str, AB] = {}
    list_line: dict[str, int] = {}
    for name, lineno in entries:
        ab_path = settings.ab_file(name)
        if not os.path.isfile(ab_path):
            problems.append(
                Problem(
                    list_path,
                    lineno,
                    f"AB {name} is listed but {ab_path} does not exist: restore the AB or "
                    "remove it from the list",
                )
            )
            continue
        ab, ab_problems = read_ab(ab_path, variables, policy)
        problems.extend(ab_problems)
        if ab is not None:
            abs_[name] = ab
            list_line[name] = lineno

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
    virtual_inputs: dict[str, list[VirtualInput]] = {name: [] for name in abs_}
    file_rows: list[dict[str, object]] = []
    for name, ab in abs_.items():
        for frame in ab.rawfiles:
            file_rows.append(_row(name, "RAWFILE", "", frame.path, frame.tag, frame.line, None))
        for frame in ab.products:
            file_rows.append(_row(name, "PRODUCTS", "", frame.path, frame.tag, frame.line, None))
        for cal in ab.mcalibs:
            if not cal.virtual:
                file_rows.append(_row(name, "MCALIB", "REAL", cal.path, cal.tag, cal.line, None))
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
                file_rows.append(_row(name, "MCALIB", "VIRTUAL", existing, cal.tag, cal.line, None))
                continue
            virtual_inputs[name].append(
                VirtualInput(name, parent, cal.path, product, cal.tag, cal.line)
            )
            file_rows.append(_row(name, "MCALIB", "VIRTUAL", product, cal.tag, cal.line, parent))
            edges.append((parent, name, key))

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

    order = {name: i for i, name in enumerate(names)}
    topo = _stable_topological_order(names, parents, children, order)
    rank = {name: i for i, name in enumerate(topo)}
    level: dict[str, int] = {}
    for name in topo:
        level[name] = 1 + max((level[p] for p in parents[name]), default=-1)

    warnings = [
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

    rows = []
    for name in names:
        ab = abs_[name]
        rows.append(
            {
                "ab": name,
                "order": order[name],
                "file": ab.path,
                "list_line": list_line[name],
                "recipe": ab.recipe,
                "raw_type": ab.raw_type,
                "drs_type": ab.drs_type,
                "instrument": ab.instrument,
                "date": ab.date or settings.date,
                "prod_root_name": ab.prod_root_name,
                "prod_path": ab.prod_path,
                "runs_recipe": ab.runs_recipe,
                "mef_factor": ab.mef_factor or settings.mef_factor,
                "level": level[name],
                "run_order": rank[name],
                "n_parents": len(parents[name]),
                "n_children": len(children[name]),
            }
        )
    abs_table = pd.DataFrame(rows).astype(
        {
            "order": "int64",
            "list_line": "int64",
            "mef_factor": "int64",
            "level": "int64",
            "run_order": "int64",
            "runs_recipe": "bool",
        }
    )
    abs_table = abs_table.set_index("ab")
    files_table = pd.DataFrame(
        file_rows, columns=["ab", "role", "kind", "path", "tag", "line", "parent"]
    )
    edges_table = pd.DataFrame(edges, columns=["parent", "child", "via"])
    return Night(
        settings=settings,
        abs=abs_table,
        files=files_table,
        edges=edges_table,
        ab_objects={n: abs_[n] for n in names},
        parents={n: tuple(parents[n]) for n in names},
        children={n: tuple(children[n]) for n in names},
        virtual_inputs=virtual_inputs,
        warnings=warnings,
    )


def _row(ab, role, kind, path, tag, line, parent) -> dict[str, object]:
    return {
        "ab": ab,
        "role": role,
        "kind": kind,
        "path": path,
        "tag": tag,
        "line": line,
        "parent": parent,
    }


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
