"""abflow's processAB: run one AB through its ESO recipe with esorex.

What DFOS processAB does (docs/dfos.md §8), for the example night and for sites without
DFOS: check the inputs (fetching missing ones with ``commands.download``), write the SOF from
RAWFILE and MCALIB (a VIRTUAL calibration replaced by the real product of the AB that made it),
run ``esorex`` in the AB's own working directory, judge success by exit code plus the expected
products (matched by PRO.CATG), and move the products to their PRODUCTS paths in PROD_PATH.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

from astropy.io import fits

from abflow.model.ab import AB, read_ab, stem
from abflow.model.commands import fill
from abflow.model.config import Settings, write_run_config
from abflow.model.load import find_existing_product, path_policy
from abflow.state.fsutil import (
    atomic_write_chunks,
    atomic_write_text,
    check_inside,
    remove_tree,
    replace_all,
    resolve_roots,
)
from abflow.state.layout import JobId, Step

ESOREX = os.environ.get("ABFLOW_ESOREX", "esorex")


class ProcessError(RuntimeError):
    """Processing of an AB failed; the message says why and what to check."""


@dataclass(frozen=True)
class Product:
    """A file written by the recipe, with its PRO.CATG."""

    path: str
    catg: str


def load_ab(ab_file: str, settings: Settings) -> AB:
    """Read and validate one AB with the configured directories."""
    ab, problems = read_ab(ab_file, settings.variables, path_policy(settings))
    if problems or ab is None:
        raise ProcessError("invalid AB:\n" + "\n".join(f"  {p}" for p in problems))
    return ab


def virtual_map(ab: AB, settings: Settings, inputs_file: str | None) -> dict[str, str]:
    """Where the real product of each VIRTUAL calibration of ``ab`` is.

    From ``abflow_inputs.json`` written by the workflow (the Night knows which AB made each
    one), else by looking for ``<stem>.fits`` beside the vcal and in the product tree.
    """
    known: dict[str, str] = {}
    if inputs_file and os.path.isfile(inputs_file):
        with open(inputs_file, encoding="utf-8") as fh:
            known = dict(json.load(fh).get("virtual", {}))
    out = {}
    for cal in ab.mcalibs:
        if not cal.virtual:
            continue
        product = known.get(cal.path) or find_existing_product(
            cal.path, settings.dfo["product_dir"]
        )
        if not product:
            raise ProcessError(
                f"line {cal.line}: the product {stem(cal.path)} of MCALIB VIRTUAL {cal.path} "
                "was not found: process the AB that makes it first"
            )
        out[cal.path] = product
    return out


def fetch_missing(ab: AB, settings: Settings, log: Callable[[str], None]) -> None:
    """Download RAWFILE and REAL MCALIB inputs that are missing (or only a .hdr) locally: each
    in a staging directory of its own beside it (the command's working directory, ``{dest}``
    the file there), linked into place once complete, never over a file someone placed."""
    wanted = [(f.path, f.line) for f in ab.rawfiles]
    wanted += [(c.needed_path, c.line) for c in ab.mcalibs if not c.virtual]
    for path, line in wanted:
        if os.path.isfile(path):
            continue
        name, directory = os.path.basename(path), os.path.dirname(path)
        staging = os.path.join(directory, f".{name}.abflow-fetch.{os.getpid()}")
        values = {
            "file": name,
            "dest": os.path.join(staging, name),
            "date": settings.date,
            "mode": settings.mode,
            "config": write_run_config(settings),
        }
        command = fill(settings.commands["download"], values)
        log(f"fetching {name}: {command}")
        remove_tree(staging)
        os.makedirs(staging)
        try:
            proc = subprocess.run(command, shell=True, cwd=staging, check=False)
            if proc.returncode == 0:
                with contextlib.suppress(FileExistsError, FileNotFoundError):
                    os.link(os.path.join(staging, name), path)
        finally:
            remove_tree(staging)
        if proc.returncode != 0 or not os.path.isfile(path):
            raise ProcessError(
                f"line {line}: input {path} is missing and the download failed "
                f"(exit {proc.returncode}): check commands.download and the archive"
            )


def write_sof(ab: AB, virtual: dict[str, str], path: str) -> list[tuple[str, str]]:
    """Write the set-of-frames file (``<path> <TAG>`` per line); return its entries."""
    entries = [(f.path, f.tag) for f in ab.rawfiles]
    entries += [(virtual.get(c.path, c.needed_path), c.tag) for c in ab.mcalibs]
    missing = [p for p, _ in entries if not os.path.isfile(p)]
    if missing:
        raise ProcessError(
            "input file(s) missing: " + ", ".join(missing) + ": download them or check the AB"
        )
    text = "".join(f"{p} {tag}\n" for p, tag in entries)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return entries


def recipe_options(ab: AB, det_option: str | None = None) -> list[str]:
    """The AB's recipe options; ``det_option`` (``--nifu=3``) replaces one of the same name."""
    if not det_option:
        return list(ab.recipe_params)
    name = det_option.split("=", 1)[0]
    kept = [p for p in ab.recipe_params if p.split("=", 1)[0] != name]
    return [*kept, det_option]


