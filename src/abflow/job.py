"""The job contract, part 2: a job's command line, and what a job runs.

Every job of a night (the workflow's ``process_ab``, ``process_ab_det``, ``process_qc`` and
download rules) runs one command::

    python -m abflow.job STEP TARGET --config RUN_CONFIG --record R --log L [--det N]
        [--parent AB ...] [--virtual VCAL=PRODUCT ...] [--rerun-key GEN:CHECKSUM]
        [--ab-date DATE] [--threads N] [--progress FILE --total N]

STEP and TARGET name the job (abflow.layout.JobId: an AB, or for a download the file below
dfo.raw_dir or dfo.cal_dir); RUN_CONFIG is the run's configuration, written once when the run
started (abflow.config.write_run_config); R and L are the record and the log its rule declares.
What only the Night knows comes on the command line too: the ABs the job takes calibrations
from, where its virtual calibrations are, its rerun key and, in a run of several dates, its
date. The job then needs nothing but this line, its AB file and the run configuration: it
starts in well under 50 ms of CPU (no Snakemake, no schema, no YAML), and the same line runs it
under Snakemake's local executor and, directly, on an HTCondor execute node.
"""

from __future__ import annotations

import argparse
import base64
import glob
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from abflow.layout import JobId, Step

if TYPE_CHECKING:
    from abflow.config import Settings


@dataclass(frozen=True)
class JobCommand:
    """A job and everything its command line carries; ``argv()`` and ``parse()`` round-trip."""

    job: JobId
    config: str
    record: str = ""
    log: str = ""
    parents: tuple[str, ...] = ()
    virtual: tuple[tuple[str, str], ...] = ()
    rerun_key: str = "0:"
    ab_date: str = ""
    threads: int = 1
    progress: str = ""
    total: int = 0
    benchmark: str = ""  # written by the job itself where no Snakemake runs it (on a pool)

    def argv(self, with_paths: bool = True) -> list[str]:
        """The command line (``with_paths=False``: without --record, --log and --threads, which
        a rule appends from its own declarations)."""
        words = [sys.executable, "-m", "abflow.job", self.job.step.value, self.job.target,
                 "--config", self.config]  # fmt: skip
        if self.job.det is not None:
            words += ["--det", str(self.job.det)]
        for parent in self.parents:
            words += ["--parent", parent]
        for vcal, product in self.virtual:
            words += ["--virtual", f"{vcal}={product}"]
        if not self.job.step.is_download and self.job.step is not Step.PROCESS_QC:
            words += ["--rerun-key", self.rerun_key]
        if self.ab_date:
            words += ["--ab-date", self.ab_date]
        if self.progress:
            words += ["--progress", self.progress, "--total", str(self.total)]
        if with_paths:
            words += ["--record", self.record] if self.record else []
            words += ["--benchmark", self.benchmark] if self.benchmark else []
            words += ["--log", self.log, "--threads", str(self.threads)]
        return words

    @classmethod
    def parse(cls, argv: Sequence[str]) -> JobCommand:
        """The job of a command line made by argv() (its arguments after ``-m abflow.job``)."""
        a = _parser().parse_args(list(argv))
        det = a.det if a.step == Step.PROCESS_AB_DET.value else None
        virtual = tuple(tuple(v.split("=", 1)) for v in a.virtual or ())
        return cls(
            JobId(Step(a.step), a.target, det), a.config, a.record, a.log,
            tuple(a.parent or ()), virtual, a.rerun_key, a.ab_date or "", a.threads,
            a.progress or "", a.total, a.benchmark or "",
        )  # fmt: skip

    @classmethod
    def from_job_ad(cls, path: str) -> JobCommand:
        """The job an HTCondor job ad carries (its AbflowCommand: the command line, JSON in
        base64, set by the workflow's rules; see abflow.condor)."""
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                name, _, value = line.partition(" = ")
                if name.strip() == "AbflowCommand":
                    argv = json.loads(base64.b64decode(value.strip().strip('"')))
                    return cls.parse(argv[2:])  # after "-m abflow.job"
        raise ValueError(f"{path}: no AbflowCommand in the job ad")


