# Load the night once and wire abflow's lookups into the rules (abflow.run.lifecycle.prepare: the
# flavour from the command line and the profile, the settings, the Night, what pool jobs get).
import functools

from abflow.run.lifecycle import StartRefused, finish_run, prepare, start_run
from abflow.run.flavour import is_remote
from abflow.upstream.snakemake import executor_name, executor_setting
from abflow.views.monitor import PageRefresher, pool_queue
from abflow.run.rules import AB_WILDCARD, FILE_WILDCARD
from abflow.views.console import SUMMARY_ATTR, announce

try:
    PREPARED = prepare(config, workflow)
except StartRefused as exc:
    raise WorkflowError(str(exc)) from None
SETTINGS, RULES = PREPARED.settings, PREPARED.rules
# Downloaded files are update() outputs: another night may place the same file after this run
# planned its download, and Snakemake must not remove it before the download job starts (the
# job keeps a file it finds placed; abflow.job.download). CAL_CLEANUP removes raw files at the
# end of the run (abflow.run.lifecycle.finish_run), not as temp() outputs: a failed AB's stay.
RAW_OUTPUT = update(RULES.raw_pattern)
CAL_OUTPUT = update(RULES.cal_pattern)
# On an HTCondor pool, jobs start as abflow-pool-job and carry the night store, this run, their
# job and its command line (RULES.pool_resources: job_wrapper, environment and classad_* of the job
# rules, none when jobs run locally): abflow watch/stop and a crashed run's successor find
# exactly their jobs.
REFRESHER = PageRefresher(RULES.night)
LOCK = (
    {}
)  # this run's lock: who holds the night, since when, its lineage (filled by onstart)
# what the run does, carrying what abflow's console (--logger abflow) needs to know of it
announce(logger, RULES, PREPARED.headline)
for _level, _text in PREPARED.messages:
    getattr(logger, _level)(_text)


wildcard_constraints:
    ab=AB_WILDCARD,


onstart:
    # locks, the flavour against the executor really used, a crashed predecessor's leftovers
    try:
        LOCK.update(
            start_run(
                RULES.night,
                executor_name(workflow),
                logger.warning,
            )
        )
    except StartRefused as exc:
        raise WorkflowError(str(exc)) from None
    # the AB monitor page, rewritten every 60 s during the run (with the HTCondor queue)
    REFRESHER.start(
        functools.partial(pool_queue, RULES.night)
        if is_remote(LOCK["executor"])
        else None
    )


onsuccess:
    _summary = finish_run(
        RULES.night,
        REFRESHER,
        LOCK,
        RULES.summarized,
        without_qc=RULES.without_qc(),
    )
    if _summary:
        logger.warning(_summary, extra={SUMMARY_ATTR: True})


onerror:
    _summary = finish_run(
        RULES.night,
        REFRESHER,
        LOCK,
        RULES.summarized,
        executor_setting(workflow, "jobdir") or "",
        ok=False,
        without_qc=RULES.without_qc(),
    )
    if _summary:
        logger.error(_summary, extra={SUMMARY_ATTR: True})