def esorex_command(ab: AB, sof: str, outdir: str, options: list[str] | None = None) -> list[str]:
    """The esorex call for ``ab`` (argument list, no shell)."""
    prefix = ab.prod_root_name or "r." + ab.name[: -len(".ab")]
    return [
        ESOREX,
        f"--output-dir={outdir}",
        f"--log-dir={os.path.dirname(sof)}",
        "--log-file=esorex.log",
        f"--output-prefix={prefix}",
        "--suppress-prefix=FALSE",
        "--suppress-link=TRUE",
        ab.recipe,
        *(ab.recipe_params if options is None else options),
        sof,
    ]


def list_products(outdir: str) -> list[Product]:
    """The FITS files the recipe wrote, with their PRO.CATG.

    Ordered by EXTNAME of the primary header (multi-detector products such as MUSE's
    CHAN01..CHAN24, which a parallel recipe numbers in completion order), then by name.
    """
    found = []
    for name in os.listdir(outdir):
        path = os.path.join(outdir, name)
        if not name.endswith(".fits") or not os.path.isfile(path):
            continue
        try:
            header = fits.getheader(path)
        except (OSError, ValueError) as exc:
            raise ProcessError(f"product {name} is not a readable FITS file: {exc}") from None
        extname = str(header.get("EXTNAME", ""))
        found.append((extname, name, Product(path, str(header.get("ESO PRO CATG", "")))))
    return [p for _, _, p in sorted(found, key=lambda t: (t[0], t[1]))]


def assign_products(ab: AB, products: list[Product]) -> tuple[list[tuple[str, str]], list[str]]:
    """Match recipe outputs to the AB's PRODUCTS entries.

    Each PRODUCTS entry takes the first unused output with its PRO.CATG (or, for an entry
    without tag, the output of the same file name). Returns (source, destination) moves and the
    PRODUCTS entries that no output matched. Outputs the AB did not predict go to PROD_PATH
    under their own names.
    """
    unused = list(products)
    moves: list[tuple[str, str]] = []
    missing: list[str] = []
    for frame in ab.products:
        name = os.path.basename(frame.path)
        match = next(
            (
                p
                for p in unused
                if (p.catg == frame.tag if frame.tag else os.path.basename(p.path) == name)
            ),
            None,
        )
        if match is None:
            missing.append(f"{name} ({frame.tag or 'any PRO.CATG'})")
            continue
        unused.remove(match)
        moves.append((match.path, frame.path))
    target_dir = ab.prod_path or (os.path.dirname(ab.products[0].path) if ab.products else "")
    taken = {f.path for f in ab.products}  # (an unpredicted output never takes their place)
    if target_dir:
        extra = [(p.path, os.path.join(target_dir, os.path.basename(p.path))) for p in unused]
        moves += [(source, dest) for source, dest in extra if dest not in taken]
    return moves, missing


