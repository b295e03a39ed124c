# Load the night once and wire abflow's lookups into the rules.
import os

from abflow.condor import write_wrapper
from abflow.config import ConfigError, resolve
from abflow.night import NightError, load_night
from abflow.rulefuncs import AB_WILDCARD, FILE_WILDCARD, NightRules
from abflow.monitor import PageRefresher, finish_run
from abflow.runstate import register_run

try:
    SETTINGS = resolve(config, root=workflow.basedir)
    RULES = NightRules(load_night(SETTINGS))
except (ConfigError, NightError, ValueError) as exc:
    raise WorkflowError(str(exc)) from None
if RULES.download_problem():
    raise WorkflowError(f"cannot download: {RULES.download_problem()}")
# CAL_CLEANUP: raw files this run downloads are removed once every job reading them is done.
RAW_OUTPUT = temp(RULES.raw_pattern) if RULES.cleanup_raw else RULES.raw_pattern

RULES.ab_threads = RULES.threads_for(workflow.cores or 1)
# Every job's command (abflow run-step) reads the run's configuration from the environment:
# set here, inherited by the jobs (also in remote jobs, which parse this file again).
os.environ.update(ABFLOW_CONFIG=SETTINGS.to_config_json())
# On an HTCondor pool, jobs start through this wrapper and carry the night's tag
# (resources job_wrapper and classad_AbflowRun of the job rules; ignored when running locally).
JOB_WRAPPER = write_wrapper(SETTINGS)
RUN_TAG = SETTINGS.state_dir
REFRESHER = PageRefresher(RULES.night)
for note in SETTINGS.notes:
    logger.warning(note)
for warning in RULES.night.warnings:
    logger.warning(str(warning))
for _name, _value in RULES.resource_limits(workflow.cores or 1).items():
    if _name not in workflow.global_resources:
        workflow.register_resource(_name, _value)


wildcard_constraints:
    ab=AB_WILDCARD,


onstart:
    register_run(SETTINGS.state_dir, SETTINGS.batch_id)
    # the AB monitor page, rewritten every 60 s during the run
    REFRESHER.start()


onsuccess:
    finish_run(SETTINGS.state_dir, RULES.night, REFRESHER)


onerror:
    finish_run(SETTINGS.state_dir, RULES.night, REFRESHER)
