"""The AB monitor page (DFOS getStatusAB): ``<mon_dir>/status_<DATE>.html``, static, no server.

Header counts, one row per AB in cascade order (raw type, recipe, state, start, end, duration,
host, the ABs it waits for, links to its log and QC report, QC1 numbers), links to the timeline.
The page reloads itself every 300 s; during a run the workflow rewrites it at least every 60 s
(:class:`PageRefresher`, started by the workflow's ``onstart`` handler) and once at the end.

Every text on it is HTML-escaped and shown inert (control characters as escapes,
abflow.state.text). It links only files inside the night's configured directories and its state
directory, symbolic links resolved (:func:`linkable`); ``abflow status -F`` copies only those.
"""

from __future__ import annotations

import functools
import glob
import os
import sys
import threading
from collections.abc import Callable
from urllib.parse import quote

import jinja2
from markupsafe import Markup

from abflow import __version__
from abflow.model.config import Settings
from abflow.model.night import Night
from abflow.state.fsutil import atomic_write_text, inside, resolve_roots
from abflow.state.layout import JobId, Step
from abflow.state.text import inert
from abflow.state.units import as_number, clock_text, now_iso
from abflow.views.status import (
    STATES,
    ABState,
    ABStatus,
    NightState,
    night_state,
    qc1_text,
    qc1_values,
)

RELOAD_SECONDS = 300
REFRESH_SECONDS = 60


def page_path(night: Night) -> str:
    """Where the page of the night is written."""
    s = night.settings
    return os.path.join(s.dfo["mon_dir"], f"status_{s.date}.html")


def timeline_paths(night: Night) -> tuple[str, str]:
    """Where ``abflow timeline`` writes the night's PNG and SVG."""
    s = night.settings
    base = os.path.join(s.dfo["mon_dir"], f"timeline_{s.date}")
    return base + ".png", base + ".svg"


def _duration(seconds: object) -> str:
    value = as_number(seconds)
    if value is None:
        return ""
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min"


def qc_reports(settings: Settings, ab: str) -> list[str]:
    """The QC reports the site's processQC left for ``ab`` where ``qc_reports`` says (sorted;
    [] without the setting)."""
    pattern = str(settings.raw.get("qc_reports") or "")
    if not pattern:
        return []
    values = {
        **settings.dfo,
        "date": settings.date,
        "mode": settings.mode,
        "ab": ab,
        "ab_stem": ab.removesuffix(".ab"),
    }
    try:
        return sorted(glob.glob(pattern.format_map(values)))
    except (KeyError, ValueError, IndexError):
        return []  # (the configuration's check refuses a pattern it cannot fill)


Link = Callable[[str], str | None]


def linkable(settings: Settings) -> Callable[[object], str | None]:
    """What the page may link: a function giving the resolved path of a file that lies inside
    the night's configured directories (``dfo``, ``inputs``) or its state directory once every
    symbolic link is resolved, else None (a URL, a relative path, ``/etc/passwd``, a link out
    of the log directory)."""
    roots = resolve_roots([*settings.dfo.values(), *settings.inputs.values(), settings.state_dir])

    def check(path: object) -> str | None:
        if not isinstance(path, str) or not os.path.isabs(path) or "\0" in path:
            return None
        real = os.path.realpath(path)
        return real if inside(real, roots) else None

    return check


def href_of(path: str) -> str:
    """A relative path as an href: percent-encoded, and never read as a scheme (a first part
    with a colon, ``javascript:...``, gets ``./``)."""
    if ":" in path.split("/", 1)[0]:
        path = "./" + path
    return quote(path, safe="/:")


def render(state: NightState, link: Link, refused: list[str] | None = None) -> str:
    """The page as HTML (templates/status.html.j2, every value escaped and shown inert).
    ``link(path)`` gives the href of a file (None: no link); it is asked only for files inside
    the night's directories (:func:`linkable`). Others are shown as text, not linked, and added
    to ``refused``."""
    night = state.night
    s = night.settings
    png, svg = timeline_paths(night)
    allowed = linkable(s)

    def anchor(path: object, text: str) -> Markup:
        if not path:
            return Markup("")
        if allowed(path) is None:
            if refused is not None:
                refused.append(inert(path, line=True))
            return Markup(
                '<span class="unlinked" title="not linked (outside the night\'s '
                'directories): {}">{} (not linked)</span>'
            ).format(inert(path, line=True), inert(text, line=True))
        href = link(path)  # type: ignore[arg-type]
        return Markup('<a href="{}">{}</a>').format(href, inert(text)) if href else Markup("")

    return _template().render(
        batch_id=s.batch_id,
        mode=s.mode,
        date=s.date,
        version=__version__,
        reload_seconds=RELOAD_SECONDS,
        refresh_seconds=REFRESH_SECONDS,
        states=STATES,
        counts=state.counts(),
        written=now_iso("seconds"),
        status=state.status,
        timeline={"png": png, "svg": svg} if os.path.exists(png) else None,
        rows=[_row(night, item) for item in state.abs],
        link=anchor,
        controller=_controller(s),
    )


def _controller(settings: Settings) -> dict[str, str] | None:
    """What the page says of a night handed over with abflow submit: where its controller
    runs, whether it still does, and its console log."""
    from abflow.state.submission import controller_state, read_submission, submission_problem

    sub = read_submission(settings.layout, settings.batch_id)
    if sub is None:
        problem = submission_problem(settings.layout, settings.batch_id)
        return {"problem": problem} if problem else None
    return {
        "where": sub.where,
        "state": controller_state(sub).describe(),
        "log": sub.log,
        "submitted": clock_text(sub.submitted),
    }


