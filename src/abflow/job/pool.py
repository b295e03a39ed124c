"""``abflow-pool-job``: a job of a night as an HTCondor pool starts it on an execute node.

How a rule becomes a pool job is told in abflow.run.pool_job; this is the program the pool
starts (the plugin's ``job_wrapper``). It ignores Snakemake's job arguments (no Snakemake runs
on the execute node), reads its job from the environment HTCondor gives it (``$ABFLOW_JOB``:
the job's command line, abflow.job.command.JobCommand, as JSON in base64; reading the job ad
instead, with the bindings' ClassAd parser, cost every job 50 ms of CPU more: README,
Benchmarks), and runs it (abflow.job.main.run_as_process) with the environment the command
carries (the night's ``$DFO_*`` directories, PATH and the variables of ``pool_env``: the pool
starts jobs with none) and HOME if the pool gave none. SIGTERM (``condor_rm``, ``abflow stop
--now``) ends the AB's command, process group and all, and the job. It stays light: the
modules a job needs, nothing else.

On this machine the same job runs in a thread of Snakemake instead (abflow.run.rules.
NightRules.run_job). The README's "What a job runs" draws both paths.
"""

from __future__ import annotations

import base64
import json
import os
import sys

from abflow.job.command import JobCommand

JOB = "ABFLOW_JOB"  # the job's command line, in the job's environment (abflow.run.pool_job)


def main(argv: list[str] | None = None) -> int:
    """Run the job of ``$ABFLOW_JOB`` (the arguments, Snakemake's, are not read)."""
    from abflow.job.main import run_as_process

    text = os.environ.get(JOB, "")
    if not text:
        print(
            f"abflow-pool-job: no ${JOB}: this program runs a night's job on an HTCondor "
            "execute node, as abflow's rules submit it",
            file=sys.stderr,
        )
        return 2
    try:
        command = JobCommand.parse(json.loads(base64.b64decode(text)))
    except ValueError as exc:
        print(f"abflow-pool-job: ${JOB} is not a job's command line: {exc}", file=sys.stderr)
        return 2
    os.environ.setdefault("HOME", os.environ.get("_CONDOR_SCRATCH_DIR") or command.state_dir)
    return run_as_process(command)
