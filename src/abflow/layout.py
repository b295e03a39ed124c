"""The job contract, part 1: the step names, a job's identity, and where abflow keeps its state.

Every path under the state directory (``state_dir``, by default ``<dfo.job_dir>/abflow``) is
joined here and nowhere else; the workflow's rules take their wildcard patterns from here::

    records/<AB>.json                         an AB's completion record (process_ab, mef_join)
    records/process_ab_det/<AB>/<det>.json    a detector job's record
    records/process_qc/<AB>.json              an AB's QC record
    failed/...                                failure notes, named as the records
    failed/downloads/<file>.json              a download that failed (until it succeeds)
    logs/<rule>/<AB>.log                      job logs (process_ab_det: logs/.../<AB>/<det>.log)
    logs/download_raw/<file>.log, logs/download_mcal/<file>.log, logs/downloads.log
    benchmarks/<rule>/<AB>.tsv                Snakemake's per-job benchmarks
    benchmarks/<batch>.tsv                    the night's benchmark table (--report)
    work/<AB>, work/<step>/<AB>[/<det>]       working directories (the command's cwd)
    requests/<AB>.<key>.rerun                 rerun requests (subcascade, an edited AB)
    runs/<batch>.json                         the run lock of a date
    config/<checksum>.json                    a run's configuration, named on every job's command
    STOP                                      abflow stop's flag
    running/<step>/<AB>[.<det>].json          markers of running jobs
    downloads/<token>.progress                a run's download progress
    downloads/records/<file>.json             finished downloads
    downloads/<batch>.all-downloaded          FULL_RAWDOWNLOAD's flag
    condor/job-wrapper.sh                     how HTCondor starts a job

A job is ``(step, target, detector)``: the target is an AB name, or an archive file name for a
download. Its name, ``<step>/<target>`` or ``<step>/<target>.<det>``, names its running marker
and its HTCondor job (``AbflowJob``).
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class Step(enum.StrEnum):
    """What a job does."""

    PROCESS_AB = "process_ab"  # run an AB's recipe (commands.process_ab)
    PROCESS_AB_DET = "process_ab_det"  # one detector of a multi-detector AB
    MEF_JOIN = "mef_join"  # join the detector jobs of a multi-detector AB (its process_ab job)
    PROCESS_QC = "process_qc"  # the QC of a processed AB
    DOWNLOAD_RAW = "download_raw"  # fetch a raw file
    DOWNLOAD_MCAL = "download_mcal"  # fetch a REAL master calibration

    @property
    def rule(self) -> str:
        """The workflow rule that runs this step (a join is its AB's process_ab job)."""
        return "process_ab" if self is Step.MEF_JOIN else self.value

    @property
    def is_download(self) -> bool:
        """True for the download steps (their target is a file, not an AB)."""
        return self in (Step.DOWNLOAD_RAW, Step.DOWNLOAD_MCAL)


@dataclass(frozen=True, order=True)
class JobId:
    """One job: its step, its target (an AB, or a file for downloads) and its detector."""

    step: Step
    target: str
    det: int | None = None

    def __post_init__(self) -> None:
        if (self.step is Step.PROCESS_AB_DET) != (self.det is not None):
            raise ValueError(f"{self.step}: a detector is given exactly for process_ab_det")

    @property
    def name(self) -> str:
        """``<step>/<target>`` or ``<step>/<target>.<det>``."""
        return f"{self.step}/{self.target}" + (f".{self.det}" if self.det is not None else "")

    @property
    def ab(self) -> str:
        """The AB the job processes (for a download: its file)."""
        return self.target

    @classmethod
    def of_record(cls, record: Mapping[str, Any]) -> JobId:
        """The job a completion record (or failure note) of an AB step belongs to."""
        det = record.get("det")
        return cls(
            Step(str(record["step"])), str(record["ab"]), int(det) if det is not None else None
        )

    @classmethod
    def parse(cls, name: str) -> JobId:
        """The job of a name made by :attr:`name` (raises ValueError)."""
        step, sep, target = name.partition("/")
        if not sep or not target:
            raise ValueError(f"not a job name: {name!r}")
        kind = Step(step)
        if kind is Step.PROCESS_AB_DET:
            target, _, det = target.rpartition(".")
            if not det.isdigit():
                raise ValueError(f"not a detector job: {name!r}")
            return cls(kind, target, int(det))
        return cls(kind, target)


# per kind of file: (top directory, extension)
_KINDS = {
    "records": ("records", ".json"),
    "failed": ("failed", ".json"),
    "logs": ("logs", ".log"),
    "benchmarks": ("benchmarks", ".tsv"),
    "work": ("work", ""),
}


@dataclass(frozen=True)
class StateLayout:
    """The layout of one state directory."""

    root: str

    # ----- per job ----------------------------------------------------------------------
    def pattern(self, kind: str, step: Step | str) -> str:
        """Path pattern of one kind of file of a step's jobs, with ``{ab}``, ``{det}`` or
        ``{file}`` wildcards (what the rules declare): ``records``, ``failed``, ``logs``,
        ``benchmarks``, ``work``."""
        step = Step(step)
        top, ext = _KINDS[kind]
        if step.is_download:
            if kind == "records":
                return os.path.join(self.root, "downloads", "records", "{file}.json")
            if kind == "failed":
                return os.path.join(self.root, "failed", "downloads", "{file}.json")
            return os.path.join(self.root, top, step.rule, "{file}" + ext)
        name = "{ab}/{det}" if step is Step.PROCESS_AB_DET else "{ab}"
        if kind in ("records", "failed", "work") and step.rule == "process_ab":
            return os.path.join(self.root, top, name + ext)  # the AB's own: at the top
        sub = step.rule if kind in ("logs", "benchmarks") else step.value
        return os.path.join(self.root, top, sub, name + ext)

    def path(self, kind: str, job: JobId) -> str:
        """One kind of file of ``job`` (see pattern)."""
        return self.pattern(kind, job.step).format(ab=job.target, det=job.det, file=job.target)

    def record(self, job: JobId) -> str:
        """Completion record of ``job`` (written only when it succeeded)."""
        return self.path("records", job)

    def failure(self, job: JobId) -> str:
        """Failure note of ``job`` (its reason, log and last log lines)."""
        return self.path("failed", job)

    def log(self, job: JobId) -> str:
        """Log of ``job`` (the log its rule declares)."""
        return self.path("logs", job)

    def benchmark(self, job: JobId) -> str:
        """Snakemake's benchmark of ``job``."""
        return self.path("benchmarks", job)

    def work(self, job: JobId) -> str:
        """Working directory of ``job`` (its command's current directory)."""
        return self.path("work", job)

    def marker(self, job: JobId) -> str:
        """The marker ``job`` holds while its command runs."""
        return os.path.join(self.running_dir, job.name + ".json")

    # ----- the night and the run ----------------------------------------------------------
    @property
    def running_dir(self) -> str:
        """Markers of the jobs whose command runs."""
        return os.path.join(self.root, "running")

    @property
    def stop_flag(self) -> str:
        """The flag ``abflow stop`` writes."""
        return os.path.join(self.root, "STOP")

    def lock(self, batch: str) -> str:
        """The run lock of a date (``<MODE>_<DATE>``)."""
        return os.path.join(self.root, "runs", f"{batch}.json")

    def run_config(self, checksum: str) -> str:
        """A run's configuration (every directory resolved), named on its jobs' command line."""
        return os.path.join(self.root, "config", f"{checksum}.json")

    def request(self, ab: str, key: str) -> str:
        """A rerun request of ``ab`` (``key``: generation and AB checksum)."""
        return os.path.join(self.root, "requests", f"{ab}.{key}.rerun")

    @property
    def request_pattern(self) -> str:
        """Rerun requests, with ``{ab}`` and ``{key}``."""
        return self.request("{ab}", "{key}")

    def requests_of(self, ab: str) -> str:
        """A glob pattern of the rerun requests of ``ab``."""
        return os.path.join(self.root, "requests", f"{ab}.*")

    def benchmark_table(self, batch: str) -> str:
        """The night's benchmark table (for ``snakemake --report``)."""
        return os.path.join(self.root, "benchmarks", f"{batch}.tsv")

    def benchmark_table_log(self, batch: str) -> str:
        """The log of the rule that writes the benchmark table."""
        return os.path.join(self.root, "logs", f"benchmarks_{batch}.log")

    # ----- downloads --------------------------------------------------------------------
    def progress(self, token: str) -> str:
        """A run's download progress file (one line per finished download)."""
        return os.path.join(self.root, "downloads", f"{token}.progress")

    @property
    def progress_log(self) -> str:
        """The download progress lines of every run, with times."""
        return os.path.join(self.root, "logs", "downloads.log")

    @property
    def download_records_dir(self) -> str:
        """Records of finished downloads (apart from the AB jobs' records)."""
        return os.path.join(self.root, "downloads", "records")

    def downloads_done_flag(self, batch: str) -> str:
        """FULL_RAWDOWNLOAD: made once every download of the run is done."""
        return os.path.join(self.root, "downloads", f"{batch}.all-downloaded")

    def downloads_done_log(self, batch: str) -> str:
        """The log of the rule that makes the flag."""
        return os.path.join(self.root, "logs", "downloads", f"{batch}.log")

    # ----- HTCondor ---------------------------------------------------------------------
    @property
    def job_wrapper(self) -> str:
        """The script HTCondor starts every job of the night with."""
        return os.path.join(self.root, "condor", "job-wrapper.sh")
