"""DFOS CAL_CLEANUP: the night's raw files removed once QC no longer needs them.

At the end of a run that does the QC (``steps`` all or qc; under QC_MODE IMPLICIT the AB step,
whose commands run the QC themselves), the raw files of every AB that succeeded and whose QC
is done are removed, except those an AB that has not succeeded (failed, not run, or left out
of this run) reads too: a failed AB keeps its raw files for its rerun. Only regular files
below ``dfo.raw_dir`` (resolved) are removed, and a symbolic link is removed itself, never what
it points to. Nothing is removed that a later step of the same night still needs, so no raw
file is downloaded twice; each removed file leaves a note in the state directory
(``downloads/cleaned/``) that a job file's rawDown lines test, so running the job file again
does not download it either.
"""

from __future__ import annotations

import os

from abflow.model.night import Night
from abflow.state.fsutil import atomic_write_text, inside, remove_file
from abflow.state.layout import JobId, Step
from abflow.state.units import now_iso


def _finished(night: Night, ab: str) -> bool:
    """True if the AB succeeded and its QC is done (or needs none)."""
    layout = night.settings.layout
    if not layout.succeeded(JobId(Step.PROCESS_AB, ab)):
        return False
    if night.settings.qc_mode == "IMPLICIT" or not night[ab].ab.runs_recipe:
        return True
    return layout.succeeded(JobId(Step.PROCESS_QC, ab))


def removable_raw_files(night: Night) -> tuple[list[str], list[str]]:
    """(the raw files CAL_CLEANUP removes, those it keeps for ABs that have not finished)."""
    finished = {ab for ab in night.names if _finished(night, ab)}
    needed = {p for ab in night.names if ab not in finished for p in night[ab].raw_inputs}
    root = (os.path.realpath(night.settings.dfo["raw_dir"]),)
    done = {p for ab in finished for p in night[ab].raw_inputs}
    remove = sorted(p for p in done - needed if inside(os.path.realpath(p), root))
    return remove, sorted(done & needed)


def _note_cleaned(night: Night, path: str) -> None:
    """Leave word that the raw file ``path`` is removed because its ABs are done, so that a
    job file run again does not download it again (its rawDown lines test for the note)."""
    from abflow.job.download import download_job

    s = night.settings
    atomic_write_text(s.layout.cleaned(download_job(s.dfo, path).target), f"{now_iso()}\n")


def clean_up_raw(night: Night) -> str:
    """Remove the raw files of the finished ABs (CAL_CLEANUP); what was done ("" if
    CAL_CLEANUP is off or there is nothing to remove)."""
    s = night.settings
    if not (s.cal_cleanup and s.mode == "CALIB"):
        return ""
    if s.steps == "ab" and s.qc_mode != "IMPLICIT":
        return ""  # the QC step still reads them
    remove, kept = removable_raw_files(night)
    removed = 0
    for path in remove:
        if os.path.lexists(path):
            _note_cleaned(night, path)
            remove_file(path)
            removed += 1
    if not removed and not kept:
        return ""
    return f"abflow: CAL_CLEANUP removed {removed} raw file{'s' if removed != 1 else ''}" + (
        f", kept {len(kept)} that ABs which have not succeeded read" if kept else ""
    )
