# Load the night once and wire abflow's lookups into the rules.
import functools
import os

from abflow.condor import owner_id, write_wrapper
from abflow.config import ConfigError, resolve
from abflow.flavour import decide, describe, executor_problem, is_remote, read_profiles
from abflow.night import NightError, load_night
from abflow.rulefuncs import AB_WILDCARD, FILE_WILDCARD, NightRules
from abflow.lifecycle import StartRefused, finish_run, start_run
from abflow.monitor import PageRefresher, pool_queue

# The profile decides the DRS_TYPE flavour, also when the command line has a --config
# (abflow.flavour); a contradiction with the executor is refused before anything runs.
PROFILES = read_profiles()
FLAVOUR = decide(config, workflow.config_settings.config, PROFILES)
if FLAVOUR.problem:
    raise WorkflowError(FLAVOUR.problem)
try:
    SETTINGS = resolve(FLAVOUR.config, root=workflow.basedir)
    RULES = NightRules(load_night(SETTINGS), remote=workflow.remote_exec)
except (ConfigError, NightError, ValueError) as exc:
    raise WorkflowError(str(exc)) from None
if executor_problem(SETTINGS.drs_type, PROFILES.executor):
    raise WorkflowError(executor_problem(SETTINGS.drs_type, PROFILES.executor))
if RULES.download_problem():
    raise WorkflowError(f"cannot download: {RULES.download_problem()}")
# CAL_CLEANUP: raw files this run downloads are removed once every job reading them is done.
RAW_OUTPUT = temp(RULES.raw_pattern) if RULES.cleanup_raw else RULES.raw_pattern

# Cores of this machine for local jobs; none are given (or needed) when an executor such as
# htcondor runs the jobs elsewhere.
CORES = workflow.resource_settings.cores or 1
RULES.ab_threads = RULES.threads_for(CORES)
# Every job's command (abflow run-step) reads the run's configuration from the environment:
# set here, inherited by the jobs (also in remote jobs, which parse this file again).
os.environ.update(ABFLOW_CONFIG=SETTINGS.to_config_json())
# On an HTCondor pool, jobs start through this wrapper and carry the night store, this run
# and their AB (resources job_wrapper and classad_* of the job rules; ignored when running
# locally): abflow watch/stop and a crashed run's successor find exactly their jobs.
JOB_WRAPPER = write_wrapper(SETTINGS)
RUN_TAG = SETTINGS.state_dir
RUN_OWNER = owner_id()
REFRESHER = PageRefresher(RULES.night)
RUN = {}  # this run's lock (filled by onstart)
for note in (*FLAVOUR.warnings, *SETTINGS.notes):
    logger.warning(note)
logger.info(
    f"abflow: {SETTINGS.batch_id}, {len(RULES.night)} ABs: "
    + describe(
        SETTINGS.drs_type,
        FLAVOUR.source,
        RULES.resource_limits().get("ab_jobs", 0),
        workflow.resource_settings.cores,
        workflow.resource_settings.nodes,
        PROFILES.executor,
    )
)
for warning in RULES.night.warnings:
    logger.warning(str(warning))
for _name, _value in RULES.resource_limits().items():
    if _name not in workflow.global_resources:
        workflow.register_resource(_name, _value)


wildcard_constraints:
    ab=AB_WILDCARD,


onstart:
    # locks, the flavour against the executor really used, a crashed predecessor's leftovers
    try:
        RUN.update(
            start_run(
                RULES.night,
                RULES.owns_marker,
                workflow.executor_plugin.name,
                logger.warning,
            )
        )
    except StartRefused as exc:
        raise WorkflowError(str(exc)) from None
    # the AB monitor page, rewritten every 60 s during the run (with the HTCondor queue)
    REFRESHER.start(
        functools.partial(pool_queue, RULES.night)
        if is_remote(RUN["executor"])
        else None
    )


onsuccess:
    finish_run(RULES.night, REFRESHER, RUN)


onerror:
    _summary = finish_run(
        RULES.night,
        REFRESHER,
        RUN,
        RULES.to_run,
        getattr(workflow.executor_settings, "jobdir", "") or "",
    )
    if _summary:
        logger.error(_summary)
