"""The workflow's stages as functions with their I/O: prepare data, train one run, collect.

Each Snakemake rule is a one-line call of `lsbench <stage>`, which lands here.
"""

from __future__ import annotations

import io as _bytes_io
import json
import math
import re
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from lsbench import io, provenance
from lsbench.config import ConfigError, TrainConfig, validation_count
from lsbench.data import DataError, ImageData, load_data, resize_images, save_data
from lsbench.datasets import get_dataset, resolve_dataset
from lsbench.methods import variant_label

Log = Callable[[str], None]
CHECKPOINT_NAME = "checkpoint.pt"
# Bumped when a checkpoint's contents change meaning, so an older one is ignored, not misloaded.
# 2: weights stored (in, out) (mlp.Dense), no longer nn.Linear's (out, in).
# 3: any registered model; the stepper's optimiser state; torch's RNG states.
# 4: NumPy's and Python's RNG states; the last epoch's test logits.
CHECKPOINT_FORMAT = 4


class CollectError(ValueError):
    """Runs that cannot be combined: a run's recorded config differs from the workflow's."""


def prepare_data(dataset: str, data_root: str | None, out_path: Path, log: Log,
                 fingerprint: str | None = None) -> dict:
    """Decode and validate a dataset once; write the cache `out_path` (ConfigError unless it ends
    in .npz) and a JSON summary beside it (the same name with .json). `fingerprint`: the
    `lsbench.plan.data_fingerprint` the workflow planned with; DataError if the files now differ
    (changed while the workflow ran), so a cache never holds other data than its name says."""
    from lsbench.plan import data_fingerprint

    if Path(out_path).suffix != ".npz":
        raise ConfigError(f"--out = {str(out_path)!r}: the cache file must end in .npz (its summary is written "
                          "beside it with .json)")
    spec = get_dataset(dataset)
    found = data_fingerprint(dataset, data_root)
    if fingerprint is not None and found != fingerprint:
        raise DataError(f"{dataset}: its files or the code that decodes them changed since the workflow was "
                        f"planned (fingerprint {found}, planned {fingerprint}); run snakemake again")
    data = resolve_dataset(spec, data_root, Path(out_path).parent / "download")
    save_data(data, Path(out_path))
    summary = {"dataset": dataset, "fingerprint": found, **data.summary()}
    io.write_text(json.dumps(summary, indent=2) + "\n", Path(out_path).with_suffix(".json"))
    log(f"prepared {out_path} ({spec.title}) from {data.source}: train {data.train_images.shape}, "
        f"test {data.test_images.shape}, sha256 {data.sha256}")
    return summary


def run_record(key: io.RunKey, cfg: TrainConfig, data: ImageData, n_validation: int, parameters: int,
               ood: tuple[str, ImageData] | None, model_sha256: str = "") -> dict:
    """What defines this run's numbers (results/runs.parquet), besides its key. `model_sha256`:
    `lsbench.plan.model_code_sha256` of the model's code as this job imported it."""
    return {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": float(cfg.lr), "validation_size": n_validation,
            "n_train": len(data.train_labels) - n_validation, "n_validation": n_validation,
            "n_test": len(data.test_labels), "num_classes": len(data.class_names),
            "image_shape": "x".join(map(str, data.image_shape)), "class_names": json.dumps(list(data.class_names)),
            "data_sha256": data.sha256, "parameters": parameters,
            "ood_set": ood[0] if ood else "", "ood_sha256": ood[1].sha256 if ood else "",
            "model_sha256": model_sha256}


def resume_key(key: io.RunKey, record: dict) -> dict:
    """What a checkpoint must match to be resumed: the run and everything but its epoch count
    (epochs may grow; device and threads may change)."""
    return {"format": CHECKPOINT_FORMAT, **key.columns(), **{k: v for k, v in record.items() if k != "epochs"}}


def format_record(key: io.RunKey, r: dict, epochs: int) -> str:
    status = f" DIVERGED: {r['divergence']}" if r["diverged"] else ""
    return (f"{key.dataset} {key.model} {variant_label(key.method, key.param)} seed {key.seed} epoch {r['epoch']}/{epochs}: "
            f"train_loss {r['train_loss']:.4f} test_nll {r['test_nll']:.4f} acc {r['accuracy']:.4f} "
            f"ece {r['ece']:.4f} conf {r['mean_confidence']:.4f} ({r['epoch_seconds']:.2f} s){status}")


def save_checkpoint(blob: dict[str, Any], path: Path) -> None:
    import torch

    buf = _bytes_io.BytesIO()
    torch.save(blob, buf)
    io.atomic_write_bytes(buf.getvalue(), path)


