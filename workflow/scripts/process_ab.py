"""Run one AB's command (commands.process_ab) and write its completion record."""

import sys

from abflow.runner import StepFailed, run_step

snakemake = globals()["snakemake"]  # injected by Snakemake's script directive

step = snakemake.params.step
step.info = {**step.info, "generation": snakemake.params.generation}
try:
    run_step(step)
except StepFailed as exc:
    print(exc, file=sys.stderr)
    sys.exit(1)
