"""Read the published results tables and check them before anything is computed from them.

`lsbench report` renders from these files alone, so a truncated file, a missing column, a wrong
dtype, zero rows, duplicated keys or tables that disagree about which runs exist must stop it
with one line naming the file and the problem, not a traceback or (duplicates) a report with
twice the seeds and narrower intervals. No torch here.
"""

from __future__ import annotations

import json
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from lsbench import io
from lsbench.stats import METRIC_BOUNDS

# Required columns and their kinds: "int", "float", "str", "bool" ("float" accepts integers too).
KEY_KINDS = {"dataset": "str", "model": "str", "method": "str", "param": "float", "seed": "int"}
COLUMNS: dict[str, dict[str, str]] = {
    "runs": {**KEY_KINDS, "epochs": "int", "batch_size": "int", "lr": "float", "validation_size": "int",
             "n_train": "int", "n_validation": "int", "n_test": "int", "num_classes": "int", "image_shape": "str",
             "class_names": "str", "data_sha256": "str", "parameters": "int", "ood_set": "str", "ood_sha256": "str"},
    "metrics": {**KEY_KINDS, "epoch": "int", "diverged": "bool", "divergence": "str",
                **{c: "float" for c in io.METRIC_COLUMNS if c not in (*io.KEY, "epoch", "diverged", "divergence")}},
    "reliability": {**KEY_KINDS, "bin": "int", "bin_lower": "float", "bin_upper": "float", "count": "int",
                    "mean_confidence": "float", "accuracy": "float"},
    "predictions": {**KEY_KINDS, "index": "int", "label": "int", "logit_0": "float", "prob_0": "float"},
    # temperature_at_bound is not required: `read_table` derives it for tables written before it
    # (from 0.3's search bounds, lsbench.metrics.temperature_at_bound); val_nll is new in 0.3 (without
    # it, a method's setting is chosen on the test set, and the report says so).
    "calibrated": {**KEY_KINDS, **{c: "float" for c in io.CALIBRATED_COLUMNS
                                   if c not in (*io.KEY, "temperature_at_bound", "val_nll")}},
    "ood": {**KEY_KINDS, "ood_set": "str", "score": "str", "auroc": "float", "fpr95": "float"},
    "ood_predictions": {**KEY_KINDS, "ood_set": "str", "index": "int"},
    "environment": {**KEY_KINDS, "python": "str", "torch": "str", "device_name": "str", "cpu_model": "str",
                    "torch_threads": "int", "job_seconds": "float", "resumed_after_epoch": "int"},
    "provenance": {"config_yaml": "str", "git_commit": "str", "snakemake": "str", "lsbench": "str"},
    # Optional (written when the grid evaluates shifts; lsbench 0.4 and later).
    io.SHIFT: {**KEY_KINDS, "shift": "str", "severity": "int", "n_images": "int",
               **{c: "float" for c in io.SHIFT_COLUMNS if c not in (*io.KEY, "shift", "severity", "n_images")}},
    io.GALLERY: {"dataset": "str", "shift": "str", "severity": "int", "level": "str", "unit": "str", "source": "str",
                 "channels": "int", "height": "int", "width": "int", "pixels": "bytes"},
}
# Columns that identify a row within each table.
UNIQUE = {"runs": io.KEY, "metrics": [*io.KEY, "epoch"], "reliability": [*io.KEY, "bin"],
          "predictions": [*io.KEY, "index"], "calibrated": io.KEY, "environment": io.KEY,
          "ood": [*io.KEY, "score"], "ood_predictions": [*io.KEY, "index"],
          io.SHIFT: [*io.KEY, "shift", "severity"], io.GALLERY: ["dataset", "shift", "severity"]}
_CHECKS = {"int": ptypes.is_integer_dtype, "bool": ptypes.is_bool_dtype,
           "float": lambda s: ptypes.is_float_dtype(s) or ptypes.is_integer_dtype(s),
           "str": lambda s: ptypes.is_object_dtype(s) or ptypes.is_string_dtype(s),
           "bytes": lambda s: ptypes.is_object_dtype(s) and s.map(lambda v: isinstance(v, bytes)).all()}
_NAMES = {"int": "integers", "float": "numbers", "str": "strings", "bool": "booleans", "bytes": "bytes"}


class TablesError(ValueError):
    """A published table is missing, unreadable or inconsistent; the message names the file."""


@dataclass(frozen=True)
class Tables:
    runs: pd.DataFrame
    metrics: pd.DataFrame
    reliability: pd.DataFrame
    predictions: pd.DataFrame
    calibrated: pd.DataFrame
    ood: pd.DataFrame
    ood_predictions: pd.DataFrame
    environment: pd.DataFrame
    provenance: pd.DataFrame
    # Empty when the grid evaluated no shifts (or its tables predate them).
    shift: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=io.SHIFT_COLUMNS))
    shift_gallery: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=io.GALLERY_COLUMNS))


def read_table(path: Path, name: str) -> pd.DataFrame:
    """One table, checked for readability, columns, dtypes, rows and unique keys."""
    raw = _readable(path, lambda: pd.read_parquet(path))
    # Keyed by epsilon: written by lsbench 0.2, whose smECE and FPR95 were defined otherwise. (Not
    # the missing stamp: a table edited with pandas loses it.)
    before_0_3 = "epsilon" in raw.columns and "method" not in raw.columns
    df = from_epsilon_key(raw)
    if name == "calibrated" and "temperature_at_bound" not in df.columns and "temperature" in df.columns:
        from lsbench.metrics import temperature_at_bound

        df = df.assign(temperature_at_bound=temperature_at_bound(df["temperature"].astype(float)))
    df.attrs["before_0_3"] = before_0_3
    check_table(df, path, name)
    return df


