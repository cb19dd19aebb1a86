"""The HTML report, rendered from the published parquet tables alone (no training state, no torch).

A study is one (dataset, model) pair. The page opens with the cross-study table, then one section
per study with its figures and statistics, then provenance. Section data comes from small pure
functions; the template receives it through one render() call. Images are embedded as base64
PNGs so the file is self-contained and makes no requests.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd

from lsbench import plots
from lsbench.config import format_epsilon, model_slug
from lsbench.datasets import DATASETS
from lsbench.io import KEY, write_text
from lsbench.stats import (WILCOXON_MIN_N, Interval, PairedTest, final_epoch_intervals, paired_against,
                           t_interval)
from lsbench.tables import Tables, TablesError, read_tables

ACCURACY_METRICS = ("accuracy", "test_nll", "brier", "entropy")
CALIBRATION_METRICS = ("ece", "ece_over", "ece_under", "ece_adaptive", "ece_classwise", "mce",
                       "mean_confidence", "overconfidence")
SUMMARY_METRICS = ACCURACY_METRICS + CALIBRATION_METRICS
CURVE_METRICS = ("accuracy", "test_nll", "ece", "overconfidence")
STATS_METRICS = ("accuracy", "test_nll", "ece", "overconfidence")
# The <section id>s of one study, after its own "study-<slug>", in page order.
STUDY_SECTIONS = ("headline", "summary", "statistics", "vs-epsilon", "curves", "temperature", "reliability",
                  "confidence", "sample")
# Versions shown in the provenance section, as recorded per run in environment.parquet.
SOFTWARE = ("python", "torch", "torch_cuda", "torchvision", "numpy", "pandas", "pyarrow", "lsbench")
TS_METRICS = ("ece", "ece_ts", "test_nll", "nll_ts", "mean_confidence", "mean_confidence_ts", "temperature")
STUDY = ["dataset", "model"]


def study_slug(dataset: str, model: str) -> str:
    return f"{dataset}-{model_slug(model)}"


def section_ids(tables: Tables) -> tuple[str, ...]:
    """Every <section id> of the report on `tables`, in page order (a study whose runs all
    diverged has no subsections)."""
    ids = ["studies", *(["diverged"] if final_epoch(tables.metrics)["diverged"].any() else [])]
    for study in split_studies(tables):
        ids.append(f"study-{study.slug}")
        if not study.converged().empty:
            ids += [f"{study.slug}-{s}" for s in STUDY_SECTIONS]
    return (*ids, "provenance")


def final_epoch(metrics: pd.DataFrame) -> pd.DataFrame:
    """The last recorded epoch of every run."""
    last = metrics.groupby(KEY)["epoch"].transform("max")
    return metrics[metrics["epoch"] == last].reset_index(drop=True)


def summary_rows(converged: pd.DataFrame, metrics: tuple[str, ...] = SUMMARY_METRICS) -> list[dict]:
    """Per epsilon: n seeds and mean/std of each metric, over the converged runs given."""
    rows = []
    for eps, group in converged.groupby("epsilon"):
        cells = {m: (group[m].mean(), group[m].std(ddof=1) if len(group) > 1 else float("nan"))
                 for m in metrics}
        rows.append({"epsilon": eps, "n": len(group), "cells": cells})
    return rows


def temperature_rows(converged: pd.DataFrame, calibrated: pd.DataFrame) -> list[dict]:
    """Final-epoch calibration before and after temperature scaling, per epsilon.

    The eps=0 row after scaling is "temperature scaling alone"; other rows are "eps alone"
    (before) and "eps + temperature scaling" (after). Empty when no temperature was fitted.
    """
    fitted = calibrated.dropna(subset=["temperature"])
    if fitted.empty:
        return []
    return summary_rows(converged.merge(fitted, on=KEY), TS_METRICS)


def pooled_reliability(reliability: pd.DataFrame, epsilon: float) -> pd.DataFrame:
    """Bins of one epsilon pooled over seeds: counts summed, means weighted by count."""
    df = reliability[reliability["epsilon"] == epsilon].copy()
    df["conf_sum"] = df["mean_confidence"].fillna(0) * df["count"]
    df["acc_sum"] = df["accuracy"].fillna(0) * df["count"]
    pooled = df.groupby(["bin", "bin_lower", "bin_upper"], as_index=False)[["count", "conf_sum", "acc_sum"]].sum()
    has = pooled["count"] > 0
    pooled["mean_confidence"] = np.where(has, pooled["conf_sum"] / pooled["count"].clip(lower=1), np.nan)
    pooled["accuracy"] = np.where(has, pooled["acc_sum"] / pooled["count"].clip(lower=1), np.nan)
    return pooled


def prob_columns(predictions: pd.DataFrame) -> list[str]:
    return [c for c in predictions.columns if c.startswith("prob_") and not predictions[c].isna().all()]


def sample_pair(predictions: pd.DataFrame, index: int = 0) -> list[dict]:
    """The softmax of test image `index` for the smallest and the largest epsilon (first seed)."""
    seed = predictions["seed"].min()
    rows = predictions[(predictions["seed"] == seed) & (predictions["index"] == index)]
    cols = prob_columns(predictions)
    picked = []
    for eps in sorted({rows["epsilon"].min(), rows["epsilon"].max()}):
        row = rows[rows["epsilon"] == eps].iloc[0]
        picked.append({"seed": int(seed), "epsilon": float(eps), "label": int(row["label"]),
                       "probs": row[cols].to_numpy(dtype=float)})
    return picked


def distinct(values: pd.Series) -> str:
    """The distinct values of a column, sorted; with a run count each when they differ."""
    counts = values.astype(str).value_counts()
    if len(counts) == 1:
        return str(counts.index[0])
    return "; ".join(f"{value} ({n} runs)" for value, n in sorted(counts.items()))


def format_duration(seconds: float) -> str:
    """
    >>> format_duration(745.2), format_duration(42.04), format_duration(7384)
    ('12 min 25 s', '42.0 s', '2 h 3 min')
    """
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def provenance_section(tables: Tables) -> dict:
    """Config, software, source, data and hardware behind the results, from the parquet tables.

    Training time is the sum over runs of the epochs' wall time (training and evaluation), read
    from metrics; job time adds start-up and writing outputs, from environment.
    """
    env = tables.environment.merge(tables.metrics.groupby(KEY, as_index=False)["epoch_seconds"].sum(), on=KEY)
    hardware = []
    for (cpu, device, threads), group in env.groupby(["cpu_model", "device_name", "torch_threads"]):
        hardware.append({"cpu_model": cpu, "device": device, "threads": int(threads), "runs": len(group),
                         "train": format_duration(group["epoch_seconds"].sum())})
    workflow = tables.provenance.iloc[0]
    data = tables.runs.merge(env[[*KEY, "data_source"]], on=KEY) if "data_source" in env else tables.runs
    return {
        "config_yaml": workflow["config_yaml"] or "(not recorded: collect was run without --config-json)",
        "git_commit": workflow["git_commit"],
        "software": [("snakemake", str(workflow["snakemake"]))]
        + [(n, distinct(env[n])) for n in SOFTWARE if n in env],
        "data": [(f"{dataset} {name}", distinct(group[column]))
                 for dataset, group in data.groupby("dataset")
                 for name, column in (("sha256", "data_sha256"), ("source", "data_source")) if column in group],
        "hardware": hardware,
        "runs": len(env),
        "resumed": int((env["resumed_after_epoch"] > 0).sum()),
        "train_time": format_duration(env["epoch_seconds"].sum()),
        "job_time": format_duration(env["job_seconds"].sum()),
    }


def _img(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_headline(converged: pd.DataFrame, intervals: dict) -> str:
    fig, axes = plots.grid(1, 1, size=6.5)
    plots.accuracy_vs_overconfidence(converged, intervals, axes[0])
    return _img(plots.png_bytes(fig))


def figure_confidence(predictions: pd.DataFrame, epsilons: list[float]) -> str:
    cols = prob_columns(predictions)
    fig, axes = plots.grid(len(epsilons), 3)
    for eps, ax in zip(epsilons, axes):
        conf = predictions.loc[predictions["epsilon"] == eps, cols].to_numpy().max(axis=1)
        plots.confidence_histogram(conf, ax, f"ε = {format_epsilon(eps)}")
    return _img(plots.png_bytes(fig))


def figure_vs_epsilon(final: pd.DataFrame) -> str:
    fig, axes = plots.grid(2, 2, size=4.5)
    plots.metric_vs_epsilon(final, ["accuracy"], axes[0], "test accuracy")
    plots.metric_vs_epsilon(final, ["ece", "overconfidence"], axes[1], "calibration")
    axes[1].axhline(0, color="black", linewidth=0.8)
    return _img(plots.png_bytes(fig))


def figure_curves(metrics: pd.DataFrame) -> str:
    fig, axes = plots.grid(len(CURVE_METRICS), 2, size=4.5)
    for metric, ax in zip(CURVE_METRICS, axes):
        plots.epoch_curves(metrics, metric, ax)
    return _img(plots.png_bytes(fig))


def figure_reliability(reliability: pd.DataFrame, epsilons: list[float]) -> str:
    fig, axes = plots.grid(len(epsilons), 3)
    for eps, ax in zip(epsilons, axes):
        plots.reliability_diagram(pooled_reliability(reliability, eps), ax, f"ε = {format_epsilon(eps)}")
    return _img(plots.png_bytes(fig))


def figure_sample(predictions: pd.DataFrame, class_names: list[str]) -> str:
    pair = sample_pair(predictions)
    fig, axes = plots.grid(len(pair), 2, size=4)
    for item, ax in zip(pair, axes):
        title = f"ε = {format_epsilon(item['epsilon'])} (seed {item['seed']}), max p = {item['probs'].max():.2f}"
        plots.sample_probabilities(item["probs"], item["label"], class_names, ax, title)
    return _img(plots.png_bytes(fig))


def statistics(converged: pd.DataFrame) -> dict:
    """Intervals per epsilon and paired tests against the smallest epsilon, for the template."""
    baseline = float(converged["epsilon"].min())
    return {"metrics": STATS_METRICS, "baseline": baseline,
            "intervals": final_epoch_intervals(converged, STATS_METRICS),
            "paired": paired_against(converged, STATS_METRICS, baseline),
            "wilcoxon_min_n": WILCOXON_MIN_N}


@dataclass(frozen=True)
class Study:
    """One (dataset, model) pair's tables."""

    dataset: str
    model: str
    metrics: pd.DataFrame
    reliability: pd.DataFrame
    predictions: pd.DataFrame
    calibrated: pd.DataFrame
    runs: pd.DataFrame

    @property
    def slug(self) -> str:
        return study_slug(self.dataset, self.model)

    @property
    def title(self) -> str:
        spec = DATASETS.get(self.dataset)
        return f"{spec.title if spec else self.dataset} × {self.model}"

    @property
    def class_names(self) -> list[str]:
        return json.loads(self.runs["class_names"].iloc[0])

    def final(self) -> pd.DataFrame:
        return final_epoch(self.metrics)

    def converged(self) -> pd.DataFrame:
        final = self.final()
        return final[~final["diverged"]]


