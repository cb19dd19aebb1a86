rule collect:
    input:
        runs=get_run_tables(PLAN, "runs"),
        metrics=get_run_tables(PLAN, "metrics"),
        reliability=get_run_tables(PLAN, "reliability"),
        predictions=get_run_tables(PLAN, "predictions"),
        calibrated=get_run_tables(PLAN, "calibrated"),
        ood=get_run_tables(PLAN, "ood"),
        ood_predictions=get_run_tables(PLAN, "ood_predictions"),
        environment=get_run_tables(PLAN, "environment"),
        data=PLAN.data_summaries(),
        # Empty when shifts are off (then collect removes shift.parquet and shift_gallery.parquet).
        shift=PLAN.shift_tables(),
        shifted_data=get_shifted_data(PLAN),
    output:
        **get_shift_collect_outputs(PLAN),
        runs=results_path("runs.parquet"),
        metrics=results_path("metrics.parquet"),
        reliability=results_path("reliability.parquet"),
        predictions=results_path("predictions.parquet"),
        calibrated=results_path("calibrated.parquet"),
        ood=results_path("ood.parquet"),
        ood_predictions=results_path("ood_predictions.parquet"),
        environment=results_path("environment.parquet"),
        provenance=results_path("provenance.parquet"),
        manifest=results_path(f"grid-{PLAN.grid_id}.json"),
    log:
        results_path("logs/collect.log"),
    localrule: True
    conda:
        get_conda_env
    threads: 1
    params:
        args=get_collect_args(config, PLAN, workflow.current_basedir),
    # The published tables go beside runs.parquet; each run is the folder of its runs.parquet.
    shell:
        'lsbench collect --out-dir "$(dirname {output.runs:q})" --manifest {output.manifest:q}'
        " --data-summary {input.data:q} --shift-table {input.shift:q} --shifted-data {input.shifted_data:q}"
        " {params.args} -- {input.runs:q} > {log:q} 2>&1"
