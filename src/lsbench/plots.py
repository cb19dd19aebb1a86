"""Report figures. Each function draws a DataFrame onto given axes; saving is the caller's."""

from __future__ import annotations

import io as _io
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # headless, and no GUI backend state
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402



def png_bytes(fig: plt.Figure) -> bytes:
    """PNG of a figure with no timestamp or version metadata, so the bytes are reproducible."""
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _err(i) -> list[list[float]] | None:  # noqa: ANN001 - an lsbench.stats.Interval
    """Error bar lengths of an interval, None without one."""
    return [[i.mean - i.lo], [i.hi - i.mean]] if i.n > 1 and np.isfinite(i.lo) else None


MARKERS = "osD^vP*Xh<>p"


def accuracy_vs(final: pd.DataFrame | None, intervals: dict, ax: plt.Axes, x: str = "overconfidence",
                xlabel: str = "overconfidence = mean confidence − accuracy  (← underconfident | overconfident →)",
                zero_line: bool = True, legend: bool = False) -> None:
    """Accuracy (y) against `x` per run, 95 % intervals over seeds on both axes, individual seeds
    (rows of `final`, if given) as faint points. `intervals`: {label: {"accuracy": Interval, x:
    Interval}}, in the order to colour them. `legend`: name the points in a legend below the axes
    (one marker and colour each) instead of beside each point, and use a log x axis (ECEs that
    span two orders of magnitude)."""
    if final is not None:
        ax.scatter(final[x], final["accuracy"], color="gray", alpha=0.3, s=14, label="single seeds")
    # A legend needs colours told apart by name, not an ordered ramp.
    colors = sns.color_palette("colorblind" if legend else "viridis", len(intervals))
    for i, (color, (label, cells)) in enumerate(zip(colors, intervals.items())):
        acc, other = cells["accuracy"], cells[x]
        ax.errorbar(other.mean, acc.mean, xerr=_err(other), yerr=_err(acc), fmt=MARKERS[i % len(MARKERS)] if legend
                    else "o", capsize=3, color=color, label=label if legend else None)
        if not legend:
            ax.annotate(label, (other.mean, acc.mean), textcoords="offset points", xytext=(6, 6), fontsize=7)
    if zero_line:
        ax.axvline(0, color="black", linestyle="--", linewidth=0.8)
    if legend:
        ax.set_xscale("log")
        # Plain tick labels: mathtext (10^{-2}) is off while the report draws (lsbench.figures).
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), fontsize=7, ncol=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    if final is not None:
        ax.legend(loc="lower left")


def confidence_histogram(confidences: np.ndarray, ax: plt.Axes, title: str) -> None:
    """Distribution of the max softmax probability over the test set (pooled over seeds)."""
    ax.hist(confidences, bins=np.linspace(0, 1, 16), color="tab:blue", edgecolor="black")
    ax.set_xlim(0, 1)
    ax.set_xlabel("confidence (max probability)")
    ax.set_ylabel("images")
    ax.set_title(title)


def metric_vs_param(final: pd.DataFrame, metrics: Sequence[str], ax: plt.Axes, ylabel: str, xlabel: str) -> None:
    """Mean +- std over seeds of each metric against a method's parameter (column `param`), seeds
    as faint points."""
    for metric in metrics:
        sns.lineplot(data=final, x="param", y=metric, errorbar="sd", marker="o", ax=ax, label=metric)
        ax.scatter(final["param"], final[metric], alpha=0.25, s=12)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def epoch_curves(metrics: pd.DataFrame, metric: str, ax: plt.Axes, order: Sequence[str]) -> None:
    """One line per run (column `variant`, a label, in `order`) over epochs, with a +-1 std band
    over seeds."""
    # Categorical labels: with a numeric hue seaborn draws a colour bar with rounded ticks, which
    # cannot tell 0.001 from 0.004.
    sns.lineplot(data=metrics, x="epoch", y=metric, hue="variant", hue_order=list(order),
                 palette="viridis", errorbar="sd", ax=ax, legend="full")
    ax.set_title(metric)
    ax.grid(alpha=0.3)