def resume(state: Any, ckpt_path: Path, key: dict, cfg: TrainConfig, log: Log) -> None:
    """Load a checkpoint left by an interrupted job into `state` if it belongs to this run."""
    import torch

    if not ckpt_path.exists():
        return
    try:
        blob = torch.load(ckpt_path, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - unreadable (another torch, a damaged file): start over
        log(f"ignoring {ckpt_path}: it cannot be read ({type(exc).__name__}: {exc})")
        return
    if not isinstance(blob, dict) or blob.get("run_key") != key or blob.get("epoch", 0) > cfg.epochs:
        log(f"ignoring {ckpt_path}: it belongs to another run configuration")
        return
    try:
        state.load_state_dict(blob)
    except (RuntimeError, KeyError, ValueError) as exc:  # e.g. a user's model changed shape
        log(f"ignoring {ckpt_path}: it does not fit this model ({exc})")
        return
    log(f"resuming from {ckpt_path} after epoch {state.epoch}")


def write_run_tables(run_dir: Path, key: io.RunKey, state: Any, data: Any, record: dict, environment: dict,
                     ood_x: Any = None) -> None:
    """The final model's tables: runs, metrics (all epochs), reliability, predictions, calibrated,
    ood and ood_predictions (no rows without an OOD set), environment."""
    from lsbench import metrics as m
    from lsbench.train import predict_logits, to_numpy

    # The last epoch's own evaluation (kept in the checkpoint, so a job resumed from its final one
    # writes the same tables): one evaluation feeds every final-epoch number, even for a model
    # that is random at test time. One probability path (see lsbench.metrics): float64 softmax
    # of the float32 logits.
    test_logits, test_labels = state.test_logits.numpy(), to_numpy(data.test_y)
    probs = m.probabilities(test_logits)
    conf, correct = m.top_label(probs, test_labels)
    calibrated = {**m.temperature_scaled(to_numpy(predict_logits(state.model, data.val_x)), to_numpy(data.val_y),
                                         test_logits, test_labels),
                  **m.bootstrap_intervals(conf, correct), **m.rejection_aurcs(test_logits, correct)}
    ood_logits = to_numpy(predict_logits(state.model, ood_x)) if ood_x is not None else np.zeros((0, probs.shape[1]))
    detection = {}
    if ood_x is not None:
        id_scores, ood_scores = m.rejection_scores(test_logits), m.rejection_scores(ood_logits)
        detection = {s: m.ood_detection(id_scores[s], ood_scores[s]) for s in io.OOD_SCORES}
    paths = io.run_paths(run_dir)
    io.write_parquet(io.ood_frame(key, record["ood_set"], detection), paths["ood"])
    io.write_parquet(io.ood_predictions_frame(key, record["ood_set"], ood_logits), paths["ood_predictions"])
    io.write_parquet(io.row_frame(key, calibrated, io.CALIBRATED_COLUMNS), paths["calibrated"])
    io.write_parquet(io.reliability_frame(key, m.reliability_table(probs, test_labels)), paths["reliability"])
    io.write_parquet(io.predictions_frame(key, test_labels, test_logits, probs), paths["predictions"])
    io.write_parquet(io.row_frame(key, environment), paths["environment"])
    io.write_parquet(io.row_frame(key, record, io.RUN_COLUMNS), paths["runs"])
    io.write_parquet(io.metrics_frame(key, state.records), paths["metrics"])  # last: it marks the run done


def train_one(dataset: str, model: str, data_path: Path, run_dir: Path, seed: int, method: str, param: float,
              cfg: TrainConfig, keep_checkpoint: bool, log: Log, started: float | None = None,
              ood: tuple[str, Path] | None = None, progress: Log | None = None) -> None:
    """Train one (dataset, model, method, param, seed) run, checkpointing every epoch; write its
    tables. Each epoch's line (run, epoch, train loss, test NLL, accuracy, ECE) goes to `progress`
    when given (the terminal, with the rest in a log file), else to `log`. (method, param) must be a
    run as `lsbench.methods.variant` gives it (a neutral value is
    cross-entropy's run).

    `ood`: (name, cache file) of the out-of-distribution set whose test images the final model is
    scored on, resized to the dataset's image size. A checkpoint left by an interrupted job is
    resumed when it belongs to the same run, so the finished tables equal those of an
    uninterrupted run (timing columns aside).
    """
    from lsbench.plan import model_code_sha256
    from lsbench.train import DeviceData, configure_cpu, new_state, resolve_device, run_epochs, to_inputs

    started = time.perf_counter() if started is None else started
    spec = get_dataset(dataset)
    configure_cpu(cfg.threads)
    device = resolve_device(cfg.device)
    data = load_data(Path(data_path), spec)
    ood_data = (ood[0], load_data(Path(ood[1]), get_dataset(ood[0]))) if ood else None
    n_val = validation_count(cfg.validation_size, len(data.train_labels))
    device_data = DeviceData.from_data(data, spec.mean, spec.std, device, seed, n_val)
    # The OOD images go through this dataset's input pipeline: its size and normalisation.
    ood_images = resize_images(ood_data[1].test_images, data.image_shape[1:]) if ood_data else None
    if ood_images is not None and np.array_equal(ood_images, data.test_images):
        raise ConfigError(f"ood set {ood_data[0]!r} has the very test images of {dataset} (same data, sha256 "
                          f"{ood_data[1].sha256[:12]}…): an out-of-distribution set must be other images")
    ood_x = to_inputs(ood_images, spec.mean, spec.std, device) if ood_images is not None else None
    state = new_state(model, device_data, len(data.class_names), seed, method, param, cfg)
    key = io.RunKey(dataset, model, method, param, seed)
    record = run_record(key, cfg, data, n_val, sum(p.numel() for p in state.model.parameters()), ood_data,
                        model_code_sha256(model))
    ckpt_path = Path(run_dir) / CHECKPOINT_NAME
    checkpoint_key = resume_key(key, record)
    resume(state, ckpt_path, checkpoint_key, cfg, log)
    environment = {**provenance.run_environment(device, data.source), "resumed_after_epoch": state.epoch}
    log(f"training {dataset} {model} {variant_label(method, param)} seed {seed} on {device} "
        f"({environment['device_name']}, {environment['cpu_model']}) with {cfg.threads} thread(s) after "
        f"{time.perf_counter() - started:.2f} s of start-up (imports + data): {asdict(cfg)}, "
        f"{record['parameters']} parameters, {record['n_train']} training images")
    for epoch_record in run_epochs(state, device_data, method, param, cfg, len(data.class_names)):
        save_checkpoint({**state.state_dict(), "run_key": checkpoint_key}, ckpt_path)
        (progress or log)(format_record(key, epoch_record, cfg.epochs))
    # The job's wall time up to its outputs (a resumed job counts only its own part).
    environment["job_seconds"] = time.perf_counter() - started
    # The final model before the tables (metrics.parquet, written last, marks the run done).
    save_model(state.model, model, tuple(data.image_shape), len(data.class_names), Path(run_dir) / io.MODEL_FILE)
    write_run_tables(Path(run_dir), key, state, device_data, record, environment, ood_x)
    if not keep_checkpoint:
        ckpt_path.unlink(missing_ok=True)


MODEL_FORMAT = 1  # bumped when model.pt's contents change meaning


def save_model(model: Any, name: str, input_shape: tuple[int, int, int], num_classes: int, path: Path) -> None:
    """A run's final weights with what rebuilds the model (`lsbench.models.build_model`): name,
    input shape (C, H, W), number of classes. Loaded with torch.load(weights_only=True)."""
    save_checkpoint({"format": MODEL_FORMAT, "model": name, "input_shape": list(input_shape),
                     "num_classes": num_classes, "state_dict": model.state_dict()}, path)


def load_model(path: Path, name: str, input_shape: tuple[int, int, int], num_classes: int, seed: int,
               device: Any) -> Any:
    """A run's final model, in eval mode on `device`: model `name` built as training built it
    (`lsbench.models.build_model` for images `input_shape` (C, H, W), `num_classes` classes, seeded
    with the run's `seed`, so a random part outside the state dict, such as a non-persistent buffer,
    is the run's own), then the weights of `path` (`save_model`'s file) loaded into it.

    What to build comes from the run's definition (the workflow's model name, the dataset's shape),
    never from the file: it holds weights and is refused, naming it (ConfigError), when it names
    another model, shape or class count, is unreadable, of another format, or its weights do not fit."""
    import torch

    from lsbench.models import build_model

    try:
        blob = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file, another torch: name the file
        raise ConfigError(f"{path}: not a readable model file ({type(exc).__name__}: {exc})") from exc
    if not (isinstance(blob, dict) and blob.get("format") == MODEL_FORMAT and isinstance(blob.get("state_dict"), dict)):
        raise ConfigError(f"{path}: not an lsbench model file of format {MODEL_FORMAT} (retrain the run)")
    found, shape, classes = (blob.get(k) for k in ("model", "input_shape", "num_classes"))
    # Types first: an == on a tensor read from the file is not a bool.
    agrees = (isinstance(found, str) and found == name and isinstance(shape, list)
              and all(type(d) is int for d in shape) and shape == list(input_shape)
              and type(classes) is int and classes == num_classes)
    if not agrees:
        raise ConfigError(f"{path}: names model {_shown(found)} for input {_shown(shape)} and "
                          f"{_shown(classes)} classes; the run is model {name!r} for input {list(input_shape)} "
                          f"and {num_classes} classes (a model file of another run, or not lsbench's: retrain the run)")
    model = build_model(name, tuple(input_shape), num_classes, seed)
    try:
        model.load_state_dict(blob["state_dict"])
    except (RuntimeError, KeyError, TypeError) as exc:  # the model's code changed shape since
        raise ConfigError(f"{path}: its weights do not fit model {name!r} as its code is now ({exc})") from exc
    return model.to(device).eval()


def _shown(value: Any) -> str:
    """A value read from a file, for a message: its repr when plain, else its type (a tensor's repr
    could be huge, and an == on it is not a bool)."""
    plain = isinstance(value, (str, int, float, type(None))) or (
        isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value))
    return repr(value)[:80] if plain else f"a {type(value).__name__}"


