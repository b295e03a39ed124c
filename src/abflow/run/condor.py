"""HTCondor side of a run: what a pool job of the night gets, and the tags it carries.

How a rule becomes a pool job is told in one place, abflow.job.pool (the program the pool
starts). This module gives the rules what that needs:

* :func:`pool_job_program`: the program (the ``abflow-pool-job`` console script installed with
  abflow), the plugin's ``job_wrapper`` resource;
* :func:`pool_environment`: what the job's command runs with. The pool starts jobs with a bare
  environment (no PATH, maybe no HOME), so the job's command line carries the ``$DFO_*`` and
  ``$DFS_*`` variables of the submitting environment (the night's directories win), those
  ``pool_env`` names, and PATH (abflow's Python first, then the submitting PATH: the DFOS tools
  of the commands, on a filesystem shared at the same paths).

Every job abflow submits carries ClassAd attributes (the job rules' ``classad_*`` resources), so
that abflow finds exactly the jobs of one run in a shared queue (abflow.state.queue):

* ``AbflowRun = "<state_dir>"``: the night store the job writes into;
* ``AbflowOwner = "<host>:<pid>"`` (abflow.state.runstate.owner_id): the Snakemake process that
  submitted it (the run holding the night's lock), so ``abflow stop --now`` and the takeover of
  a crashed run's lock find that run's jobs and no other;
* ``AbflowJob = "<step>/<AB>[.<det>]"``: which AB the job processes (the running-marker name);
* ``AbflowCommand``: the job's command line (abflow.job.pool.encode).
"""

from __future__ import annotations

import os
import sys
import sysconfig
from collections.abc import Mapping

from abflow.model.config import Settings

PROGRAM = "abflow-pool-job"  # pyproject.toml [project.scripts]


def pool_job_program() -> str:
    """The path of ``abflow-pool-job`` of this installation ("" if it is not installed)."""
    for directory in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        path = os.path.join(directory, PROGRAM)
        if os.access(path, os.X_OK):
            return path
    return ""


def pool_environment(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment a pool job's command gets (see the module)."""
    environ = os.environ if environ is None else environ
    env = {k: v for k, v in environ.items() if k.startswith(("DFO_", "DFS_"))}
    env.update({k: environ[k] for k in settings.pool_env if k in environ})
    env.update(settings.variables)
    env["PATH"] = f"{os.path.dirname(sys.executable)}:{environ.get('PATH') or os.defpath}"
    return env
