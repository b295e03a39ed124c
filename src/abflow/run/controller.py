"""A night's controller as a job of its own (``abflow submit``), so that the night outlives the
terminal it was started from.

The controller is the Snakemake process that runs the night (``snakemake --profile ...``). With
a pool, ``abflow submit`` hands it to HTCondor as a job of the submit host, in the scheduler
universe (as DAGMan runs): the schedd starts it at once, and starts it again when it dies by a
signal (SIGKILL, out of memory) and after the pool itself restarted (a reboot); the new
controller adopts the jobs the dead one left (abflow.run.takeover). ``condor_rm`` of the controller
acts as Ctrl-C (``remove_kill_sig = SIGINT``): it removes the night's jobs and ends. Without a
pool (profiles local and int) the controller is a process in a session of its own, detached
from the terminal.

Either way the controller's console goes to the night's log (abflow.state.layout.console_log),
appended, one header line per start; ``abflow watch`` follows it. :func:`main` is the
controller's entry point (``python -m abflow.run.controller RECORD``): it opens the log, writes
the header, and becomes the night's Snakemake.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from collections.abc import Sequence

from abflow.model.config import Settings
from abflow.state.submission import Submission, log_size, read_submission, write_submission
from abflow.state.units import now_iso

MODULE = "abflow.run.controller"


def condor_arguments(words: Sequence[str]) -> str:
    """``words`` as an HTCondor submit ``arguments`` value (the new syntax: the whole in double
    quotes, a word with spaces or quotes in single quotes, quotes doubled)."""
    out = []
    for word in words:
        word = word.replace('"', '""')
        if not word or any(c in word for c in " \t'"):
            word = "'" + word.replace("'", "''") + "'"
        out.append(word)
    return '"' + " ".join(out) + '"'


def submit_to_pool(sub: Submission, record: str, state_dir: str, schedd: str = "") -> int:
    """Hand the controller to HTCondor (a scheduler-universe job of this host); return its
    cluster."""
    import htcondor2
    from classad2 import quote

    from abflow.state.layout import StateLayout
    from abflow.state.schedd import CLASSAD
    from abflow.state.schedd import schedd as find_schedd

    output, events = StateLayout(state_dir).controller_files(sub.batch)
    os.makedirs(os.path.dirname(output), exist_ok=True)
    description = {
        "universe": "scheduler",
        # through env: the schedd starts the executable under a name of its own, from which
        # Python cannot find its virtual environment
        "executable": shutil.which("env") or "/usr/bin/env",
        "arguments": condor_arguments([sys.executable, "-m", MODULE, record]),
        "initialdir": sub.cwd,
        # what the controller says before its console goes to the night's log
        "output": output,
        "error": output,
        "log": events,
        "getenv": "True",  # the operator's environment: PATH, CONDOR_CONFIG, $DFO_*, ...
        # started again when it dies by a signal (SIGKILL, out of memory); an exit is the end
        "on_exit_remove": "ExitBySignal =?= false",
        "remove_kill_sig": "SIGINT",  # condor_rm = Ctrl-C: the night's jobs leave the queue
        "batch_name": f"abflow-{sub.batch}",
        f"+{CLASSAD}": quote(state_dir),
    }
    sd = find_schedd(schedd or None)
    return int(sd.submit(htcondor2.Submit(description)).cluster())


def start_detached(record: str, cwd: str) -> int:
    """Start the controller in a session of its own, away from this terminal; return its pid."""
    import subprocess

    proc = subprocess.Popen(
        [sys.executable, "-m", MODULE, record],
        cwd=cwd,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc.pid


def hand_over(
    settings: Settings, argv: list[str], pool: bool, profile: str, schedd: str = ""
) -> tuple[Submission, str]:
    """Record the submission and start its controller; return it and the record's path."""
    from abflow.state.runstate import process_start

    layout = settings.layout
    log = layout.console_log(settings.batch_id)
    sub = Submission(
        batch=settings.batch_id,
        argv=argv,
        cwd=settings.state_dir,
        log=log,
        offset=log_size(log),
        pool=pool,
        schedd=schedd,
        host=socket.gethostname(),
        submitted=now_iso("seconds"),
        profile=profile,
    )
    os.makedirs(settings.state_dir, exist_ok=True)
    record = write_submission(layout, sub)
    if pool:
        sub.cluster = submit_to_pool(sub, record, settings.state_dir, schedd)
    else:
        sub.pid = start_detached(record, sub.cwd)
        sub.proc_start = process_start(sub.pid) or 0.0
    write_submission(layout, sub)
    return sub, record


def _job_ad() -> dict[str, object]:
    """ClusterId and NumJobStarts of the HTCondor job this process runs as ({} if none)."""
    path = os.environ.get("_CONDOR_JOB_AD", "")
    if not path:
        return {}
    try:
        import classad2

        with open(path, encoding="utf-8", errors="replace") as fh:
            ad = classad2.parseOne(fh.read())
        return {k: ad.eval(k) for k in ("ClusterId", "NumJobStarts") if k in ad}
    except Exception:
        return {}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m abflow.run.controller RECORD``: become the controller of the night that
    ``abflow submit`` recorded in RECORD (its console appended to the night's log)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print(f"usage: python -m {MODULE} RECORD (written by abflow submit)", file=sys.stderr)
        return 2
    record = args[0]
    batch = os.path.basename(record).removesuffix(".submit.json")
    from abflow.state.layout import StateLayout

    sub = read_submission(StateLayout(os.path.dirname(os.path.dirname(record))), batch)
    if sub is None:
        print(f"{record}: not a submission record of abflow submit", file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(sub.log), exist_ok=True)
    fd = os.open(sub.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    for n in (1, 2):
        os.dup2(fd, n)
    os.close(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    ad = _job_ad()
    how = f"HTCondor job {ad.get('ClusterId', sub.cluster)}" if sub.pool else f"pid {os.getpid()}"
    starts = int(ad.get("NumJobStarts") or 0)  # type: ignore[call-overload]
    again = f", start {starts + 1}: the controller before it died" if starts else ""
    when = now_iso("seconds")
    print(
        f"=== abflow: controller of {sub.batch} started at {when} on {socket.gethostname()} "
        f"({how}{again})",
        flush=True,
    )
    os.chdir(sub.cwd)
    os.execv(sub.argv[0], sub.argv)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
