"""The HTML report, rendered from the published parquet tables alone (no training state, no torch).

The page opens with the findings (sentences generated from the tables, `lsbench.findings`), the
cross-study table, selective prediction and out-of-distribution detection for every study, then
one section per study (dataset x model) with its figures and statistics, then provenance. Section
data comes from small pure functions; the template receives it through one render() call. Images
are embedded as base64 PNGs so the file is self-contained and makes no requests. The same tables
give the same bytes: nothing here is random or reads the clock.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import jinja2
import markupsafe
import numpy as np
import pandas as pd

from lsbench.config import ConfigError
from lsbench.figures import (FIGURES_DIR, Figure, figure_confidence, figure_curves, figure_headline, figure_methods,
                             figure_ood, figure_reliability, figure_sample, figure_selective, figure_shift_gallery,
                             figure_shift_heatmap, figure_shift_severity, figure_vs_param, figure_files)
from lsbench.findings import (ALPHA, BASELINE, CORRECTION, LAST_EPOCHS, MARGINS, SHIFT_FAMILY, json_ready, rank_lowest,
                              paired, select, setting_label, study_findings)
from lsbench.io import (KEY, OOD_SCORES, OPTIONAL_PUBLISHED, PUBLISHED, atomic_write_bytes, overwritten_input,
                        same_file_note, write_text)
from lsbench.methods import METHODS, variant_label
from lsbench.metrics import OOD_METRICS
from lsbench.stats import (WILCOXON_MIN_N, Interval, PairedTest, final_epoch_intervals, metric_interval, paired_against,
                           rows_of)
from lsbench.studies import Study, by_variant, final_epoch, split_studies, study_slug
from lsbench.tables import Tables, read_tables

ACCURACY_METRICS = ("accuracy", "test_nll", "brier", "entropy")
CALIBRATION_METRICS = ("ece", "smece", "ece_over", "ece_under", "ece_adaptive", "ece_classwise", "mce",
                       "mean_confidence", "overconfidence")
SUMMARY_METRICS = ACCURACY_METRICS + CALIBRATION_METRICS
STATS_METRICS = ("accuracy", "test_nll", "ece", "smece", "overconfidence", "aurc")
# Selective prediction: AURC / E-AURC per rejection score (the *_ts columns: after temperature scaling).
SELECTIVE_METRICS = ("aurc", "eaurc", "aurc_ts", "aurc_max_logit", "aurc_margin", "failure_auroc")
ALTERNATIVE_SCORES = {"aurc_max_logit": "max_logit", "aurc_margin": "margin"}
# The <section id>s of one study, after its own "study-<slug>", in page order.
STUDY_SECTIONS = ("methods", "headline", "summary", "statistics", "vs-param", "curves", "temperature",
                  "reliability", "confidence", "sample")
# The methods table (Mukhoti et al. 2020, Table 1): per method at its chosen setting.
METHOD_METRICS = ("accuracy", "ece", "ece_ts", "smece", "test_nll", "aurc", "ood_auroc")
OOD_SCORE_NAMES = {"msp": "MSP", "max_logit": "max logit", "energy": "negative energy (log-sum-exp)"}
# Versions shown in the provenance section, as recorded per run in environment.parquet.
SOFTWARE = ("python", "torch", "torch_cuda", "torchvision", "numpy", "pandas", "pyarrow", "lsbench")
TS_METRICS = ("ece", "ece_ts", "test_nll", "nll_ts", "mean_confidence", "mean_confidence_ts", "temperature")
BOOTSTRAP_NOTE = ("95 % percentile bootstrap over test images (scipy.stats.bootstrap, seed 0; "
                  "1000 resamples for ECE, 100 for smECE)")


def section_ids(tables: Tables) -> tuple[str, ...]:
    """Every <section id> of the report on `tables`, in page order (a study whose runs all
    diverged has no subsections)."""
    ids = ["answer", "findings", "studies", "selective", "ood", "shift",
           *(["diverged"] if final_epoch(tables.metrics)["diverged"].any() else [])]
    for study in split_studies(tables):
        ids.append(f"study-{study.slug}")
        if not study.converged().empty:
            ids += [f"{study.slug}-{s}" for s in STUDY_SECTIONS]
    return (*ids, "methods", "provenance")


def summary_rows(converged: pd.DataFrame, metrics: tuple[str, ...] = SUMMARY_METRICS) -> list[dict]:
    """Per run (method, param; `variant` its label): n seeds and mean/std of each metric, over the
    converged runs given."""
    rows = []
    for run, label, group in by_variant(converged):
        cells = {m: (group[m].mean(), group[m].std(ddof=1) if len(group) > 1 else float("nan"))
                 for m in metrics}
        rows.append({"run": run, "variant": label, "n": len(group), "cells": cells})
    return rows


def interval_rows(df: pd.DataFrame, metrics: tuple[str, ...]) -> list[dict]:
    """Per run: a t-interval over seeds for each metric."""
    return [{"run": run, "variant": label, "n": len(group),
             "cells": {m: metric_interval(group[m].to_numpy(float), m) for m in metrics}}
            for run, label, group in by_variant(df)]


def bootstrap_rows(converged: pd.DataFrame) -> list[dict]:
    """Per run: ECE and smECE with their bootstrap bounds, each averaged over seeds, as text."""
    rows = []
    for _, label, g in by_variant(converged):
        cells = {m: f"{format_number(g[m].mean())} [{format_number(g[f'{m}_low'].mean())}, "
                    f"{format_number(g[f'{m}_high'].mean())}]" for m in ("ece", "smece")}
        rows.append({"variant": label, "n": len(g), **cells})
    return rows


def temperature_rows(converged: pd.DataFrame) -> list[dict]:
    """Final-epoch calibration before and after temperature scaling, per run.

    The cross-entropy row after scaling is "temperature scaling alone"; other rows are "the method
    alone" (before) and "the method + temperature scaling" (after). Empty when no temperature was
    fitted.
    """
    fitted = converged.dropna(subset=["temperature"])
    rows = summary_rows(fitted, TS_METRICS) if not fitted.empty else []
    for row in rows:
        row["at_bound"] = int(rows_of(fitted, row["run"])["temperature_at_bound"].astype(bool).sum())
    return rows


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
    # Tables before 0.3 lack the capability: shown as not recorded, not guessed.
    env["cpu_capability"] = env["cpu_capability"] if "cpu_capability" in env else "not recorded"
    forced = env["cpu_capability_forced"] if "cpu_capability_forced" in env else pd.Series("", index=env.index)
    env["capability"] = env["cpu_capability"] + np.where(forced.fillna("") != "",
                                                         " (ATEN_CPU_CAPABILITY=" + forced.fillna("") + ")", "")
    hardware = []
    for (cpu, capability, device, threads), group in env.groupby(["cpu_model", "capability", "device_name",
                                                                  "torch_threads"]):
        hardware.append({"cpu_model": cpu, "capability": capability, "device": device, "threads": int(threads),
                         "runs": len(group), "train": format_duration(group["epoch_seconds"].sum())})
    workflow = tables.provenance.iloc[0]
    data = tables.runs.merge(env[[*KEY, "data_source"]], on=KEY) if "data_source" in env else tables.runs
    return {
        "config_yaml": workflow["config_yaml"] or "(not recorded: collect was run without --config-json)",
        "git_commit": workflow["git_commit"],
        "software": [("snakemake", str(workflow["snakemake"]))]
        + [(n, distinct(env[n])) for n in SOFTWARE if n in env],
        "data": [(f"{dataset} {name}", distinct(group[column]))
                 for dataset, group in data.groupby("dataset")
                 for name, column in (("sha256", "data_sha256"), ("source", "data_source")) if column in group]
        # Every dataset the runs read, OOD sets included, as prepared (tables before 0.3 lack it).
        + [(f"{dataset} source (prepared)", source)
           for dataset, source in json.loads(workflow.get("data_sources") or "{}").items()],
        "hardware": hardware,
        "runs": len(env),
        "resumed": int((env["resumed_after_epoch"] > 0).sum()),
        "train_time": format_duration(env["epoch_seconds"].sum()),
        "job_time": format_duration(env["job_seconds"].sum()),
        "figure_sample": figure_sample_note(tables),
    }


def figure_sample_note(tables: Tables) -> str:
    """What the per-image figures show of a large grid's predictions ("" when all of them):
    `lsbench.tables.read_tables` keeps a sample of each run's images for them."""
    shown, total = len(tables.predictions), int(tables.runs["n_test"].sum())
    if shown >= total:
        return ""
    return (f"The per-image figures (confidence histograms, smooth reliability curves, coverage curves, OOD score "
            f"histograms) show a sample of each run's images, evenly spaced by index: {shown:,} of its {total:,} "
            "test predictions (and of the OOD images likewise). Every number in a table or finding uses all of them.")


