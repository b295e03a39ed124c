"""``abflow-pool-job``: a job of a night as an HTCondor pool starts it on an execute node.

How a rule becomes a pool job, in one place:

1. ``abflow.run.rules.NightRules.pool_resources`` gives each job rule the resources the htcondor
   executor plugin turns into the pool job: ``job_wrapper`` (this program, installed with abflow
   as a console script; its first line names abflow's Python, so it needs no PATH),
   ``environment`` (``ABFLOW_JOB``: the job's command line, abflow.job.command.JobCommand, as
   JSON in base64, which needs no quoting; ``ABFLOW_CLUSTER``: ``$(ClusterId)``, which HTCondor
   fills in) and the ClassAd attributes ``AbflowRun``, ``AbflowOwner``, ``AbflowJob`` and
   ``AbflowCommand`` (the same command: a restarted controller compares it, abflow.run.pool).
2. The plugin submits the job with this program as its executable. It passes Snakemake's own
   job arguments, which this program ignores: abflow's job needs no Snakemake on the execute
   node.
3. This program reads its job from the environment HTCondor gives it (reading the job ad
   instead, with the bindings' ClassAd parser, cost every job 50 ms of CPU more: 124 against
   75 ms per job, ``python bench/fanout.py`` job CPU; the budget is 100 ms).
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

JOB = "ABFLOW_JOB"  # the job's command line, in the job's environment


def encode(argv: list[str]) -> str:
    """The job's command line (the words after the entry point) as one word: JSON in base64
    (no quotes or spaces for HTCondor's environment and ClassAd strings to escape)."""
    return base64.b64encode(json.dumps(argv).encode()).decode()


def environment(argv: list[str]) -> str:
    """The plugin's ``environment`` resource of a pool job running ``argv`` (HTCondor's
    quoted environment syntax; ``$(ClusterId)`` is filled in by HTCondor at submission)."""
    return f'"{JOB}={encode(argv)} {POOL_JOB}=$(ClusterId)"'


def main(argv: list[str] | None = None) -> int:
    """Run the job of ``$ABFLOW_JOB`` (the arguments, Snakemake's, are not read)."""
    from abflow.job.main import run_as_process

    text = os.environ.get(JOB, "")
    if not text:
        print(f"abflow-pool-job: no ${JOB}: this program runs a night's job on an HTCondor "
              "execute node, as abflow's rules submit it", file=sys.stderr)  # fmt: skip
        return 2
    try:
        command = JobCommand.parse(json.loads(base64.b64decode(text)))
    except ValueError as exc:
        print(f"abflow-pool-job: ${JOB} is not a job's command line: {exc}", file=sys.stderr)
        return 2
    os.environ.setdefault("HOME", os.environ.get("_CONDOR_SCRATCH_DIR") or command.state_dir)
    return run_as_process(command)
