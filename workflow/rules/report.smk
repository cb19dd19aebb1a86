rule report:
    input:
        tables=rules.collect.output,
        runs=rules.collect.output.runs,
    output:
        html=report(report_path("index.html"), category="Report"),
        findings=report_path("findings.json"),
        # Names the grid, its tables' folder, lsbench's version and the report's code
        # (lsbench.plan.WorkflowPlan.report_id) and lists the files written: a report_dir last
        # rendered from another grid or by other code lacks this file and is rendered again.
        # figures/ and tables/ (paper-ready copies of every figure and table) are not outputs:
        # Snakemake would empty them, user's files included; `lsbench report` replaces only the
        # files it wrote there before.
        stamp=report_path(f"report-{PLAN.report_id}.json"),
    log:
        results_path("logs/report.log"),
    localrule: True
    conda:
        get_conda_env
    threads: 1
    # The tables are read from the folder of runs.parquet (collect's outputs).
    shell:
        'lsbench report "$(dirname {input.runs:q})" -o {output.html:q} --stamp {output.stamp:q} > {log:q} 2>&1'
