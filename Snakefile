# abflow: a night of DFOS Association Blocks as a Snakemake calibration cascade.
#
# Table of contents only: configuration, includes, the default target. The cascade itself is
# read once from the night's AB list and AB files by abflow.model.night.load_night (common.smk).

from snakemake.utils import min_version

from abflow.model.config import default_configfile

min_version("9.0")


# Without --configfile: on a DFOS machine ($DFO_* set) the site's $DFO_CONFIG_DIR/abflow.yaml,
# or none (the schema's DFOS defaults); the bundled example night only where there is no DFOS
# environment (abflow.model.config.default_configfile). A named configuration is complete: it
# is not merged over the example's command templates.
if not workflow.overwrite_configfiles and default_configfile()[0]:

    configfile: str(default_configfile()[0])


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
