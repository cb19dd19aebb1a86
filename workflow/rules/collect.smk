rule collect:
    input:
        runs=get_run_tables(LSB, "runs"),
        metrics=get_run_tables(LSB, "metrics"),
        reliability=get_run_tables(LSB, "reliability"),
        predictions=get_run_tables(LSB, "predictions"),
        calibrated=get_run_tables(LSB, "calibrated"),
        ood=get_run_tables(LSB, "ood"),
        ood_predictions=get_run_tables(LSB, "ood_predictions"),
        environment=get_run_tables(LSB, "environment"),
        data=get_data_summaries(LSB),
    output:
        runs="results/runs.parquet",
        metrics="results/metrics.parquet",
        reliability="results/reliability.parquet",
        predictions="results/predictions.parquet",
        calibrated="results/calibrated.parquet",
        ood="results/ood.parquet",
        ood_predictions="results/ood_predictions.parquet",
        environment="results/environment.parquet",
        provenance="results/provenance.parquet",
    log:
        "results/logs/collect.log",
    conda:
        "../envs/lsbench.yaml"
    threads: 1
    params:
        run_dirs=get_run_dirs(LSB),
        config=get_config_json(config),
        source_dir=workflow.basedir,
    shell:
        "lsbench collect --out-dir results --config-json {params.config:q}"
        " --source-dir {params.source_dir:q} --data-dir results/data {params.run_dirs:q}"
        " > {log} 2>&1"
