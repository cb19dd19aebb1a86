#!/usr/bin/env bash
# The test command: install what the tests need, lint the workflow, run the whole suite offline.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e '.[train,test]'
snakemake --lint
snakefmt --check Snakefile workflow/rules/
python3 -m pytest "$@"
