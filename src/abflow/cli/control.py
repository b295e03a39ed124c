"""``abflow stop`` and ``abflow unlock``: end a night's run, clear a crashed run's lock."""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time

from abflow.cli.common import Parents, add_command, settings_of
from abflow.model.config import Settings
from abflow.model.load import load_night


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    """Add the commands of this module."""
    both = [parents.config, parents.night]
    p = add_command(
        sub, "stop", cmd_stop, both, help="stop the running night gracefully (vultur_stop)"
    )
    p.add_argument(
        "--now",
        action="store_true",
        help="also end running jobs (Snakemake cancels them) and remove the night's "
        "HTCondor jobs from the queue, held ones included",
    )
    p.add_argument("--wait", type=float, default=0, help="seconds to wait for the run to end")
    p.add_argument("--schedd", help="HTCondor schedd name (default: the local one)")
    p = add_command(
        sub,
        "unlock",
        cmd_unlock,
        both,
        help="remove the lock a crashed run left (a live run's lock only with --force)",
    )
    p.add_argument(
        "--force", action="store_true", help="remove it even if its process runs on this host"
    )


def cmd_stop(args: argparse.Namespace) -> int:
    """Stop the running night: no new job starts; with --now, running jobs are ended too. A
    night handed over with abflow submit stops as well: its controller ends when nothing runs
    any more, and one waiting for HTCondor to start it again is removed."""
    from abflow.state import runstate
    from abflow.state.submission import controller_state, read_submission

    settings = settings_of(args)
    state, mon = settings.state_dir, settings.dfo["mon_dir"]
    info = None  # the live run holding the first locked date
    for batch in settings.batches:
        held = runstate.read_run(state, batch) or runstate.read_night_lock(mon, batch)
        if held and not runstate.process_alive(held):
            print(
                f"the run holding {batch} ({runstate.describe_run(held)}) is not running any "
                "more (crashed or killed): removing its lock"
            )
            runstate.remove_lock(state, batch, mon)
        elif held and info is None:
            info = held
    sub = read_submission(settings.layout, settings.batch_id)
    controller = controller_state(sub) if sub else None
    pooled = bool(sub and sub.pool and controller and controller.alive)
    if info:
        # the run holding the date: every date of it, in the state directory it runs with
        batches = [str(b) for b in info.get("batches") or settings.batches]
        runstate.request_stop(str(info.get("state_dir") or state), batches)
        print(
            f"asked the night {settings.batch_id} (snakemake pid {info['pid']} on "
            f"{info['host']}) to start no new job; running jobs finish"
        )
        if args.now:
            sent = _remove_controller(sub, "abflow stop --now") if pooled else None
            sent = sent or runstate.interrupt(info)
            print("interrupted it: running jobs are cancelled" if sent else "could not signal it")
    elif pooled:  # its controller died and waits for HTCondor to start it again: not any more
        print(_remove_controller(sub, "abflow stop") or "could not remove its controller")
    else:
        print(f"no running night registered in {state}")
    if args.now:
        removed = _remove_night_jobs(args, settings)
        if removed:
            print(removed)
    if (info or pooled) and args.wait:
        return _wait_for_end(info, sub if pooled else None, args.wait)
    return 0


def _remove_controller(sub: object, why: str) -> str:
    """Remove a submitted night's controller job (HTCondor sends it SIGINT: it ends the
    night's jobs); what was done ("" if it could not be)."""
    from abflow.state import schedd

    try:
        cluster = sub.cluster  # type: ignore[attr-defined]
        schedd.remove(schedd.schedd(sub.schedd or None), [cluster], why)  # type: ignore[attr-defined]
    except Exception as exc:
        print(f"HTCondor: could not remove the controller: {exc}", file=sys.stderr)
        return ""
    return f"removed the night's controller (HTCondor job {cluster}) from the queue"


def _wait_for_end(info: dict | None, sub: object, seconds: float) -> int:
    """Wait up to ``seconds`` for the run (and a submitted controller) to end; 0 if it did."""
    from abflow.state import runstate
    from abflow.state.submission import controller_state

    def alive() -> bool:
        return bool(info and runstate.process_alive(info)) or bool(
            sub is not None and controller_state(sub).alive  # type: ignore[arg-type]
        )

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and alive():
        time.sleep(0.5)
    still = alive()
    print("it is still running" if still else "it has ended")
    return 1 if still else 0


def _ab_of(name: str) -> str:
    from abflow.state.layout import JobId

    try:
        return JobId.parse(name).target
    except ValueError:
        return ""


def _remove_night_jobs(args: argparse.Namespace, settings: Settings) -> str:
    """Remove this night's jobs from the HTCondor queue: those of its ABs, whichever run
    submitted or adopted them (a night has one live run; jobs of other nights stay). Returns
    what was done ("" without a pool)."""
    from abflow.state import schedd

    try:
        queue = schedd.night_queue(settings.state_dir, args.schedd)
        if queue is None:
            return ""
        night = load_night(settings)
        mine = [j for j in queue if _ab_of(j.job) in night]
        removed = schedd.remove(
            schedd.schedd(args.schedd), [j.cluster for j in mine], "abflow stop --now"
        )
    except Exception as exc:
        return f"HTCondor: could not remove the night's jobs ({exc})"
    return f"HTCondor: removed {len(removed)} job(s) of this night"


def cmd_unlock(args: argparse.Namespace) -> int:
    """Remove the lock of a night whose run crashed (abflow refuses a second run otherwise)."""
    from abflow.state import runstate

    settings = settings_of(args)
    state, mon = settings.state_dir, settings.dfo["mon_dir"]
    status = 0
    for batch in settings.batches:
        info = runstate.read_run(state, batch) or runstate.read_night_lock(mon, batch)
        damaged = [
            p
            for p in (settings.layout.lock(batch), runstate.night_lock(mon, batch))
            if os.path.lexists(p) and runstate.read_run_file(p) is None
        ]
        if info is None and damaged:
            for path in damaged:
                why = runstate.remove_lock_file(path)
                print(
                    f"{batch}: {why}" if why else f"{batch}: removed the unreadable lock {path}",
                    file=sys.stderr if why else sys.stdout,
                )
                status = 1 if why else status
            continue
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
        runstate.remove_lock(state, batch, mon, force=args.force)
        print(
            f"{batch}: removed the lock of {runstate.describe_run(info)} "
            f"({settings.layout.lock(batch)}, {runstate.night_lock(mon, batch)})"
        )
    return status