def split_studies(tables: Tables) -> list[Study]:
    """The tables of each (dataset, model), sorted by dataset then model."""
    studies = []
    for (dataset, model), runs in tables.runs.groupby(STUDY, sort=True):
        def part(df: pd.DataFrame) -> pd.DataFrame:
            return df[(df["dataset"] == dataset) & (df["model"] == model)].reset_index(drop=True)

        studies.append(Study(dataset, model, part(tables.metrics), part(tables.reliability),
                             part(tables.predictions), part(tables.calibrated), runs.reset_index(drop=True)))
    return studies


def study_context(study: Study) -> dict:
    """Everything one study's sections show; `figures` is None when every run diverged."""
    final, converged = study.final(), study.converged()
    context = {"slug": study.slug, "title": study.title, "dataset": study.dataset, "model": study.model,
               "seeds": sorted(int(s) for s in final["seed"].unique()),
               "epsilons": sorted(float(e) for e in final["epsilon"].unique()),
               "epochs": int(study.metrics["epoch"].max()), "n_runs": len(final),
               "n_diverged": int(final["diverged"].sum())}
    if converged.empty:
        return {**context, "figures": None}
    stats = statistics(converged)
    runs = converged[KEY]
    epsilons = sorted(converged["epsilon"].unique())
    predictions = study.predictions.merge(runs, on=KEY)
    figures = {
        "headline": figure_headline(converged, stats["intervals"]),
        "confidence": figure_confidence(predictions, epsilons),
        "vs_epsilon": figure_vs_epsilon(converged),
        "curves": figure_curves(study.metrics.merge(runs, on=KEY)),
        "reliability": figure_reliability(study.reliability.merge(runs, on=KEY), epsilons),
        "sample": figure_sample(predictions, study.class_names),
    }
    return {**context, "figures": figures, "stats": stats, "summary": summary_rows(converged),
            "temperature": temperature_rows(converged, study.calibrated)}


