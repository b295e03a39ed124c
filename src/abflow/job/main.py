"""What a job of a night does, given its command line (abflow.job.command): run the step, an
AB's command (abflow.job.runner) or a download (abflow.job.download).

:func:`execute` is the job. The workflow calls it in a thread of the Snakemake process for jobs
that run on this machine; on an HTCondor execute node ``abflow-pool-job`` (abflow.job.pool)
runs it as a process of its own, and ``python -m abflow.job`` (:func:`main`) runs one by hand.
A job process imports no schema, no YAML and no Snakemake (bench/fanout.py measures the CPU it
costs beside its command).
"""

from __future__ import annotations

import os
import sys

from abflow.job.command import JobCommand
from abflow.state.layout import StateLayout, Step

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from abflow.job.runner import StepRun


def ab_step(command: JobCommand) -> StepRun:
    """The :class:`abflow.job.runner.StepRun` of an AB job: its command, its paths (the rule's
    record and log, the layout's working directory and failure note), its environment and what
    its record says."""
    from abflow.job.runner import INPUTS_FILE, RESULTS_FILE, StepRun

    job, layout = command.job, StateLayout(command.state_dir)
    workdir = layout.work(job)
    env = dict(command.env)
    env.update(
        ABFLOW_AB=job.target,
        ABFLOW_WORKDIR=workdir,
        ABFLOW_CONFIG=command.config,
        ABFLOW_INPUTS=os.path.join(workdir, INPUTS_FILE),
        ABFLOW_RESULTS=os.path.join(workdir, RESULTS_FILE),
    )
    info: dict[str, object] = {
        "batch": command.batch,
        "date": command.date,
        "mode": command.mode,
        "recipe": command.recipe,
        "raw_type": command.raw_type,
        "parents": list(command.parents),
    }
    if job.det is not None:
        info["det"] = job.det
        env["ABFLOW_DET"] = str(job.det)
    if job.step is not Step.PROCESS_QC:
        generation, _, digest = command.rerun_key.partition(":")
        info.update(generation=int(generation), ab_digest=digest)
    return StepRun(
        ab=job.target,
        step=job.step.value,
        command=command.shell,
        workdir=workdir,
        log_path=command.log or layout.log(job),
        record_path=command.record or layout.record(job),
        failed_path=layout.failure(job),
        env=env,
        products=command.products,
        check_products=bool(command.products) and job.step is not Step.PROCESS_AB_DET,
        info=info,
        roots=command.write_roots(),
        files={INPUTS_FILE: {"ab": job.target, "virtual": dict(command.virtual)}},
        values={"det": job.det} if job.det is not None else {},
        state_dir=command.state_dir,
        benchmark_path=command.benchmark,
    )


class JobFailed(RuntimeError):
    """The job failed; the message says why (its log and failure note say more)."""


def execute(command: JobCommand) -> None:
    """Run the job; raise JobFailed if it failed (or was interrupted)."""
    if command.job.step.is_download:
        from abflow.job.download import DownloadFailed, run_download

        try:
            run_download(command)  # the console shows the run's progress (views.console)
        except DownloadFailed as exc:
            raise JobFailed(str(exc)) from None
        return
    from abflow.job.runner import StepFailed, run_step

    try:
        run_step(ab_step(command), threads=command.threads)
    except StepFailed as exc:
        raise JobFailed(str(exc)) from None


def run_and_report(command: JobCommand) -> int:
    """Run the job as a command does: its exit status (a failure explained on stderr)."""
    try:
        execute(command)
    except JobFailed as exc:
        print(f"abflow: {exc}", file=sys.stderr)
        return 1
    return 0


def run_as_process(command: JobCommand) -> int:
    """Run the job as this process's only work: SIGTERM (from Snakemake, HTCondor or abflow)
    ends its command, group and all, and the job; returns the exit status."""
    import signal

    def terminate(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    return run_and_report(command)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m abflow.job ARGUMENTS``: run one job of a night."""
    try:
        command = JobCommand.parse(list(sys.argv[1:] if argv is None else argv))
    except ValueError as exc:
        print(f"python -m abflow.job: {exc}", file=sys.stderr)
        return 2
    return run_as_process(command)
