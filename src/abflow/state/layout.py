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
    logs/request_rerun/<AB>.<key>.log         what wrote each
    runs/<batch>.json (+ .guard)              the run lock of a date (and its flock guard)
    runs/<batch>.history.json                 every run of a date: start, end, who (timeline)
    config/<checksum>.json                    a run's configuration, named on every job's command
    stop/<batch>.json                         abflow stop's flag of a date
    running/<step>/<AB>[.<det>].<holder>.json markers of running jobs (holder: run or cluster)
    retries/<step>/<AB>[.<det>].json          a pool job's memory retries (raised requests)
    downloads/<token>.progress                a run's download progress
    downloads/records/<file>.json             finished downloads
    downloads/<batch>.all-downloaded          FULL_RAWDOWNLOAD's flag
    downloads/cleaned/<file>                  a raw file CAL_CLEANUP removed (a job file's
                                              rawDown does not fetch it again)
    logs/night/<batch>.log                    the console of a night that outlives its terminal
    runs/<batch>.submit.json                  how abflow submit handed the night over
    condor/controller-<batch>.out, .events    its controller job's output and event log

A job is ``(step, target, detector)``: the target is an AB name, or an archive file name for a
download. Its name, ``<step>/<target>`` or ``<step>/<target>.<det>``, names its running marker
and its HTCondor job (``AbflowJob``).
"""

from __future__ import annotations

import enum
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping


class Step(enum.StrEnum):
    """What a job does. A ``str`` (its name); ``Step(name)`` gives the step or raises
    ValueError."""

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


class JobId(tuple):
    """One job: its step, its target (an AB, or a file for downloads) and its detector.

    An immutable ``(step, target, det)`` tuple, comparable and hashable."""

    __slots__ = ()

    def __new__(cls, step: Step | str, target: str, det: int | None = None) -> JobId:
        step = Step(step)
        if (step is Step.PROCESS_AB_DET) != (det is not None):
            raise ValueError(f"{step}: a detector is given exactly for process_ab_det")
        return super().__new__(cls, (step, target, det))

    def __getnewargs__(self) -> tuple[Step, str, int | None]:
        return tuple(self)  # type: ignore[return-value]

    @property
    def step(self) -> Step:
        """What the job does."""
        return self[0]  # type: ignore[no-any-return]

    @property
    def target(self) -> str:
        """The AB it processes, or for a download the file."""
        return self[1]  # type: ignore[no-any-return]

    @property
    def det(self) -> int | None:
        """The detector of a process_ab_det job, else None."""
        return self[2]  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"JobId({self.step.value!r}, {self.target!r}, {self.det!r})"

    @property
    def name(self) -> str:
        """``<step>/<target>`` or ``<step>/<target>.<det>``."""
        return f"{self.step}/{self.target}" + (f".{self.det}" if self.det is not None else "")

    @property
    def ab(self) -> str:
        """The AB the job processes (for a download: its file)."""
        return self.target

    @classmethod
    def of_record(cls, record: Mapping[str, object]) -> JobId:
        """The job a completion record (or failure note) of an AB step belongs to."""
        det = record.get("det")
        return cls(
            Step(str(record["step"])), str(record["ab"]), int(det) if det is not None else None
        )  # type: ignore[call-overload]

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


class StateLayout:
    """The layout of one state directory."""

    __slots__ = ("_patterns", "root")

    def __init__(self, root: str) -> None:
        self.root = root
        self._patterns: dict[tuple[str, str], str] = {}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StateLayout) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    def __repr__(self) -> str:
        return f"StateLayout({self.root!r})"

    # ----- per job ----------------------------------------------------------------------
    def pattern(self, kind: str, step: Step | str) -> str:
        """Path pattern of one kind of file of a step's jobs, with ``{ab}``, ``{det}`` or
        ``{file}`` wildcards (what the rules declare): ``records``, ``failed``, ``logs``,
        ``benchmarks``, ``work``."""
        known = self._patterns.get((kind, step))
        if known is None:
            known = self._patterns[(kind, step)] = self._pattern(kind, Step(step))
        return known

    def _pattern(self, kind: str, step: Step) -> str:
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

    def succeeded(self, job: JobId) -> bool:
        """True if ``job`` succeeded: its completion record is there, readable, its own AB's
        and SUCCESSFUL."""
        from abflow.state.fsutil import read_json_object

        record = read_json_object(self.record(job))
        return (
            record is not None
            and record.get("status") == "SUCCESSFUL"
            and record.get("ab") == job.target
        )

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

    def marker(self, job: JobId, holder: str = "") -> str:
        """The marker ``job`` holds while its command runs; ``holder`` (the owner id of the run
        it belongs to, or its HTCondor cluster) keeps two nights' markers of the same job
        apart (two nights may download the same file at once)."""
        name = f"{job.name}.{holder.replace(':', '_')}" if holder else job.name
        return os.path.join(self.running_dir, name + ".json")

    def retries(self, job: JobId) -> str:
        """What the pool did to ``job`` beyond running it once: its memory retries."""
        return os.path.join(self.root, "retries", job.name + ".json")

    # ----- the night and the run ----------------------------------------------------------
    @property
    def records_dir(self) -> str:
        """Where the completion records of the AB and QC jobs are (below it, by step)."""
        return os.path.join(self.root, "records")

    @property
    def failed_dir(self) -> str:
        """Where the failure notes are (downloads' included)."""
        return os.path.join(self.root, "failed")

    @property
    def running_dir(self) -> str:
        """Markers of the jobs whose command runs."""
        return os.path.join(self.root, "running")

    def stop_flag(self, batch: str) -> str:
        """The flag ``abflow stop`` writes for a date (``<MODE>_<DATE>``): the run holding it
        starts no new job; no other night's run sees it."""
        return os.path.join(self.root, "stop", f"{batch}.json")

    @property
    def runs_dir(self) -> str:
        """Where the runs of the dates are noted: their locks, histories, submissions."""
        return os.path.join(self.root, "runs")

    def lock(self, batch: str) -> str:
        """The run lock of a date (``<MODE>_<DATE>``)."""
        return os.path.join(self.runs_dir, f"{batch}.json")

    def run_history(self, batch: str) -> str:
        """Every run of a date (start, end, pid, host, executor), oldest first."""
        return os.path.join(self.root, "runs", f"{batch}.history.json")

    def run_config(self, checksum: str) -> str:
        """A run's configuration (every directory resolved), named on its jobs' command line."""
        return os.path.join(self.root, "config", f"{checksum}.json")

    def request(self, ab: str, key: str) -> str:
        """A rerun request of ``ab`` (``key``: generation and AB checksum)."""
        return os.path.join(self.root, "requests", f"{ab}.{key}.rerun")

    def request_log(self, ab: str, key: str) -> str:
        """The log of the job that wrote a rerun request."""
        return os.path.join(self.root, "logs", "request_rerun", f"{ab}.{key}.log")

    def requests_of(self, ab: str) -> list[str]:
        """The rerun requests of ``ab`` that exist."""
        directory = os.path.join(self.root, "requests")
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return []
        prefix, suffix = f"{ab}.", ".rerun"
        return sorted(
            os.path.join(directory, n)
            for n in names
            if n.startswith(prefix)
            and n.endswith(suffix)
            and "." not in n[len(prefix) : -len(suffix)]  # a key has no dot: not another AB's
        )

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

    def cleaned(self, file: str) -> str:
        """Made when CAL_CLEANUP removes the raw file ``file`` (relative to dfo.raw_dir, as a
        download job names it): its ABs are done, so a job file's rawDown skips it."""
        return os.path.join(self.root, "downloads", "cleaned", file)

    def downloads_done_flag(self, batch: str) -> str:
        """FULL_RAWDOWNLOAD: made once every download of the run is done."""
        return os.path.join(self.root, "downloads", f"{batch}.all-downloaded")

    def downloads_done_log(self, batch: str) -> str:
        """The log of the rule that makes the flag."""
        return os.path.join(self.root, "logs", "downloads", f"{batch}.log")

    # ----- a night that outlives its terminal --------------------------------------------
    def console_log(self, batch: str) -> str:
        """Where the console of a night goes once it has no terminal: submitted with ``abflow
        submit``, or its terminal closed."""
        return os.path.join(self.root, "logs", "night", f"{batch}.log")

    def submission(self, batch: str) -> str:
        """How ``abflow submit`` handed the night over (command, controller job, log)."""
        return os.path.join(self.root, "runs", f"{batch}.submit.json")

    def controller_files(self, batch: str) -> tuple[str, str]:
        """The HTCondor output (what the controller says before its console goes to the
        night's log) and event log of a submitted night's controller job."""
        base = os.path.join(self.root, "condor", f"controller-{batch}")
        return base + ".out", base + ".events"
