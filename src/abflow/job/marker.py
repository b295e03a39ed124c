"""The marker a job holds while its command runs: ``running/<job>.json`` (abflow.state.layout).

abflow.state.runstate reads the markers: which jobs run where, and which a crashed run left
behind (to end them). A job that runs on an HTCondor pool names its cluster in the marker: it is
the pool's, not an orphan. Written with the light modules only (a job imports this).
"""

from __future__ import annotations

import os
import socket
import time

from abflow.job.command import pool_cluster
from abflow.state.fsutil import atomic_write_json, remove_file
from abflow.state.layout import JobId, StateLayout


class RunningMarker:
    """``running/<job>.json`` while the job's command runs (abflow.state.runstate reads the
    markers: who runs what, to end a crashed run's orphans); none without a state directory."""

    __slots__ = ("content", "path")

    def __init__(self, state_dir: str, job: JobId) -> None:
        self.content: dict[str, object] = {
            "name": job.name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "start": time.time(),
        }
        cluster = pool_cluster()
        if cluster:
            self.content["cluster"] = cluster
            holder = f"c{cluster}"
        else:  # a crashed run's successor ends only its own predecessors' jobs
            from abflow.state.runstate import owner_id

            holder = self.content["owner"] = owner_id()
        self.path = StateLayout(state_dir).marker(job, holder) if state_dir else ""
        self.content["path"] = self.path

    def __enter__(self) -> RunningMarker:
        return self  # written by note_command, as soon as the command runs

    def __exit__(self, *exc: object) -> None:
        if self.path:
            remove_file(self.path)

    def note_command(self, pgid: int) -> None:
        """Mark the job, with the process group its command runs in (to end orphans). Not
        durable: a crash leaves a stale marker, which the readers recognise."""
        self.content["pgid"] = pgid
        if self.path:
            atomic_write_json(self.path, self.content, durable=False)
