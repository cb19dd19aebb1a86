# Distribution shift: each dataset's test subset under every shift (one job per dataset), then each
# run's final model on them (one job per run, which starts as soon as its run has trained: it
# overlaps training on one machine and spreads over nodes on a cluster).
# Neither trains: a changed shift constant (lsbench.shifts, hashed into `suite`) or another set of
# shifts reruns these jobs only.
rule shift_data:
    input:
        data=results_path("data/{dataset}-{fingerprint}.npz"),
    output:
        results_path("data/shifted/{dataset}-{fingerprint}-{suite}.npz"),
    log:
        results_path("logs/shift_data/{dataset}-{fingerprint}-{suite}.log"),
    benchmark:
        results_path("benchmarks/shift_data/{dataset}-{fingerprint}-{suite}.tsv")
    conda:
        get_conda_env
    threads: 1
    resources:
        mem_mb=get_shift_data_mem_mb(LSB),
        runtime=30,
    params:
        images=LSB.shift_images,
        shifts=" ".join(LSB.shifts),
    shell:
        "lsbench shift-data --dataset {wildcards.dataset} --data {input.data:q} --images {params.images}"
        " --out {output:q} {params.shifts} > {log:q} 2>&1"


rule evaluate_shifts:
    input:
        unpack(get_shift_inputs(PLAN)),
    output:
        results_path(f"shift/{RUN_KEY}/{{suite}}.parquet"),
    log:
        results_path(
            "logs/evaluate_shifts/{dataset}/{model}/{definition}/seed{seed}/{method}-p{param}-{suite}.log"
        ),
    benchmark:
        results_path(
            "benchmarks/evaluate_shifts/{dataset}/{model}/{definition}/seed{seed}/{method}-p{param}-{suite}.tsv"
        )
    # With its run's train job in one cluster submission (CPU): it starts on the node that
    # trained the model, as soon as the model is there.
    group:
        get_train_group(LSB)
    conda:
        get_conda_env
    threads: LSB.train.threads
    resources:
        **get_gpu_resources(LSB),
        mem_mb=get_train_mem_mb(LSB),
        # Measured: under 10 s a run for the MLP on 2000 Fashion-MNIST images x 81 sets.
        runtime=10,
    params:
        # The model to build is the run's definition, never what its model.pt names.
        model=get_model_name,
        execution=Untracked(f"--device {LSB.train.device}"),
    # The run is the folder of its model.pt.
    shell:
        "lsbench evaluate-shifts --model {params.model:q} --data {input.data:q} --shifted {input.shifted:q}"
        " --out {output:q}"
        " --threads {threads} {params.execution} {input.model:q} > {log:q} 2>&1"
