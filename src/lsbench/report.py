"""The HTML report, rendered from the published parquet tables alone (no training state, no torch).

The page opens with the findings (sentences generated from the tables, `lsbench.findings`), the
cross-study table, selective prediction and out-of-distribution detection for every study, then
one section per study (dataset x model) with its figures and statistics, then provenance. Section
data comes from small pure functions; the template receives it through one render() call. Images
are embedded as base64 PNGs so the file is self-contained and makes no requests. The same tables
give the same bytes: nothing here is random or reads the clock.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd

from lsbench import plots
from lsbench.config import format_epsilon
from lsbench.findings import json_ready, study_findings
from lsbench.io import KEY, OOD_SCORES, write_text
from lsbench.metrics import rejection_scores, risk_coverage_curve, top_label
from lsbench.stats import (WILCOXON_MIN_N, Interval, PairedTest, final_epoch_intervals, paired_against,
                           t_interval, wilson_interval)
from lsbench.studies import Study, final_epoch, split_studies, study_slug
from lsbench.tables import Tables, read_tables

ACCURACY_METRICS = ("accuracy", "test_nll", "brier", "entropy")
CALIBRATION_METRICS = ("ece", "smece", "ece_over", "ece_under", "ece_adaptive", "ece_classwise", "mce",
                       "mean_confidence", "overconfidence")
SUMMARY_METRICS = ACCURACY_METRICS + CALIBRATION_METRICS
CURVE_METRICS = ("accuracy", "test_nll", "ece", "overconfidence")
STATS_METRICS = ("accuracy", "test_nll", "ece", "smece", "overconfidence", "aurc")
# Selective prediction: AURC / E-AURC per rejection score (the *_ts columns: after temperature scaling).
SELECTIVE_METRICS = ("aurc", "eaurc", "aurc_ts", "aurc_max_logit", "aurc_margin", "failure_auroc")
ALTERNATIVE_SCORES = {"aurc_max_logit": "max_logit", "aurc_margin": "margin"}
COVERAGES = np.linspace(0.01, 1.0, 100)
# The <section id>s of one study, after its own "study-<slug>", in page order.
STUDY_SECTIONS = ("headline", "summary", "statistics", "vs-epsilon", "curves", "temperature", "reliability",
                  "confidence", "sample")
# Versions shown in the provenance section, as recorded per run in environment.parquet.
SOFTWARE = ("python", "torch", "torch_cuda", "torchvision", "numpy", "pandas", "pyarrow", "lsbench")
TS_METRICS = ("ece", "ece_ts", "test_nll", "nll_ts", "mean_confidence", "mean_confidence_ts", "temperature")
BOOTSTRAP_NOTE = ("95 % percentile bootstrap over test images (scipy.stats.bootstrap, seed 0; "
                  "1000 resamples for ECE, 200 for smECE)")


def section_ids(tables: Tables) -> tuple[str, ...]:
    """Every <section id> of the report on `tables`, in page order (a study whose runs all
    diverged has no subsections)."""
    ids = ["findings", "studies", "selective", "ood",
           *(["diverged"] if final_epoch(tables.metrics)["diverged"].any() else [])]
    for study in split_studies(tables):
        ids.append(f"study-{study.slug}")
        if not study.converged().empty:
            ids += [f"{study.slug}-{s}" for s in STUDY_SECTIONS]
    return (*ids, "provenance")


def summary_rows(converged: pd.DataFrame, metrics: tuple[str, ...] = SUMMARY_METRICS) -> list[dict]:
    """Per epsilon: n seeds and mean/std of each metric, over the converged runs given."""
    rows = []
    for eps, group in converged.groupby("epsilon"):
        cells = {m: (group[m].mean(), group[m].std(ddof=1) if len(group) > 1 else float("nan"))
                 for m in metrics}
        rows.append({"epsilon": eps, "n": len(group), "cells": cells})
    return rows


def interval_rows(df: pd.DataFrame, metrics: tuple[str, ...]) -> list[dict]:
    """Per epsilon: a t-interval over seeds for each metric."""
    return [{"epsilon": eps, "n": len(group), "cells": {m: t_interval(group[m].to_numpy(float)) for m in metrics}}
            for eps, group in df.groupby("epsilon")]


def bootstrap_rows(converged: pd.DataFrame) -> list[dict]:
    """Per epsilon: ECE and smECE with their bootstrap bounds, each averaged over seeds, as text."""
    rows = []
    for eps, g in converged.groupby("epsilon"):
        cells = {m: f"{format_number(g[m].mean())} [{format_number(g[f'{m}_low'].mean())}, "
                    f"{format_number(g[f'{m}_high'].mean())}]" for m in ("ece", "smece")}
        rows.append({"epsilon": eps, "n": len(g), **cells})
    return rows


def temperature_rows(converged: pd.DataFrame) -> list[dict]:
    """Final-epoch calibration before and after temperature scaling, per epsilon.

    The eps=0 row after scaling is "temperature scaling alone"; other rows are "eps alone"
    (before) and "eps + temperature scaling" (after). Empty when no temperature was fitted.
    """
    fitted = converged.dropna(subset=["temperature"])
    return summary_rows(fitted, TS_METRICS) if not fitted.empty else []


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
    plots.metric_vs_epsilon(final, ["ece", "smece", "overconfidence"], axes[1], "calibration")
    axes[1].axhline(0, color="black", linewidth=0.8)
    return _img(plots.png_bytes(fig))


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


def figure_reliability(reliability: pd.DataFrame, predictions: pd.DataFrame, epsilons: list[float]) -> str:
    fig, axes = plots.grid(len(epsilons) + 1, 3)
    for eps, ax in zip(epsilons, axes):
        plots.reliability_diagram(pooled_reliability(reliability, eps), ax, f"ε = {format_epsilon(eps)}",
                                  smooth_curve(predictions[predictions["epsilon"] == eps]))
    axes[0].legend(loc="upper left", fontsize=7)
    plots.reliability_overlay({eps: pooled_reliability(reliability, eps) for eps in epsilons}, axes[len(epsilons)])
    return _img(plots.png_bytes(fig))


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


def figure_selective(predictions: pd.DataFrame, alternative: str) -> str:
    fig, axes = plots.grid(2, 2, size=4.5)
    plots.risk_coverage(coverage_curves(predictions, "msp"), axes[0], "rejecting by max probability (MSP)")
    plots.risk_coverage(coverage_curves(predictions, alternative), axes[1],
                        f"rejecting by {alternative.replace('_', ' ')}")
    return _img(plots.png_bytes(fig))


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


def statistics(converged: pd.DataFrame) -> dict:
    """Intervals per epsilon and paired tests against the smallest epsilon, for the template."""
    baseline = float(converged["epsilon"].min())
    return {"metrics": STATS_METRICS, "baseline": baseline,
            "intervals": final_epoch_intervals(converged, STATS_METRICS),
            "paired": paired_against(converged, STATS_METRICS, baseline),
            "wilcoxon_min_n": WILCOXON_MIN_N}


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
    runs = study.converged_runs()
    epsilons = sorted(converged["epsilon"].unique())
    predictions = study.predictions.merge(runs, on=KEY)
    figures = {
        "headline": figure_headline(converged, stats["intervals"]),
        "confidence": figure_confidence(predictions, epsilons),
        "vs_epsilon": figure_vs_epsilon(converged),
        "curves": figure_curves(study.metrics.merge(runs, on=KEY)),
        "reliability": figure_reliability(study.reliability.merge(runs, on=KEY), predictions, epsilons),
        "sample": figure_sample(predictions, study.class_names),
    }
    return {**context, "figures": figures, "stats": stats, "summary": summary_rows(converged),
            "bootstrap": bootstrap_rows(converged),
            "temperature": temperature_rows(converged)}


def selective_context(study: Study) -> dict | None:
    converged = study.converged()
    if converged.empty:
        return None
    means = {col: converged[col].mean() for col in ALTERNATIVE_SCORES}
    alternative = ALTERNATIVE_SCORES[min(means, key=lambda c: (np.nan_to_num(means[c], nan=np.inf), c))]
    predictions = study.predictions.merge(study.converged_runs(), on=KEY)
    return {"slug": study.slug, "title": study.title, "alternative": alternative,
            "rows": interval_rows(converged, SELECTIVE_METRICS), "figure": figure_selective(predictions, alternative)}


def ood_context(study: Study) -> dict | None:
    runs = study.converged_runs()
    ood = study.ood.merge(runs, on=KEY)
    if ood.empty:
        return None
    rows = []
    for eps, group in ood.groupby("epsilon"):
        cells = {}
        for score in OOD_SCORES:
            part = group[group["score"] == score]
            cells[score] = {"auroc": t_interval(part["auroc"].to_numpy()), "fpr95": t_interval(part["fpr95"].to_numpy())}
        rows.append({"epsilon": eps, "n": group["seed"].nunique(), "cells": cells})
    predictions = study.predictions.merge(runs, on=KEY)
    return {"slug": study.slug, "title": study.title, "ood_set": study.ood_set, "rows": rows,
            "n_ood": int(study.ood_predictions.groupby(KEY).size().max()),
            "figure": figure_ood(predictions, study.ood_predictions.merge(runs, on=KEY), study.ood_set)}


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
    ts = base.dropna(subset=["temperature"])
    best = float(converged.groupby("epsilon")["ece"].mean().idxmin())
    return {**row, "baseline": baseline, "accuracy": t_interval(base["accuracy"].to_numpy()),
            "ece": t_interval(base["ece"].to_numpy()),
            "ece_ts": t_interval(ts["ece_ts"].to_numpy()) if not ts.empty else None,
            "temperature": t_interval(ts["temperature"].to_numpy()) if not ts.empty else None,
            "best_epsilon": best, "best_ece": t_interval(converged.loc[converged["epsilon"] == best, "ece"].to_numpy())}


def diverged_runs(tables: Tables) -> list[dict]:
    final = final_epoch(tables.metrics)
    return final.loc[final["diverged"], [*KEY, "epoch", "divergence"]].to_dict("records")


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


def findings(tables: Tables) -> list[dict]:
    """Every study's findings (see lsbench.findings), as JSON-ready records."""
    return json_ready([record for study in split_studies(tables) for record in study_findings(study)])


