"""Synthetic results tables, as `collect` writes them, without training: for report and
statistics tests that need many seeds, chosen divergences, several studies or a known effect."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch
import yaml

from lsbench import io
from lsbench.methods import variant
from lsbench.train import objective_on
from lsbench.metrics import (bootstrap_intervals, evaluate_logits, ood_detection, probabilities, rejection_aurcs,
                             rejection_scores, reliability_table, temperature_scaled, top_label)
from lsbench.tables import Tables

ENVIRONMENT = {"python": "3.11.7", "torch": "2.14.1+cpu", "torch_cuda": "none", "torchvision": "0.29.1",
               "numpy": "2.0", "pandas": "2.2", "pyarrow": "17", "lsbench": "0.1.0", "cpu_model": "Test CPU",
               "cpu_count": 2, "torch_threads": 1, "device": "cpu", "device_name": "cpu",
               "data_source": "synthetic", "resumed_after_epoch": 0, "job_seconds": 1.0}


def run_logits(rng: np.random.Generator, n: int, num_classes: int, accuracy: float,
               sharpness: float) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose argmax is right with probability `accuracy`, scaled by `sharpness`."""
    labels = rng.integers(0, num_classes, n)
    right = rng.random(n) < accuracy
    top = np.where(right, labels, (labels + rng.integers(1, num_classes, n)) % num_classes)
    logits = rng.normal(0, 0.5, (n, num_classes))
    logits[np.arange(n), top] += 2.0
    return (logits * sharpness).astype(np.float32), labels


def make_tables(seeds=(0, 1), epsilons=(0.0, 0.2), epochs: int = 2, n_test: int = 60, num_classes: int = 4,
                diverged=frozenset(), sharpness=lambda eps: 2.0 - 4 * eps, accuracy=lambda eps: 0.8,
                validation: bool = True, studies=(("fashion_mnist", "mlp"),), ood_sharpness=lambda eps: 0.5,
                ood_sets: dict | None = None, bootstrap: bool = False, methods: dict | None = None) -> Tables:
    """Tables for studies x seeds x runs: label smoothing at `epsilons` (0: the cross-entropy run),
    or `methods` ({method: [params] or None}, as the config's key; cross-entropy is always added).
    `sharpness(param)` scales the logits (large: overconfident), `accuracy(param)` sets the share
    of right argmaxes; runs in `diverged` ((seed, param) pairs, in every study) end one epoch early
    with an infinite training loss. A dataset in `ood_sets` (default: fashion_mnist -> digits) gets
    OOD logits scaled by `ood_sharpness(param)`. `bootstrap`: compute the bootstrap intervals
    (slow) instead of writing NaN."""
    from lsbench.methods import grid_variants

    ood_sets = {"fashion_mnist": "digits"} if ood_sets is None else ood_sets
    runs = (grid_variants(methods) if methods is not None
            else sorted({variant("label_smoothing", e) for e in epsilons}, key=lambda r: r[1]))
    frames: dict[str, list[pd.DataFrame]] = {name: [] for name in io.TABLES}
    for dataset, model in studies:
        for seed in seeds:
            for method, eps in runs:
                key = io.RunKey(dataset, model, method, eps, seed)
                rng = np.random.default_rng([seed, int(eps * 1e6), len(method), len(dataset), len(model)])
                bad = (seed, eps) in diverged
                records = []
                for epoch in range(1, epochs + 1 - bad):
                    logits, labels = run_logits(rng, n_test, num_classes, accuracy(eps), sharpness(eps))
                    last_bad = bad and epoch == epochs - 1
                    records.append({"epoch": epoch, "train_loss": float("inf") if last_bad else 1.0 / epoch,
                                    "test_loss": objective_on(method, eps, torch.from_numpy(logits),
                                                              torch.from_numpy(labels)),
                                    **evaluate_logits(logits, labels), "epoch_seconds": 0.5,
                                    "diverged": last_bad,
                                    "divergence": "non-finite training loss (inf)" if last_bad else ""})
                val_logits, val_labels = run_logits(rng, n_test, num_classes, accuracy(eps), sharpness(eps))
                calibrated = (temperature_scaled(val_logits, val_labels, logits, labels) if validation
                              else temperature_scaled(val_logits[:0], val_labels[:0], logits, labels))
                probs = probabilities(logits)
                correct = top_label(probs, labels)[1]
                calibrated.update(bootstrap_intervals(*top_label(probs, labels)) if bootstrap else
                                  dict.fromkeys(("ece_low", "ece_high", "smece_low", "smece_high"), float("nan")))
                calibrated.update(rejection_aurcs(logits, correct))
                ood_set = ood_sets.get(dataset, "")
                ood_logits = (run_logits(rng, n_test // 2, num_classes, 0.1, ood_sharpness(eps))[0] if ood_set
                              else np.zeros((0, num_classes), np.float32))
                detection = ({s: ood_detection(rejection_scores(logits)[s], rejection_scores(ood_logits)[s])
                              for s in io.OOD_SCORES} if ood_set else {})
                run = {"epochs": epochs, "batch_size": 64, "lr": 1e-3, "validation_size": n_test * validation,
                       "n_train": 1000, "n_validation": n_test * validation, "n_test": n_test,
                       "num_classes": num_classes, "image_shape": "1x28x28",
                       "class_names": json.dumps([f"class {c}" for c in range(num_classes)]),
                       "data_sha256": "0" * 64, "parameters": 1234, "ood_set": ood_set,
                       "ood_sha256": "1" * 64 if ood_set else "", "model_sha256": "2" * 16}
                frames["runs"].append(io.row_frame(key, run, io.RUN_COLUMNS))
                frames["metrics"].append(io.metrics_frame(key, records))
                frames["reliability"].append(io.reliability_frame(key, reliability_table(probs, labels)))
                frames["predictions"].append(io.predictions_frame(key, labels, logits, probs))
                frames["calibrated"].append(io.row_frame(key, calibrated, io.CALIBRATED_COLUMNS))
                frames["ood"].append(io.ood_frame(key, ood_set, detection))
                frames["ood_predictions"].append(io.ood_predictions_frame(key, ood_set, ood_logits))
                frames["environment"].append(io.row_frame(key, ENVIRONMENT))
    tables = {name: pd.concat([p for p in parts if len(p)] or parts[:1], ignore_index=True)
              for name, parts in frames.items()}
    config = {"datasets": sorted({d for d, _ in studies}), "models": sorted({m for _, m in studies}),
              "seeds": list(seeds), "epochs": epochs, "batch_size": 64, "lr": 1e-3,
              **({"methods": methods} if methods is not None else {"epsilons": list(epsilons)})}
    provenance = pd.DataFrame([{"config_yaml": yaml.safe_dump(config), "git_commit": "abc123",
                                "snakemake": "9.0", "lsbench": "0.1.0"}])
    return Tables(**tables, provenance=provenance)


def write_tables(tables: Tables, directory) -> None:
    """Write `tables` as a results directory (one parquet file per table)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in io.PUBLISHED:
        io.write_parquet(getattr(tables, name), directory / f"{name}.parquet")  # as collect writes them
