"""The report's figures: each function draws part of the tables into a `Figure`: the PNG data URI
the HTML embeds, the same figure as SVG and PDF for papers, alt text that says what it shows, and
the numbers it draws as a tidy table (written beside the report by `lsbench.report.write_report`; the plots
themselves are in `lsbench.plots`). Pooled over seeds where a figure shows one curve per run
(method, param); runs are listed as `lsbench.studies.by_variant` orders and names them.

Text in a figure comes from the tables (class names, dataset names), so matplotlib's mathtext is
off while a figure is drawn (`literal_text`): "$\\undefinedmacro$" is a class name, not a formula.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from lsbench import plots
from lsbench.methods import CROSS_ENTROPY, METHODS, variant_label
from lsbench.metrics import rejection_scores, risk_coverage_curve, top_label
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


FIGURES_DIR = "figures"  # where the files of the figures go, beside the report (a relative link)
FILE_TYPES = ("svg", "pdf", "csv")


@dataclasses.dataclass(frozen=True)
class Figure:
    """One figure of the report. `name`: its file stem, unique in a report ("<study slug>-headline");
    `uri`: the PNG data URI the HTML embeds; `alt`: what the figure shows, in numbers from the data;
    `svg`, `pdf`: the same figure for papers, the same bytes for the same tables; `data`: the
    numbers drawn, a tidy table (one row per run and seed, per bin, per point of a curve)."""

    name: str
    uri: str = dataclasses.field(repr=False)
    alt: str
    svg: bytes = dataclasses.field(repr=False)
    pdf: bytes = dataclasses.field(repr=False)
    data: pd.DataFrame = dataclasses.field(repr=False, compare=False)

    @property
    def files(self) -> list[str]:
        """The figure's files, relative to the report: figures/<name>.svg, .pdf and .csv."""
        return [f"{FIGURES_DIR}/{self.name}.{ext}" for ext in FILE_TYPES]

    @property
    def links(self) -> list[tuple[str, str]]:
        """(href, text) of each file, as the report names them: "figures/<name>.svg", ".pdf", ".csv"."""
        return [(path, path if i == 0 else "." + path.rsplit(".", 1)[1]) for i, path in enumerate(self.files)]

    def csv(self) -> bytes:
        return self.data.to_csv(index=False, lineterminator="\n").encode("utf-8")


def figure_files(figures: Iterable[Figure]) -> dict[str, bytes]:
    """{file name: bytes} of each figure as <name>.svg, <name>.pdf and <name>.csv (its data), in
    order, for `lsbench.report.replace_outputs`. ValueError for two figures of one name."""
    figures = list(figures)
    names = [f.name for f in figures]
    if len(set(names)) != len(names):
        raise ValueError(f"figure names repeat: {sorted({n for n in names if names.count(n) > 1})}")
    return {f"{f.name}.{ext}": payload for f in figures
            for ext, payload in (("svg", f.svg), ("pdf", f.pdf), ("csv", f.csv()))}


def literal_text(figure: Callable[..., Figure]) -> Callable[..., Figure]:
    """Draw `figure` with mathtext parsing off (text.parse_math), so every string is shown as is."""
    @functools.wraps(figure)
    def draw(*args, **kwargs) -> Figure:
        with plots.plt.rc_context({"text.parse_math": False}):
            return figure(*args, **kwargs)

    return draw


def _img(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure(fig: plots.plt.Figure, name: str, alt: str, data: pd.DataFrame) -> Figure:
    """Save and close `fig` as a Figure."""
    out = plots.figure_bytes(fig, title=name)
    return Figure(name=name, uri=_img(out["png"]), alt=alt, svg=out["svg"], pdf=out["pdf"],
                  data=data.reset_index(drop=True))


def _labelled(intervals: dict) -> dict:
    return {variant_label(*run): cells for run, cells in intervals.items()}


def _num(value: float, digits: int = 3) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _signed(value: float, digits: int = 3) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:+.{digits}f}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _interval_frame(cells: dict, metrics: Iterable[str], **columns) -> pd.DataFrame:
    """One row per label of `cells` ({label: {metric: Interval}}): n, and each metric's mean with
    its 95 % interval (`<metric>_lo`, `<metric>_hi`); `columns` added to every row."""
    rows = []
    for label, row_cells in cells.items():
        row = {**columns, "variant": label, "point": "mean over seeds", "seed": pd.NA}
        for m in metrics:
            i = row_cells[m]
            row.update({"n": i.n, m: i.mean, f"{m}_lo": i.lo, f"{m}_hi": i.hi})
        rows.append(row)
    return pd.DataFrame(rows)


