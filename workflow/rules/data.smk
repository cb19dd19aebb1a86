rule prepare_data:
    # No file inputs: the data's content is the fingerprint in the cache's name (lsbench.plan), so
    # data replaced in place reruns, and the same files reached by another path do not.
    output:
        data=results_path("data/{dataset}-{fingerprint}.npz"),
        summary=results_path("data/{dataset}-{fingerprint}.json"),
    log:
        results_path("logs/prepare_data/{dataset}-{fingerprint}.log"),
    conda:
        get_conda_env
    threads: 1
    resources:
        mem_mb=1200,  # measured peak RSS 729 MiB for Fashion-MNIST
        runtime=10,
    params:
        data_root=get_data_root_arg(LSB),
    shell:
        "lsbench prepare-data --dataset {wildcards.dataset} {params.data_root}"
        " --fingerprint {wildcards.fingerprint} --out {output.data:q} > {log:q} 2>&1"
