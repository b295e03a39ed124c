"""``abflow createjob``: the DFOS job files of a night (createJob drop-in, views.jobfiles)."""

from __future__ import annotations

import argparse
import sys

from abflow import __version__
from abflow.cli.common import Parents, add_command, configuration_source, settings_of
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
        dest="job_id",
        metavar="JOB_ID",
        help="a job of its own: execAB_<MODE>_<DATE>_<JOB_ID>, ... and the job file "
        "JOBS_<JOB_ID> in dfo.job_dir; the night's main files, its JOBS_NIGHT/JOBS_AUTO block "
        "and DFO_STATUS are left alone",
    )


def cmd_createjob(args: argparse.Namespace) -> int:
    """createJob: write execAB/execQC/download files and the JOBS_NIGHT or JOBS_AUTO entries."""
    from abflow.model.config import write_run_config
    from abflow.views.jobfiles import CreateJobError, JobRequest, write

    problem = _job_id_problem(args.job_id or "")
    if problem:
        print(f"abflow createjob: -r {args.job_id}: {problem}", file=sys.stderr)
        return 2
    settings = settings_of(args)
    for note in settings.notes:
        print(f"note: {note}", file=sys.stderr)
    night = load_night(settings)
    subcascade = args.subcascade
    if subcascade == "":  # -a without an AB: ask
        if not sys.stdin.isatty():
            print(
                "abflow createjob: -a without an AB asks for it on a terminal, and there is "
                "none: name the parent AB, -a AB",
                file=sys.stderr,
            )
            return 2
        subcascade = _ask_parent(night)
    request = JobRequest(
        auto=args.auto,
        subcascade=subcascade or "",
        job_id=args.job_id or "",
        # the calls of the job file use the configuration createjob read (the site's, with
        # --config overrides), written in full: its {config}
        configfile=write_run_config(settings),
    )
    overrides = f", with --config {' '.join(args.config)}" if args.config else ""
    print(
        f"configuration: {configuration_source(args)}{overrides}; the job file's calls read it "
        f"as {request.configfile}"
    )
    try:
        write(night, request)
    except CreateJobError as exc:
        print(f"abflow createjob: {exc}", file=sys.stderr)
        return 1
    return 0


def _job_id_problem(job_id: str) -> str:
    """Why ``job_id`` (-r) cannot name a job ("" if it can)."""
    import re

    from abflow.views.jobfiles import JOB_ID_RE, RESERVED_JOB_IDS

    if job_id and not re.match(JOB_ID_RE, job_id):
        return "a job id is letters, digits and . _ - (it names the job's files in dfo.job_dir)"
    if job_id.upper() in RESERVED_JOB_IDS:
        return (
            f"that names the night's main job file (JOBS_{job_id.upper()}), which -r leaves "
            "alone: choose another job id, or leave -r out (and use -F for JOBS_AUTO)"
        )
    return ""


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