def _readable(path: Path, read: Callable[[], Any]) -> Any:
    """What `read` returns, once `path` is known to be a parquet file of a schema version this
    lsbench reads; TablesError naming the file otherwise."""
    if not path.is_file():
        raise TablesError(f"{path}: missing (a results directory holds {', '.join(f'{t}.parquet' for t in io.PUBLISHED)})")
    try:
        out = read()
        version, written_by = io.schema_version(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError and others for a broken file
        raise TablesError(f"{path}: not a readable parquet file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(version, int) or version < 1:
        # reprlib: a stamp of 5,000 digits is named, not quoted in full.
        raise TablesError(f"{path}: lsbench.schema_version = {reprlib.repr(version)} in its metadata is not a schema "
                          f"version (a positive integer of at most 9 ASCII digits): the file was changed after "
                          f"lsbench wrote it")
    if version not in io.SCHEMA_VERSIONS:
        from lsbench import __version__

        raise TablesError(f"{path}: table schema version {version} (written by lsbench {reprlib.repr(written_by)[1:-1]}); lsbench "
                          f"{__version__} reads versions {', '.join(map(str, io.SCHEMA_VERSIONS))}: install the "
                          f"lsbench that wrote it, or a later one")
    return out


def check_table(df: pd.DataFrame, path: Path, name: str, rows: int | None = None) -> None:
    """TablesError unless `df` (table `name`, read from `path`; or one run's block of it, the file
    holding `rows` rows) has the table's columns and dtypes, rows, unique row keys and valid run keys."""
    missing = [c for c in COLUMNS[name] if c not in df.columns]
    if missing:
        raise TablesError(f"{path}: missing column(s) {', '.join(missing)}")
    for column, kind in COLUMNS[name].items():
        if not _CHECKS[kind](df[column]):
            raise TablesError(f"{path}: column {column!r} holds {df[column].dtype}, expected {_NAMES[kind]}")
    if (len(df) if rows is None else rows) == 0 and name not in io.OPTIONAL_TABLES:
        raise TablesError(f"{path}: no rows")
    if name in UNIQUE:
        dup = df[df.duplicated(UNIQUE[name], keep=False)]
        if not dup.empty:
            first = dup.iloc[0][UNIQUE[name]].to_dict()
            raise TablesError(f"{path}: {len(dup)} rows share their ({', '.join(UNIQUE[name])}), e.g. {first}")
    elif len(df) != 1:
        raise TablesError(f"{path}: {len(df)} rows, expected one")
    if set(io.KEY) <= set(COLUMNS[name]):
        _check_keys(df, path)


def from_epsilon_key(df: pd.DataFrame) -> pd.DataFrame:
    """A table of lsbench before 0.3, keyed by `epsilon` (label smoothing was the only method), in
    today's key: method "cross_entropy" at epsilon 0 (the one neutral run), else "label_smoothing",
    and param = epsilon, in the key's place. Other tables are returned as they are."""
    if "epsilon" not in df.columns or "method" in df.columns or "param" in df.columns:
        return df
    eps = df["epsilon"]
    at = list(df.columns).index("epsilon")
    df = df.drop(columns="epsilon")
    if pd.api.types.is_numeric_dtype(eps):
        df.insert(at, "method", np.where(eps == 0, "cross_entropy", "label_smoothing").astype(object))
        df.insert(at + 1, "param", eps.astype(float) + 0.0)
    else:  # leave it to the dtype check, which names the column
        df.insert(at, "method", "label_smoothing")
        df.insert(at + 1, "param", eps)
    return df


def _fail(path: Path, df: pd.DataFrame, bad: pd.Series, problem: str) -> None:
    """TablesError naming the file, how many rows break the rule and the first one's run."""
    if bad.any():
        first = df.loc[bad].iloc[0]
        run = {k: first[k].item() if hasattr(first[k], "item") else first[k] for k in io.KEY if k in df.columns}
        raise TablesError(f"{path}: {int(bad.sum())} row(s) {problem}, e.g. {run}")


def _check_keys(df: pd.DataFrame, path: Path) -> None:
    """Every row names its run: no missing key values, a known method with a parameter in its
    range (`lsbench.methods`), a seed in [0, 2^32 - 1]."""
    from lsbench.methods import METHODS

    _fail(path, df, df[io.KEY].isna().any(axis=1), f"lack a value in {', '.join(io.KEY)}")
    _fail(path, df, ~df["method"].isin(list(METHODS)), f"have a method that is not one of {', '.join(METHODS)}")

    def bad_param(method: str, param: float) -> bool:
        m = METHODS[method]
        return (param != 0) if m.param is None else not (m.param.allows(param) and param != m.param.neutral)

    pairs = df[["method", "param"]].drop_duplicates()
    bad = {(m, p) for m, p in pairs.itertuples(index=False) if m in METHODS and bad_param(m, float(p))}
    _fail(path, df, pd.Series([(m, p) in bad for m, p in zip(df["method"], df["param"])], index=df.index),
          "have a param outside their method's range (or a neutral value, which is the cross_entropy run)")
    _fail(path, df, ~df["seed"].between(0, 2**32 - 1), "have a seed outside [0, 2^32 - 1]")


def _out_of_range(df: pd.DataFrame, columns: list[str], allow_nan: bool) -> pd.Series:
    """Rows where one of `columns` lies outside its range (`METRIC_BOUNDS`) or, unless `allow_nan`,
    is not finite."""
    bad = pd.Series(False, index=df.index)
    for column in columns:
        values = df[column].astype(float)
        lo, hi = METRIC_BOUNDS.get(column, (-np.inf, np.inf))
        bad |= (values < lo - 1e-9) | (values > hi + 1e-9)  # rounding: E-AURC can be -1e-17
        if not allow_nan:
            bad |= ~np.isfinite(values)
    return bad


def _check_runs(runs: pd.DataFrame, path: Path) -> None:
    _fail(path, runs, ~runs["image_shape"].str.fullmatch(r"\d+x\d+x\d+").fillna(False).astype(bool),
          "have an image_shape that is not CxHxW (e.g. 1x28x28)")

    def bad_names(row: pd.Series) -> bool:
        try:
            names = json.loads(row["class_names"])
        except (TypeError, ValueError):
            return True
        return not (isinstance(names, list) and len(names) == row["num_classes"]
                    and all(isinstance(n, str) for n in names))

    _fail(path, runs, runs.apply(bad_names, axis=1),
          "have class_names that are not a JSON list of num_classes strings")
    _fail(path, runs, runs["epochs"] < 1, "have epochs < 1")


def _with_runs(df: pd.DataFrame, runs: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    return df.merge(runs[[*io.KEY, *columns]], on=io.KEY, how="left")


def final_epoch(metrics: pd.DataFrame) -> pd.DataFrame:
    """The last recorded epoch of every run."""
    last = metrics.groupby(io.KEY)["epoch"].transform("max")
    return metrics[metrics["epoch"] == last].reset_index(drop=True)


def _check_metrics(m: pd.DataFrame, path: Path) -> None:
    """`m`: metrics.parquet with runs.parquet's `epochs`."""
    _fail(path, m, (m["epoch"] < 1) | (m["epoch"] > m["epochs"]), "have an epoch outside 1..epochs of runs.parquet")
    # Every epoch from 1 to the last, and a run that did not diverge ends at its epochs: the report
    # takes each run's last row as its final epoch.
    epochs = m.groupby(io.KEY)["epoch"]
    _fail(path, m, epochs.transform("count") != epochs.transform("max"), "(runs) lack an epoch before their last")
    last = final_epoch(m)
    _fail(path, last, ~last["diverged"].astype(bool) & (last["epoch"] != last["epochs"]),
          "(runs) did not diverge but end before the epochs of runs.parquet (a missing final epoch)")
    kept = ~m["diverged"].astype(bool)
    # failure_auroc is undefined (NaN) when every prediction is right or every one wrong.
    strict = [c for c in COLUMNS["metrics"] if COLUMNS["metrics"][c] == "float" and c not in io.KEY
              and c not in ("failure_auroc", "epoch_seconds")]
    _fail(path, m, kept & _out_of_range(m, strict, allow_nan=False),
          f"of runs that did not diverge have a metric that is not finite or out of its range ({', '.join(strict)})")
    _fail(path, m, kept & _out_of_range(m, ["failure_auroc"], allow_nan=True), "have a failure_auroc outside [0, 1]")


def _check_calibrated(c: pd.DataFrame, path: Path) -> None:
    _fail(path, c, _out_of_range(c, [k for k in COLUMNS["calibrated"] if k not in io.KEY], allow_nan=True),
          "have a value out of its range (e.g. a negative temperature, an AURC above 1)")
    _fail(path, c, (c["ece_low"] > c["ece_high"]) | (c["smece_low"] > c["smece_high"]),
          "have an interval whose low end is above its high end")
    _fail(path, c, np.isinf(c["temperature"].astype(float)), "have an infinite temperature (a fit gives a finite "
          "one; NaN means no fit)")


def _check_reliability(r: pd.DataFrame, runs: pd.DataFrame, path: Path) -> None:
    bins = r.groupby(io.KEY)["bin"].agg(["min", "max", "count"]).reset_index()
    _fail(path, bins, (bins["min"] != 0) | (bins["max"] != bins["count"] - 1),
          "(runs) have bins that are not 0, 1, ..., n-1")
    counts = _with_runs(r.groupby(io.KEY)["count"].agg(["sum", "min"]).reset_index(), runs, ["n_test"])
    _fail(path, counts, (counts["min"] < 0) | (counts["sum"] != counts["n_test"]),
          "(runs) have bin counts that do not add up to n_test of runs.parquet")
    _fail(path, r, _out_of_range(r, ["mean_confidence", "accuracy"], allow_nan=True),
          "have a mean_confidence or accuracy outside [0, 1]")


def _check_predictions(p: pd.DataFrame, runs: pd.DataFrame, final: pd.DataFrame, path: Path) -> None:
    """One row per test image of every run (index 0..n_test-1), a label and a probability per
    class in range, and the very predictions the run's final metrics were computed from: its final
    accuracy and mean confidence follow from them (a file from another results folder does not).
    `final`: metrics.parquet's final epochs (`final_epoch`)."""
    need = int(runs["num_classes"].max())
    missing = [f"{kind}_{k}" for kind in ("logit", "prob") for k in range(need) if f"{kind}_{k}" not in p.columns]
    if missing:
        raise TablesError(f"{path}: missing column(s) {', '.join(missing)} (runs.parquet has {need} classes)")
    _check_image_rows(p, runs, "n_test", path)
    labels = _with_runs(p[[*io.KEY, "label"]], runs, ["num_classes"])
    _fail(path, labels, (labels["label"] < 0) | (labels["label"] >= labels["num_classes"]),
          "have a label outside 0..num_classes-1 of runs.parquet")
    probs = p[[f"prob_{k}" for k in range(need)]].astype(float)
    _fail(path, p, ((probs < 0) | (probs > 1)).any(axis=1), "have a probability outside [0, 1]")
    # Classes a run does not have (a study with fewer) hold NaN: the top label among the run's own.
    top = np.nan_to_num(probs.to_numpy(), nan=-1.0)
    recomputed = p[io.KEY].assign(correct=top.argmax(axis=1) == p["label"].to_numpy(), confidence=top.max(axis=1))
    per_run = recomputed.groupby(io.KEY, as_index=False).agg(accuracy=("correct", "mean"),
                                                              mean_confidence=("confidence", "mean"))
    final = final[~final["diverged"].astype(bool)].merge(per_run, on=io.KEY, suffixes=("", "_p"))
    _fail(path, final, ((final["accuracy"] - final["accuracy_p"]).abs() > 1e-9)
          | ((final["mean_confidence"] - final["mean_confidence_p"]).abs() > 1e-9),
          "(runs) are not the predictions their final metrics in metrics.parquet were computed from (another "
          "run's, or another results folder's?)")


def _check_image_rows(p: pd.DataFrame, runs: pd.DataFrame, count: str, path: Path) -> None:
    """Each run's rows have index 0, 1, ..., n-1, n being `count` of runs.parquet (or, without a
    column of that name, whatever number the run has)."""
    rows = p.groupby(io.KEY)["index"].agg(["min", "max", "count"]).reset_index()
    _fail(path, rows, (rows["min"] != 0) | (rows["max"] != rows["count"] - 1),
          "(runs) have image indices that are not 0, 1, ..., n-1 (rows missing)")
    if count in runs.columns:
        rows = _with_runs(rows, runs, [count])
        _fail(path, rows, rows["count"] != rows[count], f"(runs) have another number of rows than {count} of "
              "runs.parquet (rows missing)")


def _check_ood_predictions(p: pd.DataFrame, runs: pd.DataFrame, path: Path) -> None:
    if p.empty:
        return
    need = int(runs.loc[runs["ood_set"] != "", "num_classes"].max())
    missing = [f"logit_{k}" for k in range(need) if f"logit_{k}" not in p.columns]
    if missing:
        raise TablesError(f"{path}: missing column(s) {', '.join(missing)} (runs.parquet has {need} classes)")
    _check_image_rows(p, runs, "", path)


def _check_values(d: Path, frames: dict[str, pd.DataFrame]) -> None:
    """What the report computes from must be in range: every epoch of each run up to its last (its
    epochs unless it diverged), finite metrics within their ranges for runs that did not diverge,
    contiguous reliability bins counting the test set (the per-image tables: `_check_run_images`)."""
    runs = frames["runs"]
    _check_runs(runs, d / "runs.parquet")
    _check_metrics(_with_runs(frames["metrics"], runs, ["epochs"]), d / "metrics.parquet")
    _check_calibrated(frames["calibrated"], d / "calibrated.parquet")
    ood_metrics = [c for c in ("auroc", "aupr_in", "aupr_out", "fpr95") if c in frames["ood"]]
    _fail(d / "ood.parquet", frames["ood"], _out_of_range(frames["ood"], ood_metrics, allow_nan=True),
          f"have an {', '.join(ood_metrics[:-1])} or {ood_metrics[-1]} outside [0, 1]")
    _check_reliability(frames["reliability"], runs, d / "reliability.parquet")


# A stored number matches the one recomputed from the stored logits within this (NaN only NaN):
# the relative part absorbs a summation order that differs between CPUs (AVX2, AVX-512); an edit
# that changes what a report says is far larger.
_RTOL, _ATOL = 1e-6, 1e-9
# The clean rows of shift.parquet come from another forward pass (the shift job rebuilds the model
# and evaluates a subset in other batches), whose float32 logits differ from the stored ones in
# the last bits; a difference of two means (overconfidence) turns that into a relative error of
# 4e-6 on a 2-core AMD EPYC. Far below what the report prints (4 decimals), far above those bits.
_SHIFT_RTOL, _SHIFT_ATOL = 1e-4, 1e-6
# Numbers whose definition changed in lsbench 0.3: tables of 0.2 hold the old value (smECE lost
# half the mass at a confidence of 0 or 1; FPR95 skipped ROC points).
_CHANGED_IN_0_3 = frozenset({"smece", "fpr95"})


def _first_mismatch(stored: pd.Series | dict, recomputed: dict[str, object], rtol: float = _RTOL,
                    atol: float = _ATOL) -> str | None:
    """The first column of `recomputed` (scalars or arrays) whose stored value differs, or None."""
    for column, value in recomputed.items():
        if column in stored and not np.allclose(np.asarray(stored[column], dtype=float),
                                                np.asarray(value, dtype=float), rtol=rtol, atol=atol, equal_nan=True):
            return column
    return None


def _refuse(path: Path, column: str, stored: object, recomputed: object, source: str, where: dict,
            rtol: float = _RTOL, atol: float = _ATOL) -> None:
    stored, recomputed = np.atleast_1d(np.asarray(stored, float)), np.atleast_1d(np.asarray(recomputed, float))
    at = int(np.argmax(~np.isclose(stored, recomputed, rtol=rtol, atol=atol, equal_nan=True)))
    raise TablesError(f"{path}: {column} = {stored[at]:.6g} does not follow from {source}, which give "
                      f"{recomputed[at]:.6g} (edited, or another run's?), e.g. {where}")


def _not_recomputed(df: pd.DataFrame) -> frozenset[str]:
    """The columns not to recompute in `df` (a table as `read_table` returns it)."""
    return _CHANGED_IN_0_3 if df.attrs.get("before_0_3", False) else frozenset()


def _check_temperature(path: Path, t: float, n_validation: int, where: dict) -> None:
    """A run that held out images has a fitted temperature, finite and positive (`fit_temperature`
    searches a bounded interval); one that held out none has no fit (NaN)."""
    if n_validation > 0 and not (np.isfinite(t) and t > 0):
        raise TablesError(f"{path}: temperature = {t} although the run held out {n_validation} images to fit it "
                          f"(a fit is finite and positive), e.g. {where}")
    if n_validation == 0 and not np.isnan(t):
        raise TablesError(f"{path}: temperature = {t} although the run held out no images (without them there is no "
                          f"fit: NaN), e.g. {where}")


def _temperature_scaled(logits: np.ndarray, labels: np.ndarray, t: float) -> dict[str, float]:
    """calibrated.parquet's test-set columns at temperature `t`, as `metrics.temperature_scaled`
    computes them (all NaN without a temperature)."""
    from lsbench import metrics as m

    names = {"ece_ts": "ece", "nll_ts": "test_nll", "mean_confidence_ts": "mean_confidence", "aurc_ts": "aurc",
             "eaurc_ts": "eaurc"}
    if not np.isfinite(t):
        return dict.fromkeys(names, np.nan)
    scaled = m.evaluate_logits(logits / t, labels)
    return {column: scaled[name] for column, name in names.items()}


def _run_where(key: tuple) -> dict[str, Any]:
    """A run key as messages show it: plain Python values, not np.float64(0.1)."""
    return {k: v.item() if hasattr(v, "item") else v for k, v in zip(io.KEY, key)}


class _RunFacts:
    """What each run's images are checked against, indexed once (a lookup per run keeps the
    report's time linear in the number of runs)."""

    def __init__(self, frames: dict[str, pd.DataFrame], shift: pd.DataFrame | None) -> None:
        self.runs = frames["runs"]
        self.final = final_epoch(frames["metrics"])
        self.converged = set(self.final.loc[~self.final["diverged"].astype(bool), io.KEY]
                             .itertuples(index=False, name=None))
        self.final_by_run = self.final.set_index(io.KEY)
        self.runs_by_key = self.runs.set_index(io.KEY)
        self.calibrated = frames["calibrated"].set_index(io.KEY)
        self.reliability = frames["reliability"].groupby(io.KEY)
        self.ood = frames["ood"].groupby(io.KEY)
        self.old_metrics, self.old_ood = _not_recomputed(frames["metrics"]), _not_recomputed(frames["ood"])
        self.clean_shift = (None if shift is None else
                            shift[(shift["shift"] == io.NO_SHIFT) & (shift["severity"] == 0)].set_index(io.KEY))


def _check_run_images(d: Path, key: tuple, p: pd.DataFrame, ood_p: pd.DataFrame | None, facts: _RunFacts) -> None:
    """One run's rows of predictions.parquet (`p`) and ood_predictions.parquet (`ood_p`; None without
    an OOD set): in range and the predictions its final metrics came from (`_check_predictions`); for
    a converged run, every number that follows from its stored logits follows from them (one
    probability path, `lsbench.metrics`): the probabilities, the final epoch's metrics in
    metrics.parquet, the reliability bins, the temperature-scaled and rejection columns of
    calibrated.parquet at its temperature (checked once per run before the stream), every
    OOD score's detection metrics and the clean rows of shift.parquet; the logits are finite. A
    table copied in from another results folder, or edited, fails here. Not recomputed: the
    training and test losses (the method's objective), the temperature and val_nll (held-out images
    are not stored) and the bootstrap intervals (resampling costs seconds per run)."""
    from lsbench import metrics as m

    _check_predictions(p, facts.runs, facts.final, d / "predictions.parquet")
    if ood_p is not None:
        _check_ood_predictions(ood_p, facts.runs, d / "ood_predictions.parquet")
    if key not in facts.converged:
        return
    c = int(facts.runs_by_key.loc[key, "num_classes"])
    where = _run_where(key)
    p = p.sort_values("index")
    logits = p[[f"logit_{k}" for k in range(c)]].to_numpy(np.float64)
    if not np.isfinite(logits).all():
        raise TablesError(f"{d / 'predictions.parquet'}: a logit that is not finite in a run that did not "
                          f"diverge, e.g. {where}")
    probs = m.probabilities(logits)
    if np.abs(probs - p[[f"prob_{k}" for k in range(c)]].to_numpy(np.float64)).max() > 1e-9:
        raise TablesError(f"{d / 'predictions.parquet'}: probabilities that are not the softmax of the "
                          f"logits beside them, e.g. {where}")
    labels = p["label"].to_numpy()
    recomputed = {k: v for k, v in m.evaluate_logits(logits, labels).items() if k not in facts.old_metrics}
    column = _first_mismatch(facts.final_by_run.loc[key], recomputed)
    if column is not None:
        _refuse(d / "metrics.parquet", f"the final epoch's {column}", facts.final_by_run.loc[key, column],
                recomputed[column], "predictions.parquet", where)
    _check_bins(d, facts.reliability.get_group(key).sort_values("bin"), probs, labels, where)
    row = facts.calibrated.loc[key]  # its temperature was checked for every run before the stream
    recomputed = {**_temperature_scaled(logits, labels, float(row["temperature"])),
                  **m.rejection_aurcs(logits, m.top_label(probs, labels)[1])}
    column = _first_mismatch(row, recomputed)
    if column is not None:
        _refuse(d / "calibrated.parquet", column, row[column], recomputed[column],
                "its temperature and predictions.parquet", where)
    if ood_p is not None and key in facts.ood.groups:
        ood_logits = ood_p.sort_values("index")[[f"logit_{k}" for k in range(c)]].to_numpy(np.float64)
        _check_ood_recomputed(d, facts.ood.get_group(key), logits, ood_logits, facts.old_ood, where)
    if facts.clean_shift is not None and key in facts.clean_shift.index:
        _check_clean_shift_row(d / f"{io.SHIFT}.parquet", facts.clean_shift.loc[key], logits, labels,
                               int(facts.runs_by_key.loc[key, "n_test"]), where)


def _check_bins(d: Path, bins: pd.DataFrame, probs: np.ndarray, labels: np.ndarray, where: dict) -> None:
    """A run's reliability bins are those of its stored probabilities: counts, mean confidences and
    accuracies."""
    from lsbench import metrics as m

    table = m.reliability_table(probs, labels, len(bins))
    if bins["count"].tolist() != table["count"]:
        raise TablesError(f"{d / 'reliability.parquet'}: bin counts that do not follow from "
                          f"predictions.parquet (another run's?), e.g. {where}")
    column = _first_mismatch(bins, {k: table[k] for k in ("mean_confidence", "accuracy")})
    if column is not None:
        _refuse(d / "reliability.parquet", f"a bin's {column}", bins[column], table[column], "predictions.parquet",
                where)


def _check_clean_shift_row(path: Path, row: pd.Series, logits: np.ndarray, labels: np.ndarray, n_test: int,
                           where: dict) -> None:
    """A converged run's clean row of shift.parquet (shift "none", severity 0: the final model on the
    unshifted subset `shifts.shift_subset`) is `metrics.shift_metrics` of its stored logits of
    those images. `logits`, `labels`: the run's test images in index order."""
    from lsbench import metrics as m
    from lsbench.shifts import shift_subset

    subset = shift_subset(n_test, int(row["n_images"]))
    recomputed = m.shift_metrics(logits[subset], labels[subset], float(row["temperature"]))
    column = _first_mismatch(row, recomputed, _SHIFT_RTOL, _SHIFT_ATOL)
    if column is not None:
        _refuse(path, f"the clean (none, severity 0) row's {column}", row[column], recomputed[column],
                "predictions.parquet on the same images", where, _SHIFT_RTOL, _SHIFT_ATOL)


def _check_ood_recomputed(d: Path, rows: pd.DataFrame, logits: np.ndarray, ood_logits: np.ndarray,
                          skip: frozenset[str], where: dict) -> None:
    """Each OOD score's row of a run (ood.parquet) follows from the run's test logits and its OOD
    logits (`metrics.rejection_scores`, `metrics.ood_detection`)."""
    from lsbench import metrics as m

    if not np.isfinite(ood_logits).all():
        raise TablesError(f"{d / 'ood_predictions.parquet'}: a logit that is not finite, e.g. {where}")
    id_scores, ood_scores = m.rejection_scores(logits), m.rejection_scores(ood_logits)
    for _, row in rows.iterrows():
        if row["score"] not in io.OOD_SCORES:
            raise TablesError(f"{d / 'ood.parquet'}: score {row['score']!r} is not one of {', '.join(io.OOD_SCORES)}, "
                              f"e.g. {where}")
        recomputed = {k: v for k, v in m.ood_detection(id_scores[row["score"]], ood_scores[row["score"]]).items()
                      if k not in skip}
        column = _first_mismatch(row, recomputed)
        if column is not None:
            _refuse(d / "ood.parquet", f"{column} of score {row['score']!r}", row[column], recomputed[column],
                    "predictions.parquet and ood_predictions.parquet", where)


def _check_provenance(d: Path, provenance: pd.DataFrame, runs: pd.DataFrame) -> None:
    """The recorded config's grid and hyperparameters are the runs' (when a config was recorded)."""
    import yaml

    text = provenance.iloc[0]["config_yaml"]
    if not text:
        return
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TablesError(f"{d / 'provenance.parquet'}: config_yaml is not YAML ({exc})") from exc
    from lsbench.methods import grid_variants

    checks = {"datasets": set(runs["dataset"]), "models": set(runs["model"]), "seeds": set(runs["seed"]),
              "epochs": set(runs["epochs"]), "batch_size": set(runs["batch_size"]), "lr": set(runs["lr"])}
    if not isinstance(config, dict):
        return
    for key, found in checks.items():
        if key not in config:
            continue
        want = config[key] if isinstance(config[key], list) else [config[key]]
        if {float(v) if key == "lr" else v for v in want} != found:
            raise TablesError(f"{d / 'provenance.parquet'}: its config says {key} = {config[key]!r}, the runs of "
                              f"runs.parquet have {sorted(found)} (from another results folder?)")
    methods = config.get("methods") or ({"label_smoothing": config["epsilons"]} if config.get("epsilons") else None)
    found = set(runs[["method", "param"]].itertuples(index=False, name=None))
    # Before 0.3 a grid without epsilon 0 had no cross-entropy run; today's grids always have one.
    if methods is not None and set(grid_variants(methods)) - ({("cross_entropy", 0.0)} - found) != found:
        raise TablesError(f"{d / 'provenance.parquet'}: its config's methods are {methods!r}, the runs of "
                          f"runs.parquet have {sorted(found)} (from another results folder?)")


def _run_set(df: pd.DataFrame) -> set[tuple]:
    return set(df[io.KEY].drop_duplicates().itertuples(index=False, name=None))


# Rows of each per-image table kept for the report's per-image figures (confidence histograms,
# smooth reliability curves, coverage curves, OOD score histograms): beyond it every k-th image of
# each run (and its last) is kept, so a 2,000-run grid draws from 250,000 rows, not 20 million,
# and the figures' memory stays that of the default grid (25 runs x 10,000 images: all of them).
# Every number of a table or finding is computed from the other tables, which are read whole.
FIGURE_ROWS = 250_000


def read_tables(results_dir: Path, figure_rows: int | None = None) -> Tables:
    """All published tables of `results_dir`, checked one by one and against each other: every
    table must hold the runs of runs.parquet (the OOD tables those with an OOD set). TablesError
    names the file and the problem. predictions.parquet and ood_predictions.parquet are read and
    checked one run at a time (`io.PER_IMAGE_TABLES`); `Tables.predictions` and
    `.ood_predictions` hold them whole up to `figure_rows` (default FIGURE_ROWS) rows each, beyond that a sample:
    every k-th image of each run and its last (k = ceil(rows / figure_rows)), so a run's image count
    is its largest index + 1 either way."""
    d = Path(results_dir)
    frames = {name: (_per_image_runs(d / f"{name}.parquet", name) if name in io.PER_IMAGE_TABLES
                     else read_table(d / f"{name}.parquet", name)) for name in io.PUBLISHED}
    runs = _run_set(frames["runs"])
    with_ood = _run_set(frames["runs"][frames["runs"]["ood_set"] != ""])
    for name in io.TABLES:
        other = _run_set(frames[name])
        # The OOD tables hold the runs that have an OOD set, every other table every run.
        expected, which = (with_ood, "runs with an ood_set in") if name in io.OPTIONAL_TABLES else (runs, "runs of")
        if other != expected:
            extra, lacking = sorted(other - expected), sorted(expected - other)
            detail = "; ".join(part for part in (
                f"{len(lacking)} run(s) missing, e.g. {lacking[0]}" if lacking else "",
                f"{len(extra)} run(s) too many, e.g. {extra[0]}" if extra else "") if part)
            raise TablesError(f"{d / f'{name}.parquet'}: not the {which} runs.parquet: {detail}")
    _check_values(d, frames)
    # Every temperature first: a bad one is calibrated.parquet's fault, not that of the shift rows
    # that copied it.
    held_out = frames["calibrated"].merge(frames["runs"][[*io.KEY, "n_validation"]], on=io.KEY)
    for row in held_out.itertuples(index=False):
        _check_temperature(d / "calibrated.parquet", float(row.temperature), int(row.n_validation),
                           _run_where(tuple(getattr(row, k) for k in io.KEY)))
    shift_frames = read_shift_tables(d, runs)
    if shift_frames:
        _check_gallery_images(d / f"{io.GALLERY}.parquet", shift_frames[io.GALLERY], frames["runs"])
        _check_shift_temperatures(d / f"{io.SHIFT}.parquet", shift_frames[io.SHIFT], frames["calibrated"])
    frames.update(_read_run_images(d, frames, with_ood, FIGURE_ROWS if figure_rows is None else figure_rows,
                                   shift_frames.get(io.SHIFT)))
    _check_provenance(d, frames["provenance"], frames["runs"])
    return Tables(**frames, **shift_frames)


def _check_gallery_images(path: Path, gallery: pd.DataFrame, runs: pd.DataFrame) -> None:
    """Each gallery image is channels x height x width bytes, the image shape of its dataset's runs
    (a shift keeps the shape)."""
    shapes = runs.groupby("dataset")["image_shape"].first()
    size = gallery["channels"] * gallery["height"] * gallery["width"]
    _fail(path, gallery, (gallery[["channels", "height", "width"]] < 1).any(axis=1)
          | (gallery["pixels"].map(len) != size), "have pixels that are not channels x height x width bytes")
    shape = gallery["channels"].astype(str) + "x" + gallery["height"].astype(str) + "x" + gallery["width"].astype(str)
    bad = shape != gallery["dataset"].map(shapes)
    if bad.any():
        row = gallery[bad].iloc[0]
        raise TablesError(f"{path}: {int(bad.sum())} image(s) of another shape than their dataset's runs, e.g. "
                          f"{row['dataset']} {row['shift']} severity {row['severity']}: {shape[bad].iloc[0]}, "
                          f"runs.parquet: {shapes.get(row['dataset'])}")


def _check_shift_temperatures(path: Path, shift: pd.DataFrame, calibrated: pd.DataFrame) -> None:
    """Each row of shift.parquet has its run's temperature of calibrated.parquet (NaN for NaN); the
    clean rows' metrics are checked against the predictions run by run (`_check_run_images`)."""
    temperature = shift[io.KEY].merge(calibrated[[*io.KEY, "temperature"]], on=io.KEY, how="left")
    _fail(path, shift, pd.Series(~np.isclose(shift["temperature"].astype(float), temperature["temperature"].astype(float),
                                             rtol=0, atol=0, equal_nan=True), index=shift.index),
          "have a temperature that is not their run's in calibrated.parquet")


def _per_image_runs(path: Path, name: str) -> pd.DataFrame:
    """The distinct run keys of a per-image table with their row counts ("rows"), after checking its
    columns, dtypes and row count on its schema (its rows are checked run by run later, `_run_blocks`)."""
    import pyarrow.parquet as pq

    schema, rows = _readable(path, lambda: (pq.read_schema(path), pq.ParquetFile(path).metadata.num_rows))
    check_table(from_epsilon_key(schema.empty_table().to_pandas()), path, name, rows=rows)
    return from_epsilon_key(_readable(path, lambda: io.distinct_runs(path)))


def _run_blocks(path: Path, name: str, rows: pd.DataFrame) -> Iterator[tuple[tuple, pd.DataFrame]]:
    """(run key, rows) of a per-image table one run at a time, each block checked as `read_table`
    checks a table; TablesError when a run's rows are not together (collect writes them so).
    `rows`: the file's runs with their row counts (`_per_image_runs`)."""
    counts = {tuple(r[:-1]): r[-1] for r in rows[[*io.KEY, "rows"]].itertuples(index=False, name=None)}
    blocks = io.run_blocks(path)
    while True:
        block = _readable(path, lambda: next(blocks, None))
        if block is None:
            return
        block = from_epsilon_key(block)
        key = tuple(block[io.KEY].iloc[0].tolist())
        if len(block) != counts.get(key, len(block)):  # NaN keys aside, which check_table names
            raise TablesError(f"{path}: the rows of run {_run_where(key)} are not together (rows appended "
                              "or moved after collect wrote the file?)")
        check_table(block, path, name)
        yield key, block


def _figure_sample(block: pd.DataFrame, step: int) -> pd.DataFrame:
    """Every `step`-th image of one run's block, and its last."""
    if step == 1:
        return block
    return block[(block["index"] % step == 0) | (block["index"] == block["index"].max())]


def _read_run_images(d: Path, frames: dict[str, pd.DataFrame], with_ood: set[tuple], figure_rows: int,
                     shift: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """predictions.parquet and ood_predictions.parquet read in step, one run at a time, each run
    checked (`_check_run_images`); returns their figure samples (see `read_tables`) and ood.parquet
    with aupr_in and aupr_out (`with_aupr`). Memory holds one run's rows (the OOD file's runs in
    another order are held until their run comes) and the samples."""
    import pyarrow.parquet as pq

    facts = _RunFacts(frames, shift)
    paths = {name: d / f"{name}.parquet" for name in io.PER_IMAGE_TABLES}
    steps = {name: max(1, -(-pq.ParquetFile(path).metadata.num_rows // figure_rows)) for name, path in paths.items()}
    kept: dict[str, list[pd.DataFrame]] = {name: [] for name in paths}
    ood_blocks, waiting = _run_blocks(paths["ood_predictions"], "ood_predictions", frames["ood_predictions"]), {}
    needs_aupr = not {"aupr_in", "aupr_out"} <= set(frames["ood"].columns)
    aupr: dict[tuple, dict[str, dict[str, float]]] = {}
    for key, p in _run_blocks(paths["predictions"], "predictions", frames["predictions"]):
        ood_p = None
        if key in with_ood:
            while key not in waiting:
                got = next(ood_blocks)  # every run with an OOD set has rows there (checked before)
                waiting[got[0]] = got[1]
            ood_p = waiting.pop(key)
            kept["ood_predictions"].append(_figure_sample(ood_p, steps["ood_predictions"]))
            if needs_aupr:
                aupr[key] = aupr_values(p, ood_p)
        _check_run_images(d, key, p, ood_p, facts)
        kept["predictions"].append(_figure_sample(p, steps["predictions"]))
    for _ in ood_blocks:  # none left, the run sets being equal; read to the end all the same
        pass
    samples = {name: pd.concat(parts, ignore_index=True) if parts
               else from_epsilon_key(pq.read_schema(paths[name]).empty_table().to_pandas())  # typed, no rows
               for name, parts in kept.items()}
    return {**samples, "ood": with_aupr(frames["ood"], aupr) if needs_aupr else frames["ood"]}


def read_shift_tables(d: Path, runs: set[tuple]) -> dict[str, pd.DataFrame]:
    """shift.parquet and shift_gallery.parquet when `d` has them ({} when it has neither): every run
    of runs.parquet, each under the same (shift, severity) pairs, shift "none" at severity 0
    among them, metrics within their ranges, and a gallery image for every (dataset, shift,
    severity) of the table. TablesError names the file and the problem."""
    path, gallery_path = d / f"{io.SHIFT}.parquet", d / f"{io.GALLERY}.parquet"
    if not path.exists() and not gallery_path.exists():
        return {}
    shift, gallery = read_table(path, io.SHIFT), read_table(gallery_path, io.GALLERY)
    found = _run_set(shift)
    if found != runs:
        extra, lacking = sorted(found - runs), sorted(runs - found)
        raise TablesError(f"{path}: not the runs of runs.parquet: {len(lacking)} missing, {len(extra)} too many, "
                          f"e.g. {(lacking or extra)[0]} (from another grid?)")
    pairs = {key: frozenset(g[["shift", "severity"]].itertuples(index=False, name=None))
             for key, g in shift.groupby(io.KEY)}
    if len(set(pairs.values())) != 1:
        raise TablesError(f"{path}: the runs are evaluated under different shifts or severities")
    if (io.NO_SHIFT, 0) not in next(iter(pairs.values())):
        raise TablesError(f"{path}: no rows of shift {io.NO_SHIFT!r} at severity 0 (the unshifted images)")
    _fail(path, shift, ~shift["severity"].between(0, 5), "have a severity outside 0..5")
    metrics = [c for c in io.SHIFT_COLUMNS if c not in (*io.KEY, "shift", "severity", "n_images", "temperature")]
    _fail(path, shift, _out_of_range(shift, metrics, allow_nan=True), "hold a metric outside its range")
    shown = set(gallery[["dataset", "shift", "severity"]].itertuples(index=False, name=None))
    needed = set(shift[["dataset", "shift", "severity"]].drop_duplicates().itertuples(index=False, name=None))
    if needed - shown:
        raise TablesError(f"{gallery_path}: no image of {sorted(needed - shown)[0]}, which shift.parquet holds")
    return {io.SHIFT: shift, io.GALLERY: gallery}


def aupr_values(p: pd.DataFrame, ood_p: pd.DataFrame) -> dict[str, dict[str, float]]:
    """{score: `lsbench.metrics.ood_detection`} of one run, from its rows of predictions.parquet and
    ood_predictions.parquet (the logit columns the run has)."""
    from lsbench import metrics as m

    columns = [c for c in p.columns if c.startswith("logit_") and p[c].notna().any()]
    id_scores = m.rejection_scores(p[columns].to_numpy(np.float64))
    ood_scores = m.rejection_scores(ood_p[columns].to_numpy(np.float64))
    return {s: m.ood_detection(id_scores[s], ood_scores[s]) for s in id_scores}


def with_aupr(ood: pd.DataFrame, values: dict[tuple, dict[str, dict[str, float]]]) -> pd.DataFrame:
    """ood.parquet with aupr_in and aupr_out: as written by the runs, or, for tables written before
    the runs recorded them (or holding only one), from `values` ({run key: `aupr_values`}), computed
    from the logits in predictions.parquet and ood_predictions.parquet with the runs' own functions."""
    missing = [c for c in ("aupr_in", "aupr_out") if c not in ood.columns]
    if not missing or ood.empty:
        return ood.assign(**{c: pd.Series(dtype=float) for c in missing})
    ood = ood.copy()
    for column in missing:  # after auroc, where a run writes them
        at = list(ood.columns).index("auroc") + 1 + (column == "aupr_out" and "aupr_in" in ood.columns)
        ood.insert(at, column, [values.get(tuple(r[k] for k in io.KEY), {}).get(r["score"], {}).get(column, np.nan)
                                for _, r in ood.iterrows()])
    return ood
