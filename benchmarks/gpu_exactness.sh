#!/usr/bin/env bash
# Is a CUDA run bit-exact? Train one (seed, eps) twice on cuda and once on cpu; compare the tables.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_exactness}; DATA=${DATA:-.data}; mkdir -p "$OUT"
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -3
lsbench prepare-data --data-dir "$DATA" --out results/data/fashion_mnist.pt
for run in cuda1 cuda2 cpu; do
  lsbench train --data results/data/fashion_mnist.pt --out-dir "/tmp/exact/$run" --seed 0 --epsilon 0.1 \
    --epochs 3 --device "${run%[0-9]}" 2>&1 | tail -1
done
python3 - <<'PY' | tee "$OUT/exactness.txt"
import pandas as pd, numpy as np
def load(run, table):
    return pd.read_parquet(f"/tmp/exact/{run}/{table}.parquet").drop(columns="epoch_seconds", errors="ignore")
for table in ("metrics", "reliability", "predictions"):
    for a, b in (("cuda1", "cuda2"), ("cuda1", "cpu")):
        x, y = load(a, table), load(b, table)
        num = x.select_dtypes("number").columns
        diff = np.nanmax(np.abs(x[num].to_numpy(float) - y[num].to_numpy(float)))
        print(f"{table:12s} {a} vs {b}: identical={x.equals(y)} max|diff|={diff:.3g}")
PY
