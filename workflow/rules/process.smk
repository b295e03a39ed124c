# Processing: one job per AB, after the completion records of the ABs it takes calibrations from.


rule process_ab:
    input:
        parents=RULES.get_parent_records,
        ab_file=RULES.get_ab_file,
    output:
        record=RULES.record_pattern,
    log:
        RULES.log_pattern,
    benchmark:
        RULES.benchmark_pattern
    params:
        step=RULES.get_step,
        generation=RULES.get_generation,
    threads: RULES.get_threads
    resources:
        ab_jobs=1,
    priority: RULES.get_priority
    script:
        "../scripts/process_ab.py"
