"""The report's figures: each function draws part of the tables into a PNG data URI (the plots
themselves are in `lsbench.plots`). Pooled over seeds where a figure shows one curve per run
(method, param); runs are listed as `lsbench.studies.by_variant` orders and names them.

Text in a figure comes from the tables (class names, dataset names), so matplotlib's mathtext is
off while a figure is drawn (`literal_text`): "$\\undefinedmacro$" is a class name, not a formula.
"""

from __future__ import annotations

import base64
import functools
from typing import Callable

import numpy as np
import pandas as pd

from lsbench import plots
from lsbench.methods import CROSS_ENTROPY, METHODS, variant_label
from lsbench.metrics import rejection_scores, risk_coverage_curve, temperature_at_bound, top_label
from lsbench.stats import metric_interval, rows_of, wilson_interval
from lsbench.studies import by_variant

CURVE_METRICS = ("accuracy", "test_nll", "ece", "overconfidence")
COVERAGES = np.linspace(0.01, 1.0, 100)


def pooled_reliability(reliability: pd.DataFrame) -> pd.DataFrame:
    """Bins of one run's rows pooled over seeds: counts summed, means weighted by count, and a 95 %
    Wilson interval for each bin's accuracy (`lower`, `upper`) over the pooled test images."""
    df = reliability.copy()
    df["conf_sum"] = df["mean_confidence"].fillna(0) * df["count"]
    df["acc_sum"] = df["accuracy"].fillna(0) * df["count"]
    pooled = df.groupby(["bin", "bin_lower", "bin_upper"], as_index=False)[["count", "conf_sum", "acc_sum"]].sum()
    has = pooled["count"] > 0
    pooled["mean_confidence"] = np.where(has, pooled["conf_sum"] / pooled["count"].clip(lower=1), np.nan)
    pooled["accuracy"] = np.where(has, pooled["acc_sum"] / pooled["count"].clip(lower=1), np.nan)
    bounds = [wilson_interval(round(k), int(n)) for k, n in zip(pooled["acc_sum"], pooled["count"])]
    pooled["lower"], pooled["upper"] = [b[0] for b in bounds], [b[1] for b in bounds]
    return pooled


def prob_columns(predictions: pd.DataFrame, prefix: str = "prob_") -> list[str]:
    return [c for c in predictions.columns if c.startswith(prefix) and not predictions[c].isna().all()]