def run_recipe(
    ab: AB,
    settings: Settings,
    workdir: str,
    threads: int,
    options: list[str],
    log: Callable[[str], None],
) -> list[Product]:
    """Fetch missing inputs, write the SOF, run esorex in ``workdir``; return its outputs."""
    os.makedirs(workdir, exist_ok=True)
    outdir = os.path.join(workdir, "out")
    remove_tree(outdir)  # (never through a link)
    os.makedirs(outdir)
    fetch_missing(ab, settings, log)
    virtual = virtual_map(ab, settings, os.environ.get("ABFLOW_INPUTS"))
    sof = os.path.join(workdir, ab.name[: -len(".ab")] + ".sof")
    entries = write_sof(ab, virtual, sof)
    log(f"{ab.name}: {ab.recipe} on {len(entries)} frames (SOF {sof})")
    cmd = esorex_command(ab, sof, outdir, options)
    log("running: " + " ".join(cmd))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    try:
        proc = subprocess.run(cmd, cwd=workdir, env=env, check=False)
    except FileNotFoundError:
        raise ProcessError(
            f"{ESOREX} not found: install esorex and the instrument's cpl-plugin package"
        ) from None
    errors = _error_lines(os.path.join(workdir, "esorex.log"))
    if proc.returncode != 0:
        detail = "\n".join(f"    {line}" for line in errors[-10:])
        raise ProcessError(
            f"{ab.recipe} failed for {ab.name} (exit {proc.returncode})"
            + (f"; esorex errors:\n{detail}" if detail else "")
        )
    return list_products(outdir)


def install_products(
    ab: AB, settings: Settings, products: list[Product], log: Callable[[str], None]
) -> list[str]:
    """Move the recipe outputs to the AB's PRODUCTS paths: all at once or not at all (a
    rerun's previous products stay in place on any error, a full disk included), never
    outside dfo.product_dir (after resolving symbolic links)."""
    moves, missing = assign_products(ab, products)
    if missing:
        found = ", ".join(f"{os.path.basename(p.path)} ({p.catg})" for p in products) or "none"
        raise ProcessError(
            f"{ab.recipe} exited 0 but expected product(s) are missing: {', '.join(missing)}; "
            f"the recipe wrote: {found}"
        )
    refused = _not_this_abs(ab, settings, [dest for _source, dest in moves])
    if refused:
        raise ProcessError(f"not installing the products: {refused}")
    roots = resolve_roots([settings.dfo["product_dir"]])
    try:
        for _source, dest in moves:
            check_inside(dest, roots, "install a product at")
        replace_all(moves)
    except OSError as exc:
        where = os.path.dirname(exc.filename or "") or settings.dfo["product_dir"]
        hint = (
            "free space on that filesystem and rerun the AB"
            if exc.errno in (errno.ENOSPC, errno.EDQUOT)
            else "check the directory and rerun the AB"
        )
        raise ProcessError(
            f"cannot install the products in {where}: {exc.strerror or exc}; {hint} (no "
            "product of this AB was replaced: the previous ones are in place)"
        ) from None
    for _source, dest in moves:
        log(f"product {dest}")
    return [dest for _source, dest in moves]


def _not_this_abs(ab: AB, settings: Settings, destinations: list[str]) -> str:
    """Why one of ``destinations`` must not be written by ``ab`` ("" if none): an input, a
    certified calibration, another AB's recorded product, a foreign file (abflow.model.guard,
    what abflow check refuses)."""
    from abflow.model.guard import ProductCheck, Resolver

    check = ProductCheck(settings, {ab.name: ab}, Resolver())
    return next((why for why in map(partial(check.problem, ab), destinations) if why), "")


