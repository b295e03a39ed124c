"""Loading a night: :func:`load_night` reads ``AB_list_<MODE>_<DATE>`` and the AB files and
builds the Night (abflow.model.night) in named phases:

1. **read** the AB list and every AB it lists (a missing one refused, or left out);
2. **index products**: which AB predicts which product (PRODUCTS stems, PROD_ROOT_NAME);
3. **match edges**: AB B depends on AB A when the stem of one of B's ``MCALIB VIRTUAL``
   entries equals the stem of one of A's PRODUCTS, or, failing that, starts with A's
   PROD_ROOT_NAME; an existing product stands in where no AB of the batch makes it;
4. **check files**: raw files and REAL calibrations lie where downloads can bring them, or
   exist;
5. **order**: cycles refused, excluded ABs left out with what depends on them, the cascade
   levels and the order to run in.

Every problem found is collected and raised at once as :class:`NightError`.
"""

from __future__ import annotations

import glob
import heapq
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from abflow.model.ab import AB, AB_NAME_RE, PathPolicy, Problem, read_ab, split_line, stem
from abflow.model.campaign import load_campaign
from abflow.model.config import Settings
from abflow.model.night import Edge, Night, NightAB, NightError, VirtualInput


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
    if len(settings.dates) <= 1:
        return _load_one_night(settings)
    return load_campaign(settings, _load_one_night)


@dataclass
class _Draft:
    """A night while it is loaded: what each phase found so far."""

    settings: Settings
    problems: list[Problem] = field(default_factory=list)
    notices: list[Problem] = field(default_factory=list)
    entries: list[tuple[str, int]] = field(default_factory=list)  # (AB, list line)
    abs: dict[str, AB] = field(default_factory=dict)
    list_line: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # listed, no file (missing_abs: skip)
    by_stem: dict[str, tuple[str, str]] = field(default_factory=dict)  # stem -> (AB, path)
    by_root: dict[str, str] = field(default_factory=dict)  # PROD_ROOT_NAME -> AB
    edges: list[Edge] = field(default_factory=list)
    virtual: dict[str, list[VirtualInput]] = field(default_factory=dict)
    unresolved: dict[str, str] = field(default_factory=dict)  # AB -> stem only a missing AB has
    # parent -> products other ABs bind to by its PROD_ROOT_NAME that its PRODUCTS do not list
    # (path, tag, the binding AB's file, line): the parent's job must leave them too
    implied: dict[str, list[tuple[str, str, str, int]]] = field(default_factory=dict)

    @property
    def list_path(self) -> str:
        """The AB list."""
        return self.settings.ab_list_path


def _load_one_night(settings: Settings) -> Night:
    """load_night for one date: the phases, then the Night (or every problem at once)."""
    draft = _Draft(settings)
    _read_list(draft)
    _read_abs(draft)
    _index_products(draft)
    _match_edges(draft)
    _check_files(draft)
    _check_outputs(draft)
    names = [name for name, _ in draft.entries if name in draft.abs]
    parents, children = _link(names, draft.edges)
    _check_cycles(draft, names, children)
    if draft.problems:
        raise NightError(draft.problems)
    return _order(draft, names, parents, children)


# ----- phase 1: read ---------------------------------------------------------------------------
def _read_list(draft: _Draft) -> None:
    """The AB list's entries (name, line): each a valid AB name, listed once."""
    path = draft.list_path
    text = _list_text(path, draft.problems)
    if text is None:
        return
    first_seen: dict[str, int] = {}
    for lineno, raw in enumerate(text.split("\n"), start=1):
        if "\x00" in raw:
            draft.problems.append(Problem(path, lineno, "binary content (NUL byte) in the AB list"))
            break
        cols = split_line(raw)
        if not cols:
            continue
        name = cols[0]
        if not AB_NAME_RE.match(name):
            draft.problems.append(
                Problem(
                    path,
                    lineno,
                    f"malformed line: {name!r} is not a valid AB name (expected "
                    "'<name>.ab' using only letters, digits and . _ : + -)",
                )
            )
        elif name in first_seen:
            draft.problems.append(
                Problem(
                    path,
                    lineno,
                    f"duplicate AB {name} (first listed on line {first_seen[name]}): "
                    "list each AB once",
                )
            )
        else:
            first_seen[name] = lineno
            draft.entries.append((name, lineno))
    if not draft.entries and not draft.problems:
        draft.problems.append(Problem(path, None, "AB list is empty: there is nothing to process"))


