rule collect:
    input:
        **get_shift_collect_inputs(PLAN),
        runs=get_run_tables(PLAN, "runs"),
        metrics=get_run_tables(PLAN, "metrics"),
        reliability=get_run_tables(PLAN, "reliability"),
        predictions=get_run_tables(PLAN, "predictions"),
        calibrated=get_run_tables(PLAN, "calibrated"),
        ood=get_run_tables(PLAN, "ood"),
        ood_predictions=get_run_tables(PLAN, "ood_predictions"),
        environment=get_run_tables(PLAN, "environment"),
        data=PLAN.data_summaries(),
    output:
        **get_shift_collect_outputs(PLAN),
        runs="results/runs.parquet",
        metrics="results/metrics.parquet",
        reliability="results/reliability.parquet",
        predictions="results/predictions.parquet",
        calibrated="results/calibrated.parquet",
        ood="results/ood.parquet",
        ood_predictions="results/ood_predictions.parquet",
        environment="results/environment.parquet",
        provenance="results/provenance.parquet",
        manifest=f"results/grid-{PLAN.grid_id}.json",
    log:
        "results/logs/collect.log",
    conda:
        get_conda_env
    threads: 1
    params:
        args=get_collect_args(config, PLAN, workflow.basedir),
    shell:
        "lsbench collect --out-dir results --manifest {output.manifest:q} {params.args} > {log:q} 2>&1"
