"""What a night may write, checked before anything runs (README: What abflow protects).

Two checks of a night's ABs, on paths with every symbolic link resolved:

* **directories**: every directory an AB names (RAWFILE, MCALIB, PRODUCTS, PROD_PATH) lies,
  resolved, inside a configured directory; a directory inside a root that links outside all
  of them is refused with its path (a root that is a link itself, as DFOS trees often make
  ``$DFO_RAW_DIR`` or ``$DFS_PRODUCT``, is fine: the roots are resolved too);
* **products**: a PRODUCTS path (or a product another AB binds to by PROD_ROOT_NAME) never
  names a file the AB did not make: not an input of the night (a RAWFILE, a REAL or static
  calibration), nothing under ``$DFO_CAL_DIR`` (certified calibrations) or a read-only input
  root, not a file the completion records say another AB made (of this night or another one
  kept in the same state directory); an existing file no record claims only if its name
  carries the AB's own PROD_ROOT_NAME (its earlier product, as after a run of DFOS itself or a
  lost state directory).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from abflow.model.ab import AB, Problem
from abflow.model.config import Settings
from abflow.state.fsutil import inside, read_json_object
from abflow.state.layout import StateLayout


class Resolver:
    """``os.path.realpath`` with the directories' answers kept (a night names few
    directories and many files)."""

    def __init__(self) -> None:
        self._dirs: dict[str, str] = {}

    def directory(self, path: str) -> str:
        """The directory ``path`` resolved (it need not exist)."""
        real = self._dirs.get(path)
        if real is None:
            real = self._dirs[path] = os.path.realpath(path)
        return real

    def file(self, path: str) -> str:
        """The file ``path`` resolved: its directory's answer, then the file itself if it is
        a link."""
        directory, name = os.path.split(path)
        real = os.path.join(self.directory(directory), name)
        return os.path.realpath(real) if os.path.islink(real) else real


def _ab_paths(ab: AB) -> Iterable[tuple[str, int]]:
    """Every path an AB names, with its line."""
    for frame in ab.rawfiles:
        yield frame.path, frame.line
    for cal in ab.mcalibs:
        yield cal.path, cal.line
        if cal.needed_path != cal.path:
            yield cal.needed_path, cal.line
    for frame in ab.products:
        yield frame.path, frame.line
    if ab.prod_path:
        yield os.path.join(ab.prod_path, "x"), ab.first_line("PROD_PATH") or 0


def check_directories(
    abs_: Mapping[str, AB], roots: tuple[str, ...], resolver: Resolver
) -> list[Problem]:
    """A problem for every directory named by an AB that resolves outside all ``roots``
    (resolved), at the first line naming it."""
    problems: list[Problem] = []
    seen: set[str] = set()
    for ab in abs_.values():
        for path, line in _ab_paths(ab):
            directory = os.path.dirname(path)
            if directory in seen:
                continue
            seen.add(directory)
            real = resolver.directory(directory)
            if not inside(real, roots):
                problems.append(
                    Problem(
                        ab.path,
                        line or None,
                        (
                            f"{directory} resolves to {real}, outside every configured "
                            "directory (a symbolic link leads there): abflow reads and writes "
                            "only inside them; fix the link or configure that directory"
                        ),
                    )
                )
    return problems


def recorded_products(state_dir: str, resolver: Resolver) -> dict[str, tuple[str, str]]:
    """Which AB's completion record claims each product (resolved path -> (AB, record)), over
    every record of the state directory (every night kept there)."""
    owners: dict[str, tuple[str, str]] = {}
    records = StateLayout(state_dir).records_dir
    try:
        names = sorted(n for n in os.listdir(records) if n.endswith(".json"))
    except OSError:
        return owners
    for name in names:
        path = os.path.join(records, name)
        record = read_json_object(path) or {}
        products, ab = record.get("products"), name.removesuffix(".json")
        if not isinstance(products, list) or record.get("ab") != ab:
            continue  # (damaged, or another AB's content: it claims nothing)
        for product in products:
            if isinstance(product, dict) and isinstance(product.get("path"), str):
                owners.setdefault(resolver.file(product["path"]), (ab, path))
    return owners


def night_inputs(abs_: Mapping[str, AB], resolver: Resolver) -> dict[str, tuple[str, str, int]]:
    """Every input file of the night (RAWFILE, MCALIB REAL as named and as needed), resolved:
    -> (what it is, AB file, line)."""
    inputs: dict[str, tuple[str, str, int]] = {}
    for ab in abs_.values():
        for frame in ab.rawfiles:
            inputs.setdefault(resolver.file(frame.path), ("RAWFILE", ab.path, frame.line))
        for cal in (c for c in ab.mcalibs if not c.virtual):
            for path in {cal.path, cal.needed_path}:
                inputs.setdefault(resolver.file(path), ("MCALIB REAL", ab.path, cal.line))
    return inputs


class ProductCheck:
    """The product check of one night (see the module docstring)."""

    def __init__(self, settings: Settings, abs_: Mapping[str, AB], resolver: Resolver) -> None:
        self.settings, self.resolver = settings, resolver
        self.inputs = night_inputs(abs_, resolver)
        self.owners = recorded_products(settings.state_dir, resolver)
        self.protected = (
            ("$DFO_CAL_DIR (certified calibrations)", resolver.directory(settings.dfo["cal_dir"])),
            *(
                (f"the read-only input {k}", resolver.directory(v))
                for k, v in settings.inputs.items()
            ),
        )

    def problem(self, ab: AB, path: str) -> str:
        """Why ``ab`` must not write ``path`` ("" if it may)."""
        real = self.resolver.file(path)
        if not inside(real, self.settings.roots):
            return (
                f"{path} resolves to {real}, outside every configured directory (a symbolic "
                "link leads there): abflow will not let a product replace it"
            )
        hit = self.inputs.get(real)
        if hit is not None:
            kind, where, line = hit
            return (
                f"{path} is an input of the night ({kind} of {where}:{line}): a product "
                "must never replace an input; fix the PRODUCTS line"
            )
        for what, root in self.protected:
            if inside(real, (root,)):
                return (
                    f"{path} lies under {what}: abflow never writes there; products go "
                    "to dfo.product_dir ($DFS_PRODUCT)"
                )
        owner = self.owners.get(real)
        if owner is not None and owner[0] != ab.name:
            return (
                f"{path} is the product of AB {owner[0]} (its completion record "
                f"{owner[1]}): one AB must not replace another's product"
            )
        if owner is None and os.path.lexists(path):
            root = ab.prod_root_name or "r." + ab.name.removesuffix(".ab")
            if not os.path.basename(path).startswith(root):
                return (
                    f"{path} exists, no completion record says AB {ab.name} made it, and "
                    f"its name does not carry the AB's PROD_ROOT_NAME {root}: abflow will "
                    "not replace it (move it away if it is obsolete, or fix the "
                    "PRODUCTS line)"
                )
        return ""


def check_products(
    settings: Settings,
    abs_: Mapping[str, AB],
    implied: Mapping[str, list[tuple[str, str, str, int]]],
    resolver: Resolver,
) -> list[Problem]:
    """A problem for every product an AB must not write: its PRODUCTS, and the ``implied``
    products other ABs bind to by its PROD_ROOT_NAME (path, tag, and the AB file and line of
    the binding)."""
    check = ProductCheck(settings, abs_, resolver)
    problems = []
    for name, ab in abs_.items():
        wanted = [(f.path, ab.path, f.line) for f in ab.products]
        wanted += [(path, where, line) for path, _tag, where, line in implied.get(name, ())]
        for path, where, line in wanted:
            why = check.problem(ab, path)
            if why:
                problems.append(Problem(where, line, f"PRODUCTS of AB {name}: {why}"))
    return problems