def shift_data(dataset: str, data_path: Path, shifts: list[str], out_path: Path, images: int, log: Log) -> None:
    """The test subset (`lsbench.shifts.shift_subset`, `images` of them) under each of `shifts` at
    every severity, written to `out_path` (.npz): images uint8 (S, 5, N, C, H, W) for the shifts in
    order and severities 1..5, shifts (S,) their names, index (N,) into the test set, labels (N,),
    dataset, and clean (C, H, W): the first image unshifted, for the report's gallery."""
    from lsbench import shifts as suite

    started = time.perf_counter()
    spec = get_dataset(dataset)
    for name in shifts:
        suite.get_shift(name)  # ShiftError before the data is read
    data = load_data(Path(data_path), spec)
    index = suite.shift_subset(len(data.test_labels), images)
    x = data.test_images[index]
    out = np.empty((len(shifts), len(suite.SEVERITIES), *x.shape), dtype=np.uint8)
    for i, name in enumerate(shifts):
        at = time.perf_counter()
        for j, severity in enumerate(suite.SEVERITIES):
            out[i, j] = suite.apply_shift(name, x, severity, suite.SHIFT_SEED)
        log(f"{dataset} {name} ({i + 1}/{len(shifts)}): {len(index)} images x {len(suite.SEVERITIES)} severities in "
            f"{time.perf_counter() - at:.2f} s")
    buf = _bytes_io.BytesIO()
    np.savez(buf, images=out, shifts=np.array(shifts), index=index, labels=data.test_labels[index], clean=x[0],
             dataset=np.array(dataset))
    io.atomic_write_bytes(buf.getvalue(), Path(out_path))
    log(f"{dataset}: {len(shifts)} shifts in {time.perf_counter() - started:.2f} s -> {out_path}")