def render(tables: Tables, title: str = "lsbench: label smoothing vs overconfidence",
           found: list[dict] | None = None) -> str:
    studies = split_studies(tables)
    final = final_epoch(tables.metrics)
    found = findings(tables) if found is None else found
    return environment().get_template("index.html.j2").render(
        title=title,
        findings=[(s.title, [f["text"].split(": ", 1)[1] for f in found
                             if (f["dataset"], f["model"]) == (s.dataset, s.model)]) for s in studies],
        summary_tables={"Accuracy and loss": ACCURACY_METRICS, "Calibration": CALIBRATION_METRICS},
        ts_metrics=TS_METRICS, selective_metrics=SELECTIVE_METRICS, ood_scores=OOD_SCORES,
        bootstrap_note=BOOTSTRAP_NOTE,
        study_rows=[study_row(s) for s in studies],
        selective=[c for c in map(selective_context, studies) if c is not None],
        ood=[c for c in map(ood_context, studies) if c is not None],
        studies=[study_context(s) for s in studies],
        datasets=sorted(tables.runs["dataset"].unique()),
        models=sorted(tables.runs["model"].unique()),
        seeds=sorted(int(s) for s in final["seed"].unique()),
        epsilons=sorted(float(e) for e in final["epsilon"].unique()),
        all_diverged=bool(final["diverged"].all()),
        diverged=diverged_runs(tables),
        provenance=provenance_section(tables),
    )


def findings_path(report_path: Path) -> Path:
    """Where `lsbench report DIR -o FILE` writes the findings: findings.json next to FILE."""
    return Path(report_path).with_name("findings.json")


def write_report(results_dir: Path, out_path: Path) -> None:
    """Render results_dir's tables to out_path and the findings to findings.json beside it
    (TablesError for broken tables; IsADirectoryError when out_path is a directory)."""
    out_path = Path(out_path)
    if out_path.is_dir():
        raise IsADirectoryError(21, "is a directory; give the HTML file to write, e.g. "
                                f"{out_path / 'index.html'}", str(out_path))
    tables = read_tables(results_dir)
    found = findings(tables)
    write_text(render(tables, found=found), out_path)
    write_text(json.dumps(found, indent=1, ensure_ascii=False) + "\n", findings_path(out_path))


__all__ = ["Tables", "read_tables", "render", "section_ids", "study_slug", "write_report"]
