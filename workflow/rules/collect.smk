rule collect:
    input:
        metrics=get_run_tables(LSB, "metrics"),
        reliability=get_run_tables(LSB, "reliability"),
        predictions=get_run_tables(LSB, "predictions"),
        calibrated=get_run_tables(LSB, "calibrated"),
    output:
        metrics="results/metrics.parquet",
        reliability="results/reliability.parquet",
        predictions="results/predictions.parquet",
    log:
        "results/logs/collect.log",
    conda:
        "../envs/lsbench.yaml"
    threads: 1
    params:
        run_dirs=get_run_dirs(LSB),
    shell:
        "lsbench collect --out-dir results {params.run_dirs} > {log} 2>&1"
