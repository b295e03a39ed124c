"""``abflow submit``: hand the night to HTCondor (or detach it from the terminal) and return."""

from __future__ import annotations

import argparse
import os
import sys

from abflow.cli.common import Parents, add_command, date_overrides, settings_of
from abflow.model.config import ROOT, Settings
from abflow.model.load import load_night
from abflow.state.submission import Submission


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    """Add the commands of this module."""
    p = add_command(
        sub,
        "submit",
        cmd_submit,
        [parents.config, parents.night],
        help="hand the night to HTCondor (profiles/condor) or detach it from the terminal "
        "(profiles local, int), and return; anything after -- goes to Snakemake",
    )
    p.add_argument(
        "--profile",
        default=os.path.join(ROOT, "profiles", "condor"),
        metavar="DIR",
        help="the Snakemake profile of the night (default: abflow's profiles/condor)",
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="follow the night's console until it has ended and exit with its status (as "
        "vultur_exec_cascade --wait): ending this command does not end the night",
    )
    p.add_argument("--schedd", default="", help="HTCondor schedd name (default: the local one)")
    p.add_argument("snakemake", nargs="*", metavar="-- SNAKEMAKE_ARGS", help=argparse.SUPPRESS)


def _profile(path: str) -> str:
    """The profile directory as Snakemake will find it from any directory: absolute; a
    relative name not found here is looked up in abflow's profiles."""
    if os.path.isdir(path):
        return os.path.abspath(path)
    bundled = os.path.join(ROOT, path)
    if os.path.isdir(bundled):
        return bundled
    bundled = os.path.join(ROOT, "profiles", path)
    return bundled if os.path.isdir(bundled) else os.path.abspath(path)


def _command_hint(args: argparse.Namespace, settings: Settings, verb: str) -> str:
    words = ["abflow", verb, "-d", settings.date]
    if settings.mode != "CALIB":
        words += ["-m", settings.mode]
    if args.configfile:
        words += ["--configfile", os.path.abspath(args.configfile)]
    return " ".join(words)


def _refusal(settings: Settings) -> str:
    """Why the night cannot be submitted now ("" if it can): a run of it is going on."""
    from abflow.state.runstate import describe_run, process_alive, read_run
    from abflow.state.submission import controller_state, read_submission

    for batch in settings.batches:
        held = read_run(settings.state_dir, batch)
        if held and process_alive(held):
            return f"{batch} is being processed by {describe_run(held)}"
    sub = read_submission(settings.layout, settings.batch_id)
    if sub is not None:
        state = controller_state(sub)
        if state.alive:
            return (
                f"{settings.batch_id} was submitted already: its controller ({sub.where}) is "
                f"{state.describe()}"
            )
    return ""


def cmd_submit(args: argparse.Namespace) -> int:
    """Hand the night over; print the job, the log, and how to watch and stop it."""
    from abflow.run.controller import hand_over
    from abflow.run.flavour import is_remote
    from abflow.state.schedd import pool_configured
    from abflow.upstream.snakemake import command_line
    from abflow.views.jobfiles import snakemake_argv

    settings = settings_of(args)
    load_night(settings)  # refuse a night that cannot run before handing anything over
    profile = _profile(args.profile)
    executor = command_line(["snakemake", "--profile", profile], {}).executor
    pool = is_remote(executor)
    if pool and not pool_configured():
        print(
            "abflow submit: no HTCondor pool is configured (CONDOR_CONFIG): submit with "
            "--profile profiles/local or profiles/int to run the night on this machine, "
            "detached from the terminal",
            file=sys.stderr,
        )
        return 2
    why = _refusal(settings)
    if why:
        print(
            f"abflow submit: {why}; watch it with: {_command_hint(args, settings, 'watch')}",
            file=sys.stderr,
        )
        return 1
    config = [*date_overrides(args), *(args.config or ())]
    argv = snakemake_argv(settings, profile, args.configfile, config, args.snakemake)
    try:
        sub, _record = hand_over(settings, argv, pool, profile, args.schedd)
    except Exception as exc:
        print(f"abflow submit: could not hand the night over: {exc}", file=sys.stderr)
        return 1
    where = (
        f"to HTCondor as job {sub.cluster} (scheduler universe on {sub.host}; HTCondor "
        "starts it again if it dies)"
        if pool
        else f"to a process of its own, detached from this terminal (pid {sub.pid})"
    )
    print(
        f"abflow: {settings.batch_id} handed {where}\n"
        f"  console: {sub.log}\n"
        f"  watch:   {_command_hint(args, settings, 'watch')}\n"
        f"  stop:    {_command_hint(args, settings, 'stop')}  (--now also ends the running "
        "ABs)",
        flush=True,
    )
    return _wait(sub, settings) if args.wait else 0


def _wait(sub: Submission, settings: Settings) -> int:
    """Follow the controller's console until it has ended; its exit status."""
    from abflow.state.submission import ControllerState, controller_state
    from abflow.views.follow import follow

    last: list[ControllerState] = []

    def ended() -> bool:
        last[:] = [controller_state(sub)]
        return not last[0].alive

    follow(sub.log, sub.offset, ended, sys.stdout)
    state = last[0] if last else controller_state(sub)
    code = state.exit_code if sub.pool else _outcome_code(settings)
    print(f"abflow: the controller of {sub.batch} has {state.describe()}", flush=True)
    return int(code) if code is not None else 1


def _outcome_code(settings: Settings) -> int | None:
    """A detached controller's exit status, from how its run ended (the run history)."""
    from abflow.state.runstate import run_history_of

    history = run_history_of(settings.layout, settings.batches[0])
    ended = history[-1].get("ended") if history else None
    return None if ended is None else (0 if ended == "succeeded" else 1)
