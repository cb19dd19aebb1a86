"""File I/O at the edges: atomic writes, run outputs, checkpoints, collection.

Every file is written to a temporary name in the same directory and renamed into place, so a
killed job never leaves a file that looks complete.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch

METRIC_COLUMNS = [
    "seed", "epsilon", "epoch", "train_loss", "test_loss", "test_nll", "accuracy", "ece", "mce",
    "mean_confidence", "overconfidence", "brier", "entropy", "epoch_seconds", "diverged",
    "ece_over", "ece_under", "ece_adaptive", "ece_classwise",
]
RELIABILITY_COLUMNS = ["seed", "epsilon", "bin", "bin_lower", "bin_upper", "count", "mean_confidence", "accuracy"]
CALIBRATED_COLUMNS = ["seed", "epsilon", "temperature", "ece_ts", "nll_ts", "mean_confidence_ts"]
# Per-run tables, each collected into results/{name}.parquet. The results proper are equal between
# reruns (timing columns aside); `environment` is provenance: the software, hardware and wall
# time of the job that produced the run.
RESULT_TABLES = ("metrics", "reliability", "predictions", "calibrated")
TABLES = (*RESULT_TABLES, "environment")
PROVENANCE = "provenance"  # results/provenance.parquet: one workflow-level row, written by collect


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_text(text: str, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def save_checkpoint(blob: dict[str, Any], path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at `path`, or None when there is none. Loaded with weights_only=True."""
    if not Path(path).exists():
        return None
    return torch.load(path, weights_only=True, map_location="cpu")


def metrics_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(records, columns=METRIC_COLUMNS)
    return df.astype({"seed": "int64", "epsilon": "float64", "epoch": "int64", "diverged": "bool"})


def reliability_frame(seed: int, epsilon: float, table: dict[str, list]) -> pd.DataFrame:
    df = pd.DataFrame(table)
    df.insert(0, "epsilon", float(epsilon))
    df.insert(0, "seed", int(seed))
    return df[RELIABILITY_COLUMNS]


def run_row_frame(seed: int, epsilon: float, record: dict[str, Any],
                  columns: list[str] | None = None) -> pd.DataFrame:
    """One row keyed by (seed, epsilon): a run's calibrated or environment record."""
    return pd.DataFrame([{"seed": int(seed), "epsilon": float(epsilon), **record}], columns=columns)


def predictions_frame(seed: int, epsilon: float, labels: np.ndarray, logits: np.ndarray,
                      probs: np.ndarray) -> pd.DataFrame:
    """One row per test image: seed, epsilon, index, label, logit_0 .. logit_{C-1} (float32, as the
    network gave them), prob_0 .. prob_{C-1} (float64, `metrics.probabilities` of those logits: the
    very values every metric of the run was computed from)."""
    columns = {f"logit_{c}": logits[:, c].astype(np.float32) for c in range(logits.shape[1])}
    columns.update({f"prob_{c}": probs[:, c].astype(np.float64) for c in range(probs.shape[1])})
    df = pd.DataFrame(columns)
    df.insert(0, "label", np.asarray(labels).astype("int64"))
    df.insert(0, "index", range(len(df)))
    df.insert(0, "epsilon", float(epsilon))
    df.insert(0, "seed", int(seed))
    return df


def run_paths(run_dir: Path) -> dict[str, Path]:
    return {name: Path(run_dir) / f"{name}.parquet" for name in TABLES}


def concat_parquet(paths: list[Path]) -> pd.DataFrame:
    """Concatenate per-run tables, sorted by (seed, epsilon) so the result is order-independent."""
    frames = [pd.read_parquet(p) for p in paths]
    df = pd.concat(frames, ignore_index=True)
    keys = [c for c in ("seed", "epsilon", "epoch", "bin", "index") if c in df.columns]
    return df.sort_values(keys, kind="stable").reset_index(drop=True)
