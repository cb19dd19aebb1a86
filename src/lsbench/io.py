"""File I/O at the edges: atomic writes and the layout of the results tables. No torch here: the
report reads these tables without the training stack.

Every file is written to a temporary name in the same directory and renamed into place, so a
killed job never leaves a file that looks complete.

Every table is keyed by the run, `KEY` = (dataset, model, method, param, seed): `model` is the name
as configured ("mlp", or "package.module:function" for a user's factory), `method` a
`lsbench.methods` name and `param` its swept value (float; 0.0 for cross-entropy and for a method
without a parameter). Tables of lsbench before 0.3 had `epsilon` instead of method and param;
`lsbench.tables` reads them as label smoothing.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

KEY = ["dataset", "model", "method", "param", "seed"]
METRIC_COLUMNS = [
    *KEY, "epoch", "train_loss", "test_loss", "test_nll", "accuracy", "ece", "mce",
    "mean_confidence", "overconfidence", "brier", "entropy", "epoch_seconds", "diverged", "divergence",
    "ece_over", "ece_under", "ece_adaptive", "ece_classwise", "aurc", "eaurc", "failure_auroc", "smece",
]
RELIABILITY_COLUMNS = [*KEY, "bin", "bin_lower", "bin_upper", "count", "mean_confidence", "accuracy"]
# One row per run, final epoch: temperature scaling, bootstrap intervals, other rejection scores.
CALIBRATED_COLUMNS = [*KEY, "temperature", "temperature_at_bound", "ece_ts", "nll_ts", "mean_confidence_ts",
                      "aurc_ts", "eaurc_ts",
                      "ece_low", "ece_high", "smece_low", "smece_high", "aurc_max_logit", "aurc_margin", "val_nll"]
# Out-of-distribution detection: one row per run x score; the OOD images' logits, one row per image.
OOD_COLUMNS = [*KEY, "ood_set", "score", "auroc", "aupr_in", "aupr_out", "fpr95"]
OOD_SCORES = ("msp", "max_logit", "energy")
# Distribution shift (lsbench.shifts): one row per run x shift x severity, on the same test subset
# for every run; shift "none" at severity 0 is that subset unshifted. ece_ts / nll_ts use the
# temperature fitted on the run's clean held-out images (calibrated.parquet).
SHIFT_COLUMNS = [*KEY, "shift", "severity", "n_images", "accuracy", "test_nll", "brier", "ece", "smece",
                 "mean_confidence", "overconfidence", "aurc", "failure_auroc", "temperature", "ece_ts", "nll_ts"]
# One row per dataset x shift x severity: the first image of the shifted subset (the report's gallery).
GALLERY_COLUMNS = ["dataset", "shift", "severity", "level", "unit", "source", "channels", "height", "width",
                   "pixels"]
NO_SHIFT = "none"
SHIFT, GALLERY = "shift", "shift_gallery"  # results/shift.parquet, results/shift_gallery.parquet (optional)
# A run's final model (weights and what rebuilds it), written beside its tables.
MODEL_FILE = "model.pt"
# What defines a run's numbers, recorded by the run itself (results/runs.parquet); collect checks it
# against the workflow's config. class_names is a JSON list, image_shape "CxHxW", model_sha256 the
# hash of the model's code (lsbench.plan.model_code_sha256; tables written before 0.3 lack it).
RUN_COLUMNS = [*KEY, "epochs", "batch_size", "lr", "validation_size", "n_train", "n_validation", "n_test",
               "num_classes", "image_shape", "class_names", "data_sha256", "parameters", "ood_set", "ood_sha256",
               "model_sha256"]
# Per-run tables, each collected into results/{name}.parquet. The results proper are equal between
# reruns (timing columns aside); `environment` is provenance: the software, hardware and wall
# time of the job that produced the run.
RESULT_TABLES = ("runs", "metrics", "reliability", "predictions", "calibrated", "ood", "ood_predictions")
# Tables that hold rows only for runs with an OOD set (possibly none at all).
OPTIONAL_TABLES = ("ood", "ood_predictions")
TABLES = (*RESULT_TABLES, "environment")
PROVENANCE = "provenance"  # results/provenance.parquet: one workflow-level row, written by collect
PUBLISHED = (*TABLES, PROVENANCE)  # what `lsbench report` reads
OPTIONAL_PUBLISHED = (SHIFT, GALLERY)  # read too when present (a grid that evaluates shifts)
# The per-image tables: one row per test (or OOD) image of every run, nearly all of a grid's bytes
# (10,000 rows a run on Fashion-MNIST, 20 million for 2,000 runs). collect writes them and the
# report reads them one run at a time (`write_concat_parquet`, `lsbench.tables`): memory stays
# bounded however many runs the grid has.
PER_IMAGE_TABLES = ("predictions", "ood_predictions")


@dataclass(frozen=True)
class RunKey:
    """Which run a row belongs to."""

    dataset: str
    model: str
    method: str
    param: float
    seed: int

    def columns(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "model": self.model, "method": self.method, "param": float(self.param) + 0.0,
                "seed": int(self.seed)}


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        # Name the file the user asked for, not our temporary one (a full disk, a size limit).
        if exc.errno is None:
            raise OSError(f"{path}: {exc}") from exc
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    finally:
        tmp.unlink(missing_ok=True)


# The tables' layout, written into every parquet file's key-value metadata (with the lsbench version
# that wrote it), so a later lsbench reads each file by its own layout (lsbench.tables):
#   1  lsbench 0.1.0 to 0.2.x: no version in the file; keyed by `epsilon` before the method axis
#   2  lsbench 0.3.0: `lsbench.schema_version` in the metadata; keyed by method and param
SCHEMA_VERSION = 2
SCHEMA_VERSIONS = (1, 2)  # every layout lsbench has written; `lsbench report` reads them all
SCHEMA_VERSION_KEY = b"lsbench.schema_version"
VERSION_KEY = b"lsbench.version"


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    """`df` (no index) as parquet at `path`, atomically, stamped with SCHEMA_VERSION."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata(_stamped(table.schema))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _stamped(schema: Any) -> dict[bytes, bytes]:
    """A pyarrow schema's metadata with SCHEMA_VERSION and the lsbench version added."""
    from lsbench import __version__

    return {**(schema.metadata or {}), SCHEMA_VERSION_KEY: str(SCHEMA_VERSION).encode(),
            VERSION_KEY: __version__.encode()}


