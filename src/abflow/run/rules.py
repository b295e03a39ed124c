"""Input functions, params and resources for the workflow's rules, read off the Night.

``workflow/rules/common.smk`` builds one :class:`NightRules` and wires its methods into the
generic rules; every lookup is a dictionary access, so the DAG of a large night stays cheap to
build. Nothing here re-derives the cascade: it reads :class:`abflow.model.night.Night`, what this
run does (:class:`RunScope`: its ABs, downloads and reruns), and the state layout
(abflow.state.layout).
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Callable
from typing import Any

from snakemake.io import ancient

from abflow.job.command import JobCommand
from abflow.job.download import staging_path
from abflow.model.commands import fill, whole_machine
from abflow.model.config import Settings
from abflow.model.night import Night
from abflow.model.plan import job_priorities
from abflow.state.fsutil import atomic_write_text
from abflow.state.fsutil import read_json_object as read_record
from abflow.state.layout import JobId, Step
from abflow.state.runstate import owner_id
from abflow.state.units import now_iso
from abflow.upstream.snakemake import precomputed_signature

# wildcard_constraints for the rules: an AB name is one path segment ending in .ab (the Night
# has validated every name; a simple pattern keeps wildcard matching cheap)
AB_WILDCARD = r"[^/]+\.ab"
# Downloadable files: archive files under dfo.raw_dir / dfo.cal_dir (no records or logs match)
FILE_WILDCARD = r"[^/].*\.(?:fits|tfits)(?:\.fz|\.gz|\.Z)?"


def rule_function(method: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a NightRules method as a callable handed to Snakemake rules."""
    method._abflow_rule_function = True  # type: ignore[attr-defined]
    return method


