rule prepare_data:
    input:
        get_data_inputs(LSB),
    output:
        data="results/data/{dataset}.npz",
        summary="results/data/{dataset}.json",
    log:
        "results/logs/prepare_data/{dataset}.log",
    conda:
        "../envs/lsbench.yaml"
    threads: 1
    resources:
        mem_mb=1200,  # measured peak RSS 729 MiB for Fashion-MNIST
        runtime=10,
    params:
        data_root=get_data_root_arg(LSB),
        fingerprint=get_data_fingerprint(LSB),
    shell:
        "lsbench prepare-data --dataset {wildcards.dataset} {params.data_root}"
        " --out {output.data} > {log} 2>&1"
