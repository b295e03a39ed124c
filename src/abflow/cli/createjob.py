"""``abflow createjob``: the DFOS job files of a night (createJob drop-in, views.jobfiles)."""

from __future__ import annotations

import argparse
import os
import sys

from abflow import __version__
from abflow.cli.common import Parents, add_command, settings_of
from abflow.model.load import load_night
from abflow.model.night import Night


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    """Add the command of this module."""
    p = add_command(
        sub,
        "createjob",
        cmd_createjob,
        [parents.config],
        help="write the DFOS job files for a night (createJob drop-in)",
        description="Write execAB_<MODE>_<DATE>, execQC_<MODE>_<DATE>, the rawDown/mcalDown "
        "download files and the JOBS_NIGHT (or JOBS_AUTO) entries of a night, whose execAB and "
        "execQC calls run abflow's workflow; append <cal|sci>_Queued to DFO_STATUS.",
    )
    p.add_argument("-v", "--version", action="version", version=f"abflow {__version__}")
    p.add_argument("-m", "--mode", required=True, choices=["CALIB", "SCIENCE"], help="mode")
    p.add_argument("-d", "--date", required=True, help="DFO date YYYY-MM-DD")
    p.add_argument(
        "-F",
        dest="auto",
        action="store_true",
        help="write into JOBS_AUTO (autoDaily), not JOBS_NIGHT",
    )
    p.add_argument(
        "-a",
        dest="subcascade",
        nargs="?",
        const="",
        metavar="AB",
        help="only the subcascade of this parent AB (asked for when not given)",
    )
    p.add_argument(
        "-r",
        dest="job_file",
        metavar="JOB_FILE",
        help="write the entries into this job file of dfo.job_dir (default "
        "JOBS_NIGHT, JOBS_AUTO with -F)",
    )


def cmd_createjob(args: argparse.Namespace) -> int:
    """createJob: write execAB/execQC/download files and the JOBS_NIGHT or JOBS_AUTO entries."""
    from abflow.model.config import DEFAULT_CONFIGFILE
    from abflow.views.jobfiles import CreateJobError, JobRequest, write

    settings = settings_of(args)
    for note in settings.notes:
        print(f"note: {note}", file=sys.stderr)
    night = load_night(settings)
    subcascade = args.subcascade
    if subcascade == "":  # -a without an AB: ask
        subcascade = _ask_parent(night)
    if args.job_file and ("/" in args.job_file or args.job_file in (".", "..")):
        print(f"abflow createjob: -r {args.job_file}: name a file in dfo.job_dir", file=sys.stderr)
        return 2
    request = JobRequest(
        auto=args.auto,
        subcascade=subcascade or "",
        job_file=args.job_file or "",
        configfile=os.path.abspath(args.configfile or DEFAULT_CONFIGFILE),
    )
    try:
        write(night, request)
    except CreateJobError as exc:
        print(f"abflow createjob: {exc}", file=sys.stderr)
        return 1
    return 0


def _ask_parent(night: Night) -> str:
    """Ask on the terminal for the parent AB of a subcascade (createjob -a without AB)."""
    names = night.names
    for i, name in enumerate(names, start=1):
        waits = ", ".join(night[name].parents)
        print(f"{i:4d}  {name}" + (f"  (waits for {waits})" if waits else ""))
    answer = input("parent AB of the subcascade (number or name): ").strip()
    if answer.isdigit() and 1 <= int(answer) <= len(names):
        return names[int(answer) - 1]
    if answer in night:
        return answer
    raise SystemExit(f"abflow createjob: {answer!r} is not an AB of this night")
