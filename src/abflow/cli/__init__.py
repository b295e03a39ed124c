"""The ``abflow`` command line.

Every subcommand reads the same configuration as the workflow: ``--configfile F`` (default: the
configuration of the abflow run that started the process, else ``config/config.yaml``) and
``--config key=value ...`` (dotted keys for nested entries, e.g. ``limits.jobs=4``).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections.abc import Sequence

from abflow import __version__
from abflow.model.config import ConfigError, Settings, load_settings
from abflow.model.night import Night, NightError, load_night


def _date_overrides(args: argparse.Namespace) -> list[str]:
    """``-d``/``-m`` as config overrides: one date (replacing any ``dates`` of the config)."""
    out = [f"date={args.date}", "dates=[]"] if getattr(args, "date", None) else []
    return out + ([f"mode={args.mode}"] if getattr(args, "mode", None) else [])


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.configfile, [*_date_overrides(args), *(args.config or ())])


def cmd_check(args: argparse.Namespace) -> int:
    """Validate the configuration and the night; print the problems or a one-line summary."""
    settings = _settings(args)
    night = load_night(settings)
    for key, source in sorted(settings.sources.items()):
        print(f"{key} = {_config_value(settings.raw, key)} (from {source})")
    for note in settings.notes:
        print(f"note: {note}")
    for warning in night.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(
        f"{settings.batch_id}: {len(night)} ABs, "
        f"{sum(len(p) for p in night.parents.values())} dependencies, "
        f"{len(night.levels())} levels: OK"
    )
    return 0


def _config_value(config: dict, dotted: str) -> object:
    node: object = config
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def cmd_cascade(args: argparse.Namespace) -> int:
    """Print the cascade as levels (which ABs can run together) with counts."""
    from abflow.model.plan import cascade_summary, format_cascade

    night = load_night(_settings(args))
    if args.json:
        print(json.dumps(cascade_summary(night), indent=2))
    else:
        print(format_cascade(night, verbose=not args.brief))
    return 0


def cmd_process_ab(args: argparse.Namespace) -> int:
    """Process one AB with esorex (abflow's processAB)."""
    from abflow.example.processab import main_process_ab

    settings = _settings(args)
    ab_file = args.ab
    if os.sep not in ab_file and not os.path.isfile(ab_file):
        ab_file = settings.ab_file(ab_file)
    threads = args.threads or int(os.environ.get("OMP_NUM_THREADS", "1") or 1)
    if args.det_option and args.det is None:
        print("abflow process-ab: --det-option needs --det", file=sys.stderr)
        return 2
    return main_process_ab(
        ab_file, settings, args.workdir, threads, args.det, args.det_option, args.join
    )


def cmd_fetch(args: argparse.Namespace) -> int:
    """Fetch one archive file to a local path (abflow's archive client)."""
    from abflow.job.fetch import FetchError, fetch

    settings = _settings(args)
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


def cmd_process_qc(args: argparse.Namespace) -> int:
    """QC of one processed AB (abflow's processQC): QC1 numbers, PAF and PNG report."""
    from abflow.example.processab import ProcessError, load_ab
    from abflow.example.qc import QCError, process_qc

    settings = _settings(args)
    ab_file = args.ab
    if os.sep not in ab_file and not os.path.isfile(ab_file):
        ab_file = settings.ab_file(ab_file)
    try:
        process_qc(load_ab(ab_file, settings), settings)
    except (ProcessError, QCError) as exc:
        print(f"abflow process-qc: {os.path.basename(ab_file)}: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_example(args: argparse.Namespace) -> int:
    """Generate the example night's synthetic raw frames into its archive directory."""
    from abflow.example.archive import make_archive

    settings = _settings(args)
    archive = args.archive or settings.archive
    written, kept = make_archive(
        settings, archive, force=args.force, progress=lambda m: print(m, flush=True)
    )
    print(f"archive {archive}: {written} frames written, {kept} already present")
    return 0


def _night_for(args: argparse.Namespace) -> Night:
    return load_night(_settings(args))


def cmd_status(args: argparse.Namespace) -> int:
    """Write the AB monitor page (getStatusAB) of the night; -F also exports it."""
    from abflow.views.monitor import export_page, pool_queue, write_page

    night = _night_for(args)
    print(f"wrote {write_page(night, pool_queue(night))}")
    if args.refresh:
        _refresh_until_the_run_ends(night, args.interval, args.wait)
    if args.export:
        target = night.settings.status_export_dir
        if not target:  # the final monitor call of a night must not fail it
            print(
                "abflow status: not exported (-F): set status_export_dir in the configuration",
                file=sys.stderr,
            )
            return 0
        print(f"exported {export_page(night, target)}")
    return 0


def _refresh_until_the_run_ends(night: Night, interval: float, wait: float) -> None:
    """Rewrite the night's page every ``interval`` s while a run of it is alive (waiting up
    to ``wait`` s for one to start); write it a last time when it has ended."""
    from abflow.state.runstate import process_alive, read_run
    from abflow.views.monitor import pool_queue, write_page

    s = night.settings
    started = time.time()
    deadline = time.monotonic() + wait
    next_page = time.monotonic() + interval
    seen = False
    while True:
        runs = [r for b in s.batches if (r := read_run(s.state_dir, b))]
        alive = any(process_alive(r) for r in runs)
        # a run seen alive, or one that came and went between two looks (it left records)
        seen = seen or alive or _written_since(s.state_dir, started)
        if not alive and (seen or time.monotonic() > deadline):
            break
        time.sleep(1.0)
        if time.monotonic() >= next_page:
            write_page(night, pool_queue(night))
            next_page = time.monotonic() + interval
    print(f"wrote {write_page(night, pool_queue(night))}")


def _written_since(state_dir: str, since: float) -> bool:
    """True if a completion record or failure note was written after ``since`` (epoch s)."""
    for sub in ("records", "failed"):
        for root, _dirs, files in os.walk(os.path.join(state_dir, sub)):
            if any(os.path.getmtime(os.path.join(root, f)) >= since for f in files):
                return True
    return False


def cmd_timeline(args: argparse.Namespace) -> int:
    """Draw the Gantt chart of the night's run (PNG and SVG)."""
    from abflow.views.monitor import timeline_paths, write_page
    from abflow.views.timeline import draw

    night = _night_for(args)
    png, svg = timeline_paths(night)
    items, achieved, predicted = draw(night, png, svg)
    if not items:
        print("abflow timeline: no completion records yet", file=sys.stderr)
        return 1
    pred = f", predicted {predicted:.1f} s" if predicted is not None else ""
    print(f"wrote {png} and {svg}: {len(items)} jobs, achieved {achieved:.1f} s{pred}")
    write_page(night)  # the page links the timeline
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """Print the cascade levels, the critical path and predicted makespans per slot count."""
    from abflow.model.plan import format_plan, plan_night

    night = load_night(_settings(args))
    plan = plan_night(night, args.slots or [1, 2, 4, 8], from_history=args.from_history)
    print(json.dumps(plan, indent=2) if args.json else format_plan(plan))
    return 0


def _ask_parent(night: Night) -> str:
    """Ask on the terminal for the parent AB of a subcascade (createjob -a without AB)."""
    names = night.names
    for i, name in enumerate(names, start=1):
        waits = ", ".join(night.parents[name])
        print(f"{i:4d}  {name}" + (f"  (waits for {waits})" if waits else ""))
    answer = input("parent AB of the subcascade (number or name): ").strip()
    if answer.isdigit() and 1 <= int(answer) <= len(names):
        return names[int(answer) - 1]
    if answer in night:
        return answer
    raise SystemExit(f"abflow createjob: {answer!r} is not an AB of this night")


def cmd_createjob(args: argparse.Namespace) -> int:
    """createJob: write execAB/execQC/download files and the JOBS_NIGHT or JOBS_AUTO entries."""
    from abflow.model.config import DEFAULT_CONFIGFILE
    from abflow.views.jobfiles import CreateJobError, JobRequest, write

    settings = _settings(args)
    for note in settings.notes:
        print(f"note: {note}", file=sys.stderr)
    night = load_night(settings)
    subcascade = args.subcascade
    if subcascade == "":  # -a without an AB: ask
        subcascade = _ask_parent(night)
    if args.job_file and ("/" in args.job_file or args.job_file in (".", "..")):
        print(
            f"abflow createjob: -r {args.job_file}: name a file in dfo.job_dir",
            file=sys.stderr,
        )
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


def _pool_queue(args: argparse.Namespace, settings: Settings) -> tuple[list | None, str]:
    """The night store's jobs in the HTCondor queue, and what went wrong asking for them."""
    from abflow.run.condor import night_queue

    try:
        return night_queue(settings.state_dir, args.schedd), ""
    except Exception as exc:  # no pool reachable: say so, do not fail the command
        return None, f"HTCondor: queue not reachable ({exc})"


def _queue_line(queue: list | None, problem: str) -> str:
    from abflow.run.condor import queue_summary

    if queue is None:
        return problem
    counts = queue_summary(queue)
    return "HTCondor: " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no jobs")


def cmd_watch(args: argparse.Namespace) -> int:
    """Show the state of the night (with its HTCondor jobs) until its run ends, then its
    summary; without a run going on, show it once."""
    from abflow.views.status import failure_summary, night_state

    settings = _settings(args)
    night = load_night(settings)
    seen_run = False
    while True:
        queue, problem = _pool_queue(args, settings)
        state = night_state(night, queue)
        line = _queue_line(queue, problem)
        print(state.format() + (f"\n{line}" if line else ""), flush=True)
        seen_run = seen_run or state.run_alive
        if args.once:
            return 0
        if not state.run_alive:
            summary = failure_summary(night)
            c = state.counts()
            print(
                ("the run has ended" if seen_run else "no run going on")
                + f": {c['succeeded']} of {c['all']} ABs succeeded, {c['failed']} failed"
                + (f"\n{summary}" if summary else ""),
                flush=True,
            )
            return 0
        try:
            time.sleep(args.interval)
        except KeyboardInterrupt:
            return 0
        print()


def cmd_stop(args: argparse.Namespace) -> int:
    """Stop the running night: no new job starts; with --now, running jobs are ended too."""
    from abflow.state import runstate

    settings = _settings(args)
    state = settings.state_dir
    info = None  # the live run holding the first locked date
    for batch in settings.batches:
        held = runstate.read_run(state, batch)
        if held and not runstate.process_alive(held):
            print(
                f"the run holding {batch} ({runstate.describe_run(held)}) is not running any "
                "more (crashed or killed): removing its lock"
            )
            runstate.remove_lock(state, batch)
        elif held and info is None:
            info = held
    if info:
        runstate.request_stop(state)
        print(
            f"asked the night {settings.batch_id} (snakemake pid {info['pid']} on "
            f"{info['host']}) to start no new job; running jobs finish"
        )
        if args.now:
            sent = runstate.interrupt(info)
            print("interrupted it: running jobs are cancelled" if sent else "could not signal it")
    else:
        print(f"no running night registered in {state}")
    if args.now:
        removed = _remove_night_jobs(args, settings, info)
        if removed:
            print(removed)
    if info and args.wait:
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline and runstate.process_alive(info):
            time.sleep(0.5)
        alive = runstate.process_alive(info)
        print("it is still running" if alive else "it has ended")
        return 1 if alive else 0
    return 0


def _ab_of(name: str) -> str:
    from abflow.state.layout import JobId

    try:
        return JobId.parse(name).target
    except ValueError:
        return ""


def _remove_night_jobs(args: argparse.Namespace, settings: Settings, info: dict | None) -> str:
    """Remove this night's jobs from the HTCondor queue (of its live run, if one holds the
    lock): jobs of other nights, or of other runs, stay. Returns what was done ("" without a
    pool)."""
    from abflow.run.condor import night_queue, remove_jobs, schedd

    try:
        queue = night_queue(settings.state_dir, args.schedd)
        if queue is None:
            return ""
        night = load_night(settings)
        owner = (info or {}).get("owner")
        mine = [j for j in queue if _ab_of(j.job) in night and (not owner or j.owner == owner)]
        removed = remove_jobs(schedd(args.schedd), mine, "abflow stop --now")
    except Exception as exc:
        return f"HTCondor: could not remove the night's jobs ({exc})"
    return f"HTCondor: removed {len(removed)} job(s) of this night"


def cmd_unlock(args: argparse.Namespace) -> int:
    """Remove the lock of a night whose run crashed (abflow refuses a second run otherwise)."""
    from abflow.state import runstate

    settings = _settings(args)
    status = 0
    for batch in settings.batches:
        info = runstate.read_run(settings.state_dir, batch)
        if info is None:
            print(f"{batch}: not locked")
            continue
        here = info.get("host") == socket.gethostname()
        if here and runstate.process_alive(info) and not args.force:
            print(
                f"{batch}: {runstate.describe_run(info)} is alive: not removing its lock "
                f"(stop it with abflow stop -d {batch.split('_', 1)[1]}, or use --force)",
                file=sys.stderr,
            )
            status = 1
            continue
        runstate.remove_lock(settings.state_dir, batch)
        print(f"{batch}: removed the lock of {runstate.describe_run(info)}")
    return status


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``abflow`` command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--configfile",
        metavar="F",
        help="configuration file (default: the running night's, else config/config.yaml)",
    )
    common.add_argument(
        "--config",
        nargs="+",
        metavar="KEY=VALUE",
        help="override configuration keys, e.g. date=2013-02-12 limits.jobs=4",
    )
    # -m MODE -d DATE, as every DFOS tool takes them (they override mode and date)
    night = argparse.ArgumentParser(add_help=False)
    night.add_argument("-d", "--date", help="DFO date (default: the configuration's)")
    night.add_argument("-m", "--mode", choices=["CALIB", "SCIENCE"], help="mode")
    parser = argparse.ArgumentParser(
        prog="abflow",
        description="Cascade processor for DFOS Association Blocks (Snakemake based).",
    )
    parser.add_argument("-v", "--version", action="version", version=f"abflow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "check", parents=[common, night], help="validate the configuration and the night"
    )
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "cascade", parents=[common, night], help="print the cascade as levels with counts"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--brief", action="store_true", help="counts per level only")
    p.set_defaults(func=cmd_cascade)

    p = sub.add_parser(
        "status", parents=[common, night], help="write the AB monitor page (getStatusAB) of a night"
    )
    p.add_argument(
        "-F", dest="export", action="store_true", help="also export it to status_export_dir"
    )
    p.add_argument(
        "-r",
        dest="refresh",
        action="store_true",
        help="keep rewriting it (every --interval s) until the night's run has ended (DFOS "
        "getStatusAB -r, started in the background before the night)",
    )
    p.add_argument("--interval", type=float, default=60.0, help="seconds between pages with -r")
    p.add_argument(
        "--wait",
        type=float,
        default=900.0,
        help="with -r: give up after this many seconds if no run of the night starts",
    )
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "timeline", parents=[common, night], help="draw the Gantt chart of a night's run (PNG, SVG)"
    )
    p.set_defaults(func=cmd_timeline)

    p = sub.add_parser(
        "plan",
        parents=[common, night],
        help="critical path and predicted makespan of the night for several slot counts",
    )
    p.add_argument("--slots", type=int, nargs="+", metavar="N", help="slot counts (1 2 4 8)")
    p.add_argument(
        "--from-history",
        action="store_true",
        help="durations from earlier runs (records of the same ABs or recipes), in seconds",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser(
        "process-ab", parents=[common], help="process one AB with esorex (abflow's processAB)"
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
    p.set_defaults(func=cmd_process_ab)

    p = sub.add_parser("fetch", parents=[common], help="fetch one file from the archive")
    p.add_argument("file", help="archive file name (ARCFILE)")
    p.add_argument("dest", nargs="?", help="local destination path (default: ./FILE)")
    p.add_argument(
        "--archive",
        help="archive directory or URL template with {file} (default: the config's archive)",
    )
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser(
        "process-qc",
        parents=[common],
        help="QC of one processed AB: QC1 numbers, PAF and PNG report (abflow's processQC)",
    )
    p.add_argument("ab", help="AB file, or the AB name (looked up in dfo.ab_dir)")
    p.set_defaults(func=cmd_process_qc)

    p = sub.add_parser(
        "example",
        parents=[common],
        help="generate the example night's synthetic raw frames into its archive",
    )
    p.add_argument("--archive", help="archive directory (default: the config's archive)")
    p.add_argument("--force", action="store_true", help="rewrite frames already present")
    p.set_defaults(func=cmd_example)

    p = sub.add_parser(
        "createjob",
        parents=[common],
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
        help="write the entries into this job file of dfo.job_dir (default JOBS_NIGHT, "
        "JOBS_AUTO with -F)",
    )
    p.set_defaults(func=cmd_createjob)

    p = sub.add_parser(
        "watch",
        parents=[common, night],
        help="show the night's state (vultur_watch_q / cascade_stat)",
    )
    p.add_argument("--once", action="store_true", help="print once and exit")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between updates")
    p.add_argument("--schedd", help="HTCondor schedd name (default: the local one)")
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser(
        "stop", parents=[common, night], help="stop the running night gracefully (vultur_stop)"
    )
    p.add_argument(
        "--now",
        action="store_true",
        help="also end running jobs (Snakemake cancels them) and remove the night's HTCondor "
        "jobs from the queue, held ones included",
    )
    p.add_argument("--wait", type=float, default=0, help="seconds to wait for the run to end")
    p.add_argument("--schedd", help="HTCondor schedd name (default: the local one)")
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser(
        "unlock",
        parents=[common, night],
        help="remove the lock a crashed run left (a live run's lock only with --force)",
    )
    p.add_argument(
        "--force", action="store_true", help="remove it even if its process runs on this host"
    )
    p.set_defaults(func=cmd_unlock)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``abflow`` command; return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"abflow {args.command}: {exc}", file=sys.stderr)
        return 2
    except NightError as exc:
        print(f"abflow {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
