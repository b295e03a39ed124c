"""Input functions, params and resources for the workflow's rules, read off the Night.

``workflow/rules/common.smk`` builds one :class:`NightRules` and wires its methods into the
generic rules; every lookup is a dictionary access, so the DAG of a large night stays cheap to
build. Nothing here re-derives the cascade: it only reads :class:`abflow.night.Night`.
"""

from __future__ import annotations

import json
import os
from typing import Any

from abflow.commands import fill
from abflow.config import Settings
from abflow.night import Night
from abflow.runner import Step, read_record

# wildcard_constraints for the rules (an AB name as AB_NAME_RE allows, without anchors)
AB_WILDCARD = r"[A-Za-z0-9][A-Za-z0-9._:+-]*\.ab"


class NightRules:
    """What the generic rules need to know about each AB of a Night."""

    def __init__(self, night: Night) -> None:
        self.night = night
        self.settings: Settings = night.settings
        s = self.settings
        self.state_dir = s.state_dir
        self.record_pattern = os.path.join(s.state_dir, "records", "{ab}.json")
        self.log_pattern = os.path.join(s.state_dir, "logs", "process_ab", "{ab}.log")
        self.benchmark_pattern = os.path.join(s.state_dir, "benchmarks", "process_ab", "{ab}.tsv")
        self.failed_pattern = os.path.join(s.state_dir, "failed", "{ab}.json")
        self.workdir_pattern = os.path.join(s.state_dir, "work", "{ab}")
        n = len(night)
        self._priority = {name: n - int(r) for name, r in night.abs["run_order"].items()}
        self._parent_records = {
            name: [self.record(p) for p in parents] for name, parents in night.parents.items()
        }
        self.subcascade = self._subcascade()
        self._subcascade_set = frozenset(self.subcascade)
        self._config_json = json.dumps(s.to_config(), sort_keys=True)

    # ----- targets -----------------------------------------------------------------------
    def record(self, ab: str) -> str:
        """Completion record path of ``ab``."""
        return self.record_pattern.format(ab=ab)

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

    def final_targets(self) -> list[str]:
        """The records ``rule all`` asks for: the subcascade if set, else every AB."""
        names = self.subcascade or self.night.names
        return [self.record(n) for n in names]

    def get_generation(self, wildcards: Any) -> int:
        """How often this AB was explicitly rerun; a params value, so bumping it reruns the job.

        Normal runs repeat the generation stored in the AB's completion record (Snakemake sees
        unchanged params); a subcascade run asks for the next one, which Snakemake's default
        ``params`` rerun trigger turns into a rerun of exactly those ABs. The job stores the new
        generation in its record, so the next normal run does not rerun it again.
        """
        record = read_record(self.record(wildcards.ab))
        try:
            generation = int(record.get("generation", 0)) if record else 0
        except (TypeError, ValueError):
            generation = 0
        return generation + 1 if wildcards.ab in self._subcascade_set else generation

    # ----- input functions ---------------------------------------------------------------
    def get_parent_records(self, wildcards: Any) -> list[str]:
        """Completion records of the ABs whose products ``wildcards.ab`` uses."""
        return self._parent_records[wildcards.ab]

    def get_ab_file(self, wildcards: Any) -> str:
        """The AB file."""
        return self.night.ab_objects[wildcards.ab].path

    # ----- params, threads, resources, priority ---------------------------------------------
    def get_priority(self, wildcards: Any) -> int:
        """Higher for ABs earlier in cascade order (CPL runs them in exactly that order)."""
        return self._priority[wildcards.ab]

    def get_threads(self, wildcards: Any) -> int:
        """Threads of an AB job: all cores under INT, else 1."""
        del wildcards
        return self.int_threads if self.settings.drs_type == "INT" else 1

    int_threads = 1  # set by the workflow to workflow.cores

    def template_values(self, ab: str, threads: int) -> dict[str, object]:
        """Placeholder values for the command templates of ``ab``."""
        s = self.settings
        return {
            "ab": ab,
            "ab_file": self.night.ab_objects[ab].path,
            "date": self.night.abs.at[ab, "date"],
            "mode": s.mode,
            "threads": threads,
        }

    def get_process_command(self, ab: str, threads: int) -> str:
        """``commands.process_ab`` filled for ``ab``."""
        return fill(self.settings.commands["process_ab"], self.template_values(ab, threads))

    def get_job_env(self, ab: str, threads: int) -> dict[str, str]:
        """Environment of an AB command: the $DFO_* directories, threads, abflow's inputs."""
        env = dict(self.settings.variables)
        env["ABFLOW_CONFIG"] = self._config_json
        env["OMP_NUM_THREADS"] = str(threads)
        env["ABFLOW_AB"] = ab
        env["ABFLOW_WORKDIR"] = self.workdir_pattern.format(ab=ab)
        env["ABFLOW_INPUTS"] = os.path.join(env["ABFLOW_WORKDIR"], "abflow_inputs.json")
        return env

    def get_step(self, wildcards: Any, threads: int) -> Step:
        """Everything the process_ab script needs, as one object.

        A :class:`~abflow.runner.Step` is not a plain value, so Snakemake's ``params`` rerun
        trigger ignores it: switching profile, threads or command templates does not rerun a
        processed night. Explicit reruns go through ``generation`` (see get_generation).
        """
        ab = wildcards.ab
        obj = self.night.ab_objects[ab]
        row = self.night.abs.loc[ab]
        return Step(
            ab=ab,
            step="process_ab",
            command=self.get_process_command(ab, threads),
            workdir=self.workdir_pattern.format(ab=ab),
            log_path=self.log_pattern.format(ab=ab),
            record_path=self.record(ab),
            failed_path=self.failed_pattern.format(ab=ab),
            env=self.get_job_env(ab, threads),
            products=[(f.path, f.tag) for f in obj.products] if obj.runs_recipe else [],
            check_products=self.settings.check_products,
            info={
                "batch": self.settings.batch_id,
                "date": row["date"],
                "mode": self.settings.mode,
                "recipe": row["recipe"],
                "raw_type": row["raw_type"],
                "parents": list(self.night.parents[ab]),
                "threads": threads,
            },
            files={
                "abflow_inputs.json": {
                    "ab": ab,
                    "virtual": {v.vcal_path: v.product_path for v in self.night.virtual_inputs[ab]},
                }
            },
        )

    def resource_limits(self, cores: int) -> dict[str, int]:
        """Global resources the workflow registers (unless given with --resources)."""
        s = self.settings
        serial = s.drs_type in ("CPL", "INT")
        return {"ab_jobs": 1 if serial else s.limits["jobs"] or max(cores, 1)}