def statistics(converged: pd.DataFrame, baseline: tuple[str, float] = BASELINE) -> dict:
    """Intervals per run and paired tests against the baseline run, for the template (keyed by
    (method, param); `labels` names them)."""
    intervals = final_epoch_intervals(converged, STATS_METRICS)
    return {"metrics": STATS_METRICS, "baseline": variant_label(*baseline),
            "intervals": intervals, "paired": paired_against(converged, STATS_METRICS, baseline),
            "labels": {run: variant_label(*run) for run in intervals}, "wilcoxon_min_n": WILCOXON_MIN_N}


def _with_ood_auroc(study: Study, converged: pd.DataFrame) -> pd.DataFrame:
    """The converged final rows with `ood_auroc` (MSP; NaN without an OOD set)."""
    ood = study.ood[study.ood["score"] == "msp"][[*KEY, "auroc"]].rename(columns={"auroc": "ood_auroc"})
    return converged.merge(ood, on=KEY, how="left") if not ood.empty else converged.assign(ood_auroc=np.nan)


def methods_context(study: Study, converged: pd.DataFrame, found: list[dict] | None = None) -> dict | None:
    """The methods table: cross-entropy, cross-entropy + temperature scaling, and every method at
    its chosen setting (`lsbench.findings.select`), each metric mean [95 % t-interval] with a paired
    test against cross-entropy; and the chosen runs for the headline figure. None without a
    cross-entropy run."""
    df = _with_ood_auroc(study, converged)
    base = rows_of(df, BASELINE)
    if base.empty:
        return None
    chosen = select(df)
    # "underconfident" as the findings decide it (Holm), not by a per-comparison interval.
    found = json_ready(study_findings(study)) if found is None else found
    under = {(f["method"], float(f["param"])) for f in found if f["id"] == "miscalibration_direction"
             and (f["dataset"], f["model"]) == (study.dataset, study.model) and f["direction"] == "under"}

    def row(name: str, run: tuple[str, float], selection: str, columns: dict[str, str | None] | None = None,
            optimum: str = "") -> dict:
        # `columns`: which column stands for each metric (temperature scaling's row: the *_ts
        # ones; None where scaling leaves no number of its own); tested against cross-entropy's.
        own = columns is None
        columns = columns or {m: m for m in METHOD_METRICS}
        rows = rows_of(df, run)
        cells, tests = {}, {}
        for m in METHOD_METRICS:
            column = columns.get(m)
            cells[m] = metric_interval(rows[column].to_numpy(float), column) if column else None
            same = column == m and run == BASELINE
            tests[m] = None if not column or same else paired(df, run, column, BASELINE, baseline_column=m)
        at_bound = int(rows["temperature_at_bound"].astype(bool).sum())
        return {"name": name, "selection": selection, "optimum": optimum, "cells": cells, "tests": tests,
                "at_bound": at_bound, "n": len(rows),
                "underconfident": own and run in under}

    rows = [row("cross-entropy", BASELINE, "the baseline", optimum="–")]
    if base["ece_ts"].notna().any():
        rows.append(row("cross-entropy + temperature scaling", BASELINE, "T fitted on held-out images",
                        {"accuracy": None, "ece": "ece_ts", "ece_ts": "ece_ts", "test_nll": "nll_ts",
                         "aurc": "aurc_ts"}, optimum="–"))
    for s in chosen.values():
        optimum = ("–" if s.candidates == 1 else "the same" if s.test_optimum == s.chosen
                   else setting_label(s.method, s.test_optimum))
        rows.append(row(s.label, s.chosen, s.rule_short, optimum=optimum))
    ranking = rank_lowest(df, [BASELINE, *(s.chosen for s in chosen.values())], "ece")
    return {"rows": rows, "metrics": METHOD_METRICS, "best": ranking_label(ranking),
            "has_ood": bool(df["ood_auroc"].notna().any()),
            "test_set_choices": [s.method for s in chosen.values() if s.test_set_choice],
            "chosen": list(dict.fromkeys([BASELINE, *(s.chosen for s in chosen.values())])),
            "full": interval_rows(df, METHOD_METRICS)}


