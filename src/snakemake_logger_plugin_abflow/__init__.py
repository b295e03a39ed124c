"""abflow's Snakemake logger plugin: the console a QC scientist reads during a night.

Selected with ``--logger abflow`` (the profiles do). One line per AB as it starts, succeeds or
fails, a download progress line, a stop or Ctrl-C reported once, the end-of-night summary, and
a dry-run as the cascade's levels (abflow.views.console). ``--verbose`` or
``--logger-abflow-snakemake`` gives Snakemake's own output instead, unchanged.
"""

import logging
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
        from abflow.views.console import Console

        s = self.common_settings
        self.stream = sys.stdout if getattr(s, "stdout", False) else sys.stderr
        own = bool(self.settings and self.settings.snakemake) or bool(getattr(s, "verbose", False))
        self.passthrough = _snakemake_handler(s, self.stream) if own else None
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.console = Console(self.stream, tty=tty, dryrun=bool(getattr(s, "dryrun", False)))

    def emit(self, record: logging.LogRecord) -> None:
        """Take one record (in Snakemake's logging thread)."""
        try:
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


def _snakemake_handler(settings: object, stream: object) -> logging.Handler:
    """Snakemake's own console handler, as Snakemake builds it without a logger plugin."""
    from snakemake.logging import ColorizingTextHandler, DefaultFilter, DefaultFormatter

    handler = ColorizingTextHandler(
        nocolor=bool(getattr(settings, "nocolor", False)), stream=stream
    )  # type: ignore[arg-type]
    handler.addFilter(DefaultFilter(
        getattr(settings, "quiet", None), bool(getattr(settings, "debug_dag", False)),
        bool(getattr(settings, "verbose", False)), bool(getattr(settings, "dryrun", False)),
        bool(getattr(settings, "printshellcmds", False)),
    ))  # fmt: skip
    handler.setFormatter(
        DefaultFormatter(
            getattr(settings, "quiet", None), bool(getattr(settings, "show_failed_logs", False))
        )
    )
    return handler