def _row(night: Night, item: ABState) -> dict[str, object]:
    """What the page shows of one AB."""
    ab = night[item.ab].ab
    rec = item.record or item.failure or {}
    log = str(rec.get("log") or night.settings.layout.log(JobId(Step.PROCESS_AB, item.ab)))
    results = (item.qc or {}).get("results")
    results = results if isinstance(results, dict) else {}
    qc1, qc1_all = qc1_text(qc1_values(item.qc))  # the first three; all in the tooltip
    parents = night[item.ab].parents
    own = [p for p in (results.get("png"), results.get("paf")) if isinstance(p, str) and p]
    reports = [(p, os.path.splitext(p)[1].lstrip(".").upper() or "report") for p in own]
    reports += [(p, os.path.basename(p)) for p in qc_reports(night.settings, item.ab)]
    return {
        "ab": item.ab,
        "raw_type": ab.raw_type,
        "recipe": ab.recipe,
        "state": item.state,
        "start": clock_text(rec.get("start")),
        "end": clock_text(rec.get("end")),
        "duration": _duration(rec.get("duration_s")),
        "host": item.host or str(rec.get("host", "")),
        "pool": "; ".join(t for t in (item.pool, item.memory) if t),
        "waits_for": f"{len(parents)} AB{'s' if len(parents) != 1 else ''}" if parents else "",
        "waits_for_all": "\n".join(parents),
        "log": log if os.path.exists(log) else None,
        "qc_reports": reports,
        "qc_failed": bool(item.qc_failure),
        "qc1": qc1,
        "qc1_all": qc1_all,
        "reason": "; ".join(t for t in (_reason(item), item.problem) if t),
    }


def _reason(item: ABState) -> str:
    """Why a failed AB failed (its note's reason, one line)."""
    if item.state is not ABStatus.FAILED or not item.failure:
        return ""
    return inert(item.failure.get("reason") or "", line=True)


@functools.cache
def _template() -> jinja2.Template:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("abflow.views", "templates"),
        autoescape=True,
        keep_trailing_newline=True,
        finalize=_shown,
    )
    return environment.get_template("status.html.j2")


def _shown(value: object) -> object:
    """Every value the template shows: text inert (the HTML escaping follows)."""
    return inert(value) if isinstance(value, str) and not isinstance(value, Markup) else value


def relative_link(page: str) -> Link:
    """Links relative to the page's directory (they resolve from file:// and a web server)."""
    base = os.path.dirname(page)

    def link(path: str) -> str | None:
        return href_of(os.path.relpath(path, base)) if os.path.exists(path) else None

    return link


Queue = Callable[[], list | None]


def pool_queue(night: Night) -> list | None:
    """The night's jobs in the HTCondor queue (None: no pool configured or none answers)."""
    from abflow.state.schedd import night_queue

    try:
        return night_queue(night.settings.state_dir)
    except Exception:  # the page must never fail on the pool
        return None


def write_page(night: Night, queue: list | None = None) -> str:
    """Write the night's page (with its jobs in the HTCondor ``queue``); return its path."""
    path = page_path(night)
    atomic_write_text(path, render(night_state(night, queue), relative_link(path)))
    return path


def export_page(night: Night, export_dir: str) -> str:
    """Copy the page with every file it links into ``export_dir/<DATE>/``; return the page.
    Only files inside the night's directories are linked, so only they are copied (the file a
    link resolves to, read once); what is refused is named in one line on stderr."""
    from abflow.state.fsutil import atomic_copy, check_inside, resolve_roots

    target = os.path.join(export_dir, night.settings.date)
    files = os.path.join(target, "files")
    check_inside(files, resolve_roots([export_dir]), "export into")  # no link leads out
    os.makedirs(files, exist_ok=True)
    copied: dict[str, str] = {}
    allowed = linkable(night.settings)

    def link(path: str) -> str | None:
        real = allowed(path)
        if real is None or not os.path.isfile(real):
            return None
        if real not in copied:
            name = os.path.basename(path)
            if name in copied.values():
                name = f"{len(copied)}-{name}"
            atomic_copy(real, os.path.join(files, name))  # replaces a link there, never follows
            copied[real] = name
        return href_of(f"files/{copied[real]}")

    refused: list[str] = []
    page = os.path.join(target, os.path.basename(page_path(night)))
    atomic_write_text(page, render(night_state(night), link, refused))
    if refused:
        print(
            f"abflow status: not exported (outside the night's directories): "
            f"{', '.join(dict.fromkeys(refused))}",
            file=sys.stderr,
        )
    return page


class PageRefresher:
    """Rewrite the night's page every ``interval`` seconds from a background thread.

    Waits on an event between refreshes (no busy loop); :meth:`stop` ends it and writes the
    page a last time.
    """

    def __init__(
        self, night: Night, interval: float = REFRESH_SECONDS, queue: Queue | None = None
    ) -> None:
        self.night = night
        self.interval = interval
        self.queue = queue  # asked at every refresh (a run on a pool: pool_queue)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="abflow-status", daemon=True)

    def _write(self) -> None:
        queue = self.queue() if self.queue else None
        for night in self.night.nights():  # one page per date
            try:
                write_page(night, queue)
            except Exception as exc:  # the page must never break the night
                print(
                    f"abflow: could not write the status page: {inert(exc, line=True)}", flush=True
                )

    def _loop(self) -> None:
        self._write()
        while not self._stop.wait(self.interval):
            self._write()

    def start(self, queue: Queue | None = None) -> PageRefresher:
        """Start refreshing (showing the HTCondor ``queue`` if given)."""
        self.queue = queue or self.queue
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop refreshing and write the final page."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self._write()
