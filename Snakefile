# lsbench: seeds x label-smoothing grid on Fashion-MNIST -> parquet -> HTML report.
# This file only declares; logic lives in src/lsbench/, helpers in workflow/rules/common.smk.
from pathlib import Path

from snakemake.utils import min_version

from lsbench.config import load_schema, to_workflow_config, validate_config

min_version("9.0")


configfile: "config.yaml"


# Coerce `--config` strings to the schema's types and validate once, before any rule exists.
config.update(
    validate_config(
        config,
        load_schema(
            Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml"
        ),
    )
)
LSB = to_workflow_config(config)


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/collect.smk"
include: "workflow/rules/report.smk"


localrules:
    all,
    collect,
    report,


rule all:
    default_target: True
    input:
        "report/index.html",
