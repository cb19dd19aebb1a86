#!/usr/bin/env bash
# The test command: install what the tests need, lint the workflow, run the whole suite offline.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e '.[train,test]'
snakemake --lint
snakefmt --check Snakefile workflow/rules/
# Two workers, one test file each at a time (module fixtures stay in one process): the end-to-end
# tests spend much of their time waiting on Snakemake, SLURM and killed jobs, which overlaps.
python3 -m pytest -n 2 --dist loadfile "$@"
