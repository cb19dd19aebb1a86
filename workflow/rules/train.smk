rule train:
    input:
        data=rules.prepare_data.output.data,
    output:
        metrics="results/runs/seed{seed}/eps{eps}/metrics.parquet",
        reliability="results/runs/seed{seed}/eps{eps}/reliability.parquet",
        predictions="results/runs/seed{seed}/eps{eps}/predictions.parquet",
        calibrated="results/runs/seed{seed}/eps{eps}/calibrated.parquet",
        environment="results/runs/seed{seed}/eps{eps}/environment.parquet",
    log:
        "results/logs/train/seed{seed}_eps{eps}.log",
    group:
        "train"
    conda:
        "../envs/lsbench.yaml"
    threads: LSB.train.threads
    resources:
        mem_mb=get_train_mem_mb(LSB),
        runtime=get_train_runtime(LSB),
        gpu=get_train_gpus(LSB),
    params:
        run_dir=get_wildcard_run_dir,
        epochs=LSB.train.epochs,
        batch_size=LSB.train.batch_size,
        lr=LSB.train.lr,
        model=LSB.train.model,
        device=LSB.train.device,
        validation_size=LSB.train.validation_size,
        keep="--keep-checkpoint" if LSB.keep_checkpoints else "",
    shell:
        "lsbench train --data {input.data} --out-dir {params.run_dir} --seed {wildcards.seed}"
        " --epsilon {wildcards.eps} --epochs {params.epochs} --batch-size {params.batch_size}"
        " --lr {params.lr} --model {params.model} --device {params.device} --threads {threads}"
        " --validation-size {params.validation_size}"
        " {params.keep} > {log} 2>&1"
