#!/usr/bin/env bash
# One-time set-up for `snakemake --cores N`: install lsbench (and its pinned torch) into the
# current Python, and the offline Fashion-MNIST package where apt can provide it. It says what it
# does while it does it (the torch wheel takes minutes) and ends by saying whether lsbench is ready.
set -uo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
say() { echo "setup: $*" >&2; }

say "installing lsbench and its training stack into $(python3 -c 'import sys; print(sys.executable)')"
say "(torch==2.14.1 and torchvision==0.29.1: PyPI's wheel pulls the CUDA libraries, about 5 GB, even for CPU use)"
log=$(mktemp)
# pip's own progress goes to the log; its last lines come out only if the install fails. A
# resolver warning about a package that was installed before and is not lsbench's is not a
# failure of this set-up, so the check below asks Python whether lsbench imports, not pip's rc.
python3 -m pip install --progress-bar off -e '.[train]' >"$log" 2>&1
pip_rc=$?

if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null; then
    say "installing dataset-fashion-mnist (Debian package, Fashion-MNIST offline; needs root)"
    apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; } \
        || say "could not install dataset-fashion-mnist; set data_root in config/config.yaml instead (FashionMNIST/raw/ in it)"
fi

if version=$(python3 -c 'import lsbench, torch, torchvision; print(lsbench.__version__, torch.__version__)' 2>/dev/null); then
    set -- $version
    if [ "$pip_rc" -ne 0 ]; then
        say "pip reported a problem (its log: $log) but lsbench imports; pip's last lines:"
        tail -5 "$log" >&2
    fi
    say "ready: lsbench $1 with torch $2. Run: snakemake --cores 2"
else
    tail -20 "$log" >&2
    say "FAILED: lsbench or torch does not import after pip install (pip's log above and in $log)"
    exit 1
fi
