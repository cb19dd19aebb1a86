"""Report figures. Each function draws a DataFrame onto given axes; saving is the caller's.

Colours: `palette(n)` for n data series (runs, metrics), a colour-blind-safe subset of Okabe & Ito
(2008) whose every colour has a WCAG 2.x contrast ratio of at least 3:1 on white; past its five
colours the markers and line styles change too, so every series stays distinguishable. Legends
sit outside the axes (right of one panel, or below the whole figure), never over a curve.
"""

from __future__ import annotations

import io as _io
from dataclasses import dataclass
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # headless, and no GUI backend state
import matplotlib.colors  # noqa: E402
import matplotlib.patheffects  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import matplotlib.transforms  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

# Okabe & Ito's blue, vermillion, bluish green, reddish purple and black: the colours of their
# colour-blind-safe set with a contrast of at least 3:1 on white (orange, sky blue and yellow have
# less than 2.4:1). Contrast on white: 5.2, 3.9, 3.4, 3.1, 21.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#000000")
GREY = "#767676"  # the lightest grey with 4.5:1 on white: reference lines, "other" bars
MARKERS = "osD^vPX"
LINESTYLES = ("-", "--", ":", "-.")
# Fixed colours that stand for data (every other colour in a figure is black, white or a tint of
# one of these used as a band): the palette, and the grey of the other classes' bars.
DATA_COLOURS = (*PALETTE, GREY)
SAVE = {"bbox_inches": "tight"}


@dataclass(frozen=True)
class Style:
    """How one data series is drawn: colour, marker, line style."""

    color: str
    marker: str
    linestyle: str | tuple

    def line(self) -> dict:
        return {"color": self.color, "marker": self.marker, "linestyle": self.linestyle}