MAX_LIST_BYTES = 64 << 20  # an AB list of a million ABs is 50 MB


def _list_text(path: str, problems: list[Problem]) -> str | None:
    """The AB list as text (None, with the problem noted, if it cannot be read: also when it is
    not a regular file or holds more than MAX_LIST_BYTES; a FIFO or a device is never read)."""
    from abflow.model.ab import read_regular

    try:
        data = read_regular(path, MAX_LIST_BYTES)
    except ValueError as exc:
        problems.append(Problem(path, None, f"AB list {exc}: it must be a text file"))
        return None
    except FileNotFoundError:
        problems.append(
            Problem(
                path,
                None,
                "AB list does not exist: check mode, date and "
                "dfo.mon_dir, or run createAB for this date first",
            )
        )
        return None
    except OSError as exc:
        problems.append(Problem(path, None, f"cannot read AB list: {exc.strerror}"))
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        problems.append(Problem(path, line, "AB list is not UTF-8/ASCII text"))
        return None


def _read_abs(draft: _Draft) -> None:
    """Every listed AB, parsed and validated; a listed AB without a file is refused, or left
    out (missing_abs: skip); unknown qualifiers and unknown ``exclude`` names noted."""
    s = draft.settings
    variables, policy = s.variables, path_policy(s)
    dir_cache: dict[tuple[str, int], tuple[str, str | None]] = {}
    for name, lineno in draft.entries:
        ab_path = s.ab_file(name)
        if not os.path.exists(ab_path):  # anything else there: read_ab says what it is
            _missing_ab(draft, name, lineno, ab_path)
            continue
        ab, ab_problems = read_ab(ab_path, variables, policy, dir_cache)
        draft.problems.extend(ab_problems)
        if ab is not None:
            draft.abs[name] = ab
            draft.list_line[name] = lineno
    unknown = _unknown_qualifiers(s, draft.abs)
    (draft.problems if s.unknown_qualifiers == "error" else draft.notices).extend(unknown)
    for name in s.exclude:
        if name not in draft.abs and name not in draft.missing:
            draft.problems.append(
                Problem(draft.list_path, None, f"exclude: {name} is not an AB of this list")
            )


