"""The start and the end of a run (the workflow's common.smk and its onstart, onsuccess and
onerror handlers).

Prepare (while Snakemake reads the Snakefile; nothing is written): the flavour from the command
line and the profile, the validated settings, the Night, the rules' lookups, what a pool job
gets (abflow.run.pool_job), and what the run says about itself at its start.

Start: refuse a flavour the executor cannot run, take the lock of every date, write the run
configuration file every job names, and take over
from a crashed run: on a pool its HTCondor jobs are adopted (abflow.run.takeover: not submitted
again, their results taken when they end), elsewhere removed from the queue (and gone); its
local orphans are ended before anything of this run starts, so no AB runs twice at once. A
terminal that closes (SIGHUP) does not end the run: its console goes on in the night's log.

End: the timeline and the final monitor page of every date; on a pool, a failure note for every
job of this run that HTCondor held (with the hold reason) and the removal of whatever of this
run (and of the runs it took over) is left in the queue; the summary of what failed and what did
not run; the locks released.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from abflow.state.units import now_iso

Log = Callable[[str], None]
# seconds to wait for a crashed run's running pool jobs to be ended by their starters
TAKEOVER_WAIT = 120.0


class StartRefused(RuntimeError):
    """The run must not start (the message says why and what to do)."""


@dataclass
class Prepared:
    """What the workflow's rules are wired to."""

    settings: Any  # abflow.model.config.Settings
    rules: Any  # abflow.run.rules.NightRules
    run_config: str  # the run configuration file (written when the run starts)
    owner: str  # AbflowOwner of this run's HTCondor jobs
    messages: list[tuple[str, str]]  # (level, text) to say at the start
    headline: str = ""  # what the run does (announced with the console's RunInfo)


def prepare(config: dict[str, Any], workflow: Any) -> Prepared:
    """Everything the rules need, from Snakemake's config and workflow. Raises StartRefused
    (the problems in the configuration or the night, each with file and line)."""
    from abflow.model.config import ConfigError, check_config_files, resolve, run_config
    from abflow.model.load import load_night
    from abflow.model.night import NightError
    from abflow.run.flavour import decide, describe, executor_problem, is_remote
    from abflow.run.rules import NightRules
    from abflow.state.runstate import owner_id
    from abflow.upstream import snakemake

    line = snakemake.command_line()
    flavour = decide(config, line)
    if flavour.problem:
        raise StartRefused(flavour.problem)
    try:
        check_config_files(line.configfiles)  # keys given twice (Snakemake keeps the last)
        settings = resolve(flavour.config, root=workflow.basedir)
        night = load_night(settings)
        config_path, _ = run_config(settings)
        rules = NightRules(night, config_path, pool=is_remote(line.executor))
    except (ConfigError, NightError, ValueError) as exc:
        raise StartRefused(str(exc)) from None
    problem = executor_problem(settings.drs_type, line.executor) or (
        f"cannot download: {rules.download_problem()}" if rules.download_problem() else ""
    )
    if problem:
        raise StartRefused(problem)
    cores = snakemake.cores(workflow)
    rules.ab_threads = rules.threads_for(cores or 1)  # no --cores: a remote executor
    limits = rules.resource_limits()
    for name, value in limits.items():
        snakemake.register_resource(workflow, name, value)
    # a DFOS file's DRS_TYPE (config.createAB) is named as abflow check names it
    source = settings.sources.get("drs_type", flavour.source)
    how = describe(
        settings.drs_type,
        source,
        limits.get("ab_jobs", 0),
        cores,
        snakemake.nodes(workflow),
        line.executor,
    )
    said = [*flavour.warnings, *settings.notes, *map(str, night.warnings)]
    messages = [("warning", text) for text in _start_notes(line.configfiles, said, rules)]
    headline = f"abflow: {settings.batch_id}, {len(night)} ABs: {how}"
    rules.owner = owner_id()
    _pool_side(rules, settings)
    return Prepared(settings, rules, config_path, rules.owner, messages, headline)


