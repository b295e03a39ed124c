# Load the night once and wire abflow's lookups into the rules.
import os

from abflow.condor import write_wrapper
from abflow.config import ConfigError, resolve
from abflow.flavour import decide, describe, executor_problem, read_profiles
from abflow.night import NightError, load_night
from abflow.rulefuncs import AB_WILDCARD, FILE_WILDCARD, NightRules
from abflow.monitor import PageRefresher, finish_run
from abflow.runner import now_iso
from abflow.runstate import RunLocked, describe_run, end_orphans, register_run

# The profile decides the DRS_TYPE flavour, also when the command line has a --config
# (abflow.flavour); a contradiction with the executor is refused before anything runs.
PROFILES = read_profiles()
FLAVOUR = decide(config, workflow.config_settings.config, PROFILES)
if FLAVOUR.problem:
    raise WorkflowError(FLAVOUR.problem)
try:
    SETTINGS = resolve(FLAVOUR.config, root=workflow.basedir)
    RULES = NightRules(load_night(SETTINGS))
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
# On an HTCondor pool, jobs start through this wrapper and carry the night's tag
# (resources job_wrapper and classad_AbflowRun of the job rules; ignored when running locally).
JOB_WRAPPER = write_wrapper(SETTINGS)
RUN_TAG = SETTINGS.state_dir
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
    # the executor really used (the command line may name one the profile does not)
    if executor_problem(SETTINGS.drs_type, workflow.executor_plugin.name):
        raise WorkflowError(
            executor_problem(SETTINGS.drs_type, workflow.executor_plugin.name)
        )
    # the run lock of every date: a second run of a date is refused while this one lives
    try:
        RUN.update(
            register_run(SETTINGS.state_dir, RULES.night.batch_ids()),
            since=now_iso(),
        )
    except RunLocked as exc:
        raise WorkflowError(str(exc)) from None
    for _crashed in RUN["replaced"]:
        logger.warning(
            f"abflow: the previous run of {_crashed['batch']} ({describe_run(_crashed)}) ended "
            "without cleaning up (crashed or killed): taking over; its finished ABs are kept"
        )
    if RUN["replaced"]:
        for _job in end_orphans(SETTINGS.state_dir, RULES.owns_marker):
            logger.warning(
                f"abflow: ended {_job.name} (pid {_job.pid}) left by that run"
            )
    # the AB monitor page, rewritten every 60 s during the run
    REFRESHER.start()


onsuccess:
    finish_run(RULES.night, REFRESHER)


onerror:
    _summary = finish_run(RULES.night, REFRESHER, RUN.get("since"), RULES.to_run)
    if _summary:
        logger.error(_summary)
