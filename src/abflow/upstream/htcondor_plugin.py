"""Where abflow relies on how snakemake-executor-plugin-htcondor builds a pool job, beyond the
classes it exports (``Executor``, ``ExecutorSettings``, ``common_settings``, subclassed or reused
by snakemake_executor_plugin_abflow_htcondor).

Checked against the plugin versions in :data:`CHECKED` (pyproject.toml pins ``==0.3.*``;
tests/test_upstream.py has a canary for each fact below).
"""

from __future__ import annotations

import glob
import os

CHECKED = "0.3"

# The job resources abflow sets and what the plugin makes of them:
#   job_wrapper  -> the job's executable (Snakemake's job arguments follow; abflow-pool-job
#                   ignores them)
#   classad_X    -> ``+X = "<value>"`` for a str value: quoted, nothing escaped inside
#   environment  -> the job's ``environment`` (HTCondor's quoted syntax, as given)
JOB_WRAPPER = "job_wrapper"
CLASSAD_PREFIX = "classad_"
ENVIRONMENT = "environment"


def stderr_file(jobdir: str, cluster: int) -> str:
    """The stderr file the plugin gave pool job ``cluster`` (``<jobdir>/<rule>/<rule>-<jobid>_
    <ClusterId>.err``), or "" if there is none."""
    if not jobdir:
        return ""
    found = sorted(glob.glob(os.path.join(jobdir, "*", f"*_{cluster}.err")))
    return found[0] if found else ""
