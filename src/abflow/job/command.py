"""The job contract, part 2: a job's command line, as a round trip.

Every job of a night (the workflow's ``process_ab``, ``process_ab_det``, ``process_qc`` and
download rules) is one :class:`JobCommand`, whose :meth:`JobCommand.arguments` are::

    STEP TARGET --config RUN_CONFIG --state-dir S --shell COMMAND
        [--env NAME VALUE ...] [--det N] [--parent AB ...] [--virtual VCAL PRODUCT ...]
        [--product PATH TAG ...] [--recipe R] [--raw-type T] [--mode M] [--date DATE]
        [--batch BATCH_ID] [--rerun-key GEN:CHECKSUM] [--dest FILE --staged FILE]
        [--progress F --total N]
        [--record R] [--benchmark B] --log L --threads N

STEP and TARGET name the job (abflow.state.layout.JobId: an AB, or for a download the file
below dfo.raw_dir or dfo.cal_dir). COMMAND is the step's shell command: the command template of
the run's configuration (RUN_CONFIG, written when the run started), filled with the job's
values. The ``--env`` pairs are the environment it runs with (the night's ``$DFO_*``
directories; on a pool also PATH and the variables of ``pool_env``); S is the state directory,
R and L the record and the log the job's rule declares. What only the Night knows comes on the
command line too: the ABs the job takes calibrations from, where its virtual calibrations are,
the products it must leave, its recipe, raw type, date and batch, and its rerun key.

The job needs nothing but what this line carries: it reads no configuration and parses no AB.
On this machine the workflow runs it in a thread of Snakemake (abflow.job.main.execute); on an
HTCondor execute node ``abflow-pool-job`` runs it from the job's ClassAd (abflow.job.pool), and
``python -m abflow.job ARGUMENTS`` runs one by hand.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence

from abflow.state.layout import JobId, Step

# set to the job's HTCondor ClusterId where the job runs on a pool (abflow.job.pool): its
# marker, record and failure note carry it, and a crashed controller's successor leaves the job
# alone (it adopts it) instead of ending it as an orphan
POOL_JOB = "ABFLOW_CLUSTER"


# the --env variables that name a configured directory (abflow.model.config.DFO_DIRS)
ROOT_VARIABLES = frozenset(
    {
        "DFO_AB_DIR",
        "DFO_MON_DIR",
        "DFO_JOB_DIR",
        "DFO_RAW_DIR",
        "DFO_CAL_DIR",
        "DFO_LOG_DIR",
        "DFS_PRODUCT",
        "DFO_CONFIG_DIR",
        "DFS_LOG",
    }
)


def pool_cluster() -> int | None:
    """The HTCondor job this process runs as (None: not a pool job)."""
    value = os.environ.get(POOL_JOB, "")
    return int(value) if value.isdigit() and int(value) > 0 else None


class _Refused(ValueError):
    """argparse's complaint, as a ValueError (a job reports it and exits 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _Refused(f"{message}; usage: {self.format_usage().strip()}")


def _rerun_key(value: str) -> str:
    generation, sep, _ = value.partition(":")
    if not sep or not generation.isdigit():
        raise argparse.ArgumentTypeError(f"expects GENERATION:CHECKSUM, got {value!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m abflow.job", description="Run one job of a night.")
    p.add_argument("step", choices=[s.value for s in Step])
    p.add_argument("target")
    p.add_argument("--config", required=True)
    p.add_argument("--state-dir", required=True)
    p.add_argument("--shell", required=True, help="the step's shell command")
    p.add_argument("--env", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    p.add_argument("--det", type=int)
    p.add_argument("--parent", dest="parents", action="append", default=[])
    p.add_argument("--virtual", nargs=2, action="append", default=[])
    p.add_argument("--product", dest="products", nargs=2, action="append", default=[])
    for name in (
        "--recipe",
        "--raw-type",
        "--mode",
        "--date",
        "--batch",
        "--dest",
        "--staged",
        "--progress",
        "--record",
        "--benchmark",
        "--log",
    ):
        p.add_argument(name, default="")
    p.add_argument("--rerun-key", type=_rerun_key, default="0:")
    p.add_argument("--total", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    return p


@dataclasses.dataclass(frozen=True)
class JobCommand:
    """A job and everything its command line carries; :meth:`arguments` and :meth:`parse`
    round-trip."""

    job: JobId
    config: str
    state_dir: str = ""
    shell: str = ""  # the step's shell command
    env: tuple[tuple[str, str], ...] = ()
    record: str = ""
    log: str = ""
    parents: tuple[str, ...] = ()
    virtual: tuple[tuple[str, str], ...] = ()
    products: tuple[tuple[str, str], ...] = ()
    recipe: str = ""
    raw_type: str = ""
    mode: str = ""
    date: str = ""
    batch: str = ""
    rerun_key: str = "0:"
    threads: int = 1
    dest: str = ""  # a download's file
    staged: str = ""  # where its command writes it (its run's staging directory)
    progress: str = ""
    total: int = 0
    benchmark: str = ""  # Snakemake's benchmark of the job, which the job writes itself

    def __post_init__(self) -> None:
        pairs = lambda values: tuple((str(a), str(b)) for a, b in values)  # noqa: E731
        object.__setattr__(self, "env", pairs(self.env))
        object.__setattr__(self, "virtual", pairs(self.virtual))
        object.__setattr__(self, "products", pairs(self.products))
        object.__setattr__(self, "parents", tuple(self.parents))

    def write_roots(self) -> tuple[str, ...]:
        """The directories the job may write in, symbolic links resolved: the state directory
        and the night's configured ``$DFO_*`` directories (its ``--env`` pairs)."""
        from abflow.state.fsutil import resolve_roots

        dirs = [value for name, value in self.env if name in ROOT_VARIABLES]
        return resolve_roots([self.state_dir, *dirs])

    def replace(self, **changes: object) -> JobCommand:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def arguments(self) -> list[str]:
        """The command line's words (what ``python -m abflow.job`` takes)."""
        words = [
            self.job.step.value,
            self.job.target,
            "--config",
            self.config,
            "--state-dir",
            self.state_dir,
            "--shell",
            self.shell,
        ]
        for name, value in self.env:
            words += ["--env", name, value]
        if self.job.det is not None:
            words += ["--det", str(self.job.det)]
        for parent in self.parents:
            words += ["--parent", parent]
        for vcal, product in self.virtual:
            words += ["--virtual", vcal, product]
        for path, tag in self.products:
            words += ["--product", path, tag]
        for option, value in (
            ("--recipe", self.recipe),
            ("--raw-type", self.raw_type),
            ("--mode", self.mode),
            ("--date", self.date),
            ("--batch", self.batch),
            ("--dest", self.dest),
            ("--staged", self.staged),
            ("--benchmark", self.benchmark),
            ("--record", self.record),
        ):
            words += [option, value] if value else []
        if not self.job.step.is_download and self.job.step is not Step.PROCESS_QC:
            words += ["--rerun-key", self.rerun_key]
        if self.progress:
            words += ["--progress", self.progress, "--total", str(self.total)]
        return [*words, "--log", self.log, "--threads", str(self.threads)]

    @classmethod
    def parse(cls, argv: Sequence[str]) -> JobCommand:
        """The job of a command line made by :meth:`arguments`; raises ValueError naming what
        is wrong."""
        ns = vars(_parser().parse_args(list(argv)))
        step = Step(ns.pop("step"))
        det = ns.pop("det")
        job = JobId(step, ns.pop("target"), det if step is Step.PROCESS_AB_DET else None)
        return cls(job, **ns)
