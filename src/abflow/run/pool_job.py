"""How a rule becomes an HTCondor pool job, in one place.

1. The job rules declare :meth:`PoolJobs.resources` (``**RULES.pool_resources(rule)``, only where
   jobs go to a pool: Snakemake evaluates every resource of every job of the DAG). The htcondor
   executor plugin turns them into the pool job (abflow.upstream.htcondor_plugin):

   * ``job_wrapper``: the program the pool starts, ``abflow-pool-job`` (abflow.job.pool,
     installed with abflow as a console script whose first line names abflow's Python, so it
     needs no PATH);
   * ``environment``: ``ABFLOW_JOB``, the job's command line (abflow.job.command.JobCommand) as
     JSON in base64, which needs no quoting, with what the command runs with besides (PATH and
     the variables of ``pool_env``: the pool starts jobs with a bare environment), and
     ``ABFLOW_CLUSTER=$(ClusterId)``, which HTCondor fills in;
   * ClassAd attributes that find the job again (abflow.state.schedd): ``AbflowRun`` (the night
     store), ``AbflowOwner`` (the controller that submitted it: abflow.state.runstate.owner_id),
     ``AbflowJob`` (``<step>/<AB>[.<det>]``) and ``AbflowCommand`` (the command line without the
     submitting shell's PATH and pool_env, which a restarted controller compares to adopt the
     job: abflow.run.takeover).

2. The plugin submits the job; abflow's executor (snakemake_executor_plugin_abflow_htcondor)
   first asks the take-over policy whether a dead controller's job already does its work.
3. On the execute node ``abflow-pool-job`` reads ``$ABFLOW_JOB`` and runs the job
   (abflow.job.main.run_as_process), ignoring Snakemake's arguments: no Snakemake runs there.

A job's command line is built once per job (memoized here): the plugin asks for each resource
separately, and the command and the environment are two forms of the same words.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import sysconfig
from collections.abc import Callable, Mapping
from typing import Any

from abflow.job.command import POOL_JOB
from abflow.job.pool import JOB as JOB_VARIABLE
from abflow.model.config import Settings
from abflow.state import schedd
from abflow.upstream.htcondor_plugin import CLASSAD_PREFIX, ENVIRONMENT, JOB_WRAPPER
from abflow.upstream.snakemake import precomputed_signature

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
    """What a pool job's command runs with: the ``$DFO_*`` and ``$DFS_*`` variables of the
    submitting environment (the night's directories win), those ``pool_env`` names, and PATH
    (abflow's Python first, then the submitting PATH: the DFOS tools of the commands, on a
    filesystem shared at the same paths)."""
    environ = os.environ if environ is None else environ
    env = {k: v for k, v in environ.items() if k.startswith(("DFO_", "DFS_"))}
    env.update({k: environ[k] for k in settings.pool_env if k in environ})
    env.update(settings.variables)
    env["PATH"] = f"{os.path.dirname(sys.executable)}:{environ.get('PATH') or os.defpath}"
    return env


def encode(argv: list[str]) -> str:
    """The job's command line (the words after the entry point) as one word: JSON in base64
    (no quotes or spaces for HTCondor's environment and ClassAd strings to escape)."""
    return base64.b64encode(json.dumps(argv).encode()).decode()


def environment(argv: list[str]) -> str:
    """The plugin's ``environment`` resource of a pool job running ``argv`` (HTCondor's
    quoted environment syntax; ``$(ClusterId)`` is filled in by HTCondor at submission)."""
    return f'"{JOB_VARIABLE}={encode(argv)} {POOL_JOB}=$(ClusterId)"'


class PoolJobs:
    """The pool resources of a night's job rules (see the module)."""

    def __init__(self, rules: Any, program: str, extra_env: tuple[tuple[str, str], ...]) -> None:
        self.rules = rules  # abflow.run.rules.NightRules
        self.program = program
        self.extra_env = extra_env  # PATH and pool_env: the environment only, never compared
        self._words: dict[tuple[Any, ...], tuple[list[str], list[str]]] = {}

    def _command(self, rule: str, wildcards: Any, threads: int) -> tuple[list[str], list[str]]:
        """(the compared words, the words the job runs) of a job's command line, built once."""
        key = (rule, getattr(wildcards, "ab", None), getattr(wildcards, "det", None), threads)
        found = self._words.get(key)
        if found is None:
            command = self.rules.job_command(self.rules.job_of(rule, wildcards), threads)
            runs = (
                command.replace(env=(*command.env, *self.extra_env)) if self.extra_env else command
            )
            found = self._words[key] = (command.arguments(), runs.arguments())
        return found

    def _resource(self, rule: str, what: str, form: Callable[..., str]) -> Callable[..., str]:
        def resource(wildcards: Any, threads: int) -> str:
            return form(self._command(rule, wildcards, threads))

        resource.__name__ = f"{what}_{rule}"
        precomputed_signature(resource, of=resource)
        return resource

    def resources(self, rule: str) -> dict[str, Any]:
        """The resources that make ``rule``'s jobs pool jobs (see the module)."""

        def tag(wildcards: Any) -> str:
            return self.rules.job_of(rule, wildcards).name

        tag.__name__ = f"job_tag_{rule}"
        precomputed_signature(tag, of=tag)
        return {
            JOB_WRAPPER: self.program,
            f"{CLASSAD_PREFIX}{schedd.CLASSAD}": self.rules.settings.state_dir,
            f"{CLASSAD_PREFIX}{schedd.OWNER}": self.rules.owner,
            f"{CLASSAD_PREFIX}{schedd.JOB}": tag,
            f"{CLASSAD_PREFIX}{schedd.COMMAND}": self._resource(
                rule, "command", lambda words: encode(words[0])
            ),
            ENVIRONMENT: self._resource(rule, "environment", lambda words: environment(words[1])),
        }