def study_context(study: Study, found: list[dict] | None = None) -> dict:
    """Everything one study's sections show; `figures` ({key: lsbench.figures.Figure}) is None when
    every run diverged; `figures_list`: those figures in page order (empty then), as the
    selective and OOD contexts' `figures_list`, for writing their files beside the report."""
    final, converged = study.final(), study.converged()
    context = {"slug": study.slug, "title": study.title, "dataset": study.dataset, "model": study.model,
               "seeds": sorted(int(s) for s in final["seed"].unique()),
               "variants": [variant_label(*run) for run in study.variants],
               "epochs": int(study.metrics["epoch"].max()), "n_runs": len(final),
               "n_diverged": int(final["diverged"].sum())}
    if converged.empty:
        return {**context, "figures": None, "figures_list": []}
    stats = statistics(converged)
    runs = study.converged_runs()
    predictions = study.predictions.merge(runs, on=KEY)
    methods = methods_context(study, converged, found)
    slug = study.slug
    figures = {
        "methods": figure_methods(converged, methods["chosen"], name=f"{slug}-methods") if methods else None,
        "headline": figure_headline(converged, stats["intervals"], name=f"{slug}-headline"),
        "confidence": figure_confidence(predictions, name=f"{slug}-confidence"),
        "vs_param": figure_vs_param(converged, name=f"{slug}-vs-param"),
        "curves": figure_curves(study.metrics.merge(runs, on=KEY), name=f"{slug}-curves"),
        "reliability": figure_reliability(study.reliability.merge(runs, on=KEY), predictions,
                                          name=f"{slug}-reliability"),
        "sample": figure_sample(predictions, study.class_names, name=f"{slug}-sample"),
    }
    return {**context, "figures": figures, "figures_list": [f for f in figures.values() if f is not None],
            "stats": stats, "methods": methods, "summary": summary_rows(converged),
            "bootstrap": bootstrap_rows(converged),
            "temperature": temperature_rows(converged)}


def selective_context(study: Study) -> dict | None:
    converged = study.converged()
    if converged.empty:
        return None
    means = {col: converged[col].mean() for col in ALTERNATIVE_SCORES}
    alternative = ALTERNATIVE_SCORES[min(means, key=lambda c: (np.nan_to_num(means[c], nan=np.inf), c))]
    predictions = study.predictions.merge(study.converged_runs(), on=KEY)
    figure = figure_selective(predictions, alternative, name=f"{study.slug}-selective")
    return {"slug": study.slug, "title": study.title, "alternative": alternative,
            "rows": interval_rows(converged, SELECTIVE_METRICS), "figure": figure, "figures_list": [figure]}


def ood_context(study: Study) -> dict | None:
    runs = study.converged_runs()
    ood = study.ood.merge(runs, on=KEY)
    if ood.empty:
        return None
    rows = []  # one per (method, score): four metrics fit a 1200 px page, twelve columns did not
    for _, label, group in by_variant(ood):
        for score in OOD_SCORES:
            part = group[group["score"] == score]
            rows.append({"variant": label, "score": OOD_SCORE_NAMES[score], "n": part["seed"].nunique(),
                         "cells": {m: metric_interval(part[m].to_numpy(), m) for m in OOD_METRICS}})
    predictions = study.predictions.merge(runs, on=KEY)
    figure = figure_ood(predictions, study.ood_predictions.merge(runs, on=KEY), study.ood_set,
                        name=f"{study.slug}-ood")
    return {"slug": study.slug, "title": study.title, "ood_set": study.ood_set, "rows": rows,
            # The largest index + 1, not the row count: the table may be a sample (lsbench.tables.read_tables).
            "n_ood": int(study.ood_predictions["index"].max()) + 1, "figure": figure, "figures_list": [figure]}


SHIFT_TABLES = (("ece", "ECE under shift (pooled over the shifts)"),
                ("ece_ts", "ECE after temperature scaling fitted on clean images, under shift"),
                ("accuracy", "Accuracy under shift (pooled over the shifts)"))


def shift_context(study: Study) -> dict | None:
    """The study's part of the shift section (None without shift rows): the severity figure, the
    pooled tables (per run and severity, mean [95 % interval] over seeds) and the heat map."""
    shifted = study.shifted()
    if shifted.empty:
        return None
    pooled = study.shift_pooled()
    severities = sorted(int(s) for s in pooled["severity"].unique())
    tables = []
    for metric, caption in SHIFT_TABLES:
        rows = [{"variant": label, "n": g["seed"].nunique(),
                 "cells": {s: metric_interval(g.loc[g["severity"] == s, metric].to_numpy(), metric) for s in severities}}
                for _, label, g in by_variant(pooled)]
        tables.append({"caption": caption, "rows": rows})
    figure = figure_shift_severity(shifted, name=f"{study.slug}-shift-severity")
    heatmap = figure_shift_heatmap(shifted, name=f"{study.slug}-shift-heatmap")
    return {"slug": study.slug, "title": study.title, "severities": severities, "tables": tables,
            "n_shifts": shifted.loc[shifted["severity"] > 0, "shift"].nunique(),
            "n_images": int(shifted["n_images"].max()), "figure": figure, "heatmap": heatmap,
            "figures_list": [f for f in (figure, heatmap) if f is not None]}


