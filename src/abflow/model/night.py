"""The Night: a batch of ABs, one record per AB (:class:`NightAB`), and the cascade edges.

:func:`abflow.model.load.load_night` builds it from the AB list and the AB files. The Night is
the single source of truth for the cascade: the Snakefile, the legacy job files, the plan and
the status page all read it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from abflow.model.ab import AB, Problem
from abflow.model.config import Settings


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


@dataclass(frozen=True)
class Edge:
    """AB ``child`` takes the product ``via`` (a file stem) of AB ``parent``."""

    parent: str
    child: str
    via: str


@dataclass
class NightAB:
    """One AB of the night: the parsed AB and what the Night derived for it."""

    ab: AB
    list_line: int  # its line in the AB list
    batch_date: str  # the date of that AB list
    parents: tuple[str, ...] = ()  # the ABs it takes calibrations from, in list order
    children: tuple[str, ...] = ()  # the ABs taking calibrations from it
    virtual: tuple[VirtualInput, ...] = ()  # its MCALIB VIRTUAL entries, resolved
    raw_inputs: tuple[str, ...] = ()  # raw files it reads (none if it runs no recipe)
    cal_inputs: tuple[str, ...] = ()  # REAL calibrations it reads (ditto)
    # products other ABs bind to by its PROD_ROOT_NAME that its PRODUCTS do not list (path,
    # tag): its job must leave them too
    implied_products: tuple[tuple[str, str], ...] = ()
    level: int = 0  # 1 + the level of its highest parent (0: no parent)
    run_order: int = 0  # its place in the order the night runs in

    @property
    def name(self) -> str:
        """The AB's name (its file name)."""
        return self.ab.name

    def files(self) -> Iterator[tuple[str, str, str, str, int, str | None]]:
        """(role, kind, path, tag, line, producing AB) of every file it names: RAWFILE,
        MCALIB (kind REAL or VIRTUAL, a virtual one as the real product) and PRODUCTS."""
        for frame in self.ab.rawfiles:
            yield "RAWFILE", "", frame.path, frame.tag, frame.line, None
        for cal in self.ab.mcalibs:
            if not cal.virtual:
                yield "MCALIB", "REAL", cal.needed_path, cal.tag, cal.line, None
        for v in self.virtual:
            yield "MCALIB", "VIRTUAL", v.product_path, v.tag, v.line, v.parent
        for frame in self.ab.products:
            yield "PRODUCTS", "", frame.path, frame.tag, frame.line, None


@dataclass
class Night:
    """A validated batch of ABs: ``night[name]`` is the AB's :class:`NightAB` (O(1), for the
    workflow's input functions); iterating gives the records in cascade (AB list) order."""

    settings: Settings
    records: dict[str, NightAB]
    edges: list[Edge] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    # a run of several dates: the night of each date
    parts: dict[str, Night] = field(default_factory=dict)

    def __getitem__(self, name: str) -> NightAB:
        return self.records[name]

    def __iter__(self) -> Iterator[NightAB]:
        return iter(self.records.values())

    def __len__(self) -> int:
        return len(self.records)

    def __contains__(self, ab: object) -> bool:
        return ab in self.records

    @property
    def names(self) -> list[str]:
        """AB names in cascade (AB list) order."""
        return list(self.records)

    def nights(self) -> list[Night]:
        """The single-date nights of this run: itself, or one per date of a multi-date run."""
        return list(self.parts.values()) or [self]

    def batch_ids(self) -> list[str]:
        """BATCH_ID of every date that has a night in this run (the run locks these)."""
        return [night.settings.batch_id for night in self.nights()]

    def mef_factor(self, ab: str) -> int:
        """Detectors of ``ab``: its MEF_FACTOR qualifier, else the config's ``mef_factor``."""
        return self.records[ab].ab.mef_factor or self.settings.mef_factor

    def detectors(self, ab: str) -> int:
        """Per-detector jobs ``ab`` runs as: its MEF factor, except under DRS_TYPE INT (one job
        with all cores, the recipe fans out itself) or for an AB that runs no recipe."""
        n = self.mef_factor(ab)
        if n <= 1 or self.settings.drs_type == "INT" or not self.records[ab].ab.runs_recipe:
            return 1
        return n

    def batch_of(self, ab: str) -> str:
        """BATCH_ID (``<MODE>_<DATE>``) of the AB list that lists ``ab``."""
        return f"{self.settings.mode}_{self.records[ab].batch_date}"

    def date(self, ab: str) -> str:
        """DFO date of ``ab``: its DATE qualifier, else the date of its AB list."""
        return self.records[ab].ab.date or self.records[ab].batch_date

    def descendants(self, ab: str, include_self: bool = True) -> list[str]:
        """``ab`` and every AB depending on it, directly or not, in cascade order."""
        seen = reach(ab, lambda n: self.records[n].children)
        seen |= {ab} if include_self else set()
        return [name for name in self.records if name in seen]

    def levels(self) -> list[list[str]]:
        """The cascade as levels: level k holds the ABs whose longest parent chain has k ABs."""
        out: dict[int, list[str]] = {}
        for record in self.records.values():
            out.setdefault(record.level, []).append(record.name)
        return [out[k] for k in sorted(out)]

    def dependencies(self) -> int:
        """How many (parent, child) pairs of ABs the cascade has."""
        return sum(len(r.parents) for r in self.records.values())


def reach(start: str, step: object) -> set[str]:
    """Every AB reachable from ``start`` by ``step`` (children or parents), ``start`` not."""
    seen: set[str] = set()
    stack = [start]
    while stack:
        for other in step(stack.pop()):  # type: ignore[operator]
            if other not in seen:
                seen.add(other)
                stack.append(other)
    seen.discard(start)
    return seen
