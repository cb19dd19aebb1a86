rule report:
    input:
        rules.collect.output,
    output:
        html=report("report/index.html", category="Report"),
        findings="report/findings.json",
    log:
        "results/logs/report.log",
    conda:
        get_conda_env
    threads: 1
    shell:
        "lsbench report results -o {output.html} > {log} 2>&1"