def shift_galleries(studies: list[Study]) -> list[dict]:
    """One gallery per dataset that has shift images."""
    out, seen = [], set()
    for study in studies:
        if study.shift_gallery.empty or study.dataset in seen:
            continue
        seen.add(study.dataset)
        figure = figure_shift_gallery(study.shift_gallery, study.dataset, name=f"{study.dataset}-shift-gallery")
        out.append({"dataset": study.dataset, "figure": figure, "figures_list": [figure]})
    return out


def ranking_label(ranking) -> str:
    """The lowest mean ECE in words, as `lsbench.findings.rank_lowest` ranks it: no run is named
    for a difference within the margin, nor without two seeds that every candidate shares."""
    if ranking.best is None:
        return f"not ranked ({ranking.why})"
    tied = ", ".join(variant_label(*r) for r in ranking.tied)
    return variant_label(*ranking.best) + (f" (within ± {MARGINS['ece']:g} of it, not ranked: {tied})" if tied else "")


def study_row(study: Study, found: list[dict] | None = None) -> dict:
    """One row of the cross-study table, in the spirit of Müller et al. (2019), Table 3: accuracy
    and ECE of cross-entropy, temperature scaling alone (ECE after scaling, T), label smoothing's
    chosen ε and the best method at its chosen setting with its ECE, as the study's `best_method`
    finding states it (`found`: the findings already computed); 95 % t-intervals over seeds."""
    converged = study.converged()
    row = {"slug": study.slug, "title": study.title, "n_runs": len(study.final()),
           "n_diverged": int(study.final()["diverged"].sum())}
    base = rows_of(converged, BASELINE)
    if base.empty:
        why = ("every run diverged" if converged.empty else "no converged cross-entropy run (the baseline): "
               "nothing to compare with")
        return {**row, "baseline": None, "why": why}
    ts = base.dropna(subset=["temperature"])
    chosen = select(converged)
    found = json_ready(study_findings(study)) if found is None else found
    record = next((f for f in found if f["id"] == "best_method"
                   and (f["dataset"], f["model"]) == (study.dataset, study.model)), None)
    best = None if record is None or record["method"] is None else (record["method"], float(record["param"]))
    ls = chosen.get("label_smoothing")
    return {**row, "baseline": variant_label(*BASELINE), "accuracy": metric_interval(base["accuracy"].to_numpy(), "accuracy"),
            "ece": metric_interval(base["ece"].to_numpy(), "ece"),
            "ece_ts": metric_interval(ts["ece_ts"].to_numpy(), "ece_ts") if not ts.empty else None,
            "temperature": metric_interval(ts["temperature"].to_numpy(), "temperature") if not ts.empty else None,
            "label_smoothing": (ls.label + (" (a test-set choice)" if ls.test_set_choice else "")) if ls else "–",
            "best": ("–" if record is None else record["variant"] if best is None
                     else record["variant"] + best_note(record)),
            "best_ece": None if best is None else metric_interval(rows_of(converged, best)["ece"].to_numpy(), "ece")}


def best_note(record: dict) -> str:
    """What the cross-study table adds to the best method's name: runs within the margin of it,
    and whether it is detectably below cross-entropy by the verdict of its finding (Holm)."""
    tied = record.get("within_margin") or []
    note = f" (within ± {MARGINS['ece']:g}: {', '.join(tied)})" if tied else ""
    vs = record.get("vs_cross_entropy")
    if vs is not None and vs["direction"] != "under":
        note += " (not detectably below cross-entropy)"
    return note


def diverged_runs(tables: Tables) -> list[dict]:
    final = final_epoch(tables.metrics)
    rows = final.loc[final["diverged"], [*KEY, "epoch", "divergence"]].to_dict("records")
    return [{**r, "variant": variant_label(r["method"], r["param"])} for r in rows]


def format_interval(i: Interval, digits: int = 4) -> str:
    if i.constant:
        return f"{format_number(i.mean, digits)} (all {i.n} equal, no interval)"
    if i.n < 2:
        return f"{format_number(i.mean, digits)} (n={i.n}, no interval)"
    # The interval may wrap below the mean in a narrow column, but never within itself.
    m, lo, hi = (_fixed(v, digits) for v in (i.mean, i.lo, i.hi))
    return markupsafe.Markup(f'{m} <span class="ci">[{lo}, {hi}]</span>')


def _fixed(value: float, digits: int) -> str:
    """`value` to `digits` decimals, without the sign of a value that rounds to zero ("-0.0000")."""
    text = f"{value:.{digits}f}"
    return text.lstrip("-") if float(text) == 0 else text


def format_wilcoxon(test: PairedTest) -> str:
    """The Wilcoxon p-value with a dagger where its pairs cannot reach p < 0.05 at all."""
    return format_p(test.p_wilcoxon) + ("" if test.wilcoxon_can_reject else " †")


def format_p(p: float) -> str:
    return "–" if np.isnan(p) else f"{p:.3g}"


def format_number(value: float, digits: int = 4) -> str:
    return "–" if value is None or np.isnan(value) else _fixed(value, digits)


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
    return env


def findings(tables: Tables) -> list[dict]:
    """Every study's findings (see lsbench.findings), as JSON-ready records."""
    return json_ready([record for study in split_studies(tables) for record in study_findings(study)])


TITLE = "lsbench: label smoothing and other calibration methods vs overconfidence"


def render(tables: Tables, title: str = TITLE, found: list[dict] | None = None) -> str:
    """The report's HTML page (self-contained) for `tables`."""
    return render_with_figures(tables, title, found)[0]


