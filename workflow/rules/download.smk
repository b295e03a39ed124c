# Downloads: one job per missing raw file and per missing REAL master calibration, run on the
# submitting host and throttled by the global resource `download` (limits.downloads).


rule download_raw:
    output:
        RAW_OUTPUT,
    log:
        RULES.raw_log_pattern,
    wildcard_constraints:
        file=FILE_WILDCARD,
    priority: RULES.get_raw_download_priority
    retries: SETTINGS.raw["retries"]["download"]
    conda:
        "../../environment.yml"
    resources:
        download=1,
    params:
        command=RULES.get_raw_download_command,
    shell:
        "{params.command}"


rule download_mcal:
    output:
        RULES.cal_pattern,
    log:
        RULES.cal_log_pattern,
    wildcard_constraints:
        file=FILE_WILDCARD,
    priority: RULES.get_cal_download_priority
    retries: SETTINGS.raw["retries"]["download"]
    conda:
        "../../environment.yml"
    resources:
        download=1,
    params:
        command=RULES.get_cal_download_command,
    shell:
        "{params.command}"


# FULL_RAWDOWNLOAD: every AB to run waits for this flag, made once all downloads are done.
rule wait_for_downloads:
    input:
        RULES.barrier_inputs(),
    output:
        temp(RULES.barrier),
    log:
        RULES.barrier_log,
    conda:
        "../../environment.yml"
    params:
        planned=len(RULES.barrier_inputs()),
    shell:
        "echo all {params.planned} downloads done > {log:q} && touch {output:q}"