def schema_version(path: Path) -> tuple[int | str, str]:
    """(schema version, lsbench version) a parquet file was written with: (1, "before 0.3.0") for a
    file without the stamp, the stamp's text as it is when it is not 1 to 9 ASCII digits. Never
    raises for a stamp's content: the caller names a bad stamp."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    if SCHEMA_VERSION_KEY not in meta:
        return 1, "before 0.3.0"
    text = meta[SCHEMA_VERSION_KEY].decode(errors="replace")
    written_by = meta.get(VERSION_KEY, b"unknown").decode(errors="replace")
    # ASCII digits, and few: str.isdigit admits "²", which int() refuses, and int() refuses more
    # than 4,300 digits; either raised here, and the caller took the file for unreadable.
    return (int(text) if re.fullmatch(r"[0-9]{1,9}", text) else text), written_by


def write_text(text: str, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(payload: bytes, path: Path) -> None:
    """Write bytes atomically with Python's own file I/O, so a full disk or a size limit raises
    an OSError naming the file (torch.save's writer reports only "enforce fail")."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)


class UndeclaredColumnError(ValueError):
    """A computed value that its table does not declare, or a declared column nothing computed."""


def declared_records(records: list[dict[str, Any]], columns: list[str], table: str) -> list[dict[str, Any]]:
    """`records` unchanged when each has exactly the table's declared `columns`.

    pandas' `from_records(columns=...)` drops a key it was not given and fills a missing one with
    NaN: a metric computed but not declared here would vanish from the published table, and one
    declared but no longer computed would become a column of NaN.

    Raises:
        UndeclaredColumnError: naming the table and the columns on either side.
    """
    declared = set(columns)
    for record in records:
        extra, missing = sorted(set(record) - declared), sorted(declared - set(record))
        if extra or missing:
            raise UndeclaredColumnError(
                f"table {table}: computed but not declared in lsbench.io: {extra or 'none'}; "
                f"declared but not computed: {missing or 'none'}")
    return records


def metrics_frame(key: RunKey, records: list[dict[str, Any]]) -> pd.DataFrame:
    records = declared_records([{**key.columns(), **r} for r in records], METRIC_COLUMNS, "metrics")
    df = pd.DataFrame.from_records(records, columns=METRIC_COLUMNS)
    return df.astype({"seed": "int64", "param": "float64", "epoch": "int64", "diverged": "bool",
                      "divergence": "str"})


def reliability_frame(key: RunKey, table: dict[str, list]) -> pd.DataFrame:
    declared_records([{**key.columns(), **table}], RELIABILITY_COLUMNS, "reliability")
    return pd.DataFrame({**{k: [v] * len(table["bin"]) for k, v in key.columns().items()}, **table})[RELIABILITY_COLUMNS]


def row_frame(key: RunKey, record: dict[str, Any], columns: list[str] | None = None) -> pd.DataFrame:
    """One row keyed by the run: a run's calibrated, runs or environment record. With `columns`,
    the record must have exactly those (UndeclaredColumnError otherwise); the environment record's
    columns are whatever the job found (no declared layout)."""
    row = {**key.columns(), **record}
    if columns is not None:
        declared_records([row], columns, "calibrated" if columns is CALIBRATED_COLUMNS else "runs")
    return pd.DataFrame([row], columns=columns)


def ood_frame(key: RunKey, ood_set: str, rows: dict[str, dict[str, float]]) -> pd.DataFrame:
    """{score: {auroc, aupr_in, aupr_out, fpr95}} -> one row per score; no rows (typed columns) when
    `rows` is empty."""
    records = declared_records([{**key.columns(), "ood_set": ood_set, "score": score, **values}
                                for score, values in rows.items()], OOD_COLUMNS, "ood")
    return pd.DataFrame.from_records(records, columns=OOD_COLUMNS).astype(
        {"dataset": "str", "model": "str", "method": "str", "param": "float64", "seed": "int64", "ood_set": "str",
         "score": "str",
         "auroc": "float64", "aupr_in": "float64", "aupr_out": "float64", "fpr95": "float64"})


def ood_predictions_frame(key: RunKey, ood_set: str, logits: np.ndarray) -> pd.DataFrame:
    """One row per OOD image: the key, ood_set, index, logit_0 .. logit_{C-1} (float32); no rows
    when there is no OOD set."""
    n = len(logits)
    columns: dict[str, Any] = {k: pd.Series([v] * n, dtype=_KEY_DTYPES[k]) for k, v in key.columns().items()}
    columns["ood_set"] = pd.Series([ood_set] * n, dtype="str")
    columns["index"] = np.arange(n, dtype=np.int64)
    columns.update({f"logit_{c}": logits[:, c].astype(np.float32) for c in range(logits.shape[1])})
    return pd.DataFrame(columns)


_KEY_DTYPES = {"dataset": "str", "model": "str", "method": "str", "param": "float64", "seed": "int64"}


def predictions_frame(key: RunKey, labels: np.ndarray, logits: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    """One row per test image: the key, index, label, logit_0 .. logit_{C-1} (float32, as the
    network gave them), prob_0 .. prob_{C-1} (float64, `metrics.probabilities` of those logits: the
    very values every metric of the run was computed from)."""
    n = len(labels)
    columns: dict[str, Any] = {k: [v] * n for k, v in key.columns().items()}
    columns["index"] = np.arange(n, dtype=np.int64)
    columns["label"] = np.asarray(labels).astype(np.int64)
    columns.update({f"logit_{c}": logits[:, c].astype(np.float32) for c in range(logits.shape[1])})
    columns.update({f"prob_{c}": probs[:, c].astype(np.float64) for c in range(probs.shape[1])})
    return pd.DataFrame(columns)


def shift_frame(key: RunKey, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per (shift, severity) of a run: `SHIFT_COLUMNS`."""
    records = declared_records([{**key.columns(), **r} for r in rows], SHIFT_COLUMNS, "shift")
    df = pd.DataFrame.from_records(records, columns=SHIFT_COLUMNS)
    return df.astype({"seed": "int64", "param": "float64", "severity": "int64", "n_images": "int64",
                      "shift": "str"})


def overwritten_input(outputs: list[Path], inputs: list[Path]) -> tuple[Path, Path] | None:
    """(output, input) for the first of `outputs` that names one of `inputs` (the same path once
    links and ".." are resolved, or, both existing, the same file by another name: a hard link),
    whether or not it exists yet; None when none does. Each path is resolved once and an input's
    inode read only when an output exists (a collect of thousands of runs checks in well under a
    second)."""
    resolved = {Path(source).resolve(): Path(source) for source in inputs}
    inodes: dict[tuple[int, int], Path] | None = None
    for out in map(Path, outputs):
        if out.resolve() in resolved:
            return out, resolved[out.resolve()]
        if out.exists():
            if inodes is None:
                inodes = {(st.st_dev, st.st_ino): Path(source) for source in inputs
                          if (st := _stat_or_none(Path(source))) is not None}
            st = out.stat()
            if (st.st_dev, st.st_ino) in inodes:
                return out, inodes[st.st_dev, st.st_ino]
    return None


def _stat_or_none(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


def same_file_note(out: Path, source: Path) -> str:
    """" (the same file as SOURCE)" when the two are spelled differently, else ""."""
    return "" if str(out) == str(source) else f" (the same file as {source})"


def run_paths(run_dir: Path) -> dict[str, Path]:
    return {name: Path(run_dir) / f"{name}.parquet" for name in TABLES}


def sort_keys(df: pd.DataFrame) -> list[str]:
    """The columns that order a table's rows: the run key, then OOD set and score, epoch, bin or image index."""
    return [c for c in (*KEY, "ood_set", "score", "shift", "severity", "epoch", "bin", "index") if c in df.columns]


def write_concat_parquet(paths: list[Path], path: Path) -> int:
    """The rows of `paths` (per-run tables, one run's rows each, or none) in one parquet file at `path`,
    atomically and stamped, in `concat_parquet`'s order (by run key, then `sort_keys`), read and
    written one run at a time (a row group each), so memory holds one run's rows, not the grid's:
    the per-image tables of 2,000 runs hold 20 million rows. Columns are the union of the files'
    in order of first appearance in `paths`, as pd.concat unites them (a run with fewer classes has
    nulls in the others), typed as in the first file that has them. Returns the number of rows
    written. ValueError naming a file that holds the rows of more than one run."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    keyed = []
    for p in paths:
        keys = pq.read_table(p, columns=KEY).to_pandas().drop_duplicates()
        if len(keys) > 1:
            raise ValueError(f"{p}: holds the rows of {len(keys)} runs; a run's table holds that run's rows only")
        if len(keys):  # a run without an OOD set has an empty OOD table: no rows to add
            keyed.append((tuple(keys.iloc[0]), p))
    fields: dict[str, Any] = {}
    for _, p in keyed:  # in the order given
        for f in pq.read_schema(p):
            fields.setdefault(f.name, f)
    keyed.sort(key=lambda kp: kp[0])
    first = pq.read_schema(keyed[0][1] if keyed else paths[0])
    schema = pa.schema(list(fields.values()) or first, metadata=first.metadata)
    schema = schema.with_metadata(_stamped(schema))
    rows = 0
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for _, p in keyed:
            df = pd.read_parquet(p)
            df = df.sort_values(sort_keys(df), kind="stable").reindex(columns=schema.names)
            writer.write_table(pa.Table.from_pandas(df, schema=schema, preserve_index=False))
            rows += len(df)
    return rows


def run_keys(path: Path) -> list[str]:
    """The columns of a table's run key: KEY, or `epsilon` in place of method and param (a table of
    lsbench before 0.3), as far as the file has them."""
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    return [c for c in (*KEY, "epsilon") if c in names]


def distinct_runs(path: Path, batch_rows: int = 1 << 20) -> pd.DataFrame:
    """The distinct run keys (`run_keys`) of a parquet file with their number of rows (column
    "rows"), read a batch of key columns at a time (pyarrow's group_by), so that a 20-million-row
    table costs a few MB."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys = run_keys(path)
    parts = [pa.Table.from_batches([b]).group_by(keys, use_threads=False).aggregate([([], "count_all")]).to_pandas()
             for b in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=keys)]
    if not parts:
        return pd.DataFrame(columns=[*keys, "rows"])
    counts = pd.concat(parts, ignore_index=True).rename(columns={"count_all": "rows"})
    return counts.groupby(keys, as_index=False, sort=False, dropna=False)["rows"].sum()


def run_blocks(path: Path, batch_rows: int = 1 << 16) -> Iterator[pd.DataFrame]:
    """A parquet file's rows as blocks of consecutive rows with the same run key (`run_keys`), in
    file order, each with a fresh index. Read a batch at a time, so memory holds about one run's rows
    when each run's rows are together, as collect writes them; a run whose rows are not together
    comes as several blocks (for the reader to refuse)."""
    import pyarrow.parquet as pq

    keys = run_keys(path)
    pending: list[pd.DataFrame] = []
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
        df = batch.to_pandas()
        k = df[keys]
        starts = [*np.flatnonzero((k != k.shift()).any(axis=1).to_numpy()), len(df)]
        for a, b in zip(starts[:-1], starts[1:]):
            part = df.iloc[a:b]
            if pending and not _same_key(pending[-1][keys].iloc[-1], part[keys].iloc[0]):
                yield pd.concat(pending, ignore_index=True)
                pending = []
            pending.append(part)
    if pending:
        yield pd.concat(pending, ignore_index=True)


def _same_key(a: pd.Series, b: pd.Series) -> bool:
    return bool((a == b).all())


def concat_parquet(paths: list[Path]) -> pd.DataFrame:
    """Concatenate per-run tables, sorted by the run key so the result is order-independent."""
    frames = [pd.read_parquet(p) for p in paths]
    # An empty frame (a run without an OOD set) adds no rows, only dtype trouble.
    df = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)
    return df.sort_values(sort_keys(df), kind="stable").reset_index(drop=True)
