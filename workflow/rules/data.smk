rule prepare_data:
    output:
        data="results/data/fashion_mnist.pt",
        summary="results/data/fashion_mnist.json",
    log:
        "results/logs/prepare_data.log",
    conda:
        "../envs/lsbench.yaml"
    threads: 1
    resources:
        mem_mb=1200,  # measured peak RSS 729 MiB
        runtime=10,
    params:
        data_dir=get_data_dir_arg(LSB),
    shell:
        "lsbench prepare-data {params.data_dir} --out {output.data} > {log} 2>&1"
