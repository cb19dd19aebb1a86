#!/usr/bin/env bash
# One-time set-up for `snakemake --cores N`: install lsbench (and its pinned torch) into the
# current Python, and the offline Fashion-MNIST package where apt can provide it.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e '.[train]'
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null; then
    echo "installing dataset-fashion-mnist (Debian package; needs root)" >&2
    apt-get install -y -q dataset-fashion-mnist >/dev/null \
        || { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; } \
        || echo "could not install dataset-fashion-mnist; set data_root in config/config.yaml instead (FashionMNIST/raw/ in it)" >&2
fi
