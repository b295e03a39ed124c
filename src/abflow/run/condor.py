"""HTCondor side of a run: the job wrapper, and the tags of the jobs it submits.

On a pool, the htcondor executor plugin submits each Snakemake job with ``getenv = False``;
the job then runs as an ordinary user with a bare environment (no PATH, maybe no HOME), where
neither ``abflow`` nor Snakemake's scheduler work. The workflow therefore writes, for each run,
a small job wrapper (the plugin's ``job_wrapper`` resource) that sets PATH, HOME and the
``$DFO_*`` directories of the night and runs Snakemake with the submitting Python.

Every job abflow submits carries three ClassAd attributes (the job rules' ``classad_*``
resources), so that abflow finds exactly the jobs of one run in a shared queue:

* ``AbflowRun = "<state_dir>"``: the night store the job writes into;
* ``AbflowOwner = "<host>:<pid>"``: the Snakemake process that submitted it (the run holding
  the night's lock), so ``abflow stop --now`` and the takeover of a crashed run's lock remove
  that run's jobs and no other;
* ``AbflowJob = "<step>/<AB>[.<det>]"``: which AB the job processes (the running-marker name),
  for ``abflow watch`` and the status page, and for the failure note of a held job.

abflow.state.queue finds (and removes) the jobs so tagged.
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
from collections.abc import Mapping

from abflow.job.command import ENTRY as JOB_ENTRY
from abflow.model.config import Settings
from abflow.state.fsutil import atomic_write_text

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def job_environment(settings: Settings, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """What a pool job gets of the submitting environment: the ``$DFO_*``/``$DFS_*`` variables
    (the DFOS tools read them; the night's directories override them), the variables named in
    ``pool_env``, and PATH (below)."""
    environ = os.environ if environ is None else environ
    env = {k: v for k, v in environ.items() if k.startswith(("DFO_", "DFS_"))}
    env.update({k: environ[k] for k in settings.pool_env if k in environ})
    env.update(settings.variables)
    return env


def wrapper_text(
    settings: Settings, python: str | None = None, environ: Mapping[str, str] | None = None
) -> str:
    """The job wrapper script: environment of the night, then the job (abflow's own, or
    Snakemake's)."""
    python = python or sys.executable
    environ = os.environ if environ is None else environ
    env = job_environment(settings, environ)
    env["ABFLOW_PYTHON"] = python
    # the DFOS tools of the commands (processAB, ngasClient, ...) as the operator's shell finds
    # them: the submitting PATH (a filesystem shared at the same paths), after abflow's Python
    path = ":".join(p for p in (os.path.dirname(python), environ.get("PATH", "")) if p)
    # the job imports the htcondor bindings (Snakemake loads every executor plugin), which warn
    # on an execute node without a condor_config of its own
    env["PYTHONWARNINGS"] = "ignore::UserWarning:htcondor2"
    lines = [
        "#!/bin/sh",
        "# abflow HTCondor job wrapper, written by the workflow for this night; do not edit.",
        "# The pool starts jobs with a bare environment (no PATH, maybe no HOME): give the job",
        "# abflow's Python environment, the submitting PATH, the $DFO_* variables and the",
        "# night's directories, then run Snakemake's job command (the plugin passes the",
        "# arguments of `python -m snakemake ...`).",
        "set -eu",
        f"PATH={shlex.quote(path)}:${{PATH:-{SYSTEM_PATH}}}",
        f'HOME="${{HOME:-${{_CONDOR_SCRATCH_DIR:-{shlex.quote(settings.state_dir)}}}}}"',
        "export PATH HOME",
    ]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in sorted(env.items())]
    body = _WRAPPER_BODY.replace("@JOB_ENTRY@", shlex.quote(JOB_ENTRY))
    return "\n".join(lines) + "\n" + body.replace("@PYTHON@", shlex.quote(python))


# What the wrapper does once the environment is set (@JOB_ENTRY@ and @PYTHON@ filled in).
_WRAPPER_BODY = """\
# The plugin passes Snakemake's job command, `<python> -m snakemake ARGS`, and strips
# that prefix only where it is spelled `python -m snakemake`: drop what is left of it.
case "${1:-}" in -*) ;; ?*) shift ;; esac
if [ "${1:-}" = -m ] && [ "${2:-}" = snakemake ]; then shift 2; fi
# A job of abflow's carries its whole command line in its job ad (AbflowCommand): run
# it directly (python -m abflow.job), without a second Snakemake on the execute node;
# the submitting Snakemake checks its outputs. Anything else: Snakemake's own job.
if [ -n "${_CONDOR_JOB_AD:-}" ] && grep -q "^AbflowCommand = " "$_CONDOR_JOB_AD"; then
    set -- @JOB_ENTRY@ --job-ad "$_CONDOR_JOB_AD"
else
    set -- -m snakemake "$@"
fi
# HTCondor ends a removed job (condor_rm, abflow stop --now, a crashed run's successor)
# with SIGTERM, on which Snakemake would first let the running recipe finish: run it in
# a process group of its own and end that group at once (the abflow job in it ends
# the recipe's own group in turn).
command -v setsid >/dev/null 2>&1 || exec @PYTHON@ "$@"
setsid @PYTHON@ "$@" &
child=$!
trap 'kill -s TERM -- "-$child" 2>/dev/null || true' TERM INT HUP
status=0
wait "$child" || status=$?
while kill -0 "$child" 2>/dev/null; do status=0; wait "$child" || status=$?; done
exit "$status"
"""


def write_wrapper(settings: Settings, python: str | None = None) -> str:
    """Write the job wrapper (only if its content changed); return its path."""
    path = settings.layout.job_wrapper
    text = wrapper_text(settings, python)
    try:
        with open(path, encoding="utf-8") as fh:
            if fh.read() == text and os.access(path, os.X_OK):
                return path
    except OSError:
        pass
    atomic_write_text(path, text, mode=0o755)
    return path


def owner_id(host: str | None = None, pid: int | None = None) -> str:
    """``<host>:<pid>`` of a Snakemake process (this one by default): the AbflowOwner tag."""
    return f"{host or socket.gethostname()}:{os.getpid() if pid is None else pid}"