def render_with_figures(tables: Tables, title: str = TITLE,
                        found: list[dict] | None = None) -> tuple[str, list[Figure]]:
    """The page and every figure on it (`lsbench.figures.Figure`, in page order), whose SVG, PDF
    and CSV files the page names."""
    studies = split_studies(tables)
    final = final_epoch(tables.metrics)
    found = findings(tables) if found is None else found
    selective = [c for c in map(selective_context, studies) if c is not None]
    ood = [c for c in map(ood_context, studies) if c is not None]
    shift = [c for c in map(shift_context, studies) if c is not None]
    galleries = shift_galleries(studies)
    contexts = [study_context(s, found) for s in studies]
    html = environment().get_template("index.html.j2").render(
        title=title,
        findings=[(s.title, [f["text"].split(": ", 1)[1] for f in found
                             if (f["dataset"], f["model"]) == (s.dataset, s.model) and f["id"] != "answer"])
                  for s in studies],
        answers=[{"title": s.title, "text": f["text"].split(": ", 1)[1]} for s in studies for f in found
                 if (f["dataset"], f["model"]) == (s.dataset, s.model) and f["id"] == "answer"],
        family_note=family_note([f for f in found if f.get("family") != SHIFT_FAMILY]),
        shift_family_note=family_note([c for f in found if f.get("family") == SHIFT_FAMILY for c in _claims_of(f)]),
        last_epochs=LAST_EPOCHS, shift=shift, shift_galleries=galleries,
        summary_tables={"Accuracy and loss": ACCURACY_METRICS, "Calibration": CALIBRATION_METRICS},
        ts_metrics=TS_METRICS, selective_metrics=SELECTIVE_METRICS,
        ood_scores=OOD_SCORES,
        bootstrap_note=BOOTSTRAP_NOTE,
        study_rows=[study_row(s, found) for s in studies],
        selective=selective, ood=ood, studies=contexts,
        datasets=sorted(tables.runs["dataset"].unique()),
        models=sorted(tables.runs["model"].unique()),
        seeds=sorted(int(s) for s in final["seed"].unique()),
        variants=[label for _, label, _ in by_variant(final)],
        methods=[{"name": m.name, "title": m.title, "source": m.source,
                  "param": f"{m.param.name} ({m.param.symbol}) in {m.param.range_text}" if m.param else "none",
                  "fixed": "; ".join(f"{k} = {v}" for k, v in m.fixed.items()) or "–"}
                 for m in METHODS.values() if m.name in set(final["method"])],
        all_diverged=bool(final["diverged"].all()),
        diverged=diverged_runs(tables),
        provenance=provenance_section(tables),
    )
    html = html.replace("<!--contents-->", contents(html), 1)
    # In page order: the selective, OOD and shift sections come before the studies.
    figures = [f for c in (*selective, *ood, *galleries, *shift, *contexts) for f in c["figures_list"]]
    return name_tables(html), figures


TABLES_DIR = "tables"  # beside the HTML file, as FIGURES_DIR


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60].rstrip("-")


def table_names(html: str) -> list[str]:
    """A file stem for each <table> of a rendered page, in page order: the id of the section it is
    in and its caption, slugged (unique within the page)."""
    names: list[str] = []
    for match in re.finditer(r"<table[^>]*>\s*<caption>(.*?)</caption>", html, re.S):
        sections = re.findall(r'<section id="([^"]+)"', html[:match.start()])
        caption = re.sub(r"<[^>]+>", "", match.group(1)).split(":")[0]
        section = sections[-1] if sections else "report"
        words = _slug(caption).removeprefix(section.split("-")[-1] + "-")  # "ood-ood-detection" -> "ood-detection"
        base = f"{section}-{words[:40].rsplit('-', 1)[0] if len(words) > 40 else words}"
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def name_tables(html: str) -> str:
    """Each table followed by the names of its CSV and LaTeX files (written by `write_tables`)."""
    names = iter(table_names(html))

    def files(match: re.Match) -> str:
        name = next(names)
        return (f'{match.group(0)}<p class="files">Table files: <a href="{TABLES_DIR}/{name}.csv">{TABLES_DIR}/{name}.csv</a>, '
                f'<a href="{TABLES_DIR}/{name}.tex">.tex</a></p>')

    return re.sub(r"</table>(</div>)?", files, html)


def report_tables(html: str) -> list[tuple[str, str, list[str], list[list[str]]]]:
    """(file stem, caption, header cells, body rows) of every <table> of a rendered page, read back
    from the page itself (lxml) as the text a reader sees, so the files hold exactly what the
    report shows (no re-formatting of numbers: a p of 3.26e-07 stays that). A cell spanning k
    columns is followed by k - 1 empty ones. Raises ValueError when a table has no <caption>."""
    import lxml.html

    # A line break inside a cell separates two values ("0.0497 [...]", "p = 0.3"), so keep a space.
    root = lxml.html.fromstring(html.replace("<br>", " "))
    tables = root.findall(".//table")
    names = table_names(html)
    out = []
    for table, name in zip(tables, names):
        caption = table.find("caption")
        if caption is None:
            raise ValueError("a table of the report lacks a <caption>")
        rows = []
        for tr in table.iter("tr"):
            cells = []
            for cell in tr:
                if cell.tag in ("th", "td"):
                    cells += [" ".join(cell.text_content().split())] + [""] * (int(cell.get("colspan", 1)) - 1)
            rows.append((all(c.tag == "th" for c in tr if c.tag in ("th", "td")), cells))
        header = rows[0][1] if rows and rows[0][0] else []
        body = [cells for _, cells in (rows[1:] if header else rows)]
        out.append((name, " ".join(caption.text_content().split()), header, body))
    if len(tables) != len(names):
        raise ValueError(f"{len(tables) - len(names)} table(s) of the report lack a <caption>")
    return out


