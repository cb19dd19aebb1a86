rule train:
    input:
        unpack(get_train_inputs(PLAN)),
    output:
        runs=results_path(f"{RUN}/runs.parquet"),
        metrics=results_path(f"{RUN}/metrics.parquet"),
        reliability=results_path(f"{RUN}/reliability.parquet"),
        predictions=results_path(f"{RUN}/predictions.parquet"),
        calibrated=results_path(f"{RUN}/calibrated.parquet"),
        ood=results_path(f"{RUN}/ood.parquet"),
        ood_predictions=results_path(f"{RUN}/ood_predictions.parquet"),
        environment=results_path(f"{RUN}/environment.parquet"),
        # The final model, evaluated by evaluate_shifts without retraining.
        model=results_path(f"{RUN}/model.pt"),
    log:
        results_path(
            "logs/train/{dataset}/{model}/{definition}/seed{seed}/{method}-p{param}.log"
        ),
    group:
        get_train_group(LSB)
    conda:
        get_conda_env
    threads: LSB.train.threads
    resources:
        **get_gpu_resources(LSB),
        mem_mb=get_train_mem_mb(LSB),
        runtime=get_train_runtime(LSB),
    params:
        # What defines a run's numbers (a change reruns it); how it executes is in `execution`.
        model=get_model_name,
        epochs=LSB.train.epochs,
        batch_size=LSB.train.batch_size,
        lr=LSB.train.lr,
        validation_size=get_validation_size(LSB),
        ood_set=get_ood_set(PLAN),
        execution=get_execution_options(LSB),
    # The run's directory is its outputs' folder; the log gets everything, the terminal one line
    # per epoch (lsbench train --log), each in one write, so jobs running at once do not garble it.
    shell:
        "lsbench train --dataset {wildcards.dataset} --model {params.model:q} --data {input.data:q}"
        ' --out-dir "$(dirname {output.runs:q})" --seed {wildcards.seed}'
        " --method {wildcards.method} --param {wildcards.param}"
        " --epochs {params.epochs} --batch-size {params.batch_size} --lr {params.lr}"
        " --validation-size {params.validation_size} --ood-set={params.ood_set:q} --ood-data={input.ood:q}"
        " --threads {threads} {params.execution} --log {log:q}"
