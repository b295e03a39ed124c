# Processing: one job per AB, after the completion records of the ABs it takes calibrations from
# and the local copies of its raw files and REAL calibrations.


rule process_ab:
    input:
        parents=RULES.get_parent_records,
        data=RULES.get_data_inputs,
    output:
        record=RULES.record_pattern,
    log:
        RULES.log_pattern,
    benchmark:
        RULES.benchmark_pattern
    priority: RULES.get_priority
    conda:
        "../../environment.yml"
    threads: RULES.ab_threads
    resources:
        ab_jobs=1,
    params:
        command=RULES.get_process_command,
        # rerun trigger (Snakemake's params trigger): a subcascade request or an edited AB
        rerun=RULES.get_rerun_key,
    shell:
        "{params.command} --threads {threads} --rerun-key {params.rerun}"