def _with_cached_signature(bound: Callable[..., Any]) -> Callable[..., Any]:
    """``bound`` with its signature precomputed for Snakemake (abflow.upstream.snakemake)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return bound(*args, **kwargs)

    call.__name__ = bound.__name__
    call.__doc__ = bound.__doc__
    precomputed_signature(call, of=bound)
    return call


def ab_edited(record: dict[str, Any], digest: str) -> bool:
    """True if the AB changed what its processing depends on since ``record`` was written.

    Records store the AB's processing digest (abflow.model.ab.processing_digest, ``p...``); one
    written by an older abflow holds a checksum of the whole file, which cannot tell bookkeeping
    from edits: it counts as unchanged.
    """
    old = str(record.get("ab_digest") or "")
    return old.startswith("p") and old != digest


class JobError(RuntimeError):
    """A job of the night failed (Snakemake reports the rule's error with this message)."""


class RunScope:
    """What this run does: its ABs (a subcascade, else the night; those without a record, or
    asked to rerun), the downloads they need, and their rerun keys.
    """

    def __init__(self, night: Night) -> None:
        self.night = night
        self.settings: Settings = night.settings
        self.layout = self.settings.layout
        self.subcascade = self._subcascade()
        self.subcascade_set = frozenset(self.subcascade)
        self.names = self.subcascade or night.names
        # ABs whose completion record is there but does not say they succeeded (empty, torn,
        # unreadable, FAILED, another AB's: a crash, a full disk, a hand): not done; they run
        # again (through a rerun request, as an edited AB does)
        self.unreadable = frozenset(
            n for n in self.names if os.path.lexists(self.record(n)) and not self.done(n)
        )
        self.to_run = frozenset(
            n
            for n in self.names
            if self.settings.steps != "qc"
            and (
                n in self.subcascade_set
                or n in self.unreadable
                or not os.path.exists(self.record(n))
            )
        )
        # the ABs whose QC this run does: steps qc, only those that succeeded (their record)
        self.qc_names = (
            [
                n
                for n in self.names
                if self.night[n].ab.runs_recipe
                and (self.settings.steps == "all" or (self.settings.steps == "qc" and self.done(n)))
            ]
            if self.settings.qc_mode != "IMPLICIT"
            else []
        )
        self.priority = job_priorities(night)
        self.download_priority: dict[str, int] = {}
        self.planned_downloads = self._planned_downloads()
        self._rerun_keys: dict[str, str] = {}

    def record(self, ab: str) -> str:
        """Completion record of ``ab``."""
        return self.layout.record(JobId(Step.PROCESS_AB, ab))

    def done(self, ab: str) -> bool:
        """True if ``ab`` succeeded: its completion record is there, readable, its own and
        SUCCESSFUL."""
        return self.layout.succeeded(JobId(Step.PROCESS_AB, ab))

    def without_qc(self) -> list[str]:
        """Under steps qc: the ABs that get no QC, since they did not succeed."""
        if self.settings.steps != "qc" or self.settings.qc_mode == "IMPLICIT":
            return []
        qc = set(self.qc_names)
        return [n for n in self.names if self.night[n].ab.runs_recipe and n not in qc]

    def _subcascade(self) -> list[str]:
        name = self.settings.subcascade
        if not name:
            return []
        if name not in self.night:
            known = ", ".join(self.night.names[:5])
            raise ValueError(
                f"subcascade={name}: no such AB in {self.settings.ab_list_path} "
                f"(first ABs: {known}{' ...' if len(self.night) > 5 else ''})"
            )
        return self.night.descendants(name)

    def _planned_downloads(self) -> dict[str, str]:
        """Missing inputs of the ABs to run, in cascade order: path -> ``raw`` or ``cal``.

        Only they take their raw files and calibrations as inputs (so files of finished ABs
        are neither downloaded again nor a reason to rerun; an AB rerun for another reason
        fetches what it misses itself, as DFOS processAB does). A download takes the priority
        of the first AB needing it.
        """
        planned: dict[str, str] = {}
        for name in self.night.names:
            if name not in self.to_run:
                continue
            # a split AB's detector jobs (all of equal priority) read the files
            wanted = max(self.priority[name], self.priority.get(f"{name}#1", 0))
            for kind, paths in (
                ("raw", self.night[name].raw_inputs),
                ("cal", self.night[name].cal_inputs),
            ):
                for path in paths:
                    if path not in planned and not os.path.exists(path):
                        planned[path] = kind
                    if path in planned:
                        old = self.download_priority.get(path, wanted)
                        self.download_priority[path] = max(old, wanted)
        return planned

    def rerun_key(self, ab: str) -> str:
        """``<generation>:<AB checksum>`` of this run of ``ab`` (stored in its record).

        The generation counts explicit reruns: the one in the AB's completion record, plus one
        for an AB of the requested subcascade.
        """
        key = self._rerun_keys.get(ab)
        if key is None:
            record = read_record(self.record(ab))
            try:
                generation = int(record.get("generation", 0)) if record else 0
            except (TypeError, ValueError):
                generation = 0
            if ab in self.subcascade_set:
                generation += 1
            key = self._rerun_keys[ab] = f"{generation}:{self.night[ab].ab.digest}"
        return key

    def rerun_request(self, ab: str) -> list[str]:
        """A rerun request, for an AB with a completion record that must run again.

        That is an AB of the requested subcascade, or one whose AB file changed since its record
        was written. The request is a file (its name holds the new generation and the AB's
        checksum) that the workflow's ``request_rerun`` job writes and the AB's first jobs take
        as input, so Snakemake reruns them whatever it remembers in the working directory (it
        works from any directory, also without metadata). Nothing is written while the DAG is
        built (a dry-run writes nothing); the end of the run removes the requests it served
        (abflow.run.lifecycle.finish_run).
        """
        record = read_record(self.record(ab))
        if record is None and ab not in self.unreadable:
            return []
        generation, _, digest = self.rerun_key(ab).partition(":")
        if (
            ab not in self.subcascade_set
            and ab not in self.unreadable
            and not ab_edited(record or {}, digest)
        ):
            return []
        return [self.layout.request(ab, f"g{generation}-{digest}")]


class NightRules:
    """What the generic rules need to know about each job of a Night."""

    def __init__(
        self,
        night: Night,
        run_config: str,
        run_token: str = "",
        pool: bool = False,
    ) -> None:
        self.night = night
        self.pool = pool  # jobs are submitted to an HTCondor pool (pool_resources)
        self.pool_jobs: Any = None  # their resources (abflow.run.pool_job.PoolJobs)
        self.owner = ""  # this run's AbflowOwner tag (abflow.state.runstate.owner_id)
        self.settings: Settings = night.settings
        self.layout = self.settings.layout
        self.run_config = run_config
        self.scope = RunScope(night)
        s = self.settings
        self.raw_pattern = os.path.join(s.dfo["raw_dir"], "{file}")
        self.cal_pattern = os.path.join(s.dfo["cal_dir"], "{file}")
        token = run_token or time.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"
        self.progress_file = self.layout.progress(token)
        self.ab_threads = 1
        # every job's $DFO_* directories
        self.job_env = tuple(sorted(s.variables.items()))
        self._parent_records = {
            record.name: [self.scope.record(p) for p in record.parents] for record in night
        }
        for name, member in inspect.getmembers(type(self), inspect.isfunction):
            if getattr(member, "_abflow_rule_function", False):
                setattr(self, name, _with_cached_signature(getattr(self, name)))

    @property
    def to_run(self) -> frozenset[str]:
        """The ABs this run processes."""
        return self.scope.to_run

    @property
    def summarized(self) -> frozenset[str]:
        """The ABs the end of the run sums up: those it processes, under steps qc those whose
        QC it does."""
        if self.settings.steps == "qc":
            return frozenset(self.scope.qc_names)
        return self.scope.to_run

    def without_qc(self) -> str:
        """What a QC step says of the ABs that get no QC ("" if none)."""
        left = self.scope.without_qc()
        if not left:
            return ""
        return (
            f"abflow: no QC for {len(left)} AB{'s' if len(left) != 1 else ''} that did not "
            f"succeed (failed, or did not run): {', '.join(left)}"
        )

    def pattern(self, kind: str, rule: str) -> str:
        """The layout's path pattern of one kind of file of a rule's jobs."""
        return self.layout.pattern(kind, rule)

    # ----- what rule all asks for ------------------------------------------------------------
    def final_records(self) -> list[str]:
        """Completion records of the ABs of this run (the subcascade, else the night; under
        steps qc, those that succeeded)."""
        if self.settings.steps == "qc":
            return [self.scope.record(n) for n in self.scope.names if self.scope.done(n)]
        return [self.scope.record(n) for n in self.scope.names]

    def final_targets(self) -> list[str]:
        """What ``rule all`` asks for: records, QC records and the benchmark table."""
        targets = [*self.final_records(), self.layout.benchmark_table(self.settings.batch_id)]
        # the rerun requests: missing, so their request_rerun jobs run, and the AB jobs taking
        # them as input run after them (Snakemake skips a missing input nobody asks for)
        if self.settings.steps != "qc":
            targets += [r for n in self.scope.names for r in self.scope.rerun_request(n)]
        targets += [self.layout.record(JobId(Step.PROCESS_QC, n)) for n in self.scope.qc_names]
        return targets

    def download_problem(self) -> str | None:
        """Why the planned downloads cannot work (checked before anything runs), or None."""
        from abflow.job.fetch import check_archive, uses_builtin_client

        if self.scope.planned_downloads and uses_builtin_client(self.settings):
            return check_archive(self.settings)
        return None

    def downloads_done_inputs(self) -> list[str]:
        """What the FULL_RAWDOWNLOAD flag waits for: every download this run makes."""
        return list(self.scope.planned_downloads)

    @property
    def request_pattern(self) -> str:
        """The output of the ``request_rerun`` rule: a rerun request (``{ab}``, ``{key}``)."""
        return self.layout.request("{ab}", "{key}")

    @property
    def request_log_pattern(self) -> str:
        """The log of a ``request_rerun`` job (``{ab}``, ``{key}``)."""
        return self.layout.request_log("{ab}", "{key}")

    def write_request(self, ab: str, key: str, path: str, log: str) -> None:
        """The ``request_rerun`` job: write the rerun request ``path`` of ``ab`` (and say so in
        ``log``)."""
        text = f"rerun {ab} as {key} (generation and AB checksum)\n"
        atomic_write_text(path, text)
        atomic_write_text(log, f"{now_iso()} wrote {path}: {text}")

    # ----- input functions ---------------------------------------------------------------
    @rule_function
    def get_ab_inputs(self, wildcards: Any) -> dict[str, list[str]]:
        """All inputs of a process_ab or process_ab_det job, named, in one call (``unpack``):
        the parents' records, the files it waits for, a join's detector records, a rerun
        request. Snakemake calls each input function once per job, and a night has thousands.
        A multi-detector AB's process_ab job is its join: it waits for its detector jobs,
        which wait for the parents and the files."""
        ab, det = wildcards.ab, getattr(wildcards, "det", None)
        if self.settings.steps == "qc":  # its record is there: nothing makes it again
            return {"parents": [], "data": [], "detectors": [], "rerun": []}
        n = self.night.detectors(ab)
        if n > 1 and det is None:
            pattern = self.pattern("records", "process_ab_det")
            dets = [pattern.format(ab=ab, det=k) for k in range(1, n + 1)]
            return {"parents": [], "data": [], "detectors": dets, "rerun": []}
        return {
            "parents": self._parent_records[ab],
            "data": self._data_inputs(ab),
            "detectors": [],
            "rerun": self.scope.rerun_request(ab),
        }

    @rule_function
    def get_qc_inputs(self, wildcards: Any) -> dict[str, Any]:
        """All inputs of a process_qc job (``unpack``): the AB's record (CAL_CLEANUP removes
        raw files at the end of the run, once the QC no longer needs them)."""
        return {"record": self.scope.record(wildcards.ab)}

    def _data_inputs(self, ab: str) -> list[str]:
        """Files an AB this run processes must wait for: its raw files and REAL calibrations
        that are downloaded first, and under FULL_RAWDOWNLOAD the flag made once every download
        is done.

        Finished ABs get none: present files need no job, and a file cleaned up after an AB
        finished must not rerun it. (The input list of a job may thus change between runs;
        the profiles set ``rerun-triggers: [mtime, params]`` so that this reruns nothing.)
        """
        if ab not in self.to_run:
            return []
        planned = self.scope.planned_downloads
        files = [ancient(p) for p in self.night[ab].cal_inputs if p in planned]
        raws = self.night[ab].raw_inputs
        files += [ancient(p) for p in raws if p in planned]
        if self.settings.full_rawdownload and planned:
            files.append(self.layout.downloads_done_flag(self.settings.batch_id))
        return files

    # ----- commands -----------------------------------------------------------------------
    def job_command(self, job: JobId, threads: int = 1) -> JobCommand:
        """The job's command line (abflow.job.command): its step's command template filled
        with the job's values, the night's directories, and what only the Night knows."""
        s = self.settings
        common = {
            "config": self.run_config,
            "state_dir": s.state_dir,
            "env": self.job_env,
            "log": self.layout.log(job),
            "threads": threads,
            "mode": s.mode,
        }
        if job.step.is_download:
            return self._download_command(job, common)
        return self._ab_command(job, threads, common)

    def _download_command(self, job: JobId, common: dict[str, Any]) -> JobCommand:
        """A download's command line: its file staged in this run's own directory."""
        s = self.settings
        root = s.dfo["raw_dir" if job.step is Step.DOWNLOAD_RAW else "cal_dir"]
        dest = os.path.join(root, job.target)
        # this run's own staging, linked to dest once complete (abflow.job.download)
        staged = staging_path(dest, self.owner or owner_id())
        shell = fill(
            s.commands["download"],
            {
                "file": os.path.basename(dest),
                "dest": staged,
                "date": s.date,
                "mode": s.mode,
                "config": self.run_config,
            },
        )
        return JobCommand(
            job,
            shell=shell,
            dest=dest,
            staged=staged,
            batch=s.batches[0],
            progress=self.progress_file,
            total=len(self.scope.planned_downloads),
            **common,
        )

    def _ab_command(self, job: JobId, threads: int, common: dict[str, Any]) -> JobCommand:
        """An AB job's command line: its template filled, and what only the Night knows."""
        s, night, ab = self.settings, self.night, job.target
        the_ab = night[ab].ab
        values = {
            "ab": ab,
            "ab_file": the_ab.path,
            "date": night.date(ab),
            "mode": s.mode,
            "threads": threads,
            "config": self.run_config,
            "det": job.det,
        }
        # the products it must leave, checked after its command (a detector job marks their
        # directories only: its join compares with the marks; abflow.job.products)
        products = [(f.path, f.tag) for f in the_ab.products] + list(night[ab].implied_products)
        makes_products = job.step is not Step.PROCESS_QC and the_ab.runs_recipe
        shell = fill(s.commands[job.step.value], values)
        if s.drs_type == "INT" and job.step is Step.PROCESS_AB:
            shell = whole_machine(shell)
        return JobCommand(
            job,
            shell=shell,
            record=self.layout.record(job),
            parents=night[ab].parents,
            virtual=[(v.vcal_path, v.product_path) for v in night[ab].virtual],
            products=products if makes_products and s.check_products else (),
            recipe=the_ab.recipe,
            raw_type=the_ab.raw_type,
            date=night.date(ab),
            batch=night.batch_of(ab),
            rerun_key=self.scope.rerun_key(ab) if job.step is not Step.PROCESS_QC else "0:",
            benchmark=self.layout.benchmark(job) if job.step is not Step.PROCESS_QC else "",
            **common,
        )

    def job_of(self, rule: str, wildcards: Any) -> JobId:
        """The job a rule runs for these wildcards."""
        if rule in ("download_raw", "download_mcal"):
            return JobId(Step(rule), wildcards.file)
        ab, det = wildcards.ab, getattr(wildcards, "det", None)
        if rule == "process_ab" and self.night.detectors(ab) > 1:
            return JobId(Step.MEF_JOIN, ab)
        if rule == "process_ab_det":
            n = self.night.detectors(ab)
            if not 1 <= int(det) <= n:
                raise ValueError(f"{ab} has no detector job {det} (it runs as {n})")
            return JobId(Step.PROCESS_AB_DET, ab, int(det))
        return JobId(Step(rule), ab)

    def run_job(self, rule: str, wildcards: Any, threads: int, log: str, record: str = "") -> None:
        """Run the job of ``rule`` for ``wildcards`` here, in a thread of the Snakemake process
        (the rules' ``run:``), with the log and the record its rule declares; raise if it
        failed (its log and failure note say why)."""
        from abflow.job.main import JobFailed, execute

        command = self.job_command(self.job_of(rule, wildcards), threads)
        try:
            execute(command.replace(log=log, record=record or command.record))
        except JobFailed as exc:
            raise JobError(str(exc)) from None

    def pool_resources(self, rule: str) -> dict[str, Any]:
        """The resources that make ``rule``'s jobs HTCondor pool jobs (abflow.run.pool_job);
        none where jobs run locally (Snakemake would evaluate them for every job of the DAG
        for nothing)."""
        return self.pool_jobs.resources(rule) if self.pool_jobs is not None else {}

    # ----- priorities, threads, resources -----------------------------------------------------
    @rule_function
    def get_priority(self, wildcards: Any) -> int:
        """Priority of the AB's process_ab job (its join, for a multi-detector AB)."""
        return self.scope.priority[wildcards.ab]

    @rule_function
    def get_det_priority(self, wildcards: Any) -> int:
        """Priority of a per-detector job (abflow.model.plan.job_priorities)."""
        return self.scope.priority[f"{wildcards.ab}#{wildcards.det}"]

    def download_priority(self, root_key: str) -> Callable[[Any], int]:
        """Priority of the downloads into dfo.<root_key>: that of the first AB needing the
        file, so that files come in the order the ABs will run (under CPL no AB becomes ready
        before the one ahead of it just because its file came first)."""
        root = self.settings.dfo[root_key]

        def priority(wildcards: Any) -> int:
            return self.scope.download_priority.get(os.path.join(root, wildcards.file), 0)

        priority.__name__ = f"download_priority_{root_key}"
        return _with_cached_signature(priority)

    def threads_for(self, cores: int) -> int:
        """Threads of an AB job: all ``cores`` under INT, else 1."""
        return max(cores, 1) if self.settings.drs_type == "INT" else 1

    def resource_limits(self) -> dict[str, int]:
        """Global resources the workflow registers (unless given with --resources).

        ``ab_jobs`` caps the AB jobs running at once: 1 under CPL and INT, ``limits.jobs``
        (DFOS MAX_JOBS) under CON; without such a cap CON runs as many as cores (locally) or
        ``--jobs`` (on a pool) allow, which Snakemake enforces itself.
        """
        s = self.settings
        limits = {
            "download": s.limits["downloads"],
            "qc": 1 if s.qc_mode == "SER" else s.limits["qc"],
        }
        cap = 1 if s.drs_type in ("CPL", "INT") else s.limits["jobs"]
        return {"ab_jobs": cap, **limits} if cap else limits
