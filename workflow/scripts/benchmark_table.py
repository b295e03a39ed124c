"""Collect the night's per-AB Snakemake benchmarks into one table for ``--report``."""

import sys

from abflow.state.fsutil import atomic_write_text
from abflow.views.history import benchmark_table

snakemake = globals()["snakemake"]  # injected by Snakemake's script directive

with open(snakemake.log[0], "w") as log:
    sys.stderr = log
    table = benchmark_table(snakemake.params.settings, list(snakemake.input.records))
    atomic_write_text(snakemake.output.table, table)
    print(f"{table.count(chr(10)) - 1} benchmarks", file=log)
