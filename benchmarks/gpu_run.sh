#!/usr/bin/env bash
# One-shot GPU measurement (an H200 machine lent by the device tool): run from the repo root.
#   1. python -m lsbench.bench on cuda: lsbench's loop against the idiomatic PyTorch loop
#      (MLP and ResNet-20 on Fashion-MNIST);
#   2. a ResNet-20 study on Fashion-MNIST (CIFAR-10 cannot be fetched offline): 3 seeds x 4 eps,
#      all 12 `lsbench train` jobs at once on the one GPU, then collect and report;
#   3. results (tables, report, findings, logs) into $OUT as one tarball plus the bench output.
# Needs: .gpu/whl (wheels of lsbench's pure-Python dependencies missing there) and
# .gpu/data/FashionMNIST/raw (the four IDX files). EPOCHS, BENCH_EPOCHS, STUDY_SECONDS and DEVICE
# override the defaults (a CPU dry run: DEVICE=cpu EPOCHS=1 BENCH_EPOCHS=2 SIZE=512).
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_run}; DEVICE=${DEVICE:-cuda}; EPOCHS=${EPOCHS:-10}; BENCH_EPOCHS=${BENCH_EPOCHS:-4}
STUDY_SECONDS=${STUDY_SECONDS:-330}; SIZE=${SIZE:-}; DATA=${DATA:-.gpu/data}
mkdir -p "$OUT" /tmp/gpu/runs /tmp/gpu/logs
if ! python3 -c "import jsonschema, relplot" 2>/dev/null && ls .gpu/whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
LSB="python3 -m lsbench"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1; nproc
  python3 -c "import torch, numpy, scipy, pandas, sklearn; print('torch', torch.__version__, 'numpy', numpy.__version__, 'scipy', scipy.__version__, 'pandas', pandas.__version__, 'sklearn', sklearn.__version__)"
} > "$OUT/bench.txt" 2>&1
$LSB prepare-data --dataset fashion_mnist --data-root "$DATA" --out /tmp/gpu/data/fashion_mnist.npz >> "$OUT/bench.txt" 2>&1
$LSB prepare-data --dataset digits --out /tmp/gpu/data/digits.npz >> "$OUT/bench.txt" 2>&1
sizes=${SIZE:+--train-size $SIZE --test-size $SIZE}
for model in mlp resnet20; do
  timeout 200 python3 -m lsbench.bench --device "$DEVICE" --model "$model" --data /tmp/gpu/data/fashion_mnist.npz \
    --epochs "$BENCH_EPOCHS" --baseline-epochs "$BENCH_EPOCHS" --no-notebook $sizes \
    --json "$OUT/bench_$model.json" >> "$OUT/bench.txt" 2>&1 || echo "bench $model rc=$?" >> "$OUT/bench.txt"
done
start=$(date +%s)
for seed in 0 1 2; do for eps in 0.0 0.05 0.1 0.2; do
  timeout "$STUDY_SECONDS" $LSB train --dataset fashion_mnist --model resnet20 --data /tmp/gpu/data/fashion_mnist.npz \
    --out-dir "/tmp/gpu/runs/seed${seed}_eps${eps}" --seed $seed --epsilon $eps --epochs "$EPOCHS" \
    --validation-size "${VALIDATION:-5000}" --device "$DEVICE" --ood-set digits --ood-data /tmp/gpu/data/digits.npz \
    > "/tmp/gpu/logs/seed${seed}_eps${eps}.log" 2>&1 &
done; done
wait
echo "study: 12 jobs in $(( $(date +%s) - start )) s wall" >> "$OUT/bench.txt"
done_runs=$(for d in /tmp/gpu/runs/*; do [ -f "$d/metrics.parquet" ] && echo "$d"; done)
echo "finished runs: $(echo "$done_runs" | grep -c .)" >> "$OUT/bench.txt"
python3 - "$EPOCHS" "$DATA" "${VALIDATION:-5000}" > /tmp/gpu/config.json <<'PY'
import json, sys, yaml
config = yaml.safe_load(open("config/config.yaml"))
config.update({"models": ["resnet20"], "seeds": [0, 1, 2], "epsilons": [0.0, 0.05, 0.1, 0.2],
               "epochs": int(sys.argv[1]), "device": "cuda", "data_root": sys.argv[2],
               "validation_size": int(sys.argv[3])})
print(json.dumps(config))
PY
if [ "$(echo "$done_runs" | grep -c .)" = 12 ]; then config=(--config-json "$(cat /tmp/gpu/config.json)"); else config=(); fi
$LSB collect --out-dir /tmp/gpu/results "${config[@]}" --source-dir . --data-dir /tmp/gpu/data $done_runs >> "$OUT/bench.txt" 2>&1
$LSB report /tmp/gpu/results -o /tmp/gpu/report/index.html >> "$OUT/bench.txt" 2>&1
tar czf "$OUT/gpu_results.tgz" -C /tmp/gpu results report logs