def palette(n: int) -> list[Style]:
    """Styles for n series, in order: the i-th has colour PALETTE[i % 5] and marker MARKERS[i % 7]
    (so colour and marker together repeat only after 35 series), and a line style that changes
    with each pass through the colours (colour and line style repeat after 20)."""
    return [Style(PALETTE[i % len(PALETTE)], MARKERS[i % len(MARKERS)],
                  LINESTYLES[(i // len(PALETTE)) % len(LINESTYLES)]) for i in range(n)]


def relative_luminance(color: str) -> float:
    """WCAG 2.x relative luminance of an sRGB colour ("#rrggbb" or a matplotlib name)."""
    rgb = np.asarray(matplotlib.colors.to_rgb(color))
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    return float(linear @ np.array([0.2126, 0.7152, 0.0722]))


def contrast_ratio(color: str, background: str = "#ffffff") -> float:
    """WCAG 2.x contrast ratio (L1 + 0.05) / (L2 + 0.05), L1 the lighter: 1 to 21.

    >>> round(contrast_ratio("#000000"), 1), round(contrast_ratio(PALETTE[0]), 2)
    (21.0, 5.19)
    """
    a, b = sorted((relative_luminance(color), relative_luminance(background)), reverse=True)
    return (a + 0.05) / (b + 0.05)


def legend_right(ax: plt.Axes, **kwargs) -> None:
    """The axes' legend outside it, to its right, top-aligned (the layout makes room)."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=8, **kwargs)


UNDER_XLABEL = 36  # points from an axes' bottom to below its tick labels and x label (10 pt text)


def legend_under(ax: plt.Axes, ncol: int = 2) -> None:
    """The axes' legend outside it, below its x label (anchored in points, so no font or size of
    the axes makes the two overlap; the layout makes room)."""
    anchor = matplotlib.transforms.offset_copy(ax.transAxes, fig=ax.figure, y=-UNDER_XLABEL, units="points")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), bbox_transform=anchor, borderaxespad=0, fontsize=8,
              ncol=ncol)


def legend_below(fig: plt.Figure, handles: list | None = None, labels: list[str] | None = None,
                 ax: plt.Axes | None = None, ncol: int = 3) -> None:
    """One legend for the whole figure, below every panel (the series are the same in each):
    `handles` and `labels`, or those of `ax`."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(ncol, len(handles)), fontsize=8,
                   frameon=False)


def figure_bytes(fig: plt.Figure, title: str = "") -> dict[str, bytes]:
    """The figure as PNG (for the HTML), SVG and PDF (for papers), with no timestamp, version or
    random id in any of them, so the same figure gives the same bytes; then closes it. PDF fonts
    are embedded as TrueType (Type 42), as journals ask."""
    out = {}
    with plt.rc_context({"svg.hashsalt": "lsbench", "pdf.fonttype": 42}):
        for fmt, metadata in (("png", {"Software": None}), ("svg", {"Date": None, "Creator": None}),
                              ("pdf", {"CreationDate": None, "ModDate": None, "Creator": None, "Producer": None,
                                       **({"Title": title} if title else {})})):
            buf = _io.BytesIO()
            fig.savefig(buf, format=fmt, dpi=100, metadata=metadata, **SAVE)
            out[fmt] = buf.getvalue()
    plt.close(fig)
    return out


def _err(i) -> list[list[float]] | None:  # noqa: ANN001 - an lsbench.stats.Interval
    """Error bar lengths of an interval, None without one."""
    return [[i.mean - i.lo], [i.hi - i.mean]] if i.n > 1 and np.isfinite(i.lo) else None


ACCURACY_MIN_SPAN = 0.05  # the least range of an accuracy axis: a 0.006 gap must look small


def span_at_least(ax: plt.Axes, span: float, bounds: tuple[float, float] = (0.0, 1.0)) -> None:
    """Widen the y axis to `span` (centred on what is drawn, kept inside `bounds`) when the data
    span less: autoscaling stretches any difference, however small, over the whole axis."""
    lo, hi = ax.dataLim.intervaly
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi - lo >= span:
        return
    centre = (lo + hi) / 2
    lo, hi = centre - span / 2, centre + span / 2
    shift = max(bounds[0] - lo, 0.0) - max(hi - bounds[1], 0.0)
    ax.set_ylim(lo + shift, hi + shift)


def accuracy_vs(intervals: dict, ax: plt.Axes, seeds: dict[str, pd.DataFrame] | None = None,
                x: str = "overconfidence",
                xlabel: str = "overconfidence = mean confidence − accuracy  (← underconfident | overconfident →)",
                zero_line: bool = True, log_x: bool = False, min_span: float = ACCURACY_MIN_SPAN,
                legend: str = "right", styles: dict | None = None) -> None:
    """Accuracy (y) against `x` per run, 95 % intervals over seeds on both axes, each run's
    individual seeds (`seeds[label]`, rows with `x` and accuracy, if given) as small hollow markers
    of its colour. `intervals`: {label: {"accuracy": Interval, x: Interval}}, in the order to style
    them; a legend right of the axes (`legend` "right") or under it ("under") names them. `log_x`:
    a log x axis (ECEs that span two orders of magnitude). The accuracy axis spans at least
    `min_span`. `styles` ({label: Style}) keeps one run's look across panels (default: the palette
    in order)."""
    styles = styles or dict(zip(intervals, palette(len(intervals))))
    for label, cells in intervals.items():
        style = styles[label]
        acc, other = cells["accuracy"], cells[x]
        if seeds is not None and label in seeds:
            ax.scatter(seeds[label][x], seeds[label]["accuracy"], s=16, marker=style.marker,
                       facecolors="none", edgecolors=style.color, linewidths=0.8)
        ax.errorbar(other.mean, acc.mean, xerr=_err(other), yerr=_err(acc), fmt=style.marker, markersize=6,
                    capsize=3, color=style.color, label=label)
    if seeds is not None:
        ax.scatter([], [], s=16, marker="o", facecolors="none", edgecolors="black", linewidths=0.8,
                   label="hollow: single seeds")
    if zero_line:
        ax.axvline(0, color=GREY, linestyle="--", linewidth=0.8)
    if log_x:
        ax.set_xscale("log")
        # Ticks at 1, 2 and 5 of each decade, so that 0.013 and 0.05 can be read off; plain labels:
        # mathtext (10^{-2}) is off while the report draws (lsbench.figures).
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    span_at_least(ax, min_span)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    if legend == "under":
        legend_under(ax)
    else:
        legend_right(ax)


CONFIDENCE_BINS = np.linspace(0, 1, 16)


def confidence_histogram(confidences: np.ndarray, ax: plt.Axes, title: str) -> None:
    """Distribution of the max softmax probability over the test set (pooled over seeds), in
    CONFIDENCE_BINS."""
    ax.hist(confidences, bins=CONFIDENCE_BINS, color=PALETTE[0], edgecolor="black")
    ax.set_xlim(0, 1)
    ax.set_xlabel("confidence (max probability)")
    ax.set_ylabel("images")
    ax.set_title(title)


def mean_sd(df: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Mean and sample std (NaN for one value) of `y` per value of `x`, sorted by `x`."""
    return df.groupby(x, sort=True)[y].agg(["mean", "std"]).reset_index()


def line_with_band(ax: plt.Axes, df: pd.DataFrame, x: str, y: str, style: Style, label: str) -> None:
    """Mean of `y` over rows per `x` as a line, ±1 std as a band of the same colour."""
    stats = mean_sd(df, x, y)
    ax.plot(stats[x], stats["mean"], markersize=4, markevery=max(1, len(stats) // 10), label=label, **style.line())
    ax.fill_between(stats[x], stats["mean"] - stats["std"], stats["mean"] + stats["std"], color=style.color,
                    alpha=0.15, linewidth=0)


def metric_vs_param(final: pd.DataFrame, metrics: Sequence[str], ax: plt.Axes, ylabel: str, xlabel: str,
                    styles: dict[str, Style]) -> None:
    """Mean ± std over seeds of each metric against a method's parameter (column `param`), seeds
    as small hollow markers; `styles[metric]` draws each."""
    for metric in metrics:
        style = styles[metric]
        line_with_band(ax, final, "param", metric, style, metric)
        ax.scatter(final["param"], final[metric], s=12, marker=style.marker, facecolors="none",
                   edgecolors=style.color, linewidths=0.6)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def epoch_curves(metrics: pd.DataFrame, metric: str, ax: plt.Axes, order: Sequence[str]) -> None:
    """One line per run (column `variant`, a label, in `order`) over epochs: the mean over seeds,
    with a ±1 std band."""
    for style, label in zip(palette(len(order)), order):
        line_with_band(ax, metrics[metrics["variant"] == label], "epoch", metric, style, label)
    ax.set_title(metric)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


# The reliability diagram's parts, each drawn opaque and side by side (never one over another), so
# its legend entry (`reliability_handles`) has exactly the colour on the page.
BAR_ACCURACY = {"facecolor": PALETTE[0], "edgecolor": "black", "linewidth": 0.6}
BAR_OVER = {"facecolor": PALETTE[1], "edgecolor": "black", "linewidth": 0.6, "hatch": "///"}
BAR_UNDER = {"facecolor": PALETTE[3], "edgecolor": "black", "linewidth": 0.6, "hatch": "\\\\\\"}
BLACK = "#000000"
WILSON = {"color": BLACK, "linewidth": 0.8}
SMOOTH = {"color": BLACK, "linewidth": 1.6,
          "path_effects": [matplotlib.patheffects.withStroke(linewidth=3.2, foreground="white")]}
DIAGONAL = {"color": GREY, "linestyle": "--", "linewidth": 1.0}
COUNT_FONTSIZE = 7


def reliability_handles(smooth: bool = True) -> tuple[list, list[str]]:
    """Legend handles and labels of `reliability_diagram`'s parts, styled as they are drawn."""
    handles = [Patch(**BAR_ACCURACY), Patch(**BAR_OVER), Patch(**BAR_UNDER),
               Line2D([], [], marker="_", markersize=8, linestyle="none", markeredgewidth=0.8, color="black"),
               *([Line2D([], [], **SMOOTH)] if smooth else []), Line2D([], [], **DIAGONAL)]
    labels = ["accuracy of the bin's images", "overconfident gap: mean confidence above accuracy",
              "underconfident gap: accuracy above mean confidence", "95 % Wilson interval of the bin's accuracy",
              *(["smooth reliability curve (relplot, all predictions)"] if smooth else []), "perfect calibration"]
    return handles, labels


def reliability_diagram(bins: pd.DataFrame, ax: plt.Axes, title: str, smooth: dict | None = None) -> None:
    """Accuracy per confidence bin (pooled over seeds) against the diagonal: a bar up to the lower
    of accuracy and mean confidence, then the gap between them, overconfident or underconfident
    in its own colour; a 95 % Wilson interval per bin (`lower`, `upper` columns) as error bars;
    `smooth`: relplot's smooth reliability curve ({"mesh", "mu"} restricted to where the
    confidences lie), drawn as a line. The images per bin are printed in a strip above the axes,
    clear of the bars and their error bars."""
    filled = bins[bins["count"] > 0]
    left, width = filled["bin_lower"].to_numpy(), (filled["bin_upper"] - filled["bin_lower"]).to_numpy()
    acc, conf = filled["accuracy"].to_numpy(), filled["mean_confidence"].to_numpy()
    ax.bar(left, np.minimum(acc, conf), width=width, align="edge", **BAR_ACCURACY)
    over, under = conf > acc, acc > conf
    ax.bar(left[over], (conf - acc)[over], bottom=acc[over], width=width[over], align="edge", **BAR_OVER)
    ax.bar(left[under], (acc - conf)[under], bottom=conf[under], width=width[under], align="edge", **BAR_UNDER)
    centres = left + width / 2
    ax.errorbar(centres, acc, yerr=[acc - filled["lower"].to_numpy(), filled["upper"].to_numpy() - acc],
                fmt="none", ecolor=WILSON["color"], elinewidth=WILSON["linewidth"], capsize=2)
    if smooth is not None:
        ax.plot(smooth["mesh"], smooth["mu"], **SMOOTH)
    ax.plot([0, 1], [0, 1], **DIAGONAL)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    strip = ax.inset_axes((0.0, 1.02, 1.0, 0.16))
    strip.set_xlim(0, 1)
    strip.set_ylim(0, 1)
    strip.set_xticks([])
    strip.set_yticks([])
    for spine in strip.spines.values():
        spine.set_visible(False)
    for x, n in zip(centres, filled["count"]):
        strip.text(x, 0.05, count_text(int(n)), ha="center", va="bottom", rotation=90, fontsize=COUNT_FONTSIZE)
    strip.set_ylabel("images", rotation=0, ha="right", va="center", fontsize=COUNT_FONTSIZE)
    ax.set_title(title)


def count_text(n: int) -> str:
    """A bin's count in at most four characters, to fit its strip: 12345 -> "12k".

    >>> [count_text(n) for n in (7, 9999, 12345, 250000, 1234567)]
    ['7', '9999', '12k', '250k', '1.2M']
    """
    if n < 10_000:
        return str(n)
    if n < 999_500:
        return f"{n / 1000:.0f}k"
    return f"{n / 1e6:.1f}M" if n < 10_000_000 else f"{n / 1e6:.0f}M"


def reliability_overlay(curves: dict[str, pd.DataFrame], ax: plt.Axes) -> None:
    """Every run's reliability curve ({label: bins}, in order) on one diagram: accuracy against mean
    confidence of each non-empty bin, pooled over seeds."""
    for style, (label, bins) in zip(palette(len(curves)), curves.items()):
        filled = bins[bins["count"] > 0]
        ax.plot(filled["mean_confidence"], filled["accuracy"], markersize=3, label=label, **style.line())
    ax.plot([0, 1], [0, 1], **DIAGONAL)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("mean confidence in bin")
    ax.set_ylabel("accuracy in bin")
    ax.set_title("all runs, pooled over seeds")
    legend_under(ax, ncol=1)


def risk_coverage(curves: dict[str, pd.DataFrame], ax: plt.Axes, title: str) -> None:
    """Risk (error rate of the accepted samples) against coverage, one line per run, mean over
    seeds: `curves[label]` has columns coverage, risk (in the order to draw them). No legend: the
    runs are the same in every panel (`legend_below`)."""
    for style, (label, curve) in zip(palette(len(curves)), curves.items()):
        ax.plot(curve["coverage"], curve["risk"], label=label, markevery=10, markersize=4, **style.line())
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("coverage (share of test images accepted)")
    ax.set_ylabel("risk (error rate among accepted)")
    ax.set_title(title)
    ax.grid(alpha=0.3)


# The in-distribution and OOD histograms: outlines only (no fill drawn over another), so the
# legend's colours are the drawn ones.
SCORE_IN = {"color": PALETTE[0], "linestyle": "-"}
SCORE_OUT = {"color": PALETTE[1], "linestyle": "--"}
SCORE_LABELS = {"msp": "max softmax probability (MSP)",
                "energy": "negative energy (log-sum-exp of logits)"}


def score_edges(in_scores: np.ndarray, out_scores: np.ndarray) -> np.ndarray:
    return np.histogram_bin_edges(np.concatenate([in_scores, out_scores]), bins=30)


def score_histograms(in_scores: np.ndarray, out_scores: np.ndarray, ax: plt.Axes, title: str, xlabel: str,
                     out_label: str = "OOD set") -> None:
    """Densities of a confidence score on the test set (in-distribution) and on the OOD set
    (`out_label`), as step outlines in `score_edges`; the legend is the figure's (`legend_below`)."""
    edges = score_edges(in_scores, out_scores)
    ax.hist(in_scores, bins=edges, density=True, histtype="step", linewidth=1.5, label="test set (in-distribution)",
            **SCORE_IN)
    ax.hist(out_scores, bins=edges, density=True, histtype="step", linewidth=1.5, label=out_label, **SCORE_OUT)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.set_title(title)


TRUE_CLASS, OTHER_CLASS = PALETTE[2], GREY


def sample_probabilities(probs: np.ndarray, label: int, class_names: Sequence[str], ax: plt.Axes,
                         title: str) -> None:
    """Softmax output for one image; the true class in a different colour (TRUE_CLASS)."""
    colors = [TRUE_CLASS if c == label else OTHER_CLASS for c in range(len(probs))]
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


def severity_boxes(per_shift: dict[str, pd.DataFrame], metric: str, ax: plt.Axes, ylabel: str,
                   styles: dict[str, Style]) -> None:
    """Ovadia et al. 2019, Fig. 2: per run (`per_shift[label]`: one row per shift and severity,
    `metric` averaged over seeds) a box per severity of the values over the shifts (median,
    quartiles, whiskers to the extremes), the runs' boxes side by side, and a line through each
    run's medians. Severity 0 (one value: the unshifted images) is drawn as a point."""
    n = len(per_shift)
    width = 0.8 / max(n, 1)
    for i, (label, df) in enumerate(per_shift.items()):
        style = styles[label]
        offset = (i - (n - 1) / 2) * width
        severities = sorted(df["severity"].unique())
        values = [df.loc[df["severity"] == s, metric].dropna().to_numpy() for s in severities]
        positions = np.array(severities, dtype=float) + offset
        keep = [j for j, v in enumerate(values) if len(v)]
        ax.boxplot([values[j] for j in keep], positions=positions[keep], widths=width * 0.9, whis=(0, 100),
                   patch_artist=True, manage_ticks=False,
                   boxprops={"facecolor": matplotlib.colors.to_rgba(style.color, 0.25), "edgecolor": style.color},
                   medianprops={"color": style.color}, whiskerprops={"color": style.color},
                   capprops={"color": style.color}, flierprops={"markeredgecolor": style.color})
        medians = [np.median(values[j]) for j in keep]
        ax.plot(positions[keep], medians, color=style.color, marker=style.marker, linestyle=style.linestyle,
                markersize=4, linewidth=1, label=label)
    ax.set_xticks(range(0, 6), ["clean", "1", "2", "3", "4", "5"])
    ax.set_xlabel("shift severity (box: spread over the shifts)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")


def difference_heatmap(values: pd.DataFrame, ax: plt.Axes, label: str) -> None:
    """`values` (rows: shifts, columns: runs) as a diverging heat map centred on 0 (blue: lower,
    vermillion: higher), each cell's value printed in it."""
    data = values.to_numpy(dtype=float)
    finite = np.abs(data[np.isfinite(data)])
    limit = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    cmap = matplotlib.colors.LinearSegmentedColormap.from_list("lsbench-diverging", [PALETTE[0], "#ffffff", PALETTE[1]])
    image = ax.imshow(data, cmap=cmap, vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(data.shape[1]), list(values.columns), rotation=30, ha="right")
    ax.set_yticks(range(data.shape[0]), list(values.index))
    for (r, c), v in np.ndenumerate(data):
        if np.isfinite(v):
            ax.text(c, r, f"{v:+.3f}", ha="center", va="center", fontsize=8,
                    color="white" if abs(v) > 0.6 * limit else "black")
    ax.figure.colorbar(image, ax=ax, label=label, shrink=0.8)


def image_gallery(images: list[list[np.ndarray]], row_labels: Sequence[str], col_labels: Sequence[str]
                  ) -> plt.Figure:
    """A grid of uint8 images (C, H, W), grey for one channel, RGB for three; labels on the left
    and on top."""
    rows, cols = len(images), len(col_labels)
    fig, axes = plt.subplots(rows, cols, figsize=(1.1 * cols + 1.2, 1.1 * rows), squeeze=False, layout="constrained")
    for r, row in enumerate(images):
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(row) and row[c] is not None:
                img = row[c]
                ax.imshow(img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1), cmap="gray", vmin=0, vmax=255,
                          interpolation="nearest")
            if r == 0:
                ax.set_title(col_labels[c], fontsize=8)
            if c == 0:
                ax.set_ylabel(row_labels[r], fontsize=8, rotation=0, ha="right", va="center")
    return fig
