# abflow: a night of DFOS Association Blocks as a Snakemake calibration cascade.
#
# Table of contents only: configuration, includes, the default target. The cascade itself is
# read once from the night's AB list and AB files by abflow.model.night.load_night (common.smk).
import os

from snakemake.utils import min_version

min_version("9.0")


# The bundled example night, unless --configfile names a complete site configuration
# (a site config is not merged over the example's command templates).
if not workflow.overwrite_configfiles:

    configfile: os.path.join(workflow.basedir, "config", "config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/process.smk"
include: "workflow/rules/qc.smk"
include: "workflow/rules/report.smk"


# Downloads run on the submitting host (they need the archive, not a cluster slot).
localrules:
    all,
    download_raw,
    download_mcal,
    wait_for_downloads,
    request_rerun,
    summarize_benchmarks,


rule all:
    default_target: True
    input:
        RULES.final_targets(),
