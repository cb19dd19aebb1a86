"""Statistics across seeds: t-intervals per epsilon, and paired differences against epsilon = 0.

Methods (stated in the report too): a two-sided 95 % Student-t interval over seeds,
mean ± t(0.975, n-1) · s / sqrt(n); paired differences (eps minus the baseline eps on the same
seed) tested with the paired t-test (`scipy.stats.ttest_rel`) and the exact Wilcoxon signed-rank
test (`scipy.stats.wilcoxon`). With n < 6 pairs the exact two-sided Wilcoxon p-value cannot fall
below 0.05 (its smallest value is 2 / 2^n), so it is reported with that caveat.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
WILCOXON_MIN_N = 6  # 2 / 2**5 = 0.0625 > 0.05: five pairs can never reach significance


@dataclass(frozen=True)
class Interval:
    """Mean of n values with a 95 % t-interval; lo/hi are NaN when n < 2."""

    n: int
    mean: float
    lo: float
    hi: float


def t_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> Interval:
    """Two-sided Student-t interval for the mean.

    >>> i = t_interval(np.array([1.0, 2.0, 3.0]))
    >>> round(i.mean, 3), round(i.lo, 3), round(i.hi, 3)  # 2 ± 4.303 · 1 / sqrt(3)
    (2.0, -0.484, 4.484)
    """
    values = np.asarray(values, dtype=float)
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    if n < 2:
        return Interval(n, mean, math.nan, math.nan)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * values.std(ddof=1) / math.sqrt(n))
    return Interval(n, mean, mean - half, mean + half)


@dataclass(frozen=True)
class PairedTest:
    """eps minus baseline on the same seeds: mean difference, its interval, two p-values."""

    difference: Interval
    p_ttest: float
    p_wilcoxon: float


def paired_test(values: np.ndarray, baseline: np.ndarray) -> PairedTest:
    """Paired comparison of two equally ordered per-seed arrays (NaN p-values when n < 2
    or when every difference is zero)."""
    diff = np.asarray(values, dtype=float) - np.asarray(baseline, dtype=float)
    interval = t_interval(diff)
    if len(diff) < 2 or np.all(diff == 0):
        return PairedTest(interval, math.nan, math.nan)
    p_t = float(stats.ttest_rel(values, baseline).pvalue)
    p_w = float(stats.wilcoxon(diff, method="exact" if len(diff) <= 50 else "auto").pvalue)
    return PairedTest(interval, p_t, p_w)


def final_epoch_intervals(final: pd.DataFrame, metrics: tuple[str, ...]) -> dict[float, dict[str, Interval]]:
    """{epsilon: {metric: Interval over seeds}} for converged runs of the final epoch."""
    ok = final[~final["diverged"]]
    return {float(eps): {m: t_interval(group[m].to_numpy()) for m in metrics}
            for eps, group in ok.groupby("epsilon")}


def paired_against(final: pd.DataFrame, metrics: tuple[str, ...],
                   baseline_eps: float) -> dict[float, dict[str, PairedTest]]:
    """{epsilon: {metric: PairedTest vs baseline_eps}}, pairing runs by seed (converged pairs only)."""
    ok = final[~final["diverged"]]
    base = ok[ok["epsilon"] == baseline_eps].set_index("seed")
    out: dict[float, dict[str, PairedTest]] = {}
    for eps, group in ok[ok["epsilon"] != baseline_eps].groupby("epsilon"):
        seeds = sorted(set(group["seed"]) & set(base.index))
        g = group.set_index("seed").loc[seeds]
        out[float(eps)] = {m: paired_test(g[m].to_numpy(), base.loc[seeds, m].to_numpy()) for m in metrics}
    return out
