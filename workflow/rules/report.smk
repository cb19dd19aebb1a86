rule report:
    input:
        rules.collect.output,
    output:
        html=report("report/index.html", category="Report"),
        findings="report/findings.json",
        # Paper-ready copies of every figure (SVG, PDF, CSV) and table (CSV, LaTeX), named in the page.
        figures=directory("report/figures"),
        tables=directory("report/tables"),
    log:
        "results/logs/report.log",
    conda:
        get_conda_env
    threads: 1
    shell:
        "lsbench report results -o {output.html} > {log} 2>&1"