def reliability_diagram(bins: pd.DataFrame, ax: plt.Axes, title: str, smooth: dict | None = None) -> None:
    """Accuracy per confidence bin (pooled over seeds) against the diagonal; gap shaded; a 95 %
    Wilson interval per bin (`lower`, `upper` columns) as error bars; `smooth`: relplot's smooth
    reliability curve ({"mesh", "mu"} restricted to where the confidences lie), drawn as a line."""
    width = bins["bin_upper"] - bins["bin_lower"]
    filled = bins["count"] > 0
    ax.bar(bins["bin_lower"][filled], bins["accuracy"][filled], width=width[filled], align="edge",
           edgecolor="black", color="tab:blue", label="accuracy")
    ax.bar(bins["bin_lower"][filled], (bins["mean_confidence"] - bins["accuracy"])[filled],
           bottom=bins["accuracy"][filled], width=width[filled], align="edge",
           color="tab:red", alpha=0.3, label="gap to confidence")
    centres = (bins["bin_lower"] + width / 2)[filled]
    acc = bins["accuracy"][filled]
    ax.errorbar(centres, acc, yerr=[acc - bins["lower"][filled], bins["upper"][filled] - acc], fmt="none",
                ecolor="black", elinewidth=0.8, capsize=2, label="95 % Wilson interval")
    if smooth is not None:
        ax.plot(smooth["mesh"], smooth["mu"], color="tab:orange", linewidth=1.5, label="smooth (relplot)")
    ax.plot([0, 1], [0, 1], "k--", linewidth=1)
    for lower, w, a, n in zip(bins["bin_lower"][filled], width[filled], acc, bins["count"][filled]):
        ax.text(lower + w / 2, min(a, 0.93) + 0.02, f"{int(n)}", ha="center", fontsize=6, rotation=90)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")


def reliability_overlay(curves: dict[str, pd.DataFrame], ax: plt.Axes) -> None:
    """Every run's reliability curve ({label: bins}, in order) on one diagram: accuracy against mean
    confidence of each non-empty bin, pooled over seeds."""
    colors = sns.color_palette("viridis", len(curves))
    for color, (label, bins) in zip(colors, curves.items()):
        filled = bins[bins["count"] > 0]
        ax.plot(filled["mean_confidence"], filled["accuracy"], marker="o", markersize=3, color=color, label=label)
    ax.plot([0, 1], [0, 1], "k--", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("mean confidence in bin")
    ax.set_ylabel("accuracy in bin")
    ax.set_title("every run on one diagram (15 bins, pooled over seeds)")
    ax.legend(loc="upper left", fontsize=6)


def risk_coverage(curves: dict[str, pd.DataFrame], ax: plt.Axes, title: str) -> None:
    """Risk (error rate of the accepted samples) against coverage, one line per run, mean over
    seeds: `curves[label]` has columns coverage, risk (in the order to draw them)."""
    colors = sns.color_palette("viridis", len(curves))
    for color, (label, curve) in zip(colors, curves.items()):
        ax.plot(curve["coverage"], curve["risk"], color=color, label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("coverage (share of test images accepted)")
    ax.set_ylabel("risk (error rate among accepted)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=6)


def score_histograms(in_scores: np.ndarray, out_scores: np.ndarray, ax: plt.Axes, title: str, xlabel: str) -> None:
    """Densities of a confidence score on the test set (in-distribution) and on the OOD set."""
    edges = np.histogram_bin_edges(np.concatenate([in_scores, out_scores]), bins=30)
    ax.hist(in_scores, bins=edges, density=True, alpha=0.6, color="tab:blue", label="test set (in)")
    ax.hist(out_scores, bins=edges, density=True, alpha=0.6, color="tab:orange", label="OOD set")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=8)


def sample_probabilities(probs: np.ndarray, label: int, class_names: Sequence[str], ax: plt.Axes,
                         title: str) -> None:
    """Softmax output for one image; the true class in a different colour."""
    colors = ["tab:green" if c == label else "tab:gray" for c in range(len(probs))]
    ax.bar(range(len(probs)), probs, color=colors)
    ax.set_xticks(range(len(probs)), list(class_names)[:len(probs)], rotation=60, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    ax.set_title(title)


def grid(n: int, cols: int, size: float = 3.2) -> tuple[plt.Figure, np.ndarray]:
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False, layout="constrained")
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat
