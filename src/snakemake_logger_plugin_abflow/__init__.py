"""abflow's Snakemake logger plugin: the console a QC scientist reads during a night.

Selected with ``--logger abflow`` (the profiles do). One line per AB as it starts, succeeds or
fails, a download progress line, a stop or Ctrl-C reported once, the end-of-night summary, and
a dry-run as the cascade's levels (abflow.views.console). ``--verbose`` or
``--logger-abflow-snakemake`` gives Snakemake's own output instead, unchanged but for control
characters in what it shows of jobs (their logs, errors), which are shown escaped as on abflow's
console (abflow.state.text); Snakemake's own colours stay.
"""

import json
import logging
import os
import sys
from dataclasses import dataclass, field

from snakemake_interface_logger_plugins.base import LogHandlerBase
from snakemake_interface_logger_plugins.settings import LogHandlerSettingsBase


@dataclass
class LogHandlerSettings(LogHandlerSettingsBase):
    """Settings of the abflow logger (``--logger-abflow-<name>``)."""

    # a real type, not a string annotation: Snakemake builds its command-line flag from it
    snakemake: bool = field(
        default=False,
        metadata={
            "help": "Print Snakemake's own console output (every job as a block, with its "
            "files and reason) instead of abflow's one line per AB."
        },
    )


class LogHandler(LogHandlerBase):
    """Feeds Snakemake's log records to an abflow Console (or to Snakemake's own formatter)."""

    def __post_init__(self) -> None:
        from abflow.upstream.snakemake import snakemake_console_handler
        from abflow.views.console import Console

        s = self.common_settings
        self.stream = sys.stdout if getattr(s, "stdout", False) else sys.stderr
        own = bool(self.settings and self.settings.snakemake) or bool(getattr(s, "verbose", False))
        self.passthrough = snakemake_console_handler(s, self.stream) if own else None
        if self.passthrough is not None:
            self.passthrough.setFormatter(_Inert(self.passthrough.formatter))
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.console = Console(self.stream, tty=tty, dryrun=bool(getattr(s, "dryrun", False)))
        # $ABFLOW_LOG_RECORDS: every record as a JSON line (to report a console problem)
        self.recording = os.environ.get("ABFLOW_LOG_RECORDS", "")

    def emit(self, record: logging.LogRecord) -> None:
        """Take one record (in Snakemake's logging thread)."""
        try:
            if self.recording:
                _record(self.recording, record)
            if self.passthrough is not None:
                self.passthrough.handle(record)
            else:
                self.console.handle(record)
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        """The end of the run: the console's last lines."""
        try:
            if self.passthrough is None:
                self.console.close()
        finally:
            super().close()

    @property
    def writes_to_stream(self) -> bool:
        """It writes to the terminal (Snakemake then adds no stream handler of its own)."""
        return True

    @property
    def writes_to_file(self) -> bool:
        """Snakemake's own log file stays as it is."""
        return False

    @property
    def has_filter(self) -> bool:
        """The console decides what to show."""
        return True

    @property
    def has_formatter(self) -> bool:
        """The console formats its lines."""
        return True

    @property
    def needs_rulegraph(self) -> bool:
        """No rule graph needed."""
        return False


class _Inert(logging.Formatter):
    """Snakemake's formatter, its text shown inert (before Snakemake colours it)."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        """What Snakemake's formatter makes of ``record``, control characters escaped."""
        from abflow.state.text import inert

        text = self.inner.format(record)
        return inert(text) if isinstance(text, str) else text


def _record(path: str, record: logging.LogRecord) -> None:
    """Append what the console reads of ``record`` to ``path`` (one JSON object per line)."""
    fields = {
        k: getattr(record, k, None)
        for k in ("event", "jobid", "rule_name", "reason", "exception", "stats")
    }
    line = {"level": record.levelname, "msg": str(record.msg), **fields}
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line, default=str) + "\n")