SHIFTED_ARRAYS = ("images", "shifts", "index", "labels", "clean", "dataset")


def read_shifted(path: Path) -> dict[str, np.ndarray]:
    """`shift_data`'s file; DataError naming it when it is not one."""
    if not Path(path).is_file():
        raise FileNotFoundError(2, "No such file or directory", str(path))
    try:
        with np.load(Path(path), allow_pickle=False) as z:
            return {k: z[k] for k in SHIFTED_ARRAYS}
    except (OSError, ValueError, KeyError, EOFError) as exc:
        # numpy's own message for a file that is not an .npz suggests loading it with pickle: do not.
        raise DataError(f"{path}: not a shifted test set (an .npz file written by lsbench shift-data)") from exc


# How far a rebuilt model's clean logits may be from its predictions.parquet, relative to the
# largest recorded logit (at least 1): float32 kernels on another device or with another batch size
# differ by about 1e-6 of it; a model rebuilt from another seed or other weights by far more.
CLEAN_LOGIT_TOLERANCE = 1e-3
# A model random at test time (MC dropout) is checked against the spread of two of its own
# evaluations instead: its recorded probabilities may be this many times as far (mean total
# variation per image), plus CLEAN_LOGIT_TOLERANCE, as a second evaluation is from the first.
RANDOM_MODEL_SPREAD = 3.0


