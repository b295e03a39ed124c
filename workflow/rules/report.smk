# The night's benchmarks as one table, shown by `snakemake --report`.


rule summarize_benchmarks:
    input:
        records=RULES.final_records(),
    output:
        table=report(
            SETTINGS.layout.benchmark_table(SETTINGS.batch_id),
            caption="../report/benchmarks.rst",
            category="Benchmarks",
        ),
    log:
        SETTINGS.layout.benchmark_table_log(SETTINGS.batch_id),
    conda:
        "../../environment.yml"
    params:
        settings=SETTINGS,
    script:
        "../scripts/benchmark_table.py"
