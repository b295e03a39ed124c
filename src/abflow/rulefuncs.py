"""Input functions, params and resources for the workflow's rules, read off the Night.

``workflow/rules/common.smk`` builds one :class:`NightRules` and wires its methods into the
generic rules; every lookup is a dictionary access, so the DAG of a large night stays cheap to
build. Nothing here re-derives the cascade: it only reads :class:`abflow.night.Night`.
"""

from __future__ import annotations

import inspect
import os
import shlex
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from snakemake.io import ancient

from abflow.config import Settings
from abflow.fsutil import atomic_write_text
from abflow.night import Night
from abflow.plan import job_priorities
from abflow.runner import read_record
from abflow.runstate import job_name

# wildcard_constraints for the rules: an AB name is one path segment ending in .ab (the Night
# has validated every name; a simple pattern keeps wildcard matching cheap)
AB_WILDCARD = r"[^/]+\.ab"

# Snakemake looks up the signature of every input/params/priority/threads callable once per job
# (inspect.signature, ~60 us each, a third of the DAG-building time of a large night). It takes
# a precomputed signature from this attribute instead (snakemake.common.get_function_params).
_SNAKEMAKE_SIGNATURE_ATTR = "_overwrite_params"


def rule_function(method: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a NightRules method as a callable handed to Snakemake rules."""
    method._abflow_rule_function = True  # type: ignore[attr-defined]
    return method


def _with_cached_signature(bound: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        return bound(*args, **kwargs)

    call.__name__ = bound.__name__
    call.__doc__ = bound.__doc__
    setattr(call, _SNAKEMAKE_SIGNATURE_ATTR, inspect.signature(bound).parameters)
    return call


class _Command(ABC):
    """A job's shell command, rendered only when Snakemake formats it (and then once).

    Not a plain value, so Snakemake's ``params`` rerun trigger ignores it: switching profile,
    interpreter or command templates does not rerun a processed night (explicit reruns go
    through the rerun key).
    """

    __slots__ = ("_text",)

    def __init__(self) -> None:
        self._text: str | None = None

    def __str__(self) -> str:
        if self._text is None:  # Snakemake formats a job's command several times
            self._text = " ".join(shlex.quote(w) for w in self.words())
        return self._text

    @abstractmethod
    def words(self) -> list[str]:
        """The command line."""


class StepCommand(_Command):
    """``python -m abflow.cli run-step STEP AB ...``: one step (process_ab, process_qc) of an AB.

    It names the AB and what only the Night knows (the ABs it waits for, where its virtual
    calibrations are); ``abflow run-step`` reads the rest from the run's configuration
    ($ABFLOW_CONFIG, set by the workflow) and the AB file.
    """

    __slots__ = ("ab", "det", "rules", "step")

    def __init__(self, rules: NightRules, step: str, ab: str, det: int | None = None) -> None:
        super().__init__()
        self.rules, self.step, self.ab, self.det = rules, step, ab, det

    def words(self) -> list[str]:
        """The command line."""
        night = self.rules.night
        words = [sys.executable, "-m", "abflow.cli", "run-step", self.step, self.ab]
        if self.det is not None:
            words += ["--det", str(self.det)]
        if self.step != "process_qc":
            words += ["--rerun-key", self.rules.rerun_key(self.ab)]
        if len(night.settings.dates) > 1:  # the AB's own date, in a run of several dates
            words += ["--ab-date", night.date(self.ab)]
        for parent in night.parents[self.ab]:
            words += ["--parent", parent]
        for v in night.virtual_inputs[self.ab]:
            words += ["--virtual", f"{v.vcal_path}={v.product_path}"]
        return words

    def __repr__(self) -> str:
        return f"<{self.step} command of {self.ab}>"


class DownloadCommand(_Command):
    """``python -m abflow.cli run-download DEST ...``: fetch one file with commands.download."""

    __slots__ = ("dest", "log", "rules")

    def __init__(self, rules: NightRules, dest: str, log: str) -> None:
        super().__init__()
        self.rules, self.dest, self.log = rules, dest, log

    def words(self) -> list[str]:
        """The command line."""
        r = self.rules
        return [
            sys.executable, "-m", "abflow.cli", "run-download", self.dest, "--log", self.log,
            "--progress", r.progress_file, "--total", str(len(r.planned_downloads)),
        ]  # fmt: skip

    def __repr__(self) -> str:
        return f"<download command of {self.dest}>"


# Downloadable files: archive files under dfo.raw_dir / dfo.cal_dir (no records or logs match)
FILE_WILDCARD = r"[^/].*\.(?:fits|tfits)(?:\.fz|\.gz|\.Z)?"


def ab_edited(record: dict[str, Any], digest: str) -> bool:
    """True if the AB changed what its processing depends on since ``record`` was written.

    Records store the AB's processing digest (abflow.ab.processing_digest, ``p...``); one
    written by an older abflow holds a checksum of the whole file, which cannot tell bookkeeping
    from edits: it counts as unchanged.
    """
    old = str(record.get("ab_digest") or "")
    return old.startswith("p") and old != digest


class NightRules:
    """What the generic rules need to know about each AB of a Night."""

    def __init__(self, night: Night, run_token: str = "", remote: bool = False) -> None:
        # remote: this process is one job of a run (on an HTCondor execute node), which only
        # runs its target job; what reruns was decided by the submitting run
        self.remote = remote
        self.night = night
        self.settings: Settings = night.settings
        s = self.settings
        self.record_pattern = s.state_pattern("records")
        self._record_prefix = self.record_pattern[: -len("{ab}.json")]
        self.qc_record_pattern = s.state_pattern("records", "process_qc")
        self.log_pattern = s.state_pattern("logs", "process_ab")
        self.benchmark_pattern = s.state_pattern("benchmarks", "process_ab")
        self.det_record_pattern = s.state_pattern("records", "process_ab_det")
        self.det_log_pattern = s.state_pattern("logs", "process_ab_det")
        self.det_benchmark_pattern = s.state_pattern("benchmarks", "process_ab_det")
        self.request_pattern = os.path.join(s.state_dir, "requests", "{ab}.{key}.rerun")
        self.benchmark_table_path = os.path.join(s.state_dir, "benchmarks", f"{s.batch_id}.tsv")
        self.benchmark_table_log = os.path.join(s.state_dir, "logs", f"benchmarks_{s.batch_id}.log")
        self._rerun_keys: dict[str, str] = {}
        self.qc_log_pattern = s.state_pattern("logs", "process_qc")
        self.raw_pattern = os.path.join(s.dfo["raw_dir"], "{file}")
        self.cal_pattern = os.path.join(s.dfo["cal_dir"], "{file}")
        self.raw_log_pattern = os.path.join(s.state_dir, "logs", "download_raw", "{file}.log")
        self.cal_log_pattern = os.path.join(s.state_dir, "logs", "download_mcal", "{file}.log")
        self.barrier = os.path.join(s.state_dir, "downloads", f"{s.batch_id}.all-downloaded")
        self.barrier_log = os.path.join(s.state_dir, "logs", "downloads", f"{s.batch_id}.log")
        token = run_token or time.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"
        self.progress_file = os.path.join(s.state_dir, "downloads", f"{token}.progress")
        self._priority = job_priorities(night)
        self._parent_records = {
            name: [self.record(p) for p in parents] for name, parents in night.parents.items()
        }
        self.subcascade = self._subcascade()
        self._subcascade_set = frozenset(self.subcascade)
        self.with_qc = s.qc_mode != "IMPLICIT"
        self.to_run = self._abs_to_run()
        self.planned_downloads = self._planned_downloads()
        self.cleanup_raw = s.cal_cleanup and s.mode == "CALIB"
        for name, member in inspect.getmembers(type(self), inspect.isfunction):
            if getattr(member, "_abflow_rule_function", False):
                setattr(self, name, _with_cached_signature(getattr(self, name)))

    # ----- what this run does ---------------------------------------------------------------
    def record(self, ab: str) -> str:
        """Completion record path of ``ab``."""
        return f"{self._record_prefix}{ab}.json"

    def qc_record(self, ab: str) -> str:
        """QC completion record path of ``ab``."""
        return self.qc_record_pattern.format(ab=ab)

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

    def _abs_to_run(self) -> frozenset[str]:
        """ABs this run processes: no completion record yet, or part of the subcascade.

        Only they take their raw files and calibrations as inputs (so files of finished ABs
        are neither downloaded again nor a reason to rerun; an AB rerun for another reason
        fetches what it misses itself, as DFOS processAB does).
        """
        names = self.subcascade or self.night.names
        return frozenset(
            n for n in names if n in self._subcascade_set or not os.path.exists(self.record(n))
        )

    def _planned_downloads(self) -> dict[str, str]:
        """Missing inputs of the ABs to run, in cascade order: path -> ``raw`` or ``cal``."""
        planned: dict[str, str] = {}
        self._download_priority: dict[str, int] = {}
        for name in self.night.names:
            if name not in self.to_run:
                continue
            # a split AB's detector jobs (all of equal priority) read the files
            wanted = max(self._priority[name], self._priority.get(f"{name}#1", 0))
            for kind, paths in (
                ("raw", self.night.raw_inputs[name]),
                ("cal", self.night.cal_inputs[name]),
            ):
                for path in paths:
                    if path not in planned and not os.path.exists(path):
                        planned[path] = kind
                    if path in planned:
                        old = self._download_priority.get(path, wanted)
                        self._download_priority[path] = max(old, wanted)
        return planned

    def owns_marker(self, name: str) -> bool:
        """True if the running-job marker ``name`` (``step/AB[.det]``) is a job of this night."""
        rest = name.partition("/")[2]
        return rest in self.night or rest.rsplit(".", 1)[0] in self.night

    def job_tag(self, rule: str) -> Callable[[Any], str]:
        """The AbflowJob attribute of the HTCondor jobs of ``rule`` (``<step>/<AB>[.<det>]``,
        the name of the job's running marker), as a resource function of the wildcards."""

        def tag(wildcards: Any) -> str:
            ab, det = wildcards.ab, getattr(wildcards, "det", None)
            step = rule
            if rule == "process_ab" and self.night.detectors(ab) > 1:
                step = "mef_join"
            return job_name(step, ab, det)

        tag.__name__ = f"job_tag_{rule}"
        return tag

    def final_records(self) -> list[str]:
        """Completion records of the ABs of this run (the subcascade, else the night)."""
        return [self.record(n) for n in self.subcascade or self.night.names]

    def final_targets(self) -> list[str]:
        """What ``rule all`` asks for: records, QC records and the benchmark table."""
        names = self.subcascade or self.night.names
        targets = [*self.final_records(), self.benchmark_table_path]
        if self.with_qc:
            targets += [self.qc_record(n) for n in names if self.night.ab_objects[n].runs_recipe]
        return targets

    def download_problem(self) -> str | None:
        """Why the planned downloads cannot work (checked before anything runs), or None."""
        from abflow.download import check_archive, uses_builtin_client

        if self.planned_downloads and uses_builtin_client(self.settings):
            return check_archive(self.settings)
        return None

    # ----- input functions ---------------------------------------------------------------
    def get_parent_records(self, wildcards: Any) -> list[str]:
        """Completion records of the ABs whose products the AB's first jobs use.

        For a multi-detector AB its process_ab job is the join: it waits for the per-detector
        jobs instead (which wait for the parents).
        """
        ab = wildcards.ab
        if self.night.detectors(ab) > 1 and getattr(wildcards, "det", None) is None:
            return []
        return self._parent_records[ab]

    @rule_function
    def get_ab_inputs(self, wildcards: Any) -> dict[str, list[str]]:
        """All inputs of a process_ab or process_ab_det job, named, in one call (``unpack``):
        Snakemake calls each input function once per job, and a night has thousands."""
        return {
            "parents": self.get_parent_records(wildcards),
            "data": self.get_data_inputs(wildcards),
            # a join waits for its detector jobs; a detector job for none of them
            "detectors": []
            if getattr(wildcards, "det", None) is not None
            else self.get_det_records(wildcards),
            "rerun": self.get_rerun_request(wildcards),
        }

    @rule_function
    def get_qc_inputs(self, wildcards: Any) -> dict[str, Any]:
        """All inputs of a process_qc job (``unpack``): the AB's record, and its raw files
        under CAL_CLEANUP (get_qc_raw_inputs)."""
        return {"record": self.record(wildcards.ab), "raw": self.get_qc_raw_inputs(wildcards)}

    def get_det_records(self, wildcards: Any) -> list[str]:
        """The per-detector records a multi-detector AB's join waits for (none otherwise)."""
        ab = wildcards.ab
        n = self.night.detectors(ab)
        if n <= 1:
            return []
        return [self.det_record_pattern.format(ab=ab, det=k) for k in range(1, n + 1)]

    def get_data_inputs(self, wildcards: Any) -> list[str]:
        """Files an AB this run processes must wait for: its raw files and REAL calibrations
        that are downloaded first (all its raw files under CAL_CLEANUP, so that their removal
        waits for it), and under FULL_RAWDOWNLOAD the flag made once every download is done.

        Finished ABs get none: present files need no job, and a file cleaned up after an AB
        finished must not rerun it. (The input list of a job may thus change between runs;
        the profiles set ``rerun-triggers: [mtime, params]`` so that this reruns nothing.)
        """
        ab = wildcards.ab
        if ab not in self.to_run or (
            self.night.detectors(ab) > 1 and getattr(wildcards, "det", None) is None
        ):
            return []
        planned = self.planned_downloads
        files = [ancient(p) for p in self.night.cal_inputs[ab] if p in planned]
        raws = self.night.raw_inputs[ab]
        files += [ancient(p) for p in raws if self.cleanup_raw or p in planned]
        if self.settings.full_rawdownload and planned:
            files.append(self.barrier)
        return files

    def get_qc_raw_inputs(self, wildcards: Any) -> list[str]:
        """Under CAL_CLEANUP, the raw files of an AB whose QC this run makes, so that their
        removal waits for the QC too (processQC shows the raw frames)."""
        ab = wildcards.ab
        if not self.cleanup_raw or (ab not in self.to_run and os.path.exists(self.qc_record(ab))):
            return []
        return [ancient(p) for p in self.night.raw_inputs[ab]]

    def barrier_inputs(self) -> list[str]:
        """What the downloads flag waits for: every download this run makes."""
        return list(self.planned_downloads)

    def planned(self, kind: str) -> list[str]:
        """The planned downloads of one kind (``raw`` or ``cal``)."""
        return [p for p, k in self.planned_downloads.items() if k == kind]

    # ----- params, threads, resources, priority ---------------------------------------------
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
            if ab in self._subcascade_set:
                generation += 1
            key = self._rerun_keys[ab] = f"{generation}:{self.night.ab_objects[ab].digest}"
        return key

    def get_rerun_request(self, wildcards: Any) -> list[str]:
        """A rerun request, for an AB with a completion record that must run again.

        That is an AB of the requested subcascade, or one whose AB file changed since its record
        was written. The request is a file newer than the record (its name holds the new
        generation and the AB's checksum), written here if missing, so Snakemake's mtime
        trigger reruns the AB's first jobs whatever it remembers in the working directory (it
        works from any directory, also without metadata). Harmless in a dry-run: the request
        matters only while the same condition holds, and the job removes it when it succeeds.
        """
        ab = wildcards.ab
        if self.remote:
            return []  # decided (and requested) by the submitting run
        if self.night.detectors(ab) > 1 and getattr(wildcards, "det", None) is None:
            return []  # the join follows its detector jobs
        record = read_record(self.record(ab))
        if record is None:
            return []
        generation, _, digest = self.rerun_key(ab).partition(":")
        if ab not in self._subcascade_set and not ab_edited(record, digest):
            return []
        request = self.request_pattern.format(ab=ab, key=f"g{generation}-{digest}")
        if not os.path.exists(request):
            atomic_write_text(request, f"rerun {ab} as generation {generation}, AB {digest}\n")
        return [request]

    @rule_function
    def get_process_command(self, wildcards: Any) -> StepCommand:
        """The command of the process_ab job of ``wildcards.ab`` (see StepCommand): the AB's
        command, or for a multi-detector AB the join of its per-detector jobs."""
        ab = wildcards.ab
        step = "mef_join" if self.night.detectors(ab) > 1 else "process_ab"
        return StepCommand(self, step, ab)

    @rule_function
    def get_det_command(self, wildcards: Any) -> StepCommand:
        """The command of the process_ab_det job of one detector of ``wildcards.ab``."""
        ab, det = wildcards.ab, int(wildcards.det)
        n = self.night.detectors(ab)
        if not 1 <= det <= n:
            raise ValueError(f"{ab} has no detector job {det} (it runs as {n})")
        return StepCommand(self, "process_ab_det", ab, det)

    @rule_function
    def get_qc_command(self, wildcards: Any) -> StepCommand:
        """The command of the process_qc job of ``wildcards.ab``."""
        return StepCommand(self, "process_qc", wildcards.ab)

    @rule_function
    def get_raw_download_command(self, wildcards: Any) -> DownloadCommand:
        """The command of the download_raw job of ``wildcards.file``."""
        return DownloadCommand(
            self,
            self.raw_pattern.format(file=wildcards.file),
            self.raw_log_pattern.format(file=wildcards.file),
        )

    @rule_function
    def get_cal_download_command(self, wildcards: Any) -> DownloadCommand:
        """The command of the download_mcal job of ``wildcards.file``."""
        return DownloadCommand(
            self,
            self.cal_pattern.format(file=wildcards.file),
            self.cal_log_pattern.format(file=wildcards.file),
        )

    @rule_function
    def get_priority(self, wildcards: Any) -> int:
        """Priority of the AB's process_ab job (its join, for a multi-detector AB)."""
        return self._priority[wildcards.ab]

    @rule_function
    def get_raw_download_priority(self, wildcards: Any) -> int:
        """Priority of a raw download: that of the first AB that needs the file.

        Files are then fetched in the order the ABs will run, so under CPL no AB becomes
        ready before the one ahead of it in the cascade just because its file came first.
        """
        return self._download_priority.get(self.raw_pattern.format(file=wildcards.file), 0)

    @rule_function
    def get_cal_download_priority(self, wildcards: Any) -> int:
        """Priority of a calibration download (see get_raw_download_priority)."""
        return self._download_priority.get(self.cal_pattern.format(file=wildcards.file), 0)

    @rule_function
    def get_det_priority(self, wildcards: Any) -> int:
        """Priority of a per-detector job (abflow.plan.job_priorities)."""
        return self._priority[f"{wildcards.ab}#{wildcards.det}"]

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
