# lsbench: datasets x models x methods x seeds grid -> parquet -> HTML report.
# This file only declares; logic lives in src/lsbench/, helpers in workflow/rules/common.smk.
from snakemake.utils import min_version

from lsbench.config import (
    load_schema,
    or_exit,
    raw_overrides,
    raw_yaml_texts,
    to_workflow_config,
    validate_config,
)

min_version("9.0")


configfile: "config.yaml"


# Coerce config values to the schema's types and validate once, before any rule exists. Strings
# that YAML or `--config` read as numbers ("007", "2024.10") are taken as they were written.
settings = workflow.config_settings
config_files = ["config.yaml", *getattr(settings, "configfiles", [])]
config.update(
    or_exit(
        validate_config,
        config,
        load_schema(),
        {
            **raw_yaml_texts(config_files),
            **raw_overrides(getattr(settings, "config_args", None)),
        },
        yaml_files=config_files,
        override_keys=set(raw_overrides(getattr(settings, "config_args", None))),
    )
)
LSB = to_workflow_config(config)


include: "workflow/rules/common.smk"


PLAN = get_plan(LSB)


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/shift.smk"
include: "workflow/rules/collect.smk"
include: "workflow/rules/report.smk"


localrules:
    all,
    collect,
    report,


# The published tables are outputs in their own right: a missing one is rebuilt.
rule all:
    default_target: True
    input:
        rules.collect.output,
        rules.report.output,