def _start_notes(configfiles: Iterable[str], said: list[str], rules: Any) -> list[str]:
    """What the run says at its start: which configuration it uses (named with --configfile,
    else abflow.model.config.default_configfile), what the flavour, the configuration and the
    night said (``said``), the ABs a QC step leaves out, the records that do not count."""
    from abflow.model.config import default_configfile

    source = ", ".join(configfiles) or default_configfile()[1]
    notes = [f"abflow: configuration: {source}", *said]
    left_out = rules.without_qc()
    notes += [left_out] if left_out else []
    notes += [
        f"abflow: the completion record of {ab} ({rules.scope.record(ab)}) is empty, "
        "unreadable or not a success of that AB: the AB is not done and runs again"
        for ab in sorted(rules.scope.unreadable)
    ]
    return notes


def _pool_side(rules: Any, settings: Any) -> None:
    """On a pool: the resources that make its jobs pool jobs (abflow.run.pool_job): the program
    they start as and what they get of this environment besides their command line (PATH and
    pool_env: not part of the AbflowCommand a restarted controller compares, so that a
    controller started from another shell still adopts the jobs of its predecessor)."""
    from abflow.run.pool_job import PoolJobs, pool_environment, pool_job_program

    if rules.pool:
        program = pool_job_program()
        if not program:
            raise StartRefused(
                "abflow-pool-job is not installed beside abflow's Python: "
                "install abflow with pip (pip install -e .)"
            )
        night_dirs = dict(rules.job_env)
        extra = tuple(
            (k, v) for k, v in sorted(pool_environment(settings).items()) if k not in night_dirs
        )
        rules.pool_jobs = PoolJobs(rules, program, extra)


def start_run(night: Any, executor: str, warn: Log) -> dict[str, Any]:
    """Take the locks of the run and take over from a crashed predecessor; return the lock
    info (with ``since``, the start time). Raises StartRefused."""
    from abflow.model.config import write_run_config
    from abflow.run.flavour import executor_problem
    from abflow.state.runstate import RunLocked, describe_run, register_run

    settings = night.settings
    problem = executor_problem(settings.drs_type, executor) or _links_leading_out(settings)
    if problem:
        raise StartRefused(problem)
    try:
        config = write_run_config(settings)  # what every job's command line names
    except OSError as exc:  # a full disk: nothing has started
        raise StartRefused(f"cannot write the run configuration: {exc}; nothing was run") from None
    _end_jobs_on_interrupt()
    try:
        lock = register_run(
            settings.state_dir,
            night.batch_ids(),
            executor=executor,
            mon_dir=settings.dfo["mon_dir"],
            config=config,
        )
    except RunLocked as exc:
        raise StartRefused(str(exc)) from None
    except OSError as exc:  # a full disk
        raise StartRefused(f"cannot take the night's locks: {exc}; nothing was run") from None
    lock["since"] = now_iso()
    _outlive_the_terminal(settings.layout.console_log(settings.batch_id), warn)
    for note in lock["notes"]:
        warn(f"abflow: {note}")
    for crashed in lock["replaced"]:
        warn(
            f"abflow: the lock {crashed['unreadable']} could not be read: taken over"
            if "unreadable" in crashed
            else f"abflow: the previous run of {crashed['batch']} ({describe_run(crashed)}) "
            "ended without cleaning up (crashed or killed): taking over; its finished ABs are kept"
        )
    _take_over(night, lock, executor, warn)
    return lock


def _take_over(night: Any, lock: dict[str, Any], executor: str, warn: Log) -> None:
    """What crashed runs of the night left: on a pool their jobs adopted (or removed), here
    their jobs' commands ended (in the state directory each used)."""
    from abflow.run.flavour import is_remote
    from abflow.state.runstate import end_orphans

    settings = night.settings
    if not is_remote(executor) and lock["lineage"]:  # (on a pool: its executor adopts them)
        removed = _remove_pool_jobs(settings.state_dir, lock["lineage"], TAKEOVER_WAIT)
        if removed:
            warn(
                f"abflow: removed {len(removed)} HTCondor job(s) left by that run: "
                + ", ".join(j.job or str(j.cluster) for j in removed)
            )
    # a crashed run's jobs are marked in the state directory it used (it may be another one)
    dirs = {str(r.get("state_dir") or settings.state_dir) for r in lock["replaced"]}
    for state_dir in sorted(dirs) if lock["lineage"] else ():
        for job in end_orphans(state_dir, lock["lineage"]):
            warn(f"abflow: ended {job.name} (pid {job.pid}) left by that run")