def _seed_frame(seeds: dict[str, pd.DataFrame], metrics: Iterable[str], **columns) -> pd.DataFrame:
    """One row per label and seed of `seeds` ({label: rows}) with each metric's value."""
    return pd.DataFrame([{**columns, "variant": label, "point": "seed", "seed": int(r["seed"]),
                          **{m: r[m] for m in metrics}}
                         for label, rows in seeds.items() for _, r in rows.iterrows()])


def _points_data(cells: dict, seeds: dict[str, pd.DataFrame] | None, metrics: tuple[str, ...],
                 **columns) -> pd.DataFrame:
    parts = [_interval_frame(cells, metrics, **columns)]
    if seeds:
        parts.append(_seed_frame(seeds, metrics, **columns))
    data = pd.concat(parts, ignore_index=True)
    data["seed"], data["n"] = data["seed"].astype("Int64"), data["n"].astype("Int64")
    return data


def accuracy_spread(cells: dict) -> str:
    """The range of the runs' mean accuracies, in words."""
    means = [c["accuracy"].mean for c in cells.values() if np.isfinite(c["accuracy"].mean)]
    if len(means) < 2:
        return ""
    return (f" The mean accuracies span {max(means) - min(means):.3f} ({min(means):.3f} to {max(means):.3f}); "
            f"the accuracy axis spans at least {plots.ACCURACY_MIN_SPAN:g}.")


@literal_text
def figure_headline(converged: pd.DataFrame, intervals: dict, *, name: str) -> Figure:
    """Accuracy against overconfidence per run; `intervals`: {(method, param): {metric: Interval}}."""
    cells = _labelled(intervals)
    seeds = {label: rows for _, label, rows in by_variant(converged) if label in cells}
    fig, axes = plots.grid(1, 1, size=6.5)
    plots.accuracy_vs(cells, axes[0], seeds=seeds)
    points = [f"{label} {_signed(c['overconfidence'].mean)} at {'accuracy ' if i == 0 else ''}"
              f"{_num(c['accuracy'].mean)}" for i, (label, c) in enumerate(cells.items())]
    alt = ("Accuracy against overconfidence (mean confidence − accuracy) per method and setting, mean over seeds: "
           + "; ".join(points) + "." + accuracy_spread(cells))
    return _figure(fig, name, alt, _points_data(cells, seeds, ("accuracy", "overconfidence")))


