# The entry point at the repository's root, for `snakemake --cores N` run here. The workflow itself
# is workflow/Snakefile (the catalog layout, which `module` imports use): this file only includes it.
include: "workflow/Snakefile"


# An included file's `default_target` does not carry over to the file that includes it, so the
# root names the workflow's own target.
rule default:
    default_target: True
    input:
        rules.all.input,
    localrule: True