def process_ab(
    ab_file: str,
    settings: Settings,
    workdir: str | None = None,
    threads: int = 1,
    log: Callable[[str], None] | None = None,
    det: int | None = None,
    det_option: str | None = None,
) -> list[str]:
    """Process one AB end to end; return the product paths written. Raises ProcessError.

    With ``det``, process one detector of a multi-detector AB: the recipe runs with
    ``det_option`` (e.g. ``--nifu=3``, replacing an AB option of the same name) and its
    outputs stay in the working directory for :func:`mef_join` (listed in $ABFLOW_RESULTS).
    """
    log = log or (lambda msg: print(f"[process-ab] {msg}", flush=True))
    ab = load_ab(ab_file, settings)
    if not ab.runs_recipe:
        log(f"{ab.name}: RECIPE {ab.recipe or 'none'}: nothing to run")
        return []
    step = "process_ab" if det is None else "process_ab_det"
    job = JobId(Step(step), ab.name, det)
    if not workdir:  # the job's (or the state layout's): inside the configured directories
        workdir = os.environ.get("ABFLOW_WORKDIR") or settings.layout.work(job)
        try:
            check_inside(workdir, settings.roots, "work in")
        except OSError as exc:
            raise ProcessError(str(exc)) from None
    options = recipe_options(ab, det_option)
    products = run_recipe(ab, settings, workdir, threads, options, log)
    if det is not None:
        if not products:
            raise ProcessError(f"{ab.recipe} exited 0 but wrote no product for detector {det}")
        _write_results({"det": det, "outputs": [[p.path, p.catg] for p in products]})
        for p in products:
            log(f"detector {det}: {os.path.basename(p.path)} {p.catg}")
        return [p.path for p in products]
    written = install_products(ab, settings, products, log)
    _keep_logs(ab, settings, [workdir])
    return written


def mef_join(
    ab_file: str, settings: Settings, log: Callable[[str], None] | None = None
) -> list[str]:
    """Join a multi-detector AB: gather each detector job's outputs (in detector order) and
    install them as the AB's products. Raises ProcessError if a detector left nothing."""
    log = log or (lambda msg: print(f"[mef-join] {msg}", flush=True))
    ab = load_ab(ab_file, settings)
    n = ab.mef_factor or settings.mef_factor
    products: list[Product] = []
    workdirs = []
    for det in range(1, n + 1):
        workdir = settings.layout.work(JobId(Step.PROCESS_AB_DET, ab.name, det))
        outdir = os.path.join(workdir, "out")
        found = list_products(outdir) if os.path.isdir(outdir) else []
        if not found:
            raise ProcessError(
                f"detector {det} of {ab.name} left no product in {outdir}: rerun its job"
            )
        products += found
        workdirs.append(workdir)
    log(f"{ab.name}: joining {len(products)} outputs of {n} detector jobs")
    written = install_products(ab, settings, products, log)
    _keep_logs(ab, settings, workdirs)
    return written


def _write_results(data: dict[str, object]) -> None:
    path = os.environ.get("ABFLOW_RESULTS")
    if path:
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def _error_lines(log_path: str) -> list[str]:
    try:
        with open(log_path, encoding="utf-8", errors="replace") as fh:
            return [line.rstrip() for line in fh if "[ ERROR ]" in line]
    except OSError:
        return []


def _keep_logs(ab: AB, settings: Settings, workdirs: list[str]) -> None:
    """Keep the esorex log(s) as ``<log_dir>/<DATE>/<AB root>.rblog`` (DFOS LOG_NAME style)."""
    logs = [os.path.join(w, "esorex.log") for w in workdirs]
    logs = [p for p in logs if os.path.isfile(p)]
    if not logs:
        return
    dest = os.path.join(settings.dfo["log_dir"], ab.date or settings.date)
    dest = os.path.join(dest, ab.name[: -len(".ab")] + ".rblog")
    try:
        check_inside(dest, settings.roots, "keep the log at")
    except OSError as exc:
        raise ProcessError(str(exc)) from None

    def chunks() -> Iterator[bytes]:
        for i, path in enumerate(logs, start=1):
            if len(logs) > 1:
                yield f"# ===== detector {i}: {path}\n".encode()
            with open(path, "rb") as fh:
                yield fh.read()

    atomic_write_chunks(dest, chunks())


def main_process_ab(
    ab_file: str,
    settings: Settings,
    workdir: str | None,
    threads: int,
    det: int | None = None,
    det_option: str | None = None,
    join: bool = False,
) -> int:
    """CLI entry: process one AB (one detector, or the join); print a clear error on failure."""
    try:
        if join:
            mef_join(ab_file, settings)
        else:
            process_ab(ab_file, settings, workdir, threads, det=det, det_option=det_option)
    except ProcessError as exc:
        print(f"abflow process-ab: {os.path.basename(ab_file)}: {exc}", file=sys.stderr)
        return 1
    return 0