@literal_text
def figure_methods(converged: pd.DataFrame, chosen: list[tuple[str, float]], *, name: str) -> Figure:
    """Accuracy against ECE, one point per method at its chosen setting (`chosen`, cross-entropy
    first) with seed intervals, and temperature scaling alone as a reference point; the second
    panel the same after temperature scaling (each run's own fitted temperature)."""
    fig, axes = plots.grid(2, 2, size=5.5)
    data, text = [], []
    ts_label = "cross-entropy + temperature scaling"
    # One look per run in both panels; cross-entropy after scaling is temperature scaling alone.
    looks = dict(zip([variant_label(*run) for run in chosen] + [ts_label], plots.palette(len(chosen) + 1)))
    for ax, column, title in ((axes[0], "ece", "as trained"), (axes[1], "ece_ts", "after temperature scaling")):
        cells, styles = {}, {}
        for run in chosen:
            rows = rows_of(converged, run)
            stuck = column == "ece_ts" and bool(rows["temperature_at_bound"].astype(bool).any())
            run_label = ts_label if column == "ece_ts" and run[0] == CROSS_ENTROPY else variant_label(*run)
            label = run_label + (" (T at its search bound: not a fit)" if stuck else "")
            styles[label] = looks[run_label]
            cells[label] = {"accuracy": metric_interval(rows["accuracy"].to_numpy(), "accuracy"),
                            "ece": metric_interval(rows[column].to_numpy(), column)}
        base = converged[converged["method"] == CROSS_ENTROPY]
        if column == "ece" and base["ece_ts"].notna().any():
            cells[ts_label] = {"accuracy": metric_interval(base["accuracy"].to_numpy(), "accuracy"),
                               "ece": metric_interval(base["ece_ts"].to_numpy(), "ece_ts")}
            styles[ts_label] = looks[ts_label]
        plots.accuracy_vs(cells, ax, x="ece", xlabel=f"ECE ({title}; log scale, lower is better)",
                          zero_line=False, log_x=True, legend="under", styles=styles)
        ax.set_title(title)
        data.append(_points_data(cells, None, ("accuracy", "ece"), panel=title))
        text.append(f"{title.capitalize()}: " + "; ".join(
            f"{label} ECE {_num(c['ece'].mean)} at accuracy {_num(c['accuracy'].mean)}" for label, c in cells.items()))
    alt = ("Accuracy against ECE per method at its chosen setting, mean over seeds. " + ". ".join(text) + "."
           + accuracy_spread(cells))
    return _figure(fig, name, alt, pd.concat(data, ignore_index=True))


@literal_text
def figure_confidence(predictions: pd.DataFrame, *, name: str) -> Figure:
    """Per run, the histogram of the max softmax probability over the test images, pooled over seeds."""
    cols = prob_columns(predictions)
    runs = by_variant(predictions)
    fig, axes = plots.grid(len(runs), 3)
    data, text = [], []
    edges = plots.CONFIDENCE_BINS
    for (_, label, rows), ax in zip(runs, axes):
        confidences = rows[cols].to_numpy().max(axis=1)
        plots.confidence_histogram(confidences, ax, label)
        counts, _ = np.histogram(confidences, bins=edges)
        data.append(pd.DataFrame({"variant": label, "bin_lower": edges[:-1], "bin_upper": edges[1:], "images": counts}))
        text.append(f"{label} mean {_num(confidences.mean(), 2)}, {(confidences > 0.9).mean():.0%} of "
                    f"{len(confidences)} predictions above 0.9")
    alt = ("Histograms of the confidence (max softmax probability) on the test images, pooled over seeds: "
           + "; ".join(text) + ".")
    return _figure(fig, name, alt, pd.concat(data, ignore_index=True))


def swept_methods(final: pd.DataFrame) -> list[str]:
    """The methods of a frame with a parameter, in registry order."""
    present = set(final["method"])
    return [name for name, m in METHODS.items() if m.param is not None and name in present]


VS_PARAM_METRICS = ("accuracy", "ece", "smece", "overconfidence")
METRIC_NAMES = {"accuracy": "accuracy", "ece": "ECE", "smece": "smECE", "overconfidence": "overconfidence",
                "test_nll": "NLL"}


