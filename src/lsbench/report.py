"""The HTML report, rendered from the parquet tables of `collect` alone (no training state needed).

Section data comes from small pure functions; the template receives it through one render()
call. Images are embedded as base64 PNGs so the file is self-contained and makes no requests.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd

from lsbench import plots
from lsbench.io import PROVENANCE, TABLES, write_text
from lsbench.config import format_epsilon
from lsbench.stats import WILCOXON_MIN_N, Interval, PairedTest, final_epoch_intervals, paired_against

ACCURACY_METRICS = ("accuracy", "test_nll", "brier", "entropy")
CALIBRATION_METRICS = ("ece", "ece_over", "ece_under", "ece_adaptive", "ece_classwise", "mce",
                       "mean_confidence", "overconfidence")
SUMMARY_METRICS = ACCURACY_METRICS + CALIBRATION_METRICS
CURVE_METRICS = ("accuracy", "test_nll", "ece", "overconfidence")
STATS_METRICS = ("accuracy", "test_nll", "ece", "overconfidence")
# The report's <section id>s in page order ("diverged" appears only when a run diverged).
SECTIONS = ("headline", "summary", "statistics", "vs-epsilon", "curves", "temperature", "reliability",
            "confidence", "sample", "provenance")
# Versions shown in the provenance section, as recorded per run in environment.parquet.
SOFTWARE = ("python", "torch", "torch_cuda", "torchvision", "numpy", "pandas", "pyarrow", "lsbench")
TS_METRICS = ("ece", "ece_ts", "test_nll", "nll_ts", "mean_confidence", "mean_confidence_ts", "temperature")


@dataclass(frozen=True)
class Tables:
    metrics: pd.DataFrame
    reliability: pd.DataFrame
    predictions: pd.DataFrame
    calibrated: pd.DataFrame
    environment: pd.DataFrame
    provenance: pd.DataFrame

    @classmethod
    def read(cls, results_dir: Path) -> "Tables":
        d = Path(results_dir)
        return cls(*(pd.read_parquet(d / f"{name}.parquet") for name in (*TABLES, PROVENANCE)))


def final_epoch(metrics: pd.DataFrame) -> pd.DataFrame:
    """The last recorded epoch of every (seed, epsilon) run."""
    last = metrics.groupby(["seed", "epsilon"])["epoch"].transform("max")
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
    return summary_rows(converged.merge(fitted, on=["seed", "epsilon"]), TS_METRICS)


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


def sample_pair(predictions: pd.DataFrame, index: int = 0) -> list[dict]:
    """The softmax of test image `index` for the smallest and the largest epsilon (first seed)."""
    seed = predictions["seed"].min()
    rows = predictions[(predictions["seed"] == seed) & (predictions["index"] == index)]
    prob_cols = [c for c in predictions.columns if c.startswith("prob_")]
    picked = []
    for eps in sorted({rows["epsilon"].min(), rows["epsilon"].max()}):
        row = rows[rows["epsilon"] == eps].iloc[0]
        picked.append({"seed": int(seed), "epsilon": float(eps), "label": int(row["label"]),
                       "probs": row[prob_cols].to_numpy(dtype=float)})
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
    env = tables.environment.merge(
        tables.metrics.groupby(["seed", "epsilon"], as_index=False)["epoch_seconds"].sum(), on=["seed", "epsilon"])
    hardware = []
    for (cpu, device, threads), group in env.groupby(["cpu_model", "device_name", "torch_threads"]):
        hardware.append({"cpu_model": cpu, "device": device, "threads": int(threads), "runs": len(group),
                         "train": format_duration(group["epoch_seconds"].sum())})
    workflow = tables.provenance.iloc[0]
    return {
        "config_yaml": workflow["config_yaml"] or "(not recorded: collect was run without --config-json)",
        "git_commit": workflow["git_commit"],
        "software": [("snakemake", str(workflow["snakemake"]))] + [(n, distinct(env[n])) for n in SOFTWARE],
        "data": [("sha256", distinct(env["data_sha256"])), ("source", distinct(env["data_source"]))],
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
    prob_cols = [c for c in predictions.columns if c.startswith("prob_")]
    fig, axes = plots.grid(len(epsilons), 3)
    for eps, ax in zip(epsilons, axes):
        conf = predictions.loc[predictions["epsilon"] == eps, prob_cols].to_numpy().max(axis=1)
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


def figure_sample(predictions: pd.DataFrame) -> str:
    pair = sample_pair(predictions)
    fig, axes = plots.grid(len(pair), 2, size=4)
    for item, ax in zip(pair, axes):
        title = f"ε = {format_epsilon(item['epsilon'])} (seed {item['seed']}), max p = {item['probs'].max():.2f}"
        plots.sample_probabilities(item["probs"], item["label"], ax, title)
    return _img(plots.png_bytes(fig))


def figures(tables: Tables, converged: pd.DataFrame, intervals: dict) -> dict[str, str]:
    """Every figure of the report as a data URI, drawn from the converged runs only.

    converged: the final-epoch rows of runs that did not diverge; intervals: their per-epsilon
    t-intervals (from `statistics`), shared with the statistics table.
    """
    runs = converged[["seed", "epsilon"]]
    epsilons = sorted(converged["epsilon"].unique())
    predictions = tables.predictions.merge(runs, on=["seed", "epsilon"])
    return {
        "headline": figure_headline(converged, intervals),
        "confidence": figure_confidence(predictions, epsilons),
        "vs_epsilon": figure_vs_epsilon(converged),
        "curves": figure_curves(tables.metrics.merge(runs, on=["seed", "epsilon"])),
        "reliability": figure_reliability(tables.reliability, epsilons),
        "sample": figure_sample(predictions),
    }


def statistics(converged: pd.DataFrame) -> dict:
    """Intervals per epsilon and paired tests against the smallest epsilon, for the template."""
    baseline = float(converged["epsilon"].min())
    return {"metrics": STATS_METRICS, "baseline": baseline,
            "intervals": final_epoch_intervals(converged, STATS_METRICS),
            "paired": paired_against(converged, STATS_METRICS, baseline),
            "wilcoxon_min_n": WILCOXON_MIN_N}


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
    final = final_epoch(tables.metrics)
    converged = final[~final["diverged"]]  # diverged runs are listed, and left out of all the rest
    stats = statistics(converged)
    return environment().get_template("index.html.j2").render(
        title=title,
        summary_tables={"Accuracy and loss": ACCURACY_METRICS, "Calibration": CALIBRATION_METRICS},
        summary=summary_rows(converged),
        ts_metrics=TS_METRICS,
        temperature=temperature_rows(converged, tables.calibrated),
        stats=stats,
        seeds=sorted(int(s) for s in final["seed"].unique()),
        epsilons=sorted(float(e) for e in final["epsilon"].unique()),
        epochs=int(tables.metrics["epoch"].max()),
        diverged=final.loc[final["diverged"], ["seed", "epsilon", "epoch"]].to_dict("records"),
        figures=figures(tables, converged, stats["intervals"]),
        provenance=provenance_section(tables),
    )


def write_report(results_dir: Path, out_path: Path) -> None:
    write_text(render(Tables.read(results_dir)), Path(out_path))
