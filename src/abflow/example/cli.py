"""The example night's commands: ``abflow example``, ``abflow process-ab``, ``abflow process-qc``.

They reach the ``abflow`` command line through the ``abflow.commands`` entry point (see
pyproject.toml); abflow's own command line does not import this package.
"""

from __future__ import annotations

import argparse
import os
import sys

from abflow.cli.common import Parents, add_command, settings_of


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    """Add the example's commands."""
    p = add_command(
        sub,
        "example",
        cmd_example,
        [parents.config],
        help="generate the example night's synthetic raw frames into its archive",
    )
    p.add_argument("--archive", help="archive directory (default: the config's archive)")
    p.add_argument("--force", action="store_true", help="rewrite frames already present")
    p = add_command(
        sub,
        "process-ab",
        cmd_process_ab,
        [parents.config],
        help="process one AB with esorex (abflow's processAB)",
    )
    p.add_argument("ab", help="AB file, or the AB name (looked up in dfo.ab_dir)")
    p.add_argument("--threads", type=int, default=0, help="threads for the recipe (OMP)")
    p.add_argument(
        "--workdir", help="working directory (default: $ABFLOW_WORKDIR or <state_dir>/work/<AB>)"
    )
    mef = p.add_mutually_exclusive_group()
    mef.add_argument("--det", type=int, help="process one detector of a multi-detector (MEF) AB")
    mef.add_argument(
        "--join",
        action="store_true",
        help="join the per-detector outputs of a multi-detector AB into its products",
    )
    p.add_argument(
        "--det-option",
        help="recipe option selecting the detector, e.g. --det-option=--nifu=3 (with --det)",
    )
    p = add_command(
        sub,
        "process-qc",
        cmd_process_qc,
        [parents.config],
        help="QC of one processed AB: QC1 numbers, PAF and PNG report (abflow's processQC)",
    )
    p.add_argument("ab", help="AB file, or the AB name (looked up in dfo.ab_dir)")


def _ab_file(args: argparse.Namespace, ab_dir_of: object) -> str:
    ab_file = args.ab
    if os.sep not in ab_file and not os.path.isfile(ab_file):
        ab_file = ab_dir_of(ab_file)  # type: ignore[operator]
    return str(ab_file)


def cmd_example(args: argparse.Namespace) -> int:
    """Generate the example night's synthetic raw frames into its archive directory."""
    from abflow.example.archive import make_archive

    settings = settings_of(args)
    archive = args.archive or settings.archive
    written, kept = make_archive(
        settings, archive, force=args.force, progress=lambda m: print(m, flush=True)
    )
    print(f"archive {archive}: {written} frames written, {kept} already present")
    return 0


def cmd_process_ab(args: argparse.Namespace) -> int:
    """Process one AB with esorex (abflow's processAB)."""
    from abflow.example.processab import main_process_ab

    settings = settings_of(args)
    threads = args.threads or int(os.environ.get("OMP_NUM_THREADS", "1") or 1)
    if args.det_option and args.det is None:
        print("abflow process-ab: --det-option needs --det", file=sys.stderr)
        return 2
    return main_process_ab(
        _ab_file(args, settings.ab_file),
        settings,
        args.workdir,
        threads,
        args.det,
        args.det_option,
        args.join,
    )


def cmd_process_qc(args: argparse.Namespace) -> int:
    """QC of one processed AB (abflow's processQC): QC1 numbers, PAF and PNG report."""
    from abflow.example.processab import ProcessError, load_ab
    from abflow.example.qc import QCError, process_qc

    settings = settings_of(args)
    ab_file = _ab_file(args, settings.ab_file)
    try:
        process_qc(load_ab(ab_file, settings), settings)
    except (ProcessError, QCError) as exc:
        print(f"abflow process-qc: {os.path.basename(ab_file)}: {exc}", file=sys.stderr)
        return 1
    return 0