def run_arrays(predictions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logits, probabilities, labels) of a predictions slice, as stored."""
    return (predictions[prob_columns(predictions, "logit_")].to_numpy(), predictions[prob_columns(predictions)].to_numpy(),
            predictions["label"].to_numpy())


def first_and_last(df: pd.DataFrame) -> list[tuple[tuple[str, float], str, pd.DataFrame]]:
    """The first and the last run of `by_variant` (cross-entropy and the last method listed); one
    when there is one."""
    runs = by_variant(df)
    return runs[:1] + runs[1:][-1:]


def sample_pair(predictions: pd.DataFrame, index: int = 0) -> list[dict]:
    """The softmax of test image `index` for the first and the last run (first seed)."""
    seed = predictions["seed"].min()
    rows = predictions[(predictions["seed"] == seed) & (predictions["index"] == index)]
    cols = prob_columns(predictions)
    return [{"seed": int(seed), "label_text": label, "label": int(g.iloc[0]["label"]),
             "probs": g.iloc[0][cols].to_numpy(dtype=float)} for _, label, g in first_and_last(rows)]


def literal_text(figure: Callable[..., str]) -> Callable[..., str]:
    """Draw `figure` with mathtext parsing off (text.parse_math), so every string is shown as is."""
    @functools.wraps(figure)
    def draw(*args, **kwargs) -> str:
        with plots.plt.rc_context({"text.parse_math": False}):
            return figure(*args, **kwargs)

    return draw


def _img(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _labelled(intervals: dict) -> dict:
    return {variant_label(*run): cells for run, cells in intervals.items()}


@literal_text
def figure_headline(converged: pd.DataFrame, intervals: dict) -> str:
    """Accuracy against overconfidence per run; `intervals`: {(method, param): {metric: Interval}}."""
    fig, axes = plots.grid(1, 1, size=6.5)
    plots.accuracy_vs(converged, _labelled(intervals), axes[0])
    return _img(plots.png_bytes(fig))


@literal_text
def figure_methods(converged: pd.DataFrame, chosen: list[tuple[str, float]]) -> str:
    """Accuracy against ECE, one point per method at its chosen setting (`chosen`, cross-entropy
    first) with seed intervals, and temperature scaling alone as a reference point; the second
    panel the same after temperature scaling (each run's own fitted temperature)."""
    fig, axes = plots.grid(2, 2, size=5.5)
    for ax, column, title in ((axes[0], "ece", "as trained"), (axes[1], "ece_ts", "after temperature scaling")):
        cells = {}
        for run in chosen:
            rows = rows_of(converged, run)
            stuck = column == "ece_ts" and bool(temperature_at_bound(rows["temperature"]).any())
            label = variant_label(*run) + (" (T at its search bound: not a fit)" if stuck else "")
            cells[label] = {"accuracy": metric_interval(rows["accuracy"].to_numpy(), "accuracy"),
                            "ece": metric_interval(rows[column].to_numpy(), column)}
        base = converged[converged["method"] == CROSS_ENTROPY]
        if column == "ece" and base["ece_ts"].notna().any():
            cells["cross-entropy + temperature scaling"] = {
                "accuracy": metric_interval(base["accuracy"].to_numpy(), "accuracy"),
                "ece": metric_interval(base["ece_ts"].to_numpy(), "ece_ts")}
        plots.accuracy_vs(None, cells, ax, x="ece", xlabel=f"ECE ({title}; log scale, lower is better)",
                          zero_line=False, legend=True)
        ax.set_title(title)
    return _img(plots.png_bytes(fig))


@literal_text
def figure_confidence(predictions: pd.DataFrame) -> str:
    cols = prob_columns(predictions)
    runs = by_variant(predictions)
    fig, axes = plots.grid(len(runs), 3)
    for (_, label, rows), ax in zip(runs, axes):
        plots.confidence_histogram(rows[cols].to_numpy().max(axis=1), ax, label)
    return _img(plots.png_bytes(fig))


def swept_methods(final: pd.DataFrame) -> list[str]:
    """The methods of a frame with a parameter, in registry order."""
    present = set(final["method"])
    return [name for name, m in METHODS.items() if m.param is not None and name in present]


@literal_text
def figure_vs_param(final: pd.DataFrame) -> str:
    """Per swept method: accuracy and calibration against its parameter, cross-entropy drawn at
    the method's neutral value (where it has one)."""
    methods = swept_methods(final)
    fig, axes = plots.grid(2 * len(methods), 2, size=4.5)
    for row, name in enumerate(methods):
        m = METHODS[name]
        rows = final[final["method"] == name]
        if m.param.neutral is not None:
            rows = pd.concat([final[final["method"] == CROSS_ENTROPY].assign(param=m.param.neutral), rows])
        xlabel = f"{m.title} {m.param.symbol}"
        plots.metric_vs_param(rows, ["accuracy"], axes[2 * row], "test accuracy", xlabel)
        plots.metric_vs_param(rows, ["ece", "smece", "overconfidence"], axes[2 * row + 1], "calibration", xlabel)
        axes[2 * row + 1].axhline(0, color="black", linewidth=0.8)
    return _img(plots.png_bytes(fig))


@literal_text
def figure_curves(metrics: pd.DataFrame) -> str:
    order = [label for _, label, _ in by_variant(metrics)]
    labelled = pd.concat([g.assign(variant=label) for _, label, g in by_variant(metrics)])
    fig, axes = plots.grid(len(CURVE_METRICS), 2, size=4.5)
    for metric, ax in zip(CURVE_METRICS, axes):
        plots.epoch_curves(labelled, metric, ax, order)
    return _img(plots.png_bytes(fig))


def smooth_curve(predictions: pd.DataFrame) -> dict:
    """relplot's smooth reliability curve of the pooled (confidence, correct) pairs, on its mesh,
    kept where the confidences lie."""
    import relplot

    _, probs, labels = run_arrays(predictions)
    conf, correct = top_label(probs, labels)
    diagram = relplot.prepare_rel_diagram(conf, correct.astype(float), plot_confidence_band=False,
                                          report_CE_std=False)
    inside = (diagram["mesh"] >= conf.min()) & (diagram["mesh"] <= conf.max())
    return {"mesh": diagram["mesh"][inside], "mu": diagram["mu"][inside]}


@literal_text
def figure_reliability(reliability: pd.DataFrame, predictions: pd.DataFrame) -> str:
    runs = by_variant(reliability)
    fig, axes = plots.grid(len(runs) + 1, 3)
    for (run, label, bins), ax in zip(runs, axes):
        plots.reliability_diagram(pooled_reliability(bins), ax, label, smooth_curve(rows_of(predictions, run)))
    axes[0].legend(loc="upper left", fontsize=7)
    plots.reliability_overlay({label: pooled_reliability(bins) for _, label, bins in runs}, axes[len(runs)])
    return _img(plots.png_bytes(fig))


@literal_text
def figure_sample(predictions: pd.DataFrame, class_names: list[str]) -> str:
    pair = sample_pair(predictions)
    fig, axes = plots.grid(len(pair), 2, size=4)
    for item, ax in zip(pair, axes):
        title = f"{item['label_text']} (seed {item['seed']}), max p = {item['probs'].max():.2f}"
        plots.sample_probabilities(item["probs"], item["label"], class_names, ax, title)
    return _img(plots.png_bytes(fig))


def coverage_curves(predictions: pd.DataFrame, score: str) -> dict[str, pd.DataFrame]:
    """Per run (by label, in order), the risk-coverage curve with `score` (see
    metrics.rejection_scores), mean over seeds."""
    curves = {}
    for _, label, group in by_variant(predictions):
        risks = []
        for _, run in group.groupby("seed"):
            logits, probs, labels = run_arrays(run)
            risks.append(risk_coverage_curve(rejection_scores(logits)[score], top_label(probs, labels)[1], COVERAGES))
        curves[label] = pd.DataFrame({"coverage": COVERAGES, "risk": np.mean(risks, axis=0)})
    return curves


@literal_text
def figure_selective(predictions: pd.DataFrame, alternative: str) -> str:
    fig, axes = plots.grid(2, 2, size=4.5)
    plots.risk_coverage(coverage_curves(predictions, "msp"), axes[0], "rejecting by max probability (MSP)")
    plots.risk_coverage(coverage_curves(predictions, alternative), axes[1],
                        f"rejecting by {alternative.replace('_', ' ')}")
    return _img(plots.png_bytes(fig))


@literal_text
def figure_ood(predictions: pd.DataFrame, ood_predictions: pd.DataFrame, ood_set: str) -> str:
    runs = first_and_last(predictions)
    fig, axes = plots.grid(2 * len(runs), 2, size=4)
    for row, (run, label, rows) in enumerate(runs):
        id_scores = rejection_scores(run_arrays(rows)[0])
        ood_logits = rows_of(ood_predictions, run)[prob_columns(ood_predictions, "logit_")]
        ood_scores = rejection_scores(ood_logits.to_numpy())
        for col, score in enumerate(("msp", "energy")):
            plots.score_histograms(id_scores[score], ood_scores[score], axes[2 * row + col],
                                   f"{label}: {score} (OOD: {ood_set})", score)
    return _img(plots.png_bytes(fig))