@literal_text
def figure_vs_param(final: pd.DataFrame, *, name: str) -> Figure:
    """Per swept method: accuracy and calibration against its parameter, cross-entropy drawn at
    the method's neutral value (where it has one). One colour per metric in every panel."""
    methods = swept_methods(final)
    styles = dict(zip(VS_PARAM_METRICS, plots.palette(len(VS_PARAM_METRICS))))
    fig, axes = plots.grid(2 * len(methods), 2, size=4.5)
    data, text = [], []
    for row, method in enumerate(methods):
        m = METHODS[method]
        rows = final[final["method"] == method]
        if m.param.neutral is not None:
            rows = pd.concat([final[final["method"] == CROSS_ENTROPY].assign(param=m.param.neutral), rows])
        xlabel = f"{m.title} {m.param.symbol}"
        plots.metric_vs_param(rows, ["accuracy"], axes[2 * row], "test accuracy", xlabel, styles)
        plots.metric_vs_param(rows, ["ece", "smece", "overconfidence"], axes[2 * row + 1], "calibration", xlabel,
                              styles)
        axes[2 * row + 1].axhline(0, color="black", linewidth=0.8)
        data.append(rows.melt(id_vars=["method", "param", "seed"], value_vars=list(VS_PARAM_METRICS),
                              var_name="metric", value_name="value").assign(panel=m.title))
        means = rows.groupby("param", sort=True)[list(VS_PARAM_METRICS)].mean()
        first, last = means.iloc[0], means.iloc[-1]
        fmt = {metric: _signed if metric == "overconfidence" else _num for metric in VS_PARAM_METRICS}
        text.append(f"{m.title} {m.param.symbol} from {means.index[0]:g} to {means.index[-1]:g}: "
                    + ", ".join(f"{METRIC_NAMES[metric]} {fmt[metric](first[metric])} to {fmt[metric](last[metric])}"
                                for metric in VS_PARAM_METRICS))
    if methods:
        handles = [h for ax in axes[:2] for h in ax.get_legend_handles_labels()[0]]
        plots.legend_below(fig, handles, [h.get_label() for h in handles], ncol=4)
    alt = ("Accuracy and calibration against each method's parameter (mean over seeds, at its lowest and its "
           "highest value): " + "; ".join(text) + "." if methods
           else "No method of this study has a parameter: 0 panels.")
    frame = (pd.concat(data, ignore_index=True)[["panel", "method", "param", "seed", "metric", "value"]] if data
             else pd.DataFrame(columns=["panel", "method", "param", "seed", "metric", "value"]))
    return _figure(fig, name, alt, frame)


@literal_text
def figure_curves(metrics: pd.DataFrame, *, name: str) -> Figure:
    """Per metric of CURVE_METRICS, one line per run over epochs (mean over seeds, ±1 std band)."""
    order = [label for _, label, _ in by_variant(metrics)]
    labelled = pd.concat([g.assign(variant=label) for _, label, g in by_variant(metrics)])
    fig, axes = plots.grid(len(CURVE_METRICS), 2, size=4.5)
    for metric, ax in zip(CURVE_METRICS, axes):
        plots.epoch_curves(labelled, metric, ax, order)
    plots.legend_below(fig, ax=axes[0])
    last = labelled[labelled["epoch"] == labelled["epoch"].max()]
    means = last.groupby("variant", sort=False)[list(CURVE_METRICS)].mean()
    def value(label: str, m: str) -> str:
        return (_signed if m == "overconfidence" else _num)(means.loc[label, m])

    text = [f"{label} " + ", ".join(f"{METRIC_NAMES[m]} {value(label, m)}" for m in CURVE_METRICS)
            for label in order if label in means.index]
    alt = (f"Test accuracy, NLL, ECE and overconfidence per epoch over {int(labelled['epoch'].max())} epochs, mean "
           f"over seeds; at the last epoch: " + "; ".join(text) + ".")
    data = labelled.melt(id_vars=["variant", "seed", "epoch"], value_vars=list(CURVE_METRICS), var_name="metric",
                         value_name="value")
    return _figure(fig, name, alt, data)


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


RELIABILITY_COLUMNS = ("bin", "bin_lower", "bin_upper", "count", "mean_confidence", "accuracy", "lower", "upper")


def reliability_summary(label: str, bins: pd.DataFrame) -> str:
    """One run's pooled bins in words: how many hold images, and the largest overconfident and
    underconfident gap, where."""
    filled = bins[bins["count"] > 0]
    gap = filled["mean_confidence"] - filled["accuracy"]
    parts = [f"{label}: {len(filled)} of {len(bins)} bins hold images"]
    for word, side in (("overconfident", gap > 0), ("underconfident", gap < 0)):
        if side.any():
            worst = gap[side].abs().idxmax()
            b = filled.loc[worst]
            parts.append(f"{word} in {int(side.sum())}, most by {abs(gap[worst]):.3f} at confidence "
                         f"{b['bin_lower']:.2f}–{b['bin_upper']:.2f} ({_count(int(b['count']), 'prediction')})")
    return ", ".join(parts)


