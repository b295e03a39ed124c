"""``abflow fetch``: one file from the archive (abflow's archive client, abflow.job.fetch)."""

from __future__ import annotations

import argparse
import os
import sys

from abflow.cli.common import Parents, add_command, settings_of


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    """Add the command of this module."""
    p = add_command(
        sub, "fetch", cmd_fetch, [parents.config], help="fetch one file from the archive"
    )
    p.add_argument("file", help="archive file name (ARCFILE)")
    p.add_argument("dest", nargs="?", help="local destination path (default: ./FILE)")
    p.add_argument(
        "--archive",
        help="archive directory or URL template with {file} (default: the config's archive)",
    )


def cmd_fetch(args: argparse.Namespace) -> int:
    """Fetch one archive file to a local path (abflow's archive client)."""
    from abflow.job.fetch import FetchError, fetch

    settings = settings_of(args)
    archive = args.archive or settings.archive
    dest = os.path.abspath(args.dest or args.file)
    try:
        size = fetch(
            archive,
            args.file,
            dest,
            retries=int(settings.fetch["retries"]),
            timeout=float(settings.fetch["timeout"]),
            backoff=float(settings.fetch["backoff"]),
            log=lambda msg: print(msg, file=sys.stderr, flush=True),
        )
    except FetchError as exc:
        print(f"abflow fetch: {exc}", file=sys.stderr)
        return 1
    print(f"fetched {args.file} ({size} bytes) -> {dest}")
    return 0
