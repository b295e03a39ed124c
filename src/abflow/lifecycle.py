"""The start and the end of a run (the workflow's onstart, onsuccess and onerror handlers).

Start: refuse a flavour the executor cannot run, take the lock of every date, and take over
from a crashed run: its HTCondor jobs are removed from the queue (and gone) and its local
orphans ended before anything of this run starts, so no AB runs twice at once.

End: the timeline and the final monitor page of every date; on a pool, a failure note for every
job of this run that HTCondor held (with the hold reason) and the removal of whatever of this
run is left in the queue; the summary of what failed and what did not run; the locks released.
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Callable, Iterable
from typing import Any

from abflow.fsutil import atomic_write_json
from abflow.runner import now_iso

Log = Callable[[str], None]
# seconds to wait for a crashed run's running pool jobs to be ended by their starters
TAKEOVER_WAIT = 120.0


class StartRefused(RuntimeError):
    """The run must not start (the message says why and what to do)."""


def start_run(
    night: Any, owns_marker: Callable[[str], bool], executor: str, warn: Log
) -> dict[str, Any]:
    """Take the locks of the run and clean up after a crashed predecessor; return the lock
    info (with ``since``, the start time). Raises StartRefused."""
    from abflow.flavour import executor_problem, is_remote
    from abflow.runstate import RunLocked, describe_run, end_orphans, register_run

    settings = night.settings
    problem = executor_problem(settings.drs_type, executor)
    if problem:
        raise StartRefused(problem)
    try:
        run = register_run(settings.state_dir, night.batch_ids(), executor=executor)
    except RunLocked as exc:
        raise StartRefused(str(exc)) from None
    run["since"] = now_iso()
    for crashed in run["replaced"]:
        warn(
            f"abflow: the previous run of {crashed['batch']} ({describe_run(crashed)}) ended "
            "without cleaning up (crashed or killed): taking over; its finished ABs are kept"
        )
    owners = {c.get("owner") for c in run["replaced"] if is_remote(str(c.get("executor", "")))}
    for owner in sorted(o for o in owners if o):
        removed = _remove_pool_jobs(settings.state_dir, str(owner), TAKEOVER_WAIT)
        if removed:
            warn(f"abflow: removed {len(removed)} HTCondor job(s) left by that run: " +
                 ", ".join(j.job or str(j.cluster) for j in removed))  # fmt: skip
    if run["replaced"]:
        for job in end_orphans(settings.state_dir, owns_marker):
            warn(f"abflow: ended {job.name} (pid {job.pid}) left by that run")
    return run


def _remove_pool_jobs(state_dir: str, owner: str, wait: float) -> list[Any]:
    """Remove the queued jobs of run ``owner``; [] where no pool answers."""
    from abflow.condor import pool_configured, queued_jobs, remove_jobs, schedd

    if not pool_configured():
        return []
    try:
        sd = schedd()
        jobs = queued_jobs(sd, state_dir, owner)
        return remove_jobs(sd, jobs, "abflow: the run that submitted it is gone", wait=wait)
    except Exception:  # no pool reachable: nothing of it can still run there
        return []


def note_held_jobs(night: Any, owner: str, jobdir: str = "") -> list[str]:
    """Failure notes for this run's jobs that HTCondor holds (the plugin gives up on them after
    its held timeout but leaves them in the queue); then remove every job of this run still
    queued. Returns the jobs noted ("" jobs where no pool answers)."""
    from abflow.condor import pool_configured, queued_jobs, remove_jobs, schedd
    from abflow.runstate import parse_job_name

    settings = night.settings
    if not pool_configured():
        return []
    try:
        sd = schedd()
        jobs = queued_jobs(sd, settings.state_dir, owner)
    except Exception:
        return []
    noted = []
    for job in jobs:
        step, ab, det = parse_job_name(job.job)
        if job.status != "held" or ab not in night:
            continue
        path = settings.state_pattern("failed", step).format(ab=ab, det=det)
        err = sorted(glob.glob(os.path.join(jobdir, "*", f"*_{job.cluster}.err"))) if jobdir else []
        atomic_write_json(
            path,
            {"ab": ab, "step": step, **({"det": det} if det is not None else {}),
             "status": "FAILED", "end": now_iso(), "host": job.host, "cluster": job.cluster,
             "reason": f"HTCondor job {job.cluster} held: {job.hold_reason}",
             "log": err[0] if err else "", "log_tail": [job.hold_reason]},
        )  # fmt: skip
        noted.append(job.job)
    with contextlib.suppress(Exception):  # the end of a run must not fail on the pool
        remove_jobs(sd, jobs, "abflow: the run ended")
    return noted


def finish_run(
    night: Any,
    refresher: Any,
    run: dict[str, Any],
    names: Iterable[str] | None = None,
    jobdir: str = "",
) -> str:
    """End of a run: held jobs noted and leftovers removed (on a pool), timeline and final page
    of every date, the run's locks released. Returns the summary of what failed since the
    run's start among the ABs ``names`` of the run ("" if nothing did)."""
    from abflow.flavour import is_remote
    from abflow.monitor import timeline_paths
    from abflow.runstate import unregister_run
    from abflow.status import failure_summary
    from abflow.timeline import draw

    if run and is_remote(str(run.get("executor", ""))):
        note_held_jobs(night, str(run.get("owner", "")), jobdir)
    for part in night.nights():
        try:
            draw(part, *timeline_paths(part))
        except Exception as exc:  # a chart must never fail the night
            print(f"abflow: could not draw the timeline: {exc}", flush=True)
    refresher.stop()
    try:
        summary = failure_summary(night, names, run.get("since") if run else None)
    except Exception as exc:  # the summary must never hide the run's own errors
        summary = f"abflow: could not summarise the failures: {exc}"
    unregister_run(night.settings.state_dir, night.batch_ids())
    return summary
