"""The ``abflow`` command line.

Every subcommand reads the same configuration as the workflow: ``--configfile F`` (default
``config/config.yaml``) and ``--config key=value ...`` (dotted keys for nested entries, e.g.
``limits.jobs=4``). Each lives in a module of this package with its parser beside its handler;
packages installed beside abflow add their own through the ``abflow.commands`` entry point (the
bundled example's commands come so, from abflow.example.cli).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from abflow import __version__
from abflow.cli import control, createjob, fetch, monitor, night, submit
from abflow.cli.common import make_parents
from abflow.model.config import ConfigError
from abflow.model.night import NightError

MODULES = (night, submit, monitor, control, createjob, fetch)
ENTRY_POINTS = "abflow.commands"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``abflow`` command."""
    from importlib.metadata import entry_points

    parser = argparse.ArgumentParser(
        prog="abflow",
        description="Cascade processor for DFOS Association Blocks (Snakemake based).",
    )
    parser.add_argument("-v", "--version", action="version", version=f"abflow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parents = make_parents()
    for module in MODULES:
        module.register(sub, parents)
    for entry in entry_points(group=ENTRY_POINTS):
        entry.load()(sub, parents)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``abflow`` command; return its exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, NightError) as exc:
        print(f"abflow {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
