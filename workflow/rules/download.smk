# Downloads: one job per missing raw file and per missing REAL master calibration, run on the
# submitting host and throttled by the global resource `download` (limits.downloads).


rule download_raw:
    output:
        RAW_OUTPUT,
    log:
        RULES.pattern("logs", "download_raw"),
    wildcard_constraints:
        file=FILE_WILDCARD,
    priority: RULES.download_priority("raw_dir")
    retries: SETTINGS.raw["retries"]["download"]
    conda:
        "../../environment.yml"
    resources:
        download=1,
    run:
        RULES.run_job("download_raw", wildcards, threads, log[0])


rule download_mcal:
    output:
        CAL_OUTPUT,
    log:
        RULES.pattern("logs", "download_mcal"),
    wildcard_constraints:
        file=FILE_WILDCARD,
    priority: RULES.download_priority("cal_dir")
    retries: SETTINGS.raw["retries"]["download"]
    conda:
        "../../environment.yml"
    resources:
        download=1,
    run:
        RULES.run_job("download_mcal", wildcards, threads, log[0])


# FULL_RAWDOWNLOAD: every AB to run waits for this flag, made once all downloads are done.
rule wait_for_downloads:
    input:
        RULES.downloads_done_inputs(),
    output:
        temp(SETTINGS.layout.downloads_done_flag(SETTINGS.batch_id)),
    log:
        SETTINGS.layout.downloads_done_log(SETTINGS.batch_id),
    conda:
        "../../environment.yml"
    params:
        planned=len(RULES.downloads_done_inputs()),
    shell:
        "echo all {params.planned} downloads done > {log:q} && touch {output:q}"
