#!/usr/bin/env bash
# One-shot GPU measurement, run from the repo root on a CUDA machine with >= 16 cores:
#   1. python -m lsbench.bench on cuda (lsbench's loop vs the seed notebook's);
#   2. the default grid with `snakemake --config device=cuda` (CPU cores 0-3);
#   3. meanwhile on cores 4-15: 20-epoch accuracy check of lsbench's loop against the seed
#      notebook's loop on CPU (seeds 0-2 x eps 0, 0.2; DataLoader workers only speed up its loading).
# Optional: .whl/ (wheels for snakemake + jsonschema) and .data/ (the four IDX .gz files).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
DATA=${DATA:-.data}
mkdir -p "$OUT" /tmp/acc
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then python3 -m pip install -q --no-index --find-links .whl snakemake==9.27.1 jsonschema 2>&1 | tail -3; fi
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -3  # provides `lsbench`
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; nproc
  python3 -c "import torch, snakemake; print('torch', torch.__version__, 'snakemake', snakemake.__version__)"; } > "$OUT/bench.txt" 2>&1
lsbench prepare-data --data-dir "$DATA" --out results/data/fashion_mnist.pt 2>> "$OUT/bench.txt"
python3 -m lsbench.bench --device cuda --epochs 5 --baseline-epochs 2 --json "$OUT/bench_cuda.json" >> "$OUT/bench.txt" 2>&1
for seed in 0 1 2; do for eps in 0.0 0.2; do
  taskset -c 4-15 python3 -m lsbench.bench --device cpu --epochs 20 --baseline-epochs 20 --loader-workers 2 \
    --seed $seed --epsilon $eps --json /tmp/acc/s${seed}_e${eps}.json > /tmp/acc/s${seed}_e${eps}.txt 2>&1 &
done; done
start=$(date +%s)
taskset -c 0-3 snakemake --cores 4 --config device=cuda data_dir="$DATA" > "$OUT/grid.log" 2>&1
echo "grid rc=$? wall $(( $(date +%s) - start )) s" >> "$OUT/bench.txt"
grep -h "start-up" results/logs/train/*.log | head -3 >> "$OUT/bench.txt"
cp results/metrics.parquet "$OUT/metrics_cuda.parquet"; cp report/index.html "$OUT/report_cuda.html"
wait
cat /tmp/acc/*.txt > "$OUT/acc.txt"
python3 - "$OUT/acc.json" /tmp/acc/*.json <<'PY'
import json, sys
json.dump([json.load(open(p)) for p in sys.argv[2:]], open(sys.argv[1], "w"), indent=1)
PY