def evaluate_shifts(run_dirs: list[Path], model: str, data_path: Path, shifted_path: Path | None, out_path: Path,
                    device: str, threads: int, log: Log) -> None:
    """Each run's final model (run_dir/model.pt; runs of one dataset and of model `model`, the
    workflow's name for it: a registry name or "package.module:function") on the clean test subset
    (shift "none", severity 0) and under every shift of `shifted_path` (`shift_data`'s file) at
    severities 1..5: one row each of `io.SHIFT_COLUMNS` in `out_path` (.parquet). ece_ts and nll_ts
    use the temperature each run fitted on its clean held-out images (its calibrated.parquet).
    Never trains. The workflow runs one job per run; given several runs, torch, the data and the
    shifted images load once.

    Each model is rebuilt as its run built it (`load_model`: `model`, the run's seed), and its clean
    logits must be the run's own (predictions.parquet, the same images; `check_clean_logits`):
    ConfigError naming the model otherwise, and for a run of another model; DataError naming the
    file for a run that is not finished or was trained on other data."""
    from lsbench import metrics as m
    from lsbench.shifts import SEVERITIES
    from lsbench.train import configure_cpu, predict_logits, resolve_device, to_inputs, to_numpy

    started = time.perf_counter()
    repeated = sorted(d for d, n in Counter(map(str, run_dirs)).items() if n > 1)
    if repeated:
        raise ConfigError(f"run directory {repeated[0]} is given more than once: each run is evaluated once")
    for d in map(Path, run_dirs):
        for name in ("runs.parquet", "calibrated.parquet", "predictions.parquet"):
            if not (d / name).is_file():
                raise DataError(f"{d / name}: missing; {d} is not a finished run (train it first: lsbench train "
                                f"--out-dir {d})")
    configure_cpu(threads)
    where = resolve_device(device)
    data = None
    shifted = read_shifted(shifted_path) if shifted_path is not None else None
    frames = []
    for i, run_dir in enumerate(map(Path, run_dirs)):
        at = time.perf_counter()
        row = pd.read_parquet(run_dir / "runs.parquet").iloc[0]
        key = io.RunKey(row["dataset"], row["model"], row["method"], float(row["param"]), int(row["seed"]))
        if key.model != model:
            raise ConfigError(f"{run_dir / 'runs.parquet'}: a run of model {key.model!r}; this evaluation is of "
                              f"model {model!r} (give the runs of one model)")
        spec = get_dataset(key.dataset)
        if data is None:
            data = load_data(Path(data_path), spec)
            index = shifted["index"] if shifted is not None else np.arange(len(data.test_labels))
            labels = data.test_labels[index]
            if shifted is not None and (str(shifted["dataset"]) != key.dataset
                                        or not np.array_equal(shifted["labels"], labels)):
                raise DataError(f"{shifted_path}: shifts {shifted['dataset']} test images, not those of {data_path}")
        if data.sha256 != row["data_sha256"]:
            raise DataError(f"{data_path}: holds {key.dataset} data {data.sha256[:12]}…, run {run_dir} was trained on "
                            f"{row['data_sha256'][:12]}…")
        net = load_model(run_dir / io.MODEL_FILE, model, tuple(int(d) for d in data.image_shape),
                         len(data.class_names), key.seed, where)
        temperature = float(pd.read_parquet(run_dir / "calibrated.parquet")["temperature"].iloc[0])

        def logits_of(images: np.ndarray) -> np.ndarray:
            return to_numpy(predict_logits(net, to_inputs(images, spec.mean, spec.std, where)))

        clean = logits_of(data.test_images[index])
        check_clean_logits(key, run_dir, clean, recorded_logits(run_dir, index, labels, len(data.class_names)),
                           lambda: logits_of(data.test_images[index]))
        rows = [{"shift": io.NO_SHIFT, "severity": 0, "n_images": len(index), "temperature": temperature,
                 **m.shift_metrics(clean, labels, temperature)}]
        for name, per_severity in zip(*((shifted["shifts"], shifted["images"]) if shifted is not None else ((), ()))):
            for severity, images in zip(SEVERITIES, per_severity):
                rows.append({"shift": str(name), "severity": severity, "n_images": len(index),
                             "temperature": temperature, **m.shift_metrics(logits_of(images), labels, temperature)})
        frames.append(io.shift_frame(key, rows))
        log(f"({i + 1}/{len(run_dirs)}) {key.dataset} {key.model} {variant_label(key.method, key.param)} seed "
            f"{key.seed}: {len(rows)} (shift, severity) evaluations of {len(index)} images in "
            f"{time.perf_counter() - at:.2f} s")
    io.write_parquet(pd.concat(frames, ignore_index=True), Path(out_path))
    log(f"{len(frames)} runs in {time.perf_counter() - started:.2f} s -> {out_path}")


