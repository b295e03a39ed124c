"""``abflow status``, ``abflow timeline``, ``abflow watch``: the night while and after it runs."""

from __future__ import annotations

import argparse
import os
import sys
import time

from abflow.cli.common import Parents, add_command, night_of, settings_of
from abflow.model.config import Settings
from abflow.model.load import load_night
from abflow.model.night import Night
from abflow.state.layout import StateLayout
from abflow.state.submission import ControllerState, Submission
from abflow.state.text import inert


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    """Add the commands of this module."""
    both = [parents.config, parents.night]
    p = add_command(
        sub, "status", cmd_status, both, help="write the AB monitor page (getStatusAB) of a night"
    )
    p.add_argument(
        "-F", dest="export", action="store_true", help="also export it to status_export_dir"
    )
    p.add_argument(
        "-r",
        dest="refresh",
        action="store_true",
        help="keep rewriting it (every --interval s) until the night's run has ended "
        "(DFOS getStatusAB -r, started in the background before the night)",
    )
    p.add_argument("--interval", type=float, default=60.0, help="seconds between pages with -r")
    p.add_argument(
        "--wait",
        type=float,
        default=900.0,
        help="with -r: give up after this many seconds if no run of the night starts",
    )
    p = add_command(
        sub,
        "timeline",
        cmd_timeline,
        both,
        help="draw the Gantt chart of a night's last run (PNG, SVG)",
    )
    p.add_argument(
        "--run",
        type=int,
        default=0,
        metavar="N",
        help="run N of the night (1: the first; --runs lists them; default: the last)",
    )
    p.add_argument("--runs", action="store_true", help="list the night's runs and exit")
    p = add_command(
        sub, "watch", cmd_watch, both, help="show the night's state (vultur_watch_q / cascade_stat)"
    )
    p.add_argument("--once", action="store_true", help="print once and exit")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between updates")
    p.add_argument("--schedd", help="HTCondor schedd name (default: the local one)")


def cmd_status(args: argparse.Namespace) -> int:
    """Write the AB monitor page (getStatusAB) of the night; -F also exports it."""
    from abflow.views.monitor import export_page, pool_queue, write_page
    from abflow.views.status import run_elsewhere

    night = night_of(args)
    elsewhere = run_elsewhere(night.settings)
    if elsewhere:  # its page is that run's: not overwritten from this state directory
        print(f"abflow status: {elsewhere}", file=sys.stderr)
        return 1
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
        try:
            print(f"exported {export_page(night, target)}")
        except OSError as exc:  # a link leading out of the export directory, a full disk
            print(f"abflow status: not exported (-F): {exc}", file=sys.stderr)
            return 1
    return 0


def _refresh_until_the_run_ends(night: Night, interval: float, wait: float) -> None:
    """Rewrite the night's page every ``interval`` s while a run of it is alive (waiting up
    to ``wait`` s for one to start); write it a last time when it has ended."""
    from abflow.state.runstate import process_alive
    from abflow.views.monitor import pool_queue, write_page
    from abflow.views.status import read_lock

    s = night.settings
    started = time.time()
    deadline = time.monotonic() + wait
    next_page = time.monotonic() + interval
    seen = False
    while True:
        run = read_lock(night)[0]  # a lock that cannot be read is no run (the page says so)
        alive = bool(run) and process_alive(run)
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
    layout = StateLayout(state_dir)
    for directory in (layout.records_dir, layout.failed_dir):
        for root, _dirs, files in os.walk(directory):
            if any(_mtime(os.path.join(root, f)) >= since for f in files):
                return True
    return False


def _mtime(path: str) -> float:
    """When ``path`` was last modified (0 if it is gone, or a link to nothing)."""
    try:
        return os.path.getmtime(path)
    except OSError:
        return 0.0