# What LaTeX's default (pdfLaTeX) input cannot take, as LaTeX: the report's symbols.
LATEX_SYMBOLS = {"ε": r"$\varepsilon$", "γ": r"$\gamma$", "β": r"$\beta$", "λ": r"$\lambda$", "α": r"$\alpha$",
                 "τ": r"$\tau$", "Δ": r"$\Delta$", "±": r"$\pm$", "−": r"$-$", "–": "--", "×": r"$\times$",
                 "↑": r"$\uparrow$", "↓": r"$\downarrow$", "≥": r"$\geq$", "≤": r"$\leq$", "†": r"\dag{}",
                 "→": r"$\rightarrow$", "←": r"$\leftarrow$", "·": r"$\cdot$", "≈": r"$\approx$"}


def latex_text(text: str) -> str:
    """`text` escaped for LaTeX (special characters, then the report's symbols as math)."""
    specials = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    out = "".join(specials.get(ch, ch) for ch in text)
    return "".join(LATEX_SYMBOLS.get(ch, ch) for ch in out)


def latex_table(caption: str, name: str, header: list[str], body: list[list[str]]) -> str:
    """A booktabs table (needs \\usepackage{booktabs}; compiles with pdfLaTeX, the report's symbols
    written as math), left-aligned first column."""
    width = max([len(header), *map(len, body)] or [1])
    lines = [r"\begin{table}", rf"\caption{{{latex_text(caption)}}}", rf"\label{{tab:{name}}}",
             rf"\begin{{tabular}}{{l{'r' * (width - 1)}}}", r"\toprule"]
    if header:
        lines += [" & ".join(map(latex_text, header)) + r" \\", r"\midrule"]
    lines += [" & ".join(map(latex_text, row + [""] * (width - len(row)))) + r" \\" for row in body]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_tables(html: str, directory: Path) -> list[Path]:
    """Every table of a rendered page as <name>.csv and <name>.tex in `directory` (see
    `replace_outputs` for what happens to an earlier report's files there)."""
    return replace_outputs(directory, table_files(html))


def table_files(html: str) -> dict[str, bytes]:
    """{<name>.csv and <name>.tex: their bytes} for every table of a rendered page."""
    import csv
    import io as _io

    files: dict[str, bytes] = {}
    for name, caption, header, body in report_tables(html):
        buf = _io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerows([header, *body] if header else body)
        files[f"{name}.csv"] = buf.getvalue().encode()
        files[f"{name}.tex"] = latex_table(caption, name, header, body).encode()
    return files


MANIFEST = ".lsbench-report-files"


def check_not_users(directory: Path, files: dict[str, bytes]) -> None:
    """ConfigError naming the first of `files` that already stands in `directory` although no earlier
    report wrote it there (it is not in `MANIFEST`): a file of the user's with a name lsbench uses."""
    manifest = directory / MANIFEST
    previous = set(manifest.read_text().split("\n")) if manifest.is_file() else set()
    for name in files:
        if name not in previous and (directory / name).exists():
            raise ConfigError(f"{directory / name}: a file lsbench report did not write there (it is not in "
                              f"{manifest}) has a name the report writes; move it, or write the report "
                              "elsewhere with -o")


def _is_findings_document(path: Path) -> bool:
    """Whether `path` holds findings that lsbench report wrote (schema 2, or a schema-1 list)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return False
    return isinstance(data, list) or (isinstance(data, dict) and "schema_version" in data and "findings" in data)


def replace_outputs(directory: Path, files: dict[str, bytes]) -> list[Path]:
    """Write `files` ({name: bytes}) into `directory`, after removing the files that lsbench report
    wrote there before (listed in its manifest, `MANIFEST`) and this report does not write again.
    Other files in the folder, e.g. a paper's own figures, are never touched."""
    directory.mkdir(parents=True, exist_ok=True)
    manifest = directory / MANIFEST
    previous = manifest.read_text().split("\n") if manifest.is_file() else []
    for old in previous:
        if old and old not in files and "/" not in old and (directory / old).is_file():
            (directory / old).unlink()
    written = []
    for name, data in files.items():
        atomic_write_bytes(data, directory / name)
        written.append(directory / name)
    atomic_write_bytes(("\n".join(sorted(files)) + "\n").encode(), manifest)
    return written


def _claims_of(record: dict) -> list[dict]:
    """A record's claims: itself, or those of each severity (the shift records' by_severity)."""
    return list(record["by_severity"].values()) if "by_severity" in record else [record]


def family_note(found: list[dict]) -> str:
    """How many tests each study's Holm correction covers, in words."""
    sizes = sorted({int(f["family_size"]) for f in found if f.get("family_size")})
    return "no tests" if not sizes else f"{'–'.join(map(str, dict.fromkeys([sizes[0], sizes[-1]])))} tests per study"


def contents(html: str) -> str:
    """A table of contents of the rendered page: every <section id> with its heading; the h3
    sections nested under the h2 section before them."""
    tree: list[tuple[str, str, list[tuple[str, str]]]] = []
    for section_id, level, heading in re.findall(r'<section id="([^"]+)"[^>]*>\s*<h([23])[^>]*>(.*?)</h\2>', html, re.S):
        text = re.sub(r"<[^>]+>", "", heading).strip()
        if level == "2" or not tree:
            tree.append((section_id, text, []))
        else:
            tree[-1][2].append((section_id, text))
    items = []
    for section_id, text, children in tree:
        sub = "".join(f'<li><a href="#{c}">{t}</a></li>' for c, t in children)
        items.append(f'<li><a href="#{section_id}">{text}</a>' + (f"<ol>{sub}</ol>" if sub else "") + "</li>")
    return '<nav id="contents" aria-label="contents">\n<h2>Contents</h2>\n<ol>\n' + "\n".join(items) + "\n</ol>\n</nav>"


FINDINGS_SCHEMA_VERSION = 2  # 1: a bare list of records (lsbench 0.3 and before)


