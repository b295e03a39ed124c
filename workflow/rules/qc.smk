# QC: one job per processed AB (unless qc_mode is IMPLICIT), after its completion record,
# throttled by the global resource `qc` (SER: 1; PAR: limits.qc). QC jobs are leaves of the
# cascade: a failed QC marks that AB's QC as failed and stops nothing else.


rule process_qc:
    input:
        # record (the AB's), raw (its raw files under CAL_CLEANUP)
        unpack(RULES.get_qc_inputs),
    output:
        record=RULES.pattern("records", "process_qc"),
    log:
        RULES.pattern("logs", "process_qc"),
    conda:
        "../../environment.yml"
    resources:
        **RULES.pool_resources("process_qc"),
        qc=1,
    run:
        RULES.run_job("process_qc", wildcards, threads, log[0], output.record)
