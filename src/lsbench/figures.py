"""The report's figures: each function draws part of the tables into a PNG data URI (the plots
themselves are in `lsbench.plots`). Pooled over seeds where a figure shows one curve per epsilon.

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
from lsbench.config import format_epsilon
from lsbench.metrics import rejection_scores, risk_coverage_curve, top_label
from lsbench.stats import wilson_interval

CURVE_METRICS = ("accuracy", "test_nll", "ece", "overconfidence")
COVERAGES = np.linspace(0.01, 1.0, 100)


def pooled_reliability(reliability: pd.DataFrame, epsilon: float) -> pd.DataFrame:
    """Bins of one epsilon pooled over seeds: counts summed, means weighted by count, and a 95 %
    Wilson interval for each bin's accuracy (`lower`, `upper`) over the pooled test images."""
    df = reliability[reliability["epsilon"] == epsilon].copy()
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


def literal_text(figure: Callable[..., str]) -> Callable[..., str]:
    """Draw `figure` with mathtext parsing off (text.parse_math), so every string is shown as is."""
    @functools.wraps(figure)
    def draw(*args, **kwargs) -> str:
        with plots.plt.rc_context({"text.parse_math": False}):
            return figure(*args, **kwargs)

    return draw


def _img(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@literal_text
def figure_headline(converged: pd.DataFrame, intervals: dict) -> str:
    fig, axes = plots.grid(1, 1, size=6.5)
    plots.accuracy_vs_overconfidence(converged, intervals, axes[0])
    return _img(plots.png_bytes(fig))


@literal_text
def figure_confidence(predictions: pd.DataFrame, epsilons: list[float]) -> str:
    cols = prob_columns(predictions)
    fig, axes = plots.grid(len(epsilons), 3)
    for eps, ax in zip(epsilons, axes):
        conf = predictions.loc[predictions["epsilon"] == eps, cols].to_numpy().max(axis=1)
        plots.confidence_histogram(conf, ax, f"ε = {format_epsilon(eps)}")
    return _img(plots.png_bytes(fig))


@literal_text
def figure_vs_epsilon(final: pd.DataFrame) -> str:
    fig, axes = plots.grid(2, 2, size=4.5)
    plots.metric_vs_epsilon(final, ["accuracy"], axes[0], "test accuracy")
    plots.metric_vs_epsilon(final, ["ece", "smece", "overconfidence"], axes[1], "calibration")
    axes[1].axhline(0, color="black", linewidth=0.8)
    return _img(plots.png_bytes(fig))


@literal_text
def figure_curves(metrics: pd.DataFrame) -> str:
    fig, axes = plots.grid(len(CURVE_METRICS), 2, size=4.5)
    for metric, ax in zip(CURVE_METRICS, axes):
        plots.epoch_curves(metrics, metric, ax)
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
def figure_reliability(reliability: pd.DataFrame, predictions: pd.DataFrame, epsilons: list[float]) -> str:
    fig, axes = plots.grid(len(epsilons) + 1, 3)
    for eps, ax in zip(epsilons, axes):
        plots.reliability_diagram(pooled_reliability(reliability, eps), ax, f"ε = {format_epsilon(eps)}",
                                  smooth_curve(predictions[predictions["epsilon"] == eps]))
    axes[0].legend(loc="upper left", fontsize=7)
    plots.reliability_overlay({eps: pooled_reliability(reliability, eps) for eps in epsilons}, axes[len(epsilons)])
    return _img(plots.png_bytes(fig))


@literal_text
def figure_sample(predictions: pd.DataFrame, class_names: list[str]) -> str:
    pair = sample_pair(predictions)
    fig, axes = plots.grid(len(pair), 2, size=4)
    for item, ax in zip(pair, axes):
        title = f"ε = {format_epsilon(item['epsilon'])} (seed {item['seed']}), max p = {item['probs'].max():.2f}"
        plots.sample_probabilities(item["probs"], item["label"], class_names, ax, title)
    return _img(plots.png_bytes(fig))


def coverage_curves(predictions: pd.DataFrame, score: str) -> dict[float, pd.DataFrame]:
    """Per epsilon, the risk-coverage curve with `score` (see metrics.rejection_scores), mean over seeds."""
    curves = {}
    for eps, group in predictions.groupby("epsilon"):
        risks = []
        for _, run in group.groupby("seed"):
            logits, probs, labels = run_arrays(run)
            risks.append(risk_coverage_curve(rejection_scores(logits)[score], top_label(probs, labels)[1], COVERAGES))
        curves[float(eps)] = pd.DataFrame({"coverage": COVERAGES, "risk": np.mean(risks, axis=0)})
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
    epsilons = sorted({predictions["epsilon"].min(), predictions["epsilon"].max()})
    fig, axes = plots.grid(2 * len(epsilons), 2, size=4)
    for row, eps in enumerate(epsilons):
        id_scores = rejection_scores(run_arrays(predictions[predictions["epsilon"] == eps])[0])
        ood_logits = ood_predictions.loc[ood_predictions["epsilon"] == eps, prob_columns(ood_predictions, "logit_")]
        ood_scores = rejection_scores(ood_logits.to_numpy())
        for col, score in enumerate(("msp", "energy")):
            plots.score_histograms(id_scores[score], ood_scores[score], axes[2 * row + col],
                                   f"ε = {format_epsilon(eps)}: {score} (OOD: {ood_set})", score)
    return _img(plots.png_bytes(fig))
