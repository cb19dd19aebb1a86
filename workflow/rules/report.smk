rule report:
    input:
        rules.collect.output,
    output:
        report("report/index.html", category="Report"),
    log:
        "results/logs/report.log",
    conda:
        "../envs/lsbench.yaml"
    threads: 1
    shell:
        "lsbench report results -o {output} > {log} 2>&1"