def findings_document(tables: Tables, found: list[dict]) -> dict:
    """findings.json: a metadata block (who computed the findings from which tables, with which
    rules) and the records (docs/findings.md describes every field)."""
    from lsbench import __version__

    workflow = tables.provenance.iloc[0]
    env = tables.environment
    sizes = {f"{f['dataset']}/{f['model']}": int(f["family_size"]) for f in found
             if f.get("family_size") and f.get("family") != SHIFT_FAMILY}
    shift_sizes = {f"{f['dataset']}/{f['model']}": int(c["family_size"]) for f in found
                   if f.get("family") == SHIFT_FAMILY for c in _claims_of(f) if c.get("family_size")}
    return {
        "schema_version": FINDINGS_SCHEMA_VERSION,
        "metadata": {
            "lsbench": __version__,
            "tables_written_by_lsbench": str(workflow["lsbench"]),
            "git_commit": str(workflow["git_commit"]),
            "config_sha256": hashlib.sha256(str(workflow["config_yaml"]).encode()).hexdigest(),
            "seeds": sorted(int(s) for s in tables.runs["seed"].unique()),
            "correction": {"method": CORRECTION, "alpha": ALPHA, "family": "every distinct test of one study's "
                           "findings on clean data; the shift findings (family \"shift\") are a second family",
                           "family_sizes": sizes, "shift_family_sizes": shift_sizes},
            "margins": MARGINS,
            "last_epochs_checked": LAST_EPOCHS,
            "cpu_capabilities": sorted(set(env["cpu_capability"])) if "cpu_capability" in env else [],
            "cpu_models": sorted(set(env["cpu_model"])),
        },
        "findings": found,
    }


def findings_path(report_path: Path) -> Path:
    """Where `lsbench report DIR -o FILE` writes the findings: findings.json next to FILE."""
    return Path(report_path).with_name("findings.json")


# The workflow's record of a report (`write_report`'s `stamp`): report-<WorkflowPlan.report_id>.json.
STAMP_NAME = re.compile(r"report-[0-9a-f]{16}\.json")
STAMP_WRITER = "lsbench report"


def check_not_inputs(results_dir: Path, outputs: list[Path]) -> None:
    """ConfigError naming the first of `outputs` that is one of the tables a report of
    `results_dir` reads (the same path, through a link or not, or the same file by another
    name), whether or not that table exists yet: writing it would destroy a published table."""
    tables = [Path(results_dir) / f"{name}.parquet" for name in (*PUBLISHED, *OPTIONAL_PUBLISHED)]
    hit = overwritten_input(outputs, tables)
    if hit:
        raise ConfigError(f"{hit[0]}: a table the report reads{same_file_note(*hit)}; write the report elsewhere, "
                          f"e.g. -o {Path(results_dir).parent / 'report' / 'index.html'}")


def _is_stamp(path: Path) -> bool:
    """Whether `path` is a record `write_report` wrote (its name and its writer), not a user's file."""
    if not STAMP_NAME.fullmatch(path.name) or not path.is_file():
        return False
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(record, dict) and record.get("written_by") == STAMP_WRITER


def write_report(results_dir: Path, out_path: Path, stamp: Path | None = None) -> None:
    """Render results_dir's tables to out_path, the findings to findings.json beside it, and the
    figures' and tables' files to figures/ and tables/ beside it (`replace_outputs`: only files
    an earlier report wrote there are replaced).

    Every earlier `stamp` beside out_path (report-<16 hex digits>.json written by this function)
    is removed first, since the page no longer is what it records; `stamp` (the workflow's, named
    by `lsbench.plan.WorkflowPlan.report_id`) is written last, recording lsbench's version, the
    report code's digest, the tables' folder, its grid and the files written.

    TablesError for broken tables; IsADirectoryError when out_path is a directory; ConfigError
    when it is named findings.json, when any file to be written is one of the tables read
    (`check_not_inputs`), or when `stamp` is not a report-<16 hex digits>.json beside out_path.
    """
    from lsbench import __version__
    from lsbench.plan import report_code_sha256

    out_path = Path(out_path)
    if out_path.is_dir() or out_path.name in ("", ".", ".."):
        raise IsADirectoryError(21, "is a directory; give the HTML file to write, e.g. "
                                f"{out_path / 'index.html'}", str(out_path))
    if out_path.name == findings_path(out_path).name:
        raise ConfigError(f"{out_path}: the findings are written to {findings_path(out_path).name} beside the "
                          "report; give the report another name, e.g. index.html")
    if stamp is not None and (not STAMP_NAME.fullmatch(Path(stamp).name)
                              or Path(stamp).parent.resolve() != out_path.parent.resolve()):
        raise ConfigError(f"--stamp {stamp}: not a report-<16 hex digits>.json beside {out_path}")
    stamps = [Path(stamp)] if stamp is not None else []
    check_not_inputs(results_dir, [out_path, findings_path(out_path), *stamps])  # before the slow part
    tables = read_tables(results_dir)
    found = findings(tables)
    html, figures = render_with_figures(tables, found=found)
    folders = {out_path.parent / TABLES_DIR: table_files(html), out_path.parent / FIGURES_DIR: figure_files(figures)}
    check_not_inputs(results_dir, [d / name for d, files in folders.items() for name in [*files, MANIFEST]])
    for directory, files in folders.items():  # before anything is written
        check_not_users(directory, files)
    if findings_path(out_path).exists() and not _is_findings_document(findings_path(out_path)):
        raise ConfigError(f"{findings_path(out_path)}: not findings lsbench report wrote, and the report writes its "
                          "findings there; move it, or write the report elsewhere with -o")
    for old in out_path.parent.glob("report-*.json"):
        if _is_stamp(old):
            old.unlink()
    write_text(html, out_path)
    write_text(json.dumps(findings_document(tables, found), indent=1, ensure_ascii=False) + "\n",
               findings_path(out_path))
    for directory, files in folders.items():
        replace_outputs(directory, files)
    if stamp is not None:
        written = [out_path, findings_path(out_path), *(d / n for d, files in folders.items() for n in files)]
        record = {"written_by": STAMP_WRITER, "lsbench": __version__, "report_code": report_code_sha256(),
                  "tables": str(Path(results_dir).resolve()),
                  "grid": sorted(p.stem.removeprefix("grid-") for p in Path(results_dir).glob("grid-*.json")
                                 if re.fullmatch(r"grid-[0-9a-f]{16}\.json", p.name)),
                  "files": sorted(os.path.relpath(p, out_path.parent) for p in written)}
        write_text(json.dumps(record, indent=1) + "\n", Path(stamp))


