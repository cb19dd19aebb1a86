"""Findings in words, generated from the tables: each a record with its estimate, 95 % interval and
test, and a sentence that says no more than they do.

Rules (per study, over its converged runs, final epoch; baseline = the smallest epsilon of the
study's runs, normally 0, diverged runs included (`Study.baseline`): when every baseline run
diverged there is no comparison, and no claim of a lowest ECE or of temperature scaling alone is
made; intervals are Student-t over seeds, paired ones over the seeds both runs share; p from the
paired t-test, `lsbench.stats`):
- miscalibration_direction (per epsilon): overconfidence = mean confidence - accuracy. Over- or
  underconfident when its interval excludes 0, else "no detectable over- or underconfidence".
- miscalibration_flip: the first epsilon that is detectably underconfident after one that was
  detectably overconfident.
- ece_minimizing_epsilon: the epsilon with the lowest mean ECE (over the seeds converged at every
  epsilon), paired against the baseline.
- accuracy_effect, aurc_effect, ood_auroc_effect (per epsilon): paired difference against the baseline.
- temperature_scaling_vs_best_epsilon: ECE after temperature scaling at the baseline against
  the ECE of the best epsilon, paired by seed.
A difference whose interval contains 0 is "no detectable difference", never an effect. Without an
interval the sentence says the data cannot tell, and why: no seed has both runs, one pair of
seeds, or differences that do not vary over the seeds (no spread is not certainty). A temperature
fitted at its search bound (`lsbench.metrics.TEMPERATURE_BOUNDS`) in any run makes the
temperature-scaling finding "cannot tell".
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from lsbench.config import format_epsilon
from lsbench.io import KEY
from lsbench.metrics import TEMPERATURE_BOUNDS, temperature_at_bound
from lsbench.stats import Interval, PairedTest, metric_interval, paired_test
from lsbench.studies import Study


def _direction(i: Interval) -> str:
    """"over", "under", "none" (interval contains 0) or "unknown" (no interval)."""
    if i.n < 2 or math.isnan(i.lo):
        return "unknown"
    return "over" if i.lo > 0 else "under" if i.hi < 0 else "none"


def _ci(i: Interval, digits: int = 4) -> str:
    if i.n >= 2 and not i.constant:
        return f"{i.mean:.{digits}f} [95 % CI {i.lo:.{digits}f}, {i.hi:.{digits}f}]"
    return f"{i.mean:.{digits}f} ({_no_interval(i)})" if i.n else "(no converged run)"


def _no_interval(i: Interval, signed: bool = False, digits: int = 4) -> str:
    """Why an interval is missing, in words (n = 0, 1, or no spread)."""
    if i.n == 0:
        return "no seed has a converged run at both, so there is no comparison"
    if i.n == 1:
        return "n=1, no interval"
    value = f"{i.mean:+.{digits}f}" if signed else f"{i.mean:.{digits}f}"
    return (f"all {i.n} seeds give exactly {value}: with no spread over seeds there is no interval "
            "or t-test, and no spread is not certainty")


def _difference(d: Interval, digits: int = 4) -> str:
    """The signed paired difference (epsilon minus baseline) with its interval, as the tables show it."""
    return f"difference {d.mean:+.{digits}f} [95 % CI {d.lo:+.{digits}f}, {d.hi:+.{digits}f}]"


def _test(t: PairedTest) -> str:
    p = "–" if math.isnan(t.p_ttest) else f"{t.p_ttest:.3g}"
    return f"paired t-test p = {p}, {t.difference.n} seeds"


def _record(study: Study, id_: str, text: str, **numbers: Any) -> dict[str, Any]:
    return {"id": id_, "dataset": study.dataset, "model": study.model, "text": f"{study.title}: {text}", **numbers}


def _interval_fields(i: Interval) -> dict[str, Any]:
    return {"estimate": i.mean, "low": i.lo, "high": i.hi, "n": i.n}


def _paired_fields(t: PairedTest) -> dict[str, Any]:
    return {**_interval_fields(t.difference), "p": t.p_ttest, "test": "paired t-test"}


def _by_seed(df: pd.DataFrame, eps: float, column: str) -> pd.Series:
    """`column` at `eps` by seed, without the seeds where it is NaN (a metric a run lacks)."""
    return df[df["epsilon"] == eps].set_index("seed")[column].dropna()


def best_epsilon(df: pd.DataFrame, column: str = "ece") -> float:
    """The epsilon with the lowest mean `column` over the seeds that have it at every epsilon, so
    that each mean is over the same seeds (a seed that diverged at one epsilon would otherwise
    bias the comparison); over all seeds when no seed has every epsilon."""
    per_seed = df.pivot_table(index="seed", columns="epsilon", values=column)
    common = per_seed.dropna()
    return float((common if not common.empty else per_seed).mean().idxmin())


def paired(df: pd.DataFrame, eps: float, column: str, baseline: float,
           baseline_column: str | None = None) -> PairedTest:
    """`column` at `eps` minus `baseline_column` (default: the same) at `baseline`, paired by seed."""
    a, b = _by_seed(df, eps, column), _by_seed(df, baseline, baseline_column or column)
    seeds = sorted(set(a.index) & set(b.index))
    return paired_test(a.loc[seeds].to_numpy(float), b.loc[seeds].to_numpy(float))


def _effect(study: Study, id_: str, what: str, t: PairedTest, eps: float, baseline: float, up: str, down: str,
            digits: int = 4, **extra: Any) -> dict[str, Any]:
    d = t.difference
    direction = _direction(d)
    if direction == "unknown":
        verdict = (f"cannot tell how ε = {format_epsilon(eps)} changes {what} against ε = {format_epsilon(baseline)} "
                   f"({_no_interval(d, signed=True, digits=digits)})")
    elif direction == "none":
        verdict = (f"no detectable difference in {what} between ε = {format_epsilon(eps)} and ε = "
                   f"{format_epsilon(baseline)} ({d.mean:+.{digits}f} [95 % CI {d.lo:+.{digits}f}, {d.hi:+.{digits}f}], "
                   f"{_test(t)})")
    else:
        verdict = (f"ε = {format_epsilon(eps)} {up if direction == 'over' else down} {what} by "
                   f"{abs(d.mean):.{digits}f} against ε = {format_epsilon(baseline)} ({_difference(d, digits)}, "
                   f"{_test(t)})")
    return _record(study, id_, verdict + ".", epsilon=eps, baseline_epsilon=baseline, direction=direction,
                   **_paired_fields(t), **extra)


def direction_findings(study: Study, df: pd.DataFrame) -> list[dict[str, Any]]:
    records, last_over = [], None
    for eps in sorted(df["epsilon"].unique()):
        i = metric_interval(df.loc[df["epsilon"] == eps, "overconfidence"].to_numpy(), "overconfidence")
        d = _direction(i)
        words = {"over": "overconfident: mean confidence exceeds accuracy by",
                 "under": "underconfident: mean confidence falls short of accuracy by",
                 "none": "no detectable over- or underconfidence: mean confidence minus accuracy is",
                 "unknown": "undetermined direction of miscalibration: mean confidence minus accuracy is"}[d]
        shown = Interval(i.n, abs(i.mean), -i.hi, -i.lo) if d == "under" else i
        records.append(_record(study, "miscalibration_direction",
                               f"at ε = {format_epsilon(eps)}, {words} {_ci(shown)}"
                               + (f" (t-interval over {i.n} seeds)." if i.n >= 2 else "."),
                               epsilon=float(eps), metric="overconfidence", direction=d, **_interval_fields(i)))
        if d == "over":
            last_over = float(eps)
        elif d == "under" and last_over is not None and not any(r["id"] == "miscalibration_flip" for r in records):
            records.append(_record(study, "miscalibration_flip",
                                   f"miscalibration flips from overconfidence at ε = {format_epsilon(last_over)} "
                                   f"to underconfidence at ε = {format_epsilon(eps)}.",
                                   from_epsilon=last_over, to_epsilon=float(eps)))
    return records


def best_epsilon_finding(study: Study, df: pd.DataFrame, baseline: float) -> dict[str, Any]:
    best = best_epsilon(df)
    ece = metric_interval(df.loc[df["epsilon"] == best, "ece"].to_numpy(), "ece")
    fields = {"epsilon": best, "baseline_epsilon": baseline, "ece": ece.mean, "ece_low": ece.lo, "ece_high": ece.hi}
    if best == baseline:
        text = (f"ε = {format_epsilon(best)} gives the lowest mean ECE, {_ci(ece)}: no ε lowers it.")
        return _record(study, "ece_minimizing_epsilon", text, **fields, direction="none",
                       **{"estimate": 0.0, "low": 0.0, "high": 0.0, "n": ece.n, "p": math.nan, "test": "none"})
    t = paired(df, best, "ece", baseline)
    d, direction = t.difference, _direction(t.difference)
    if direction == "under":
        text = (f"ε = {format_epsilon(best)} gives the lowest ECE, {_ci(ece)}, lower than at ε = "
                f"{format_epsilon(baseline)} by {abs(d.mean):.4f} ({_difference(d)}, {_test(t)}).")
    elif direction == "unknown":
        text = (f"ε = {format_epsilon(best)} has the lowest mean ECE, {_ci(ece)}; the data cannot tell it from "
                f"ε = {format_epsilon(baseline)} ({_no_interval(d, signed=True)}).")
    else:
        text = (f"ε = {format_epsilon(best)} has the lowest mean ECE, {_ci(ece)}, but there is no detectable "
                f"difference from ε = {format_epsilon(baseline)} ({d.mean:+.4f} [95 % CI {d.lo:+.4f}, {d.hi:+.4f}], "
                f"{_test(t)}).")
    return _record(study, "ece_minimizing_epsilon", text, **fields, direction=direction, **_paired_fields(t))


def temperature_finding(study: Study, df: pd.DataFrame, baseline: float, best: float) -> dict[str, Any] | None:
    if df.loc[df["epsilon"] == baseline, "ece_ts"].isna().all():
        return None
    t = paired(df, baseline, "ece_ts", best, baseline_column="ece")
    d, direction = t.difference, _direction(t.difference)
    ts = metric_interval(_by_seed(df, baseline, "ece_ts").to_numpy(), "ece_ts")
    head = (f"temperature scaling alone (ECE {_ci(ts)} at ε = {format_epsilon(baseline)}) against the best ε "
            f"(ε = {format_epsilon(best)}): ")
    at_bound = int(temperature_at_bound(df.loc[df["epsilon"] == baseline, "temperature"]).sum())
    if at_bound:
        low, high = TEMPERATURE_BOUNDS
        tail = (f"cannot tell: the fitted temperature hit its search bound ({low:g} or {high:g}) in {at_bound} of "
                f"{int((df['epsilon'] == baseline).sum())} runs, so the held-out images did not determine it "
                "(too few of them?).")
        return _record(study, "temperature_scaling_vs_best_epsilon", head + tail, epsilon=best,
                       baseline_epsilon=baseline, direction="unknown", runs_at_bound=at_bound, **_paired_fields(t))
    if direction == "under":
        tail = f"temperature scaling is better by {abs(d.mean):.4f} ({_difference(d)}, {_test(t)})."
    elif direction == "over":
        tail = f"the best ε is better by {d.mean:.4f} ({_difference(d)}, {_test(t)})."
    elif direction == "none":
        tail = f"no detectable difference ({d.mean:+.4f} [95 % CI {d.lo:+.4f}, {d.hi:+.4f}], {_test(t)})."
    else:
        tail = f"the data cannot tell them apart ({_no_interval(d, signed=True)})."
    return _record(study, "temperature_scaling_vs_best_epsilon", head + tail, epsilon=best, baseline_epsilon=baseline,
                   direction=direction, runs_at_bound=0, **_paired_fields(t))


def ood_frame(study: Study, score: str = "msp") -> pd.DataFrame:
    return study.ood[study.ood["score"] == score].merge(study.converged_runs(), on=KEY)


def study_findings(study: Study) -> list[dict[str, Any]]:
    """Every finding for one study; none when all its runs diverged."""
    df = study.converged()
    if df.empty:
        return [_record(study, "all_diverged", "every run diverged; there is nothing to conclude.")]
    baseline = study.baseline
    others = sorted(e for e in df["epsilon"].unique() if e != baseline)
    records = direction_findings(study, df)
    if not (df["epsilon"] == baseline).any():
        return records + [_record(
            study, "baseline_diverged",
            f"every run at ε = {format_epsilon(baseline)} diverged, so nothing can be compared with it: no claim "
            "of an effect of ε, of a lowest ECE or of temperature scaling alone is made.",
            baseline_epsilon=baseline)]
    best = best_epsilon_finding(study, df, baseline)
    records.append(best)
    records += [_effect(study, "accuracy_effect", "accuracy", paired(df, e, "accuracy", baseline), e, baseline,
                        "raises", "lowers") for e in others]
    ts = temperature_finding(study, df, baseline, best["epsilon"])
    records += [ts] if ts else []
    records += [_effect(study, "aurc_effect", "AURC (risk–coverage with the max probability; lower is better)",
                        paired(df, e, "aurc", baseline), e, baseline, "raises", "lowers") for e in others]
    ood = ood_frame(study)
    if not ood.empty:
        what = f"OOD AUROC (max probability, {study.dataset} against {study.ood_set})"
        records += [_effect(study, "ood_auroc_effect", what, paired(ood, e, "auroc", baseline), e, baseline,
                            "raises", "lowers", ood_set=study.ood_set, score="msp") for e in others]
    return records


def json_ready(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """NaN and NumPy scalars as JSON has them: null and plain numbers."""
    def clean(v: Any) -> Any:
        if isinstance(v, (np.floating, float)):
            return None if math.isnan(float(v)) else float(v)
        if isinstance(v, np.integer):
            return int(v)
        return v

    return [{k: clean(v) for k, v in r.items()} for r in records]
