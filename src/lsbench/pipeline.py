"""The workflow's stages as functions with their I/O: prepare data, train one run, collect.

Each Snakemake rule is a one-line call of `lsbench <stage>`, which lands here.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from lsbench import io, provenance
from lsbench.config import TrainConfig
from lsbench.data import load_dataset, resolve_dataset, save_dataset
from lsbench.metrics import probabilities, reliability_table, temperature_scaled
from lsbench.train import (DeviceData, TrainState, configure_cpu, new_state, predict_logits,
                           resolve_device, run_epochs, to_numpy)

Log = Callable[[str], None]
CHECKPOINT_NAME = "checkpoint.pt"
# Bumped when a checkpoint's contents change meaning, so an older one is ignored, not misloaded.
# 2: weights stored (in, out) (model.Dense), no longer nn.Linear's (out, in).
CHECKPOINT_FORMAT = 2


def prepare_data(data_dir: str | None, out_path: Path, log: Log) -> dict:
    """Decode and validate the IDX files once; write the cache and a JSON summary beside it."""
    ds = resolve_dataset(data_dir, Path(out_path).parent / "download")
    save_dataset(ds, Path(out_path))
    summary = {"source": ds.source, "sha256": ds.sha256,
               "train": list(ds.train_images.shape), "test": list(ds.test_images.shape)}
    io.write_text(json.dumps(summary, indent=2) + "\n", Path(out_path).with_suffix(".json"))
    log(f"prepared {out_path} from {ds.source}: train {tuple(ds.train_images.shape)}, "
        f"test {tuple(ds.test_images.shape)}, sha256 {ds.sha256}")
    return summary


def _run_key(seed: int, epsilon: float, cfg: TrainConfig, data_sha256: str) -> dict:
    """What a checkpoint must match to be resumed (epochs may grow; device may change)."""
    return {"format": CHECKPOINT_FORMAT, "seed": seed, "epsilon": epsilon, "model": cfg.model,
            "batch_size": cfg.batch_size, "lr": cfg.lr, "validation_size": cfg.validation_size,
            "data_sha256": data_sha256}


def format_record(r: dict, epochs: int) -> str:
    status = " DIVERGED" if r["diverged"] else ""
    return (f"seed {r['seed']} eps {r['epsilon']:g} epoch {r['epoch']}/{epochs}: "
            f"train_loss {r['train_loss']:.4f} test_nll {r['test_nll']:.4f} acc {r['accuracy']:.4f} "
            f"ece {r['ece']:.4f} conf {r['mean_confidence']:.4f} ({r['epoch_seconds']:.2f} s){status}")


def resume(state: TrainState, ckpt_path: Path, key: dict, cfg: TrainConfig, log: Log) -> None:
    """Load a checkpoint left by an interrupted job into `state` if it belongs to this run."""
    blob = io.load_checkpoint(ckpt_path)
    if blob is None:
        return
    if blob.get("run_key") == key and blob["epoch"] <= cfg.epochs:
        state.load_state_dict(blob)
        log(f"resuming from {ckpt_path} after epoch {state.epoch}")
    else:
        log(f"ignoring {ckpt_path}: it belongs to another run configuration")


def write_run_tables(run_dir: Path, seed: int, epsilon: float, state: TrainState, data: DeviceData,
                     environment: dict) -> None:
    """The final model's tables: metrics (all epochs), reliability, predictions, calibrated, environment."""
    # Recomputed from the model rather than kept from the last epoch's evaluation, so that a job
    # resumed from its final checkpoint (killed while writing) produces the same tables.
    # One probability path (see lsbench.metrics): float64 softmax of the float32 logits.
    test_logits, test_labels = to_numpy(predict_logits(state.model, data.test_x)), to_numpy(data.test_y)
    probs = probabilities(test_logits)
    calibrated = temperature_scaled(to_numpy(predict_logits(state.model, data.val_x)), to_numpy(data.val_y),
                                    test_logits, test_labels)
    paths = io.run_paths(run_dir)
    io.write_parquet(io.run_row_frame(seed, epsilon, calibrated, io.CALIBRATED_COLUMNS), paths["calibrated"])
    io.write_parquet(io.reliability_frame(seed, epsilon, reliability_table(probs, test_labels)),
                     paths["reliability"])
    io.write_parquet(io.predictions_frame(seed, epsilon, test_labels, test_logits, probs), paths["predictions"])
    io.write_parquet(io.run_row_frame(seed, epsilon, environment), paths["environment"])
    io.write_parquet(io.metrics_frame(state.records), paths["metrics"])


def train_one(data_path: Path, run_dir: Path, seed: int, epsilon: float, cfg: TrainConfig,
              keep_checkpoint: bool, log: Log, started: float | None = None) -> None:
    """Train one (seed, epsilon) run, checkpointing every epoch; write its tables.

    A checkpoint left by an interrupted job is resumed when it belongs to the same run, so the
    finished tables equal those of an uninterrupted run (timing columns aside).
    """
    started = time.perf_counter() if started is None else started
    configure_cpu(cfg.threads)
    device = resolve_device(cfg.device)
    ds = load_dataset(Path(data_path))
    data = DeviceData.from_dataset(ds, device, seed, cfg.validation_size)
    state = new_state(seed, cfg, device)
    key = _run_key(seed, epsilon, cfg, ds.sha256)
    ckpt_path = Path(run_dir) / CHECKPOINT_NAME
    resume(state, ckpt_path, key, cfg, log)
    environment = {**provenance.run_environment(device, ds.sha256, ds.source), "resumed_after_epoch": state.epoch}
    log(f"training seed {seed} eps {epsilon:g} on {device} ({environment['device_name']}, "
        f"{environment['cpu_model']}) with {cfg.threads} thread(s) after "
        f"{time.perf_counter() - started:.2f} s of start-up (imports + data): {asdict(cfg)}")
    for record in run_epochs(state, data, seed, epsilon, cfg):
        io.save_checkpoint({**state.state_dict(), "run_key": key}, ckpt_path)
        log(format_record(record, cfg.epochs))
    # The job's wall time up to its outputs (a resumed job counts only its own part).
    environment["job_seconds"] = time.perf_counter() - started
    write_run_tables(Path(run_dir), seed, epsilon, state, data, environment)
    if not keep_checkpoint:
        ckpt_path.unlink(missing_ok=True)


def collect(run_dirs: list[Path], out_dir: Path, log: Log, config: dict | None = None,
            source_dir: Path | None = None) -> None:
    """Concatenate each per-run table into out_dir/{table}.parquet (see io.TABLES), and write
    out_dir/provenance.parquet: the workflow's config, git commit and Snakemake version."""
    for table in io.TABLES:
        df = io.concat_parquet([io.run_paths(Path(d))[table] for d in run_dirs])
        io.write_parquet(df, Path(out_dir) / f"{table}.parquet")
        log(f"{table}: {len(df)} rows from {len(run_dirs)} runs")
    record = provenance.workflow_provenance(config, source_dir)
    io.write_parquet(pd.DataFrame([record]), Path(out_dir) / f"{io.PROVENANCE}.parquet")
    log(f"provenance: git {record['git_commit']}, snakemake {record['snakemake']}")