@literal_text
def figure_reliability(reliability: pd.DataFrame, predictions: pd.DataFrame, *, name: str) -> Figure:
    """A reliability diagram per run (pooled over seeds) with its smooth curve, and every run
    overlaid in the last panel."""
    runs = by_variant(reliability)
    fig, axes = plots.grid(len(runs) + 1, 3)
    pooled = {label: pooled_reliability(bins) for _, label, bins in runs}
    data = []
    for (run, label, _), ax in zip(runs, axes):
        smooth = smooth_curve(rows_of(predictions, run))
        plots.reliability_diagram(pooled[label], ax, label, smooth)
        data.append(pooled[label][list(RELIABILITY_COLUMNS)].assign(variant=label, series="bin"))
        data.append(pd.DataFrame({"variant": label, "series": "smooth (relplot)", "mean_confidence": smooth["mesh"],
                                  "accuracy": smooth["mu"]}))
    plots.legend_below(fig, *plots.reliability_handles(smooth=True), ncol=3)
    plots.reliability_overlay(pooled, axes[len(runs)])
    alt = ("Reliability diagrams, accuracy against confidence in 15 equal-width bins pooled over seeds, with "
           "relplot's smooth curve: " + "; ".join(reliability_summary(label, bins) for label, bins in pooled.items())
           + ". The last panel overlays every run.")
    frame = pd.concat(data, ignore_index=True)[["variant", "series", *RELIABILITY_COLUMNS]]
    frame["bin"], frame["count"] = frame["bin"].astype("Int64"), frame["count"].astype("Int64")
    return _figure(fig, name, alt, frame)


@literal_text
def figure_sample(predictions: pd.DataFrame, class_names: list[str], *, name: str) -> Figure:
    """The softmax of test image 0 for the first and the last run (first seed)."""
    pair = sample_pair(predictions)
    fig, axes = plots.grid(len(pair), 2, size=4)
    data, text = [], []
    for item, ax in zip(pair, axes):
        probs, true = item["probs"], item["label"]
        title = f"{item['label_text']} (seed {item['seed']}), max p = {probs.max():.2f}"
        plots.sample_probabilities(probs, true, class_names, ax, title)
        names = [class_names[c] if c < len(class_names) else str(c) for c in range(len(probs))]
        data.append(pd.DataFrame({"variant": item["label_text"], "seed": item["seed"], "index": 0, "class": names,
                                  "probability": probs, "true_class": np.arange(len(probs)) == true}))
        top = int(np.argmax(probs))
        text.append(f"{item['label_text']} gives the true class “{names[true]}” {probs[true]:.2f}"
                    + ("" if top == true else f", most to “{names[top]}” ({probs[top]:.2f})"))
    plots.legend_below(fig, [plots.Patch(color=plots.TRUE_CLASS), plots.Patch(color=plots.OTHER_CLASS)],
                       ["true class", "other classes"])
    alt = (f"Softmax output for test image 0 (seed {pair[0]['seed'] if pair else 0}), over {len(class_names)} classes: "
           + "; ".join(text) + ".")
    return _figure(fig, name, alt, pd.concat(data, ignore_index=True))


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
def figure_selective(predictions: pd.DataFrame, alternative: str, *, name: str) -> Figure:
    """Risk-coverage curves per run, rejecting by the max probability and by `alternative`."""
    fig, axes = plots.grid(2, 2, size=4.5)
    scores = {"msp": "max probability (MSP)", alternative: alternative.replace("_", " ")}
    data, text = [], []
    for ax, (score, words) in zip(axes, scores.items()):
        curves = coverage_curves(predictions, score)
        plots.risk_coverage(curves, ax, f"rejecting by {words}")
        data += [curve.assign(score=score, variant=label) for label, curve in curves.items()]
        at = {label: (np.interp(0.5, c["coverage"], c["risk"]), c["risk"].iloc[-1]) for label, c in curves.items()}
        text.append(f"by {words}: " + "; ".join(f"{label} {half:.3f} (all accepted: {full:.3f})"
                                                for label, (half, full) in at.items()))
    plots.legend_below(fig, ax=axes[0])
    alt = ("Risk (error rate among the accepted test images) against coverage, mean over seeds; the risk at 50 % "
           "coverage, rejecting " + ". Rejecting ".join(text) + ".")
    return _figure(fig, name, alt, pd.concat(data, ignore_index=True)[["score", "variant", "coverage", "risk"]])


