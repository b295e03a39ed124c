# Processing: one job per AB, after the completion records of the ABs it takes calibrations from
# and the local copies of its raw files and REAL calibrations. A multi-detector AB (MEF factor
# n > 1, not under DRS_TYPE INT) runs as n process_ab_det jobs (commands.process_ab_det, {det} =
# 1..n), then its process_ab job joins them (commands.mef_join); its children wait for the join.
# Every job is abflow's job (abflow/job/), given the record and the log its rule declares (the
# paths are the state layout's, abflow/state/layout.py): RULES.run_job runs it in a thread of
# this Snakemake process (the profiles set force-use-threads), and on an HTCondor pool
# abflow-pool-job runs the same job (abflow/job/pool.py: how a rule becomes a pool job; the
# rule's run: block never runs there). A Python process per
# job, or Snakemake's formatting of a long shell command for every job of the DAG, cost 32-way
# fan-outs and large dry-runs measurably (bench/fanout.py, bench/dryrun.py). The job writes its
# own benchmark (Snakemake's format): a rule's `benchmark:` has Snakemake poll every running
# job's processes.


rule process_ab:
    input:
        # parents (records), data (downloads), detectors (a join's), rerun (a rerun request)
        unpack(RULES.get_ab_inputs),
    output:
        record=RULES.pattern("records", "process_ab"),
    log:
        RULES.pattern("logs", "process_ab"),
    priority: RULES.get_priority
    conda:
        "../../environment.yml"
    threads: RULES.ab_threads
    resources:
        **RULES.pool_resources("process_ab"),
        ab_jobs=1,
    run:
        RULES.run_job("process_ab", wildcards, threads, log[0], output.record)


rule process_ab_det:
    input:
        # parents (records), data (downloads), rerun (a rerun request); no detectors
        unpack(RULES.get_ab_inputs),
    output:
        record=RULES.pattern("records", "process_ab_det"),
    log:
        RULES.pattern("logs", "process_ab_det"),
    wildcard_constraints:
        det=r"[1-9][0-9]*",
    priority: RULES.get_det_priority
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        **RULES.pool_resources("process_ab_det"),
        ab_jobs=1,
    run:
        RULES.run_job("process_ab_det", wildcards, threads, log[0], output.record)


# A rerun request (subcascade=X, or an AB file edited since its record): written by this job, not
# while the DAG is built, so that a dry-run, --lint or --dag writes nothing. The AB's first job
# takes it as input and removes it when it succeeds.
rule request_rerun:
    output:
        RULES.request_pattern,
    log:
        RULES.request_log_pattern,
    wildcard_constraints:
        key=r"g[0-9]+-[^/.]+",
    run:
        RULES.write_request(wildcards.ab, wildcards.key, output[0], log[0])