def _missing_ab(draft: _Draft, name: str, lineno: int, ab_path: str) -> None:
    if draft.settings.missing_abs == "skip":
        draft.missing.append(name)
        draft.notices.append(
            Problem(
                draft.list_path,
                lineno,
                f"AB {name} is listed but {ab_path} does not exist: left out (missing_abs: skip)",
            )
        )
        return
    draft.problems.append(
        Problem(
            draft.list_path,
            lineno,
            f"AB {name} is listed but {ab_path} does not exist: restore "
            "the AB or remove it from the list (or set missing_abs: skip to run every AB that does "
            "not depend on it)",
        )
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


# ----- phase 2: index products -----------------------------------------------------------------
def _index_products(draft: _Draft) -> None:
    """Who makes which file: PRODUCTS stems and PROD_ROOT_NAMEs, each of one AB only."""
    for name, ab in draft.abs.items():
        for frame in ab.products:
            key = stem(frame.path)
            other = draft.by_stem.get(key)
            if other is not None and other[0] != name:
                draft.problems.append(
                    Problem(
                        ab.path,
                        frame.line,
                        f"product {key} is also "
                        f"predicted by AB {other[0]}: two ABs cannot make the "
                        "same product",
                    )
                )
                continue
            draft.by_stem[key] = (name, frame.path)
        if not ab.prod_root_name:
            continue
        other_ab = draft.by_root.get(ab.prod_root_name)
        if other_ab is not None:
            draft.problems.append(
                Problem(
                    ab.path,
                    ab.first_line("PROD_ROOT_NAME"),
                    f"PROD_ROOT_NAME {ab.prod_root_name} is also used by AB {other_ab}",
                )
            )
        else:
            draft.by_root[ab.prod_root_name] = name


# ----- phase 3: match edges --------------------------------------------------------------------
def _match_edges(draft: _Draft) -> None:
    """Every MCALIB VIRTUAL entry resolved: to the AB of the batch that makes it (an edge),
    else to an existing product; with neither, a problem (or, where a missing AB may make it,
    the AB left out)."""
    product_dir = draft.settings.dfo["product_dir"]
    for name, ab in draft.abs.items():
        found = draft.virtual.setdefault(name, [])
        for cal in (c for c in ab.mcalibs if c.virtual):
            key = stem(cal.path)
            parent, product = _match_virtual(key, draft.by_stem, draft.by_root, draft.abs)
            if parent == name:
                draft.problems.append(
                    Problem(
                        ab.path,
                        cal.line,
                        f"AB {name} depends on its own "
                        f"product {key}: an AB cannot be its own calibration",
                    )
                )
            elif parent is not None and not product:
                draft.problems.append(
                    Problem(
                        ab.path,
                        cal.line,
                        f"MCALIB VIRTUAL {key} binds to AB {parent} by its PROD_ROOT_NAME, "
                        "but that AB has neither PROD_PATH nor PRODUCTS: nobody can tell where "
                        f"the product will be; give AB {parent} a PRODUCTS line for it",
                    )
                )
            elif parent is not None:
                found.append(VirtualInput(name, parent, cal.path, product, cal.tag, cal.line))
                draft.edges.append(Edge(parent, name, key))
                if all(f.path != product for f in draft.abs[parent].products):
                    draft.implied.setdefault(parent, []).append(
                        (product, cal.tag, ab.path, cal.line)
                    )
            elif (existing := find_existing_product(cal.path, product_dir)) is not None:
                found.append(VirtualInput(name, None, cal.path, existing, cal.tag, cal.line))
            elif draft.missing:
                draft.unresolved.setdefault(name, key)  # maybe made by a missing AB: left out
            else:
                draft.problems.append(
                    Problem(
                        ab.path,
                        cal.line,
                        f"MCALIB VIRTUAL {key}: no AB of batch "
                        f"{draft.settings.batch_id} produces it and no such product exists: add "
                        "the producing AB to the AB list, or associate a REAL calibration",
                    )
                )


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


# ----- phase 4: check files --------------------------------------------------------------------
def _check_files(draft: _Draft) -> None:
    """Raw files and REAL calibrations exist, or lie where the downloads bring them."""
    raw_root = draft.settings.dfo["raw_dir"].rstrip("/") + "/"
    cal_root = draft.settings.dfo["cal_dir"].rstrip("/") + "/"
    for ab in draft.abs.values():
        for frame in ab.rawfiles:
            if not frame.path.startswith(raw_root) and not os.path.exists(frame.path):
                draft.problems.append(
                    Problem(
                        ab.path,
                        frame.line,
                        f"RAWFILE {frame.path} does not exist and lies "
                        "outside dfo.raw_dir, where raw files are downloaded to: provide the file "
                        "or fix the path",
                    )
                )
        for cal in (c for c in ab.mcalibs if not c.virtual):
            needed = cal.needed_path
            if not needed.startswith(cal_root) and not os.path.exists(needed):
                draft.problems.append(
                    Problem(
                        ab.path,
                        cal.line,
                        f"MCALIB REAL {needed} does not exist and lies outside "
                        "dfo.cal_dir, where calibrations are downloaded to: nobody can provide "
                        "it",
                    )
                )


def _check_outputs(draft: _Draft) -> None:
    """What abflow protects (abflow.model.guard): no directory an AB names resolves outside the
    configured ones, and no product replaces a file its AB did not make."""
    from abflow.model.guard import Resolver, check_directories, check_products

    resolver = Resolver()
    draft.problems += check_directories(draft.abs, draft.settings.roots, resolver)
    draft.problems += check_products(draft.settings, draft.abs, draft.implied, resolver)


# ----- phase 5: order --------------------------------------------------------------------------
def _link(names: list[str], edges: list[Edge]) -> tuple[dict[str, list[str]], ...]:
    """(parents, children) of every AB, each once, in the order the edges name them."""
    parents: dict[str, list[str]] = {n: [] for n in names}
    children: dict[str, list[str]] = {n: [] for n in names}
    for edge in edges:
        if edge.parent not in parents[edge.child]:
            parents[edge.child].append(edge.parent)
            children[edge.parent].append(edge.child)
    return parents, children


def _check_cycles(draft: _Draft, names: list[str], children: dict[str, list[str]]) -> None:
    for cycle in _find_cycles(names, children):
        chain = " -> ".join([*cycle, cycle[0]])
        draft.problems.append(
            Problem(
                draft.abs[cycle[0]].path,
                None,
                f"dependency cycle between {len(cycle)} ABs: "
                f"{chain}; no order can satisfy it: fix the MCALIB VIRTUAL entries of these ABs",
            )
        )


def _order(
    draft: _Draft,
    names: list[str],
    parents: dict[str, list[str]],
    children: dict[str, list[str]],
) -> Night:
    """The Night: the ABs left once the excluded ones (and what depends on them) are left
    out, in an order the cascade allows, with their levels."""
    names, left_out = _leave_out(draft, names, parents, children)
    kept = set(names)
    order = {name: i for i, name in enumerate(names)}
    topo = _stable_topological_order(names, parents, children, order)
    level: dict[str, int] = {}
    for name in topo:
        level[name] = 1 + max((level[p] for p in parents[name]), default=-1)
    late = []  # ABs listed before an AB they take calibrations from
    for name in names:
        if later := [p for p in parents[name] if order[p] > order[name]]:
            late.append(
                Problem(
                    draft.list_path,
                    draft.list_line[name],
                    f"AB {name} is listed "
                    f"before its calibration source {', '.join(later)}: running it "
                    "after that AB",
                )
            )
    run_order = {name: i for i, name in enumerate(topo)}
    records = {
        name: _record(draft, name, parents, children, level[name], run_order[name])
        for name in names
    }
    edges = [e for e in draft.edges if e.parent in kept and e.child in kept]
    return Night(draft.settings, records, edges, draft.notices + left_out + late)


def _record(
    draft: _Draft,
    name: str,
    parents: dict[str, list[str]],
    children: dict[str, list[str]],
    level: int,
    run_order: int,
) -> NightAB:
    ab = draft.abs[name]
    runs = ab.runs_recipe
    return NightAB(
        ab=ab,
        list_line=draft.list_line[name],
        batch_date=draft.settings.date,
        parents=tuple(parents[name]),
        children=tuple(children[name]),
        virtual=tuple(draft.virtual.get(name, ())),
        raw_inputs=tuple(f.path for f in ab.rawfiles) if runs else (),
        cal_inputs=tuple(c.needed_path for c in ab.mcalibs if not c.virtual) if runs else (),
        implied_products=tuple((p, tag) for p, tag, _, _ in draft.implied.get(name, ())),
        level=level,
        run_order=run_order,
    )


def _leave_out(
    draft: _Draft,
    names: list[str],
    parents: dict[str, list[str]],
    children: dict[str, list[str]],
) -> tuple[list[str], list[Problem]]:
    """The ABs left to run once the excluded ones, the ones whose virtual calibration only a
    missing AB can make, and everything depending on them are left out; and what was left out
    (as notices)."""
    exclude, unresolved = draft.settings.exclude, draft.unresolved
    dropped: dict[str, str] = {}
    for root in (n for n in names if n in exclude or n in unresolved):
        why = (
            "exclude"
            if root in exclude
            else f"its MCALIB VIRTUAL {unresolved[root]} is made by no AB of the list, maybe by "
            f"a missing one ({', '.join(draft.missing)})"
        )
        stack = [root]
        while stack:
            ab = stack.pop()
            if ab not in dropped:
                dropped[ab] = why if ab == root else f"it depends on {root}"
                stack.extend(children[ab])
    kept = [n for n in names if n not in dropped]
    for ab in kept:
        parents[ab] = [p for p in parents[ab] if p not in dropped]
        children[ab] = [c for c in children[ab] if c not in dropped]
    notices = [
        Problem(draft.list_path, None, f"AB {ab} left out: {why}") for ab, why in dropped.items()
    ]
    return kept, notices


def _find_cycles(names: list[str], children: dict[str, list[str]]) -> list[list[str]]:
    """One concrete cycle (list of ABs) per strongly connected component that has one, in
    AB-list order."""
    order = {n: i for i, n in enumerate(names)}
    cycles = []
    for component in _components(names, children):
        if len(component) > 1:
            start = min(component, key=order.__getitem__)
            cycles.append(_cycle_from(start, set(component), children))
    cycles.sort(key=lambda c: order[c[0]])
    return cycles


def _components(names: list[str], children: dict[str, list[str]]) -> list[list[str]]:
    """The strongly connected components of the graph (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for root in names:
        if root in index:
            continue
        work = [(root, iter(children[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            child = next((c for c in it if c not in index or c in on_stack), None)
            if child is not None and child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(children[child])))
                continue
            if child is not None:  # on the stack: a back edge
                low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while not component or component[-1] != node:
                    component.append(stack.pop())
                    on_stack.discard(component[-1])
                components.append(component)
    return components


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