def cmd_timeline(args: argparse.Namespace) -> int:
    """Draw the Gantt chart of the night's last run, or of run ``--run N`` (PNG and SVG)."""
    from abflow.views.monitor import timeline_paths, write_page
    from abflow.views.timeline import draw, runs, timeline_of

    night = night_of(args)
    if args.runs:
        for k, run in enumerate(runs(night), 1):
            end = run.get("end") or "(running, or crashed)"
            how = f" {run['ended']}" if run.get("ended") else ""
            print(
                inert(
                    f"run {k}: {run.get('since')} to {end}{how}, {run.get('executor', '')}, "
                    f"pid {run.get('pid')} on {run.get('host')}",
                    line=True,
                )
            )
        return 0
    png, svg = timeline_paths(night)
    try:
        timeline = timeline_of(night, args.run - 1 if args.run else -1)
    except ValueError as exc:
        print(f"abflow timeline: {exc}", file=sys.stderr)
        return 2
    draw(timeline, png, svg)
    items, achieved, predicted = timeline.bars, timeline.achieved, timeline.predicted
    if not items:
        print("abflow timeline: no completion records of that run", file=sys.stderr)
        return 1
    pred = f", the plan {predicted:.1f} s" if predicted is not None else ""
    print(f"wrote {png} and {svg}: {len(items)} jobs, the run ended after {achieved:.1f} s{pred}")
    write_page(night)  # the page links the timeline
    return 0


def _pool_queue(args: argparse.Namespace, settings: Settings) -> tuple[list | None, str]:
    """The night store's jobs in the HTCondor queue, and what went wrong asking for them."""
    from abflow.state.schedd import night_queue

    try:
        return night_queue(settings.state_dir, args.schedd), ""
    except Exception as exc:  # no pool reachable: say so, do not fail the command
        return None, f"HTCondor: queue not reachable ({exc})"


def _queue_line(queue: list | None, problem: str) -> str:
    from abflow.state.schedd import queue_summary

    if queue is None:
        return problem
    counts = queue_summary(queue)
    return "HTCondor: " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no jobs")


def _follow_submitted(night: Night, sub: Submission) -> int:
    """Follow the console of a night handed over with abflow submit until its controller has
    ended (through restarts), then say how the night stands."""
    from abflow.state.submission import controller_state
    from abflow.views.follow import follow
    from abflow.views.status import night_state

    where = inert(f"{sub.batch} runs as {sub.where}; its console ({sub.log})", line=True)
    print(f"abflow watch: {where} follows (Ctrl-C stops watching, not the night)", flush=True)
    follow(sub.log, sub.offset, lambda: not controller_state(sub).alive, sys.stdout)
    if controller_state(sub).alive:
        return 0  # watching was stopped
    c = night_state(night).counts()
    print(
        f"the run has ended: {c['succeeded']} of {c['all']} ABs succeeded, {c['failed']} "
        f"failed (controller {inert(controller_state(sub).describe(), line=True)})",
        flush=True,
    )
    return 0


def _under_state(
    settings: Settings,
    queue: tuple[list | None, str],
    sub: Submission | None,
    controller: ControllerState | None,
) -> list[str]:
    """The lines under the night's state in abflow watch: the HTCondor queue, and the
    submitted night's controller (or why its submission record cannot be read)."""
    from abflow.state.submission import submission_problem

    lines = [_queue_line(*queue)]
    if sub and controller and controller.alive:
        lines.append(f"controller: {sub.where}, {controller.describe()}; console: {sub.log}")
    elif sub is None:
        lines.append(submission_problem(settings.layout, settings.batch_id))
    return [inert(text, line=True) for text in lines if text]


def cmd_watch(args: argparse.Namespace) -> int:
    """Show the state of the night (with its HTCondor jobs) until its run ends, then its
    summary; without a run going on, show it once."""
    from abflow.state.submission import controller_state, read_submission
    from abflow.views.status import failure_summary, night_state, run_elsewhere

    settings = settings_of(args)
    night = load_night(settings)
    if run_elsewhere(settings):
        print(f"abflow watch: {run_elsewhere(settings)}", file=sys.stderr)
        return 1
    sub = read_submission(settings.layout, settings.batch_id)
    controller = controller_state(sub) if sub else None
    if sub and controller and controller.alive and not args.once:
        return _follow_submitted(night, sub)
    seen_run = False
    while True:
        queue = _pool_queue(args, settings)
        state = night_state(night, queue[0])
        print(
            "\n".join([state.format(), *_under_state(settings, queue, sub, controller)]), flush=True
        )
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