def study_row(study: Study) -> dict:
    """One row of the cross-study table, in the spirit of Müller et al. (2019), Table 3: accuracy
    and ECE at the smallest epsilon (normally 0), temperature scaling alone (ECE after scaling,
    T), and the epsilon with the lowest mean ECE with its ECE; 95 % t-intervals over seeds."""
    converged = study.converged()
    row = {"slug": study.slug, "title": study.title, "n_runs": len(study.final()),
           "n_diverged": int(study.final()["diverged"].sum())}
    if converged.empty:
        return {**row, "baseline": None}
    baseline = float(converged["epsilon"].min())
    base = converged[converged["epsilon"] == baseline]
    ts = base.merge(study.calibrated.dropna(subset=["temperature"]), on=KEY)
    mean_ece = converged.groupby("epsilon")["ece"].mean()
    best = float(mean_ece.idxmin())
    return {**row, "baseline": baseline, "accuracy": t_interval(base["accuracy"].to_numpy()),
            "ece": t_interval(base["ece"].to_numpy()),
            "ece_ts": t_interval(ts["ece_ts"].to_numpy()) if not ts.empty else None,
            "temperature": t_interval(ts["temperature"].to_numpy()) if not ts.empty else None,
            "best_epsilon": best, "best_ece": t_interval(converged.loc[converged["epsilon"] == best, "ece"].to_numpy())}


