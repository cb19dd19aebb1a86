rule report:
    input:
        tables=rules.collect.output,
        runs=rules.collect.output.runs,
    output:
        html=report(report_path("index.html"), category="Report"),
        findings=report_path("findings.json"),
        # Paper-ready copies of every figure (SVG, PDF, CSV) and table (CSV, LaTeX), named in the page.
        figures=directory(report_path("figures")),
        tables=directory(report_path("tables")),
    log:
        results_path("logs/report.log"),
    localrule: True
    conda:
        get_conda_env
    threads: 1
    # The tables are read from the folder of runs.parquet (collect's outputs).
    shell:
        'lsbench report "$(dirname {input.runs:q})" -o {output.html:q} > {log:q} 2>&1'
