"""The job contract, part 2: a job's command line, as a round trip.

Every job of a night (the workflow's ``process_ab``, ``process_ab_det``, ``process_qc`` and
download rules) runs one command::

    python -m abflow.job STEP TARGET --config RUN_CONFIG --state-dir S --run COMMAND
        [--env NAME VALUE ...] [--det N] [--parent AB ...] [--virtual VCAL PRODUCT ...]
        [--product PATH TAG ...] [--recipe R] [--raw-type T] [--mode M] [--date DATE]
        [--batch BATCH_ID] [--rerun-key GEN:CHECKSUM] [--dest FILE] [--progress F --total N]
        [--record R] [--benchmark B] --log L --threads N

STEP and TARGET name the job (abflow.state.layout.JobId: an AB, or for a download the file
below dfo.raw_dir or dfo.cal_dir). COMMAND is the step's command template of the run's
configuration (RUN_CONFIG, written once when the run started by
abflow.model.config.write_run_config), filled with the job's values, and the ``--env`` pairs are
the night's ``$DFO_*`` directories it runs with; S is the state directory, R and L the record
and the log the job's rule declares. What only the Night knows comes on the command line too:
the ABs the job takes calibrations from, where its virtual calibrations are, the products it
must leave, its recipe, raw type, date and batch, and its rerun key.

The job needs nothing but what this line carries: it reads no configuration and parses no AB.
On this machine the workflow runs it in a thread of Snakemake (abflow.job.main.execute of the
JobCommand, RULES.run_job); on an HTCondor execute node it runs as this command line, which the
job's ClassAd carries (``--job-ad``), starting in a few milliseconds of CPU beside the
interpreter's own start.
"""

from __future__ import annotations

import os
import sys

from abflow.state.layout import JobId, Step

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

USAGE = (
    "python -m abflow.job STEP TARGET --config RUN_CONFIG --state-dir DIR --run COMMAND "
    "[options]  (see abflow.job.command)"
)
# How the workflow starts a job: the file of ``python -m abflow.job`` run directly, which is the
# same program without runpy (whose imports cost every job 12 ms of CPU, bench/fanout.py), and
# with ``-S``: no site module (4 ms more); the file puts its own package on sys.path instead.
ENTRY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "__main__.py")
# option -> (attribute, number of values, repeated)
OPTIONS: dict[str, tuple[str, int, bool]] = {
    "--config": ("config", 1, False),
    "--state-dir": ("state_dir", 1, False),
    "--run": ("run", 1, False),
    "--env": ("env", 2, True),
    "--mode": ("mode", 1, False),
    "--det": ("det", 1, False),
    "--parent": ("parents", 1, True),
    "--virtual": ("virtual", 2, True),
    "--product": ("products", 2, True),
    "--recipe": ("recipe", 1, False),
    "--raw-type": ("raw_type", 1, False),
    "--date": ("date", 1, False),
    "--batch": ("batch", 1, False),
    "--rerun-key": ("rerun_key", 1, False),
    "--dest": ("dest", 1, False),
    "--progress": ("progress", 1, False),
    "--total": ("total", 1, False),
    "--record": ("record", 1, False),
    "--benchmark": ("benchmark", 1, False),
    "--log": ("log", 1, False),
    "--threads": ("threads", 1, False),
}
INTEGERS = ("det", "total", "threads")
# set to the job's HTCondor ClusterId where the job runs on a pool (python -m abflow.job
# --job-ad): its marker, record and failure note carry it, and a crashed controller's successor
# leaves the job alone (it adopts it) instead of ending it as an orphan
POOL_JOB = "ABFLOW_CLUSTER"


