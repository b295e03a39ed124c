"""What abflow's HTCondor executor tells the console of a job on the pool: one typed record.

The executor (snakemake_executor_plugin_abflow_htcondor) logs each event through Snakemake's
logger with the :class:`PoolEvent` under :data:`POOL_ATTR`; abflow's console
(abflow.views.console) says it in its own words, and Snakemake's own logger shows
:meth:`PoolEvent.text`.
"""

from __future__ import annotations

from dataclasses import dataclass

POOL_ATTR = "abflow_pool"  # the log record's attribute that carries a PoolEvent


@dataclass(frozen=True)
class PoolEvent:
    """A job submitted, adopted (from a dead controller), released with more memory, or jobs
    removed."""

    what: str  # submitted, adopted, memory, removed
    job: str = ""  # AbflowJob (<step>/<AB>[.<det>])
    cluster: int = 0
    status: str = ""  # an adopted job's: idle, running, held, succeeded, failed
    from_mb: int = 0  # memory: the request before and after, the use, why it was held
    to_mb: int = 0
    used_mb: int = 0
    reason: str = ""
    retry: int = 0  # memory: which retry of the job
    clusters: tuple[int, ...] = ()  # removed: the jobs
    why: str = ""  # removed: why

    def text(self) -> str:
        """The event as a plain line."""
        if self.what == "removed":
            return (
                f"abflow: removed HTCondor job(s) {', '.join(map(str, self.clusters))} ({self.why})"
            )
        if self.what == "memory":
            return (
                f"abflow: {self.job} held for memory ({self.reason}): released with {self.to_mb} MB"
            )
        return f"abflow: {self.job} {self.what} (HTCondor job {self.cluster})"
