# The night's benchmarks as one table, shown by `snakemake --report`.


rule summarize_benchmarks:
    input:
        records=RULES.final_records(),
    output:
        table=report(
            RULES.benchmark_table_path,
            caption="../report/benchmarks.rst",
            category="Benchmarks",
        ),
    log:
        RULES.benchmark_table_log,
    conda:
        "../../environment.yml"
    params:
        settings=SETTINGS,
    script:
        "../scripts/benchmark_table.py"