def pool_cluster() -> int | None:
    """The HTCondor job this process runs as (None: not a pool job)."""
    value = os.environ.get(POOL_JOB, "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def compile_modules() -> None:
    """Byte-compile the modules a job imports (where they are writable), once per run: where
    Python writes no bytecode itself (PYTHONDONTWRITEBYTECODE), every job would compile them
    again, which doubles its CPU (bench/fanout.py)."""
    import compileall

    package = os.path.dirname(os.path.dirname(ENTRY))  # abflow/
    compileall.compile_file(os.path.join(package, "__init__.py"), quiet=2)
    for sub in ("job", "state"):
        compileall.compile_dir(os.path.join(package, sub), maxlevels=0, quiet=2)


# what a JobCommand holds, in the order of its constructor's arguments
FIELDS = ("job", "config", "state_dir", "run", "env", "record", "log", "parents", "virtual",
          "products", "recipe", "raw_type", "mode", "date", "batch", "rerun_key", "threads",
          "dest", "progress", "total", "benchmark")  # fmt: skip


class JobCommand:
    """A job and everything its command line carries; ``argv()`` and ``parse()`` round-trip.

    (A plain class, not a dataclass: a job parses its own command line at its start.)
    """

    __slots__ = FIELDS

    def __init__(
        self,
        job: JobId,
        config: str,
        state_dir: str = "",
        run: str = "",
        env: Sequence[tuple[str, str]] = (),
        record: str = "",
        log: str = "",
        parents: Sequence[str] = (),
        virtual: Sequence[tuple[str, str]] = (),
        products: Sequence[tuple[str, str]] = (),
        recipe: str = "",
        raw_type: str = "",
        mode: str = "",
        date: str = "",
        batch: str = "",
        rerun_key: str = "0:",
        threads: int = 1,
        dest: str = "",  # a download's file
        progress: str = "",
        total: int = 0,
        benchmark: str = "",  # Snakemake's benchmark of the job, which the job writes itself
    ) -> None:
        self.job, self.config, self.state_dir, self.run = job, config, state_dir, run
        self.env = tuple((str(k), str(v)) for k, v in env)
        self.record, self.log = record, log
        self.parents = tuple(parents)
        self.virtual = tuple((str(v), str(p)) for v, p in virtual)
        self.products = tuple((str(p), str(t)) for p, t in products)
        self.recipe, self.raw_type, self.mode = recipe, raw_type, mode
        self.date, self.batch = date, batch
        self.rerun_key, self.threads = rerun_key, int(threads)
        self.dest, self.progress, self.total = dest, progress, int(total)
        self.benchmark = benchmark

    def replace(self, **changes: object) -> JobCommand:
        """A copy with some fields changed."""
        values = {name: getattr(self, name) for name in FIELDS}
        values.update(changes)
        return JobCommand(**values)  # type: ignore[arg-type]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobCommand) and all(
            getattr(self, n) == getattr(other, n) for n in FIELDS
        )

    def __repr__(self) -> str:
        return f"<JobCommand {self.job.name}>"

    def argv(self, with_paths: bool = True) -> list[str]:
        """The command line (``with_paths=False``: without --record, --log and --threads, which
        a rule appends from its own declarations)."""
        words = [sys.executable, "-S", ENTRY, self.job.step.value, self.job.target,
                 "--config", self.config, "--state-dir", self.state_dir,
                 "--run", self.run]  # fmt: skip
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
        for option, value in (("--recipe", self.recipe), ("--raw-type", self.raw_type),
                              ("--mode", self.mode), ("--date", self.date),
                              ("--batch", self.batch)):  # fmt: skip
            words += [option, value] if value else []
        if not self.job.step.is_download and self.job.step is not Step.PROCESS_QC:
            words += ["--rerun-key", self.rerun_key]
        if self.dest:
            words += ["--dest", self.dest]
        if self.progress:
            words += ["--progress", self.progress, "--total", str(self.total)]
        if self.benchmark:
            words += ["--benchmark", self.benchmark]
        if with_paths:
            words += ["--record", self.record] if self.record else []
            words += ["--log", self.log, "--threads", str(self.threads)]
        return words

    @classmethod
    def parse(cls, argv: Sequence[str]) -> JobCommand:
        """The job of a command line made by argv() (its words after the entry point,
        ``-m abflow.job`` or the module's file); raises ValueError naming what is wrong."""
        positional, values = _split(list(argv))
        if len(positional) != 2:
            raise ValueError(f"expected STEP and TARGET, got {positional!r}; usage: {USAGE}")
        for required in ("config", "state_dir", "run"):
            if required not in values:
                option = "--" + required.replace("_", "-")
                raise ValueError(f"{option} is required; usage: {USAGE}")
        for name in INTEGERS:
            if name in values and not str(values[name]).isdigit():
                raise ValueError(f"--{name} expects a number, got {values[name]!r}")
            if name in values:
                values[name] = int(values[name])  # type: ignore[arg-type]
        generation, sep, _ = str(values.get("rerun_key", "0:")).partition(":")
        if not sep or not generation.isdigit():
            raise ValueError(
                f"--rerun-key expects GENERATION:CHECKSUM, got {values['rerun_key']!r}"
            )
        try:
            step = Step(positional[0])
        except ValueError:
            raise ValueError(f"unknown step {positional[0]!r}: one of "
                             f"{', '.join(s.value for s in Step)}") from None  # fmt: skip
        det = values.pop("det", None) if step is Step.PROCESS_AB_DET else None
        values.pop("det", None)
        return cls(JobId(step, positional[1], det), **values)  # type: ignore[arg-type]

    @classmethod
    def from_job_ad(cls, path: str) -> tuple[JobCommand, int]:
        """The job an HTCondor job ad carries (its AbflowCommand: the command line, JSON in
        base64, set by the workflow's rules; see abflow.run.condor), and its ClusterId."""
        import base64
        import json

        argv, cluster = None, 0
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                name, _, value = line.partition(" = ")
                if name.strip() == "AbflowCommand":
                    argv = json.loads(base64.b64decode(value.strip().strip('"')))
                elif name.strip() == "ClusterId" and value.strip().isdigit():
                    cluster = int(value.strip())
        if argv is None:
            raise ValueError(f"{path}: no AbflowCommand in the job ad")
        return cls.parse(argv[argv.index(ENTRY) + 1 :]), cluster  # after the entry point


def _split(argv: list[str]) -> tuple[list[str], dict[str, object]]:
    """Positional words, and the options' values by attribute (lists for repeated ones)."""
    positional: list[str] = []
    values: dict[str, object] = {}
    i = 0
    while i < len(argv):
        word = argv[i]
        if not word.startswith("--"):
            positional.append(word)
            i += 1
            continue
        if word not in OPTIONS:
            raise ValueError(f"unknown option {word}; usage: {USAGE}")
        name, count, repeated = OPTIONS[word]
        given = argv[i + 1 : i + 1 + count]
        if len(given) != count:
            raise ValueError(f"{word} expects {count} value{'s' if count > 1 else ''}")
        value = given[0] if count == 1 else tuple(given)
        if repeated:
            values.setdefault(name, []).append(value)  # type: ignore[union-attr]
        else:
            values[name] = value
        i += 1 + count
    return positional, values