def _links_leading_out(settings: Any) -> str:
    """Why the run must not start because a directory it writes in is a symbolic link leading
    outside the configured directories ("" if none is)."""
    from abflow.state.fsutil import links_leading_out

    tops = [
        settings.state_dir,
        *(os.path.join(settings.dfo[k], ".abflow") for k in ("mon_dir", "job_dir")),
    ]
    found = links_leading_out([t for t in tops if os.path.isdir(t)], settings.roots)
    return "; ".join(
        f"{path} is a symbolic link to {real}, outside the configured directories: remove it "
        "(abflow and Snakemake would write there); nothing was run"
        for path, real in found
    )


def _outlive_the_terminal(log: str, warn: Log) -> None:
    """Go on when the terminal closes (SIGHUP): the console continues in ``log`` (and says so
    on the terminal first); Ctrl-C still interrupts."""
    import signal

    from abflow.views.terminal import continue_in, terminal_streams

    ttys = terminal_streams()

    def hung_up(signum: int, frame: Any) -> None:
        continue_in(log, ttys)

    with contextlib.suppress(ValueError):  # not the main thread (no terminal to lose)
        signal.signal(signal.SIGHUP, hung_up)


def _end_jobs_on_interrupt() -> None:
    """On Ctrl-C or ``abflow stop --now`` (SIGINT), end the commands of the jobs running here
    first: they run in sessions of their own, and Snakemake, cancelling the run, waits for the
    threads that run them."""
    import signal

    from abflow.job.shell import end_all
    from abflow.views.terminal import note_interrupt

    previous = signal.getsignal(signal.SIGINT)

    def interrupted(signum: int, frame: Any) -> None:
        note_interrupt()  # (Ctrl-C, abflow stop --now, condor_rm of a submitted night)
        end_all()
        if callable(previous):
            previous(signum, frame)
        else:
            raise KeyboardInterrupt

    with contextlib.suppress(ValueError):  # not the main thread: nothing runs here to end
        signal.signal(signal.SIGINT, interrupted)


def _remove_pool_jobs(state_dir: str, owner: str | Iterable[str], wait: float) -> list[Any]:
    """Remove the queued jobs of run ``owner`` (or of several), waiting for them to leave the
    queue; [] where no pool answers."""
    from abflow.state import schedd

    if not schedd.pool_configured():
        return []
    try:
        sd = schedd.schedd()
        jobs = schedd.queued(sd, state_dir, owner)
        schedd.remove(sd, [j.cluster for j in jobs], "abflow: the run that submitted it is gone")
        schedd.wait_gone(sd, [j.cluster for j in jobs], wait)
        return jobs
    except Exception:  # no pool reachable: nothing of it can still run there
        return []


def note_held_jobs(night: Any, owners: Iterable[str], jobdir: str = "") -> list[str]:
    """Failure notes for the jobs of runs ``owners`` (this run and those it took over) that
    HTCondor holds (the plugin gives up on them after its held timeout but leaves them in the
    queue); then remove every job of those runs still queued. Returns the jobs noted ([] where
    no pool answers)."""
    from abflow.state import schedd
    from abflow.state.notes import write_failure
    from abflow.upstream.htcondor_plugin import stderr_file

    settings = night.settings
    owners = sorted({o for o in owners if o})
    if not schedd.pool_configured() or not owners:
        return []
    try:
        sd = schedd.schedd()
        jobs = schedd.queued(sd, settings.state_dir, owners)
    except Exception:
        return []
    noted = []
    for job in jobs:
        held = job.job_id
        if held is None or not job.held or held.target not in night:
            continue
        write_failure(
            settings.layout,
            held,
            f"HTCondor job {job.cluster} held: {job.hold_reason}",
            log=stderr_file(jobdir, job.cluster),
            log_tail=[job.hold_reason],
            host=job.host,
            cluster=job.cluster,
        )
        noted.append(job.job)
    with contextlib.suppress(Exception):  # the end of a run must not fail on the pool
        schedd.remove(sd, [j.cluster for j in jobs], "abflow: the run ended")
    return noted