def diverged_runs(tables: Tables) -> list[dict]:
    final = final_epoch(tables.metrics)
    rows = final.loc[final["diverged"], [*KEY, "epoch", "divergence"]]
    return rows.to_dict("records")


def format_interval(i: Interval, digits: int = 4) -> str:
    if i.n < 2:
        return f"{format_number(i.mean, digits)} (n={i.n}, no interval)"
    return f"{i.mean:.{digits}f} [{i.lo:.{digits}f}, {i.hi:.{digits}f}]"


def format_wilcoxon(test: PairedTest) -> str:
    """The Wilcoxon p-value with a dagger where its pairs cannot reach p < 0.05 at all."""
    return format_p(test.p_wilcoxon) + ("" if test.wilcoxon_can_reject else " †")


def format_p(p: float) -> str:
    return "–" if np.isnan(p) else f"{p:.3g}"


def format_number(value: float, digits: int = 4) -> str:
    return "–" if value is None or np.isnan(value) else f"{value:.{digits}f}"


def format_mean_std(cell: tuple[float, float], digits: int = 4) -> str:
    mean, std = cell
    return format_number(mean, digits) if np.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("lsbench", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["num"] = format_number
    env.filters["pm"] = format_mean_std
    env.filters["ci"] = format_interval
    env.filters["p"] = format_p
    env.filters["wilcoxon"] = format_wilcoxon
    env.filters["eps"] = format_epsilon
    return env


def render(tables: Tables, title: str = "lsbench: label smoothing vs overconfidence") -> str:
    studies = split_studies(tables)
    final = final_epoch(tables.metrics)
    return environment().get_template("index.html.j2").render(
        title=title,
        summary_tables={"Accuracy and loss": ACCURACY_METRICS, "Calibration": CALIBRATION_METRICS},
        ts_metrics=TS_METRICS,
        study_rows=[study_row(s) for s in studies],
        studies=[study_context(s) for s in studies],
        datasets=sorted(tables.runs["dataset"].unique()),
        models=sorted(tables.runs["model"].unique()),
        seeds=sorted(int(s) for s in final["seed"].unique()),
        epsilons=sorted(float(e) for e in final["epsilon"].unique()),
        all_diverged=bool(final["diverged"].all()),
        diverged=diverged_runs(tables),
        provenance=provenance_section(tables),
    )


def write_report(results_dir: Path, out_path: Path) -> None:
    """Render results_dir's tables to out_path (TablesError for broken tables; IsADirectoryError
    when out_path is a directory)."""
    out_path = Path(out_path)
    if out_path.is_dir():
        raise IsADirectoryError(21, "is a directory; give the HTML file to write, e.g. "
                                f"{out_path / 'index.html'}", str(out_path))
    write_text(render(read_tables(results_dir)), out_path)


__all__ = ["Tables", "TablesError", "read_tables", "render", "write_report"]
