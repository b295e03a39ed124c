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
        command=RULES.get_process_command,
        products=RULES.get_products,
        env=RULES.get_job_env,
        inputs_file=RULES.get_inputs_file,
        info=RULES.get_record_info,
        workdir=RULES.workdir_pattern,
        failed=RULES.failed_pattern,
        check_products=SETTINGS.check_products,
        generation=RULES.get_generation,
    threads: RULES.get_threads
    resources:
        ab_jobs=1,
    priority: RULES.get_priority
    script:
        "../scripts/process_ab.py"
