"""Generate synthetic nights (AB files and an AB list) of a given shape.

Used by the tests and the benchmarks to build nights of any size in a temporary DFOS tree; the
ABs follow the layout of docs/dfos.md §16 (RAWFILE/MCALIB/PRODUCTS with ``$DFO_*`` paths).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from abflow.state.fsutil import atomic_write_text

# The DFOS directories a generated night uses (no config_dir: no legacy DFOS configuration).
DFO_TREE_KEYS = ("ab_dir", "mon_dir", "job_dir", "raw_dir", "cal_dir", "log_dir", "product_dir")


def make_dfo_tree(base: str | os.PathLike[str]) -> dict[str, str]:
    """Create a DFOS directory tree under ``base`` (``base/ab``, ``base/mon``, ...); return it
    as the configuration's ``dfo`` section."""
    dfo = {key: os.path.join(base, key.removesuffix("_dir")) for key in DFO_TREE_KEYS}
    for path in dfo.values():
        os.makedirs(path, exist_ok=True)
    return dfo


@dataclass
class ABSpec:
    """One AB of a synthetic night."""

    name: str
    raw_type: str = "BIAS"
    recipe: str = "standin"
    parents: Sequence[str] = ()
    real_mcalibs: Sequence[tuple[str, str]] = ()
    n_raw: int = 3
    n_products: int = 1
    mef_factor: int | None = None
    instrument: str = "SYNTH"
    extra_lines: Sequence[str] = field(default_factory=list)

    @property
    def root(self) -> str:
        """PROD_ROOT_NAME: ``r.`` + the AB name without ``.ab``."""
        return "r." + self.name[: -len(".ab")]

    def raw_names(self) -> list[str]:
        """Archive names of the raw files (unique per AB)."""
        base = self.name[: -len(".ab")]
        return [f"{base}.raw{i:02d}.fits" for i in range(self.n_raw)]


def ab_text(spec: ABSpec, date: str, mode: str = "CALIB") -> str:
    """The AB file text for ``spec`` on ``date``."""
    lines = [
        "TOOL_VERSION    3.9",
        f"INSTRUMENT      {spec.instrument}",
        f"DATE            {date}",
        "DPR_CATG        CALIB",
        f"RAW_TYPE        {spec.raw_type}",
        f"RECIPE          {spec.recipe}",
        "DRS_TYPE        CON",
        f"BATCH_ID        {mode}_{date}",
        f"AB_NAME         {spec.name}",
        "PROCESS_STATUS  CREATED",
        f"PROD_ROOT_NAME  {spec.root}",
        "# pipeline product path",
        f"PROD_PATH       $DFS_PRODUCT/{spec.raw_type}/{date}",
    ]
    if spec.mef_factor is not None:
        lines.append(f"MEF_FACTOR      {spec.mef_factor}")
    lines.append("# raw files")
    lines += [f"RAWFILE   $DFO_RAW_DIR/{date}/{r}  {spec.raw_type}" for r in spec.raw_names()]
    if spec.parents or spec.real_mcalibs:
        lines.append("# master calibrations")
    for parent in spec.parents:
        root = "r." + parent[: -len(".ab")]
        lines.append(f"MCALIB    VIRTUAL  $DFO_CAL_DIR/VCAL/{root}_0000.hdr  MASTER_CAL")
    for path, tag in spec.real_mcalibs:
        lines.append(f"MCALIB    REAL     {path}  {tag}")
    lines.append("# products")
    lines += [
        f"PRODUCTS  $DFS_PRODUCT/{spec.raw_type}/{date}/{spec.root}_{i:04d}.fits  "
        f"{'MASTER_' + spec.raw_type if i == 0 else 'PRODUCT_' + str(i)}"
        for i in range(spec.n_products)
    ]
    lines += list(spec.extra_lines)
    return "\n".join(lines) + "\n"


def write_night(
    specs: Iterable[ABSpec],
    ab_dir: str,
    mon_dir: str,
    date: str,
    mode: str = "CALIB",
) -> list[str]:
    """Write the AB files and ``AB_list_<mode>_<date>``; return the AB names in list order."""
    os.makedirs(ab_dir, exist_ok=True)
    os.makedirs(mon_dir, exist_ok=True)
    names = []
    for spec in specs:
        atomic_write_text(os.path.join(ab_dir, spec.name), ab_text(spec, date, mode))
        names.append(spec.name)
    listing = "".join(f"{n}  SYNTH  standin  CREATED\n" for n in names)
    atomic_write_text(os.path.join(mon_dir, f"AB_list_{mode}_{date}"), listing)
    return names


def ab_name(i: int, tag: str = "", prefix: str = "SYNTH", date: str = "2013-02-13") -> str:
    """A DFOS-like AB name, unique for each ``i`` (e.g. ``SYNTH.2013-02-13T00:00:07.000.ab``)."""
    h, rem = divmod(i, 3600)
    m, s = divmod(rem, 60)
    day = h // 24
    stamp = f"{date}T{h % 24:02d}:{m:02d}:{s:02d}.{day:03d}"
    return f"{prefix}.{stamp}{'_' + tag if tag else ''}.ab"


def fan_cascade(widths: Sequence[int], prefix: str = "SYNTH") -> list[ABSpec]:
    """A cascade whose level k has ``widths[k]`` ABs, each fed by one AB of level k-1.

    ``fan_cascade([1, 3, 6])`` is bias -> 3 flats -> 6 science ABs (two per flat).
    """
    specs: list[ABSpec] = []
    previous: list[str] = []
    types = ["BIAS", "FLAT", "SCIENCE", "STD", "WAVE", "EXTRA"]
    i = 0
    for level, width in enumerate(widths):
        current = []
        for j in range(width):
            name = ab_name(i, prefix=prefix)
            i += 1
            parents = [previous[j * len(previous) // width]] if previous else []
            specs.append(ABSpec(name, raw_type=types[min(level, len(types) - 1)], parents=parents))
            current.append(name)
        previous = current
    return specs


def calib_night(n_abs: int, prefix: str = "SYNTH") -> list[ABSpec]:
    """A bias/flat/science-shaped night of about ``n_abs`` ABs.

    Per setup: one BIAS AB, one FLAT AB using that bias, one SCIENCE AB using both.
    """
    specs: list[ABSpec] = []
    for setup in range((n_abs + 2) // 3):
        bias = ABSpec(ab_name(3 * setup, prefix=prefix), raw_type="BIAS")
        flat = ABSpec(ab_name(3 * setup + 1, prefix=prefix), raw_type="FLAT", parents=[bias.name])
        sci = ABSpec(
            ab_name(3 * setup + 2, prefix=prefix),
            raw_type="SCIENCE",
            parents=[bias.name, flat.name],
        )
        specs += [bias, flat, sci]
    return specs[:n_abs]
