"""``abflow-pool-job``: a job of a night as an HTCondor pool starts it on an execute node.

How a rule becomes a pool job, in one place:

1. ``abflow.run.rules.NightRules.pool_resources`` gives each job rule the resources the htcondor
   executor plugin turns into the pool job: ``job_wrapper`` (this program, installed with abflow
   as a console script; its first line names abflow's Python, so it needs no PATH) and the
   ClassAd attributes ``AbflowRun``, ``AbflowOwner``, ``AbflowJob`` and ``AbflowCommand``.
2. The plugin submits the job with this program as its executable. It passes Snakemake's own
   job arguments, which this program ignores: abflow's job needs no Snakemake on the execute
   node.
3. This program reads the job's ad (``$_CONDOR_JOB_AD``, parsed by the HTCondor bindings'
   ``classad2``): ``AbflowCommand`` is the job's command line (abflow.job.command.JobCommand,
   JSON in base64: the plugin writes a string attribute between quotes without escaping any,
   and base64 has none), ``ClusterId`` the pool job.
4. It runs the job (abflow.job.main.run_as_process) with the environment the command carries (the
   night's ``$DFO_*`` directories, PATH and the variables of ``pool_env``: the pool starts jobs
   with none) and HOME if the pool gave none. SIGTERM (``condor_rm``, ``abflow stop --now``)
   ends the AB's command, process group and all, and the job.

On this machine the same job runs in a thread of Snakemake instead (abflow.run.rules.
NightRules.run_job). The README's "What a job runs" draws both paths.
"""

from __future__ import annotations

import base64
import json
import os
import sys

from abflow.job.command import POOL_JOB, JobCommand

COMMAND = "AbflowCommand"  # the ClassAd attribute that carries the command line


def encode(argv: list[str]) -> str:
    """``AbflowCommand`` of a job: its command line (the words after the entry point)."""
    return base64.b64encode(json.dumps(argv).encode()).decode()


def from_job_ad(path: str) -> tuple[JobCommand, int]:
    """The job an HTCondor job ad carries, and its ClusterId. Raises ValueError."""
    import classad2

    with open(path, encoding="utf-8", errors="replace") as fh:
        ad = classad2.parseOne(fh.read())
    if COMMAND not in ad:
        raise ValueError(f"{path}: no {COMMAND} in the job ad: not a job of abflow's rules")
    argv = json.loads(base64.b64decode(str(ad[COMMAND])))
    return JobCommand.parse(argv), int(ad.get("ClusterId", 0))


def main(argv: list[str] | None = None) -> int:
    """Run the job of ``$_CONDOR_JOB_AD`` (the arguments, Snakemake's, are not read)."""
    from abflow.job.main import run_as_process

    path = os.environ.get("_CONDOR_JOB_AD", "")
    if not path:
        print("abflow-pool-job: no $_CONDOR_JOB_AD: this program runs a night's job on an "
              "HTCondor execute node", file=sys.stderr)  # fmt: skip
        return 2
    try:
        command, cluster = from_job_ad(path)
    except (OSError, ValueError) as exc:
        print(f"abflow-pool-job: {exc}", file=sys.stderr)
        return 2
    os.environ[POOL_JOB] = str(cluster)  # its marker, record and failure note say so
    os.environ.setdefault("HOME", os.environ.get("_CONDOR_SCRATCH_DIR") or command.state_dir)
    return run_as_process(command)
