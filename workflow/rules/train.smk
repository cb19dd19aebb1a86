rule train:
    input:
        unpack(get_train_inputs(PLAN)),
    output:
        runs="results/runs/{dataset}/{model}/{definition}/seed{seed}/{method}/p{param}/runs.parquet",
        metrics="results/runs/{dataset}/{model}/{definition}/seed{seed}/{method}/p{param}/metrics.parquet",
        reliability="results/runs/{dataset}/{model}/{definition}/seed{seed}/{method}/p{param}/reliability.parquet",
        predictions="results/runs/{dataset}/{model}/{definition}/seed{seed}/{method}/p{param}/predictions.parquet",
        calibrated="results/runs/{dataset}/{model}/{definition}/seed{seed}/{method}/p{param}/calibrated.parquet",
        ood="results/runs/{dataset}/{model}/{definition}/seed{seed}/{method}/p{param}/ood.parquet",
        ood_predictions="results/runs/{dataset}/{model}/{definition}/seed{seed}/{method}/p{param}/ood_predictions.parquet",
        environment="results/runs/{dataset}/{model}/{definition}/seed{seed}/{method}/p{param}/environment.parquet",
        # The final model, evaluated by evaluate_shifts without retraining.
        model="results/runs/{dataset}/{model}/{definition}/seed{seed}/{method}/p{param}/model.pt",
    log:
        "results/logs/train/{dataset}/{model}/{definition}/seed{seed}/{method}-p{param}.log",
    group:
        "train"
    conda:
        get_conda_env
    threads: LSB.train.threads
    resources:
        mem_mb=get_train_mem_mb(LSB),
        runtime=get_train_runtime(LSB),
        gpu=get_train_gpus(LSB),
    params:
        # What defines a run's numbers (a change reruns it); how it executes is in `execution`.
        run_dir=get_wildcard_run_dir,
        model=get_model_name,
        epochs=LSB.train.epochs,
        batch_size=LSB.train.batch_size,
        lr=LSB.train.lr,
        validation_size=get_validation_size(LSB),
        ood=get_ood_args(PLAN),
        execution=get_execution_options(LSB),
    shell:
        "lsbench train --dataset {wildcards.dataset} --model {params.model:q} --data {input.data:q}"
        " --out-dir {params.run_dir} --seed {wildcards.seed}"
        " --method {wildcards.method} --param {wildcards.param}"
        " --epochs {params.epochs} --batch-size {params.batch_size} --lr {params.lr}"
        " --validation-size {params.validation_size} {params.ood} --threads {threads}"
        " {params.execution}"
        " > {log:q} 2>&1"
