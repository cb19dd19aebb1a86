#!/usr/bin/env bash
# The test command: install what the tests need, lint the workflow, run the whole suite offline.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore DEBIAN_FRONTEND=noninteractive
# Debian packages: a one-node SLURM for tests/test_slurm.py (the test starts and stops the daemons
# itself), the headless Chromium that tests/test_browser.py drives through playwright and rsync, which
# the file-system storage plugin of tests/test_deploy.py copies with. Installed
# only when missing; installing needs root (as CI runs), else the command says what to install.
pkgs="slurm-wlm slurmctld slurmd slurm-client munge chromium rsync"
missing=$(for p in $pkgs; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || echo "$p"; done)
if [ -n "$missing" ]; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        echo "tests/run.sh: the tests need the Debian packages:" $missing "(run as root, or: sudo apt-get install" $missing ")" >&2
        exit 1
    fi
    echo "tests/run.sh: installing" $missing >&2
    log=$(mktemp)
    apt-get install -y -q $missing >"$log" 2>&1 || { apt-get update -q >"$log" 2>&1 && apt-get install -y -q $missing >"$log" 2>&1; } \
        || { tail -20 "$log" >&2; echo "tests/run.sh: apt-get install failed (above)" >&2; exit 1; }
fi
python3 -m pip install -q -e '.[train,test]'
# The same Python's tools, not whatever is first on PATH.
python3 -m snakemake --lint
python3 -m snakefmt --check workflow/
# Two workers, one test file each at a time (module fixtures stay in one process): the end-to-end
# tests spend much of their time waiting on Snakemake, SLURM and killed jobs, which overlaps.
python3 -m pytest -n 2 --dist loadfile "$@"