OOD_FIGURE_SCORES = {"msp": "MSP", "energy": "negative energy"}


@literal_text
def figure_ood(predictions: pd.DataFrame, ood_predictions: pd.DataFrame, ood_set: str, *, name: str) -> Figure:
    """Histograms of the MSP and of the negative energy (the log-sum-exp of the logits, which
    `rejection_scores` calls "energy") on the test set and on the OOD set, for the first and the
    last run, pooled over seeds."""
    runs = first_and_last(predictions)
    fig, axes = plots.grid(2 * len(runs), 2, size=4)
    data, text = [], []
    for row, (run, label, rows) in enumerate(runs):
        id_scores = rejection_scores(run_arrays(rows)[0])
        ood_logits = rows_of(ood_predictions, run)[prob_columns(ood_predictions, "logit_")]
        ood_scores = rejection_scores(ood_logits.to_numpy())
        medians = []
        for col, (score, short) in enumerate(OOD_FIGURE_SCORES.items()):
            plots.score_histograms(id_scores[score], ood_scores[score], axes[2 * row + col],
                                   f"{label}\n{short}, test set against {ood_set}", plots.SCORE_LABELS[score],
                                   out_label=f"OOD set ({ood_set})")
            edges = plots.score_edges(id_scores[score], ood_scores[score])
            for part, values in (("test", id_scores[score]), (f"OOD ({ood_set})", ood_scores[score])):
                density, _ = np.histogram(values, bins=edges, density=True)
                data.append(pd.DataFrame({"variant": label, "score": score, "set": part, "bin_lower": edges[:-1],
                                          "bin_upper": edges[1:], "density": density}))
            medians.append(f"{short} {np.median(id_scores[score]):.2f} against {np.median(ood_scores[score]):.2f}")
        text.append(f"{label} {', '.join(medians)}")
    plots.legend_below(fig, ax=axes[0])
    alt = (f"Histograms of two scores on the test set and on the OOD set ({ood_set}), the max softmax probability "
           "(MSP) and the negative energy (log-sum-exp of the logits); medians, test set against OOD set: "
           + "; ".join(text) + ".")
    return _figure(fig, name, alt, pd.concat(data, ignore_index=True))


SHIFT_PANELS = (("accuracy", "test accuracy"), ("ece", "ECE (lower is better)"),
                ("ece_ts", "ECE after TS (T fitted on clean images)"))


