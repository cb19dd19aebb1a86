"""Statistics across seeds: t-intervals per epsilon, and paired differences against epsilon = 0.

Methods (stated in the report too): a two-sided 95 % Student-t interval over seeds,
mean ± t(0.975, n-1) · s / sqrt(n); paired differences (eps minus the baseline eps on the same
seed) tested with the paired t-test (`scipy.stats.ttest_rel`) and the Wilcoxon signed-rank test
(`scipy.stats.wilcoxon`). Seed-level metrics tie often (accuracy moves in steps of 1/N), and
scipy's "exact" method assumes no ties, so with tied |differences| the Wilcoxon p-value is the
permutation (sign-flip) p-value of the signed-rank statistic with average ranks for ties
(`scipy.stats.PermutationMethod`, every sign flip enumerated) up to 10 pairs, and beyond 10, where
enumerating 2^n flips gets slow, scipy's normal approximation with its tie correction
(`method="approx"`); without ties it is scipy's exact distribution. Zero differences are dropped
first (`zero_method="wilcox"`), so the test uses the m non-zero pairs; with m < 6 its two-sided
p-value cannot fall below 0.05 (its smallest value is 2 / 2^m), which the report marks in every
such row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
WILCOXON_MIN_N = 6  # 2 / 2**5 = 0.0625 > 0.05: five pairs can never reach significance
WILCOXON_EXACT_MAX_N = 10  # 2**10 sign flips take 0.3 s in scipy; 2**13 take 2.7 s


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
    """eps minus baseline on the same seeds: mean difference, its interval, two p-values, and
    `n_wilcoxon`, the number of non-zero differences the Wilcoxon test used."""

    difference: Interval
    p_ttest: float
    p_wilcoxon: float
    n_wilcoxon: int

    @property
    def wilcoxon_can_reject(self) -> bool:
        """Whether the Wilcoxon test had enough non-zero pairs to reach p < 0.05 at all."""
        return self.n_wilcoxon >= WILCOXON_MIN_N


def wilcoxon_p(diff: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (n,), correct with ties and
    zeros (see the module docstring); NaN when no difference is non-zero.

    Differences (x 1e-4) 10, 10, -10, 20, 30, 20 tie: scipy's "exact" method gives 0.094, the
    sign-flip distribution with average ranks 0.125.

    >>> round(wilcoxon_p(np.array([10, 10, -10, 20, 30, 20]) * 1e-4), 4)
    0.125
    """
    nonzero = diff[diff != 0]
    if len(nonzero) == 0:
        return math.nan
    if len(np.unique(np.abs(nonzero))) == len(nonzero):
        return float(stats.wilcoxon(nonzero, method="exact").pvalue)
    if len(nonzero) > WILCOXON_EXACT_MAX_N:
        return float(stats.wilcoxon(nonzero, method="approx").pvalue)
    # n_resamples >= 2**n makes scipy enumerate every sign flip: exact, no randomness.
    method = stats.PermutationMethod(n_resamples=2 ** WILCOXON_EXACT_MAX_N)
    return float(stats.wilcoxon(nonzero, method=method).pvalue)


def paired_test(values: np.ndarray, baseline: np.ndarray) -> PairedTest:
    """Paired comparison of two equally ordered per-seed arrays (NaN p-values when n < 2
    or when every difference is zero)."""
    diff = np.asarray(values, dtype=float) - np.asarray(baseline, dtype=float)
    interval = t_interval(diff)
    n_nonzero = int((diff != 0).sum())
    if len(diff) < 2 or n_nonzero == 0:
        return PairedTest(interval, math.nan, math.nan, n_nonzero)
    p_t = float(stats.ttest_rel(values, baseline).pvalue)
    return PairedTest(interval, p_t, wilcoxon_p(diff), n_nonzero)


def wilson_interval(successes: int, trials: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (`scipy.stats.binomtest(...).proportion_ci`);
    (NaN, NaN) for no trials.

    >>> tuple(round(v, 4) for v in wilson_interval(8, 10))
    (0.4902, 0.9433)
    """
    if trials == 0:
        return math.nan, math.nan
    ci = stats.binomtest(int(successes), int(trials)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


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