def remove_served_requests(night: Any, names: Iterable[str] | None) -> None:
    """Remove the rerun requests of the ABs ``names`` whose record says they were served (its
    generation and AB checksum are the request's)."""
    from abflow.state.fsutil import read_json_object, remove_file
    from abflow.state.layout import JobId, Step

    layout = night.settings.layout
    for ab in names or ():
        record = read_json_object(layout.record(JobId(Step.PROCESS_AB, ab))) or {}
        served = f".g{record.get('generation')}-{record.get('ab_digest')}.rerun"
        for request in layout.requests_of(ab):
            if request.endswith(served):
                remove_file(request)


def outcome(ok: bool, stopped: bool) -> str:
    """How a run ended (abflow.state.runstate.OUTCOMES): ``ok`` (Snakemake's onsuccess), else
    interrupted (SIGINT), stopped (abflow stop's flag: ``stopped``) or failed."""
    from abflow.views.terminal import was_interrupted

    if ok:
        return "succeeded"
    if was_interrupted():
        return "interrupted"
    return "stopped" if stopped else "failed"


def _mark_download_failures(night: Any, abs_: list[str]) -> str:
    """``PROCESS_STATUS FAILED`` in the AB files of ``abs_`` (ABs that failed because a file
    they need could not be downloaded), for DFOS's AB monitor; what was done ("" if nothing)."""
    from abflow.job.download import mark_ab_failed
    from abflow.state.fsutil import resolve_roots

    marked, problems = [], []
    ab_dir = resolve_roots([night.settings.dfo["ab_dir"]])
    for name in abs_:
        try:
            if mark_ab_failed(night[name].ab.path, ab_dir):
                marked.append(name)
        except (OSError, ValueError) as exc:
            problems.append(f"abflow: could not mark {name} FAILED in its AB file: {exc}")
    if marked:
        problems.insert(
            0,
            f"abflow: PROCESS_STATUS FAILED set in the AB files of {', '.join(marked)} (a file "
            "they need could not be downloaded)",
        )
    return "\n".join(problems)


def finish_run(
    night: Any,
    refresher: Any,
    lock: dict[str, Any],
    names: Iterable[str] | None = None,
    jobdir: str = "",
    ok: bool = True,
    without_qc: str = "",
) -> str:
    """End of a run: held jobs noted and leftovers removed (on a pool), the timeline of every
    date, CAL_CLEANUP, the run's locks released and how it ended noted (``ok``: Snakemake's
    onsuccess), then the final page of every date, which says so. Returns the summary of the
    ABs ``names`` of the run since its start: their QC1 numbers, what failed, ``without_qc``
    (the ABs a QC step left out), what CAL_CLEANUP removed ("" if there is none of these)."""
    from abflow.run.cleanup import clean_up_raw
    from abflow.run.flavour import is_remote
    from abflow.state.runstate import stop_requested, unregister_run
    from abflow.views.monitor import timeline_paths
    from abflow.views.status import (
        failed_for_downloads,
        failure_summary,
        night_state,
        qc1_summary,
    )
    from abflow.views.timeline import draw, timeline_of

    if lock and is_remote(str(lock.get("executor", ""))):
        note_held_jobs(night, [str(lock.get("owner", "")), *lock.get("lineage", ())], jobdir)
    for part in night.nights():
        try:
            draw(timeline_of(part), *timeline_paths(part))
        except Exception as exc:  # a chart must never fail the night
            print(f"abflow: could not draw the timeline: {exc}", flush=True)
    try:
        since = (lock.get("lineage_start") or lock.get("since")) if lock else None
        state = night_state(night)  # read once for all
        parts = (
            qc1_summary(state, names, since),
            failure_summary(night, names, since, state),
            _mark_download_failures(night, failed_for_downloads(state, names, since)),
            without_qc,
            clean_up_raw(night),
        )
        summary = "\n".join(s for s in parts if s)
    except Exception as exc:  # the summary must never hide the run's own errors
        summary = f"abflow: could not summarise the failures: {exc}"
    with contextlib.suppress(OSError):
        remove_served_requests(night, names)
    s = night.settings
    how = outcome(ok, stop_requested(s.state_dir, night.batch_ids()))
    problems = unregister_run(s.state_dir, night.batch_ids(), how, s.dfo["mon_dir"])
    try:
        refresher.stop()  # the final page: how the run ended, now in the run history
    except OSError as exc:  # (a full disk)
        problems.append(f"could not write the final monitor page: {exc}")
    return "\n".join([summary, *(f"abflow: {p}" for p in problems)]).strip("\n")