def _rerun_key(value: str) -> str:
    generation, sep, _ = value.partition(":")
    if not sep or not generation.isdigit():
        raise argparse.ArgumentTypeError(f"expected GENERATION:CHECKSUM, got {value!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m abflow.job", description=__doc__.split("\n")[0])
    p.add_argument("step", choices=[s.value for s in Step])
    p.add_argument("target", help="the AB (or, for a download, the file below its directory)")
    p.add_argument("--config", required=True, help="the run configuration file")
    p.add_argument("--record", default="", help="completion record (the rule's output)")
    p.add_argument("--log", default="", help="job log (the rule's log)")
    p.add_argument("--det", type=int, help="detector (process_ab_det)")
    p.add_argument("--parent", action="append", help="an AB it takes calibrations from")
    p.add_argument("--virtual", action="append", metavar="VCAL=PRODUCT")
    p.add_argument("--rerun-key", default="0:", type=_rerun_key, help="GENERATION:CHECKSUM")
    p.add_argument("--ab-date", help="the AB's date, in a run of several dates")
    p.add_argument("--threads", type=int, default=1, help="cores given to the job")
    p.add_argument("--progress", help="the run's download progress file (downloads)")
    p.add_argument("--total", type=int, default=0, help="downloads planned in the run")
    p.add_argument("--benchmark", help="write Snakemake's benchmark of the job here")
    return p


def run(command: JobCommand) -> int:
    """Run the job; its exit status (a failure is explained on stderr and in its log)."""
    from abflow.config import ConfigError, read_run_config

    try:
        settings = read_run_config(command.config)
    except ConfigError as exc:
        print(f"abflow job {command.job.name}: {exc}", file=sys.stderr)
        return 2
    if command.ab_date:  # one date of a multi-date run
        settings = settings.for_date(command.ab_date)
    if command.job.step.is_download:
        return _download(command, settings)
    return _process(command, settings)


def _process(command: JobCommand, settings: Settings) -> int:
    """An AB step: its command through abflow.runner, then its rerun requests served."""
    from abflow.ab import read_ab
    from abflow.night import path_policy
    from abflow.runner import StepFailed, ab_step, run_step

    job = command.job
    ab, problems = read_ab(settings.ab_file(job.target), settings.variables, path_policy(settings))
    if problems or ab is None:
        print("invalid AB:\n" + "\n".join(f"  {p}" for p in problems), file=sys.stderr)
        return 1
    step = ab_step(settings, ab, job, command.parents, dict(command.virtual),
                   command.record, command.log, command.config)  # fmt: skip
    if job.step is not Step.PROCESS_QC:
        generation, _, digest = command.rerun_key.partition(":")
        step.info = {**step.info, "generation": int(generation), "ab_digest": digest}
    try:
        run_step(step, threads=command.threads)
    except StepFailed as exc:
        print(exc, file=sys.stderr)
        return 1
    if job.step in (Step.PROCESS_AB, Step.MEF_JOIN):  # the AB's rerun requests were served
        for request in glob.glob(settings.layout.requests_of(ab.name)):
            os.unlink(request)
    return 0


def _download(command: JobCommand, settings: Settings) -> int:
    """A download step: commands.download for one file (abflow.download.run_download)."""
    from abflow.download import FetchError, run_download

    root = settings.dfo["raw_dir" if command.job.step is Step.DOWNLOAD_RAW else "cal_dir"]
    try:
        run_download(
            settings, os.path.join(root, command.job.target), command.log, command.progress,
            command.total, echo=lambda line: print(line, file=sys.stderr, flush=True),
            config=command.config,
        )  # fmt: skip
    except FetchError as exc:
        print(f"abflow: {exc}", file=sys.stderr)
        return 1
    return 0


BENCHMARK_HEADER = (
    "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time"
)


def write_benchmark(path: str, seconds: float) -> None:
    """Snakemake's benchmark of a job that no Snakemake ran (its command's resource usage)."""
    import resource

    from abflow.fsutil import atomic_write_text

    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    h, rem = divmod(int(seconds), 3600)
    values = [
        f"{seconds:.4f}", f"{h}:{rem // 60:02d}:{rem % 60:02d}", f"{use.ru_maxrss / 1024:.2f}",
        "-", "-", "-", f"{use.ru_inblock * 512 / 2**20:.2f}",
        f"{use.ru_oublock * 512 / 2**20:.2f}", "-", f"{use.ru_utime + use.ru_stime:.2f}",
    ]  # fmt: skip
    atomic_write_text(path, BENCHMARK_HEADER + "\n" + "\t".join(values) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m abflow.job``: run one job of a night (``--job-ad FILE``: the one an HTCondor
    job ad carries)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 2 and args[0] == "--job-ad":
        command = JobCommand.from_job_ad(args[1])
    else:
        command = JobCommand.parse(args)

    def terminate(signum: int, _frame: object) -> None:  # Snakemake, HTCondor or abflow ends it
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    t0 = time.monotonic()
    status = run(command)
    if status == 0 and command.benchmark:
        write_benchmark(command.benchmark, time.monotonic() - t0)
    return status


if __name__ == "__main__":
    sys.exit(main())