def recorded_logits(run_dir: Path, index: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """The run's own final logits (N, num_classes) float32 of test images `index` (N,), from its
    predictions.parquet (only its index, label and logit columns are read); DataError naming the
    file when it lacks one of those columns or images, or gives another label."""
    import pyarrow.parquet as pq

    path = run_dir / "predictions.parquet"
    columns = [f"logit_{c}" for c in range(num_classes)]
    try:
        p = pd.read_parquet(path, columns=["index", "label", *columns])
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file: name it, as a missing column
        raise DataError(f"{path}: not the run's predictions (need columns index, label, logit_0 .. "
                        f"logit_{num_classes - 1}; {type(exc).__name__}); retrain the run") from exc
    if [n for n in pq.read_schema(path).names if n.startswith("logit_")] != columns:
        raise DataError(f"{path}: holds logits of another number of classes than {num_classes}; retrain the run")
    p = p.drop_duplicates("index").set_index("index")
    if not pd.Index(index).isin(p.index).all() or not np.array_equal(p.loc[index, "label"].to_numpy(), labels):
        raise DataError(f"{path}: does not hold the run's predictions of the test images evaluated (an image "
                        "missing or another label); retrain the run")
    return p.loc[index, columns].to_numpy(dtype=np.float32)


def _logit_gap(found: np.ndarray, recorded: np.ndarray) -> float:
    """max |found - recorded| / max(1, max |recorded|) over finite entries; inf when the arrays'
    shapes or their non-finite entries (a diverged run's NaN) differ."""
    if found.shape != recorded.shape:
        return math.inf
    finite = np.isfinite(recorded)
    if not np.array_equal(finite, np.isfinite(found)) or not np.array_equal(found[~finite], recorded[~finite],
                                                                             equal_nan=True):
        return math.inf
    if not finite.any():
        return 0.0
    scale = max(1.0, float(np.abs(recorded[finite]).max()))
    return float(np.abs(found[finite].astype(np.float64) - recorded[finite]).max()) / scale


def _mean_total_variation(a: np.ndarray, b: np.ndarray) -> float:
    """The mean over images of half the L1 distance between softmax(a) and softmax(b), in [0, 1]."""
    from scipy.special import softmax

    pa, pb = softmax(a.astype(np.float64), axis=1), softmax(b.astype(np.float64), axis=1)
    return float(np.abs(pa - pb).sum(axis=1).mean() / 2)


def check_clean_logits(key: io.RunKey, run_dir: Path, clean: np.ndarray, recorded: np.ndarray,
                       again: Callable[[], np.ndarray]) -> None:
    """ConfigError naming the model unless a rebuilt model's clean logits (N, C) are the run's own
    `recorded` ones (predictions.parquet, the same images) within CLEAN_LOGIT_TOLERANCE. `again`
    evaluates the same images once more: a model whose second evaluation differs is random at test
    time (MC dropout), and passes when its recorded probabilities are within RANDOM_MODEL_SPREAD
    times the two evaluations' spread. A mismatch means the model did not come back as it trained:
    built from another seed, a random part its factory draws outside the state dict, other weights."""
    gap = _logit_gap(clean, recorded)
    if gap <= CLEAN_LOGIT_TOLERANCE:
        return
    second = again()
    if math.isfinite(gap) and _logit_gap(second, clean) > CLEAN_LOGIT_TOLERANCE:
        spread = _mean_total_variation(clean, second)
        if _mean_total_variation(clean, recorded) <= RANDOM_MODEL_SPREAD * spread + CLEAN_LOGIT_TOLERANCE:
            return
    same = float(np.mean(np.argmax(clean, axis=1) == np.argmax(recorded, axis=1)))
    raise ConfigError(f"model {key.model!r}: the final model of seed {key.seed} ({run_dir}), rebuilt from model.pt, "
                      f"does not give the run's own predictions.parquet on the {len(clean)} clean images (logits "
                      f"differ by {gap:.3g} of their scale, the same top label for {same:.1%}): it does not come back "
                      "as it trained (its factory draws outside the seeded generators, or model.pt is another run's)")


def shift_gallery(shifted_paths: list[Path]) -> pd.DataFrame:
    """`io.GALLERY_COLUMNS`: per dataset (one `shift_data` file each), the first image of the shifted
    subset unshifted (shift "none", severity 0) and under each shift at severities 1..5, with the
    severity constants."""
    from lsbench.shifts import SEVERITIES, get_shift

    rows = []

    def add(dataset: str, name: str, severity: int, level: str, unit: str, source: str, img: np.ndarray) -> None:
        rows.append({"dataset": dataset, "shift": name, "severity": severity, "level": level, "unit": unit,
                     "source": source, "channels": img.shape[0], "height": img.shape[1], "width": img.shape[2],
                     "pixels": img.tobytes()})

    for p in shifted_paths:
        z = read_shifted(p)
        dataset = str(z["dataset"])
        add(dataset, io.NO_SHIFT, 0, "", "", "", z["clean"])
        for name, per_severity in zip(z["shifts"], z["images"]):
            shift = get_shift(str(name))
            for severity, images in zip(SEVERITIES, per_severity):
                add(dataset, shift.name, severity, json.dumps(shift.levels[severity - 1]), shift.unit, shift.source,
                    images[0])
    return pd.DataFrame(rows, columns=io.GALLERY_COLUMNS)


def expected_runs(config: dict) -> pd.DataFrame:
    """The runs the workflow's config asks for, with the parameters each must have recorded."""
    from lsbench.config import load_schema, to_workflow_config, validate_config

    wf = to_workflow_config(validate_config(config, load_schema()))
    rows = [{"dataset": d, "model": m, "method": method, "param": param, "seed": s, "epochs": wf.train.epochs,
             "batch_size": wf.train.batch_size, "lr": wf.train.lr, "validation_size_config": wf.validation_sizes[d],
             "ood_set": wf.ood_set(d) or ""}
            for d in wf.datasets for m in wf.models for s in wf.seeds for method, param in wf.variants]
    df = pd.DataFrame(rows)
    # As configured: a count stays an int beside a fraction (a float column would make 32 into 32.0).
    df["validation_size_config"] = pd.Series([r["validation_size_config"] for r in rows], dtype=object)
    return df


def check_runs(runs: pd.DataFrame, config: dict, data_sha256: dict[str, str],
               model_sha256: dict[str, str] | None = None) -> None:
    """CollectError unless the runs are exactly the config's grid, each recorded with the config's
    parameters, trained on the data now prepared (`data_sha256`: dataset -> sha256) and with the
    model code the workflow planned with (`model_sha256`: model -> `lsbench.plan.model_code_sha256`)."""
    expected = expected_runs(config)
    merged = expected.merge(runs, on=io.KEY, how="outer", indicator=True)
    problems = []
    for _, row in merged.iterrows():
        where = f"{row['dataset']} {row['model']} {variant_label(row['method'], row['param'])} seed {row['seed']}"
        if row["_merge"] == "left_only":
            problems.append(f"{where}: asked for by the config but not among the runs given")
            continue
        if row["_merge"] == "right_only":
            problems.append(f"{where}: not part of the config's grid")
            continue
        for name in ("epochs", "batch_size", "lr", "ood_set"):
            if row[f"{name}_x"] != row[f"{name}_y"]:
                problems.append(f"{where}: recorded {name}={row[f'{name}_y']!r}, the config says {row[f'{name}_x']!r}")
        wanted = validation_count(row["validation_size_config"], int(row["n_train"] + row["n_validation"]))
        if wanted != row["n_validation"]:
            problems.append(f"{where}: held out {row['n_validation']} images, the config's validation_size "
                            f"{row['validation_size_config']!r} means {wanted}")
        for name, column in ((row["dataset"], "data_sha256"), (row["ood_set_y"], "ood_sha256")):
            if name in data_sha256 and row[column] != data_sha256[name]:
                problems.append(f"{where}: used {name} data {row[column][:12]}…, the prepared {name} data is "
                                f"{data_sha256[name][:12]}…")
        planned = (model_sha256 or {}).get(row["model"])
        if planned is not None and row.get("model_sha256", planned) != planned:
            problems.append(f"{where}: trained with model code {row.get('model_sha256')!r}, the workflow found "
                            f"{planned!r} (the job imported other files than `snakemake` sees: check PYTHONPATH)")
    if problems:
        shown = problems[:10] + ([f"... and {len(problems) - 10} more"] if len(problems) > 10 else [])
        raise CollectError("these runs do not match the workflow's config; rerun them "
                           "(snakemake --forcerun train) or restore the config:\n  " + "\n  ".join(shown))


def check_unique_runs(runs: pd.DataFrame, run_dirs: list[Path]) -> None:
    """CollectError when two run directories hold the same run (dataset, model, method, param, seed):
    collected twice, it would count as two seeds and narrow every interval."""
    dup = runs[runs.duplicated(io.KEY, keep=False)]
    if dup.empty:
        return
    key = dup.iloc[0][io.KEY].to_dict()
    dirs = [str(d) for d in run_dirs
            if (pd.read_parquet(io.run_paths(Path(d))["runs"])[io.KEY].iloc[0] == pd.Series(key)).all()]
    raise CollectError(f"{len(dup)} run directories hold the same run {key}: {', '.join(dirs)}; "
                       "collect each run once")


def collect(run_dirs: list[Path], out_dir: Path, log: Log, config: dict | None = None,
            source_dir: Path | None = None, data_summaries: list[Path] | None = None,
            model_sha256: dict[str, str] | None = None, manifest: Path | None = None,
            shift_tables: list[Path] | None = None, shifted_data: list[Path] | None = None) -> None:
    """Concatenate each per-run table into out_dir/{table}.parquet (see io.TABLES), and write
    out_dir/provenance.parquet: the workflow's config, git commit, Snakemake version and the
    source of each dataset.

    With `config`, first check that the runs are the config's grid with the config's parameters
    (CollectError otherwise), with `data_summaries` (the .json files prepare-data wrote beside its
    caches) that they were trained on the data now prepared, and with `model_sha256` that they
    were trained with the model code the workflow planned with; nothing is written when a check
    fails. `manifest` (results/grid-<id>.json, see `lsbench.plan.WorkflowPlan.grid_id`): written
    last, listing what was collected, after every other grid-<id>.json beside it is removed first, so
    that only the grid whose tables these are has one.

    `shift_tables` (`evaluate_shifts`' files, any order) and `shifted_data` (`shift_data`'s): written
    as out_dir/shift.parquet and out_dir/shift_gallery.parquet, checked to hold every run and, with
    `config`, the config's shifts; without them (shifts switched off) those two files are removed,
    so a report never shows the shifts of an earlier grid.
    """
    paths = {table: [io.run_paths(Path(d))[table] for d in run_dirs] for table in io.TABLES}
    missing = [p for table_paths in paths.values() for p in table_paths if not p.is_file()]
    if missing:
        raise CollectError(f"{len(missing)} run table(s) missing, e.g. {missing[0]}: that run has not finished "
                           "(snakemake reruns it; by hand: lsbench train --out-dir "
                           f"{missing[0].parent})")
    # The per-image tables are streamed into place below, one run at a time; the rest fit in memory.
    tables = {table: io.concat_parquet(table_paths) for table, table_paths in paths.items()
              if table not in io.PER_IMAGE_TABLES}
    check_unique_runs(tables["runs"], run_dirs)
    summaries = [json.loads(Path(p).read_text()) for p in data_summaries or ()]
    if config is not None:
        check_runs(tables["runs"], config, {s["dataset"]: s["sha256"] for s in summaries}, model_sha256)
    shift = io.concat_parquet(list(shift_tables)) if shift_tables else None
    if shift is not None:
        check_shift_table(shift, tables["runs"], config)
    extra = {io.SHIFT: shift, io.GALLERY: shift_gallery(list(shifted_data or ())) if shift is not None else None}
    with ExitStack() as staged:  # nothing is renamed into place unless every table is written
        for table in io.PER_IMAGE_TABLES:
            tmp = staged.enter_context(io.atomic_path(Path(out_dir) / f"{table}.parquet"))
            try:
                rows = io.write_concat_parquet(paths[table], tmp)
            except ValueError as exc:
                raise CollectError(str(exc)) from exc
            log(f"{table}: {rows} rows from {len(run_dirs)} runs")
        if manifest is not None:
            for old in Path(manifest).parent.glob("grid-*.json"):
                if re.fullmatch(r"grid-[0-9a-f]{16}\.json", old.name):  # collect's; never a file of the user's
                    old.unlink()
        for name, df in extra.items():
            if df is None:
                (Path(out_dir) / f"{name}.parquet").unlink(missing_ok=True)
            else:
                tables[name] = df
        for table, df in tables.items():
            io.write_parquet(df, Path(out_dir) / f"{table}.parquet")
            log(f"{table}: {len(df)} rows from {len(run_dirs)} runs")
    record = {**provenance.workflow_provenance(config, source_dir),
              "data_sources": json.dumps({s["dataset"]: s["source"] for s in summaries}, sort_keys=True)}
    io.write_parquet(pd.DataFrame([record]), Path(out_dir) / f"{io.PROVENANCE}.parquet")
    log(f"provenance: git {record['git_commit']}, snakemake {record['snakemake']}")
    if manifest is not None:
        io.write_text(json.dumps({"runs": [str(d) for d in run_dirs], "data": [str(p) for p in data_summaries or ()],
                                  "model_code": model_sha256 or {}, "shift": [str(p) for p in shift_tables or ()],
                                  "shifted_data": [str(p) for p in shifted_data or ()]}, indent=1) + "\n",
                      Path(manifest))


def check_shift_table(shift: pd.DataFrame, runs: pd.DataFrame, config: dict | None) -> None:
    """CollectError unless shift.parquet holds each run once per (shift, severity): shift "none" at
    severity 0 and, with `config`, every shift of its `shifts` key at severities 1..5."""
    from lsbench.config import shift_list
    from lsbench.shifts import SEVERITIES

    have = set(shift[io.KEY].drop_duplicates().itertuples(index=False, name=None))
    want = set(runs[io.KEY].itertuples(index=False, name=None))
    if have != want:
        odd = sorted(have ^ want)[:1]
        raise CollectError(f"the shift tables hold {len(have)} runs, the runs {len(want)} (e.g. {odd}): "
                           "evaluate every run (snakemake reruns evaluate_shifts)")
    dup = shift[shift.duplicated([*io.KEY, "shift", "severity"], keep=False)]
    if not dup.empty:
        raise CollectError(f"a run is evaluated twice under shift {dup.iloc[0]['shift']!r}: collect each shift table once")
    if config is not None:
        expected = {(io.NO_SHIFT, 0)} | {(n, s) for n in shift_list(config.get("shifts")) for s in SEVERITIES}
        for key, g in shift.groupby(io.KEY):
            found = set(g[["shift", "severity"]].itertuples(index=False, name=None))
            if found != expected:
                raise CollectError(f"run {key}: evaluated under {sorted({n for n, _ in found})}, the config's shifts "
                                   f"are {sorted({n for n, _ in expected})}")
