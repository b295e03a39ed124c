"""Run one AB's command (commands.process_ab) and write its completion record."""

import sys

from abflow.runner import Step, StepFailed, run_step

snakemake = globals()["snakemake"]  # injected by Snakemake's script directive

step = Step(
    ab=snakemake.wildcards.ab,
    step="process_ab",
    command=snakemake.params.command,
    workdir=snakemake.params.workdir,
    log_path=snakemake.log[0],
    record_path=snakemake.output.record,
    failed_path=snakemake.params.failed,
    env=snakemake.params.env,
    products=snakemake.params.products,
    check_products=snakemake.params.check_products,
    info={
        **snakemake.params.info,
        "threads": snakemake.threads,
        "generation": snakemake.params.generation,
    },
    files={"abflow_inputs.json": snakemake.params.inputs_file},
)
try:
    run_step(step)
except StepFailed as exc:
    print(exc, file=sys.stderr)
    sys.exit(1)