def read_findings(path: Path) -> dict:
    """A findings.json as a schema-2 document (a schema-1 list gets empty metadata); ConfigError
    naming the file and the first field that is not what `lsbench report` writes (the document's
    shape is checked once, against `findings_document_schema`, before any claim is read)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not JSON ({exc})") from exc
    except RecursionError:  # the decoder recurses once per nested list or object
        raise ConfigError(f"{path}: not a findings.json written by lsbench report (nested too deep to read)") from None
    if isinstance(data, list):
        data = {"schema_version": 1, "metadata": {}, "findings": data}
    if not isinstance(data, dict) or not isinstance(data.get("findings"), list):
        raise ConfigError(f"{path}: not a findings.json written by lsbench report (no list of findings records)")
    if not data["findings"]:
        raise ConfigError(f"{path}: holds no findings records (an empty list)")
    version = data.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FINDINGS_SCHEMA_VERSION:
        raise ConfigError(f"{path}: schema_version {version} is newer than this lsbench reads "
                          f"({FINDINGS_SCHEMA_VERSION}); update lsbench")
    import jsonschema

    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(findings_document_schema()).iter_errors(data))
    if error is not None:
        raise ConfigError(f"{path}: not a findings.json written by lsbench report: {_json_field(error.absolute_path)}"
                          f"{_short(error.message)}")
    data.setdefault("metadata", {})
    return data


def findings_document_schema() -> dict:
    """The JSON Schema of a findings.json as `lsbench compare-findings` reads it: schema_version an
    integer 1..FINDINGS_SCHEMA_VERSION, metadata an object (cpu_capabilities a list of strings), and
    a non-empty list of records (`lsbench.findings.record_schema`)."""
    from lsbench.findings import record_schema

    return {"type": "object", "required": ["schema_version", "findings"],
            "properties": {"schema_version": {"type": "integer", "minimum": 1, "maximum": FINDINGS_SCHEMA_VERSION},
                           "metadata": {"type": "object", "properties": {
                               "cpu_capabilities": {"type": "array", "items": {"type": "string"}}}},
                           "findings": {"type": "array", "minItems": 1, "items": record_schema()}}}


def _json_field(where) -> str:  # noqa: ANN001 - jsonschema's deque of keys and indices
    """`findings[3].variant: ` for a path into the document ("" for the document itself)."""
    text = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in where).lstrip(".")
    return f"{text}: " if text else ""


def _short(message: str, limit: int = 200) -> str:
    """A message that quotes a field's value, cut to one readable line."""
    message = " ".join(message.split())
    return message if len(message) <= limit else message[:limit] + "…"


def compare_findings_markdown(a: dict, b: dict, only_differences: bool = False) -> str:
    """The claims of two findings documents side by side (`lsbench.findings.compare_claims`), as a
    Markdown table headed by each side's CPU kernels, with a count of each kind of agreement."""
    from lsbench.findings import compare_claims

    def side(doc: dict, name: str) -> str:
        caps = doc.get("metadata", {}).get("cpu_capabilities") or []
        return f"{name} ({', '.join(caps)})" if caps else name

    rows = compare_claims(a["findings"], b["findings"])
    kinds = ("same", "no effect either way", "differs", "contradicts")
    counts = {k: sum(r["agreement"] == k for r in rows) for k in kinds}
    shown = [r for r in rows if r["agreement"] != "same"] if only_differences else rows
    lines = [f"| claim | {side(a, 'A')} | {side(b, 'B')} | agreement |", "|---|---|---|---|"]
    lines += [f"| {r['claim']} | {r['a']} | {r['b']} | {r['agreement']} |" for r in shown]
    summary = (f"{len(rows)} claims: {counts['same']} the same, {counts['no effect either way']} with no effect "
               f"claimed either way (one within the margin, the other cannot tell), {counts['differs']} differ, "
               f"{counts['contradicts']} contradict.")
    skipped = sum(r["agreement"] == "not compared" for r in rows)
    if skipped:
        summary += f" {skipped} shift claims not compared: only one of the two grids evaluated shifts."
    notes = rule_differences(a, b)
    return "\n".join(lines) + "\n\n" + summary + "\n" + "".join(f"\nNote: {n}\n" for n in notes)


def rule_differences(a: dict, b: dict) -> list[str]:
    """What differs between two documents' rules or grids (seeds, correction, margins, epochs
    checked, schema): their claims are then not made alike, and a difference may be the rules'."""
    ma, mb = a.get("metadata", {}), b.get("metadata", {})
    notes = []
    if a.get("schema_version") != b.get("schema_version"):
        notes.append(f"schema_version {a.get('schema_version')} against {b.get('schema_version')}: the rules "
                     "changed between them (schema 1: no multiple-comparison correction)")
    for key in ("seeds", "correction", "margins", "last_epochs_checked"):
        if key in ma and key in mb and ma[key] != mb[key]:
            notes.append(f"{key} differ: {json.dumps(ma[key], sort_keys=True)} against {json.dumps(mb[key], sort_keys=True)}")
    return notes


def claims_differ(a: dict, b: dict) -> bool:
    """Whether any claim of the two documents differs or contradicts (for --fail-on-difference)."""
    from lsbench.findings import compare_claims

    return any(r["agreement"] in ("differs", "contradicts") for r in compare_claims(a["findings"], b["findings"]))


__all__ = ["Tables", "read_tables", "render", "section_ids", "study_slug", "write_report"]