def per_shift_means(shifted: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{run label: one row per (shift, severity), each metric averaged over seeds}."""
    metrics = [m for m, _ in SHIFT_PANELS]
    return {label: rows.groupby(["shift", "severity"], as_index=False)[metrics].mean()
            for _, label, rows in by_variant(shifted)}


@literal_text
def figure_shift_severity(shifted: pd.DataFrame, *, name: str) -> Figure:
    """Accuracy, ECE and ECE after clean-fitted temperature scaling against shift severity (Ovadia
    et al. 2019, Fig. 2): per run and severity a box over the shifts of its mean over seeds."""
    means = per_shift_means(shifted)
    styles = dict(zip(means, plots.palette(len(means))))
    fig, axes = plots.grid(3, 3, size=4.2)
    for ax, (metric, ylabel) in zip(axes, SHIFT_PANELS):
        plots.severity_boxes(means, metric, ax, ylabel, styles)
    plots.legend_below(fig, ax=axes[0])
    text = []
    for label, df in means.items():
        med = df.groupby("severity")[["accuracy", "ece", "ece_ts"]].median()
        ends = [s for s in (0, 5) if s in med.index]
        text.append(f"{label}: " + ", ".join(
            f"{'clean' if s == 0 else 'severity 5'} accuracy {_num(med.loc[s, 'accuracy'])}, ECE {_num(med.loc[s, 'ece'])}"
            f" ({_num(med.loc[s, 'ece_ts'])} after temperature scaling)" for s in ends))
    alt = ("Accuracy, ECE and ECE after temperature scaling (fitted on clean held-out images) against shift severity; "
           "a box per method and severity over the shifts, each the mean over seeds; medians over the shifts: "
           + "; ".join(text) + ".")
    data = pd.concat([df.assign(variant=label) for label, df in means.items()], ignore_index=True)
    return _figure(fig, name, alt, data[["variant", "shift", "severity", *(m for m, _ in SHIFT_PANELS)]])


def shift_differences(shifted: pd.DataFrame, metric: str = "ece") -> pd.DataFrame:
    """Rows: shifts (the suite's order), columns: every run but cross-entropy; each cell the mean
    over severities 1..5 and seeds of the run's `metric` minus cross-entropy's on the same seed,
    shift and severity. Empty without a cross-entropy run."""
    from lsbench.shifts import suite_order

    keys = ["seed", "shift", "severity"]
    shifted = shifted[shifted["severity"] > 0]
    base = shifted[shifted["method"] == CROSS_ENTROPY][[*keys, metric]]
    if base.empty:
        return pd.DataFrame()
    columns = {}
    for run, label, rows in by_variant(shifted):
        if run[0] == CROSS_ENTROPY:
            continue
        paired = rows[[*keys, metric]].merge(base, on=keys, suffixes=("", "_base"))
        columns[label] = (paired[metric] - paired[f"{metric}_base"]).groupby(paired["shift"]).mean()
    table = pd.DataFrame(columns)
    order = suite_order(table.index)
    return table.loc[order].rename(index=lambda name: name.replace("_", " "))


@literal_text
def figure_shift_heatmap(shifted: pd.DataFrame, *, name: str) -> Figure | None:
    """Per shift and run, ECE minus cross-entropy's ECE (mean over severities 1..5 and seeds,
    paired by seed): where a method's calibration under shift beats cross-entropy's. None
    without a run to compare."""
    table = shift_differences(shifted)
    if table.empty or table.shape[1] == 0:
        return None
    fig, ax = plots.plt.subplots(figsize=(1.4 * table.shape[1] + 3.5, 0.32 * table.shape[0] + 1.8),
                                 layout="constrained")
    plots.difference_heatmap(table, ax, "ECE − ECE of cross-entropy (severities 1–5)")
    lower = {c: [s for s in table.index if table.loc[s, c] < 0] for c in table.columns}
    alt = ("Heat map of ECE minus cross-entropy's ECE per shift (rows) and method (columns), mean over severities 1 "
           "to 5 and seeds; blue cells lower. " + "; ".join(
               f"{c}: lower under {len(v)} of {len(table)} shifts" + (f", most under {table[c].idxmin()} "
                                                                    f"({_signed(table[c].min())})" if v else "")
               for c, v in lower.items()) + ".")
    data = table.reset_index(names="shift").melt(id_vars="shift", var_name="variant", value_name="ece_difference")
    return _figure(fig, name, alt, data)


@literal_text
def figure_shift_gallery(gallery: pd.DataFrame, dataset: str, *, name: str) -> Figure:
    """The first image of the shifted test subset, unshifted and under every shift at severities 1..5."""
    from lsbench.shifts import suite_order

    def image(row: pd.Series) -> np.ndarray:
        return np.frombuffer(row["pixels"], dtype=np.uint8).reshape(int(row["channels"]), int(row["height"]),
                                                                       int(row["width"]))

    clean = gallery[gallery["severity"] == 0]
    names = suite_order(gallery["shift"])
    rows, labels = [], []
    for shift in names:
        part = gallery[gallery["shift"] == shift].set_index("severity")
        rows.append([image(clean.iloc[0]) if len(clean) else None,
                     *(image(part.loc[s]) if s in part.index else None for s in range(1, 6))])
        labels.append(shift.replace("_", " "))
    fig = plots.image_gallery(rows, labels, ["clean", *(f"severity {s}" for s in range(1, 6))])
    levels = gallery[gallery["severity"] > 0][["shift", "severity", "level", "unit", "source"]]
    alt = (f"One {dataset} test image, unshifted and under {len(names)} shifts at severities 1 to 5 (rows: "
           + ", ".join(labels) + ").")
    return _figure(fig, name, alt, levels.reset_index(drop=True))
