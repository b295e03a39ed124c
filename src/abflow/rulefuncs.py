"""Input functions, params and resources for the workflow's rules, read off the Night.

``workflow/rules/common.smk`` builds one :class:`NightRules` and wires its methods into the
generic rules; every lookup is a dictionary access, so the DAG of a large night stays cheap to
build. Nothing here re-derives the cascade: it only reads :class:`abflow.night.Night`.
"""

from __future__ import annotations

import inspect
import shlex
import sys
from collections.abc import Callable
from typing import Any

from abflow.config import Settings
from abflow.night import Night
from abflow.runner import read_record

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


class StepCommand:
    """The shell command that runs one step of one AB: ``python -m abflow.cli run-step AB ...``.

    It names the AB and what only the Night knows (the ABs it waits for, where its virtual
    calibrations are); ``abflow run-step`` reads the rest from the run's configuration
    ($ABFLOW_CONFIG, set by the workflow) and the AB file. Not a plain value, so Snakemake's
    ``params`` rerun trigger ignores it: switching profile, interpreter or command templates does
    not rerun a processed night (explicit reruns go through ``generation``).
    """

    __slots__ = ("_text", "ab", "rules", "step")

    def __init__(self, rules: NightRules, step: str, ab: str) -> None:
        self.rules, self.step, self.ab = rules, step, ab
        self._text: str | None = None

    def __str__(self) -> str:
        if self._text is None:  # Snakemake formats a job's command several times
            self._text = self._render()
        return self._text

    def _render(self) -> str:
        night = self.rules.night
        words = [sys.executable, "-m", "abflow.cli", "run-step", self.step, self.ab]
        for parent in night.parents[self.ab]:
            words += ["--parent", parent]
        for v in night.virtual_inputs[self.ab]:
            words += ["--virtual", f"{v.vcal_path}={v.product_path}"]
        return " ".join(shlex.quote(w) for w in words)

    def __repr__(self) -> str:
        return f"<{self.step} command of {self.ab}>"


class NightRules:
    """What the generic rules need to know about each AB of a Night."""

    def __init__(self, night: Night) -> None:
        self.night = night
        self.settings: Settings = night.settings
        s = self.settings
        self.record_pattern = s.state_pattern("records")
        self._record_prefix = self.record_pattern[: -len("{ab}.json")]
        self.log_pattern = s.state_pattern("logs", "process_ab")
        self.benchmark_pattern = s.state_pattern("benchmarks", "process_ab")
        n = len(night)
        self._priority = {name: n - r for name, r in night.run_order.items()}
        self._parent_records = {
            name: [self.record(p) for p in parents] for name, parents in night.parents.items()
        }
        self.subcascade = self._subcascade()
        self._subcascade_set = frozenset(self.subcascade)
        for name, member in inspect.getmembers(type(self), inspect.isfunction):
            if getattr(member, "_abflow_rule_function", False):
                setattr(self, name, _with_cached_signature(getattr(self, name)))

    # ----- targets -----------------------------------------------------------------------
    def record(self, ab: str) -> str:
        """Completion record path of ``ab``."""
        return f"{self._record_prefix}{ab}.json"

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

    # ----- input functions ---------------------------------------------------------------
    @rule_function
    def get_parent_records(self, wildcards: Any) -> list[str]:
        """Completion records of the ABs whose products ``wildcards.ab`` uses."""
        return self._parent_records[wildcards.ab]

    # ----- params, threads, resources, priority ---------------------------------------------
    @rule_function
    def get_rerun_key(self, wildcards: Any) -> str:
        """``<generation>:<AB checksum>``: a params value, so a change of either reruns the job.

        The AB checksum changes when the AB file is edited. The generation counts explicit
        reruns: normal runs repeat the one stored in the AB's completion record (Snakemake sees
        unchanged params); a subcascade run asks for the next one, which Snakemake's default
        ``params`` rerun trigger turns into a rerun of exactly those ABs. The job stores the new
        generation in its record, so the next normal run does not rerun it again.
        """
        ab = wildcards.ab
        record = read_record(self.record(ab))
        try:
            generation = int(record.get("generation", 0)) if record else 0
        except (TypeError, ValueError):
            generation = 0
        if ab in self._subcascade_set:
            generation += 1
        return f"{generation}:{self.night.ab_objects[ab].digest}"

    @rule_function
    def get_process_command(self, wildcards: Any) -> StepCommand:
        """The command of the process_ab job of ``wildcards.ab`` (see StepCommand)."""
        return StepCommand(self, "process_ab", wildcards.ab)

    @rule_function
    def get_priority(self, wildcards: Any) -> int:
        """Higher for ABs earlier in cascade order (CPL runs them in exactly that order)."""
        return self._priority[wildcards.ab]

    def threads_for(self, cores: int) -> int:
        """Threads of an AB job: all ``cores`` under INT, else 1."""
        return max(cores, 1) if self.settings.drs_type == "INT" else 1

    def resource_limits(self, cores: int) -> dict[str, int]:
        """Global resources the workflow registers (unless given with --resources)."""
        s = self.settings
        serial = s.drs_type in ("CPL", "INT")
        return {"ab_jobs": 1 if serial else s.limits["jobs"] or max(cores, 1)}
