"""Statistics across seeds: t-intervals per run (method, param), and paired differences against
cross-entropy.

Methods (stated in the report too): a two-sided 95 % Student-t interval over seeds, mean ± t(0.975,
n-1) · s / sqrt(n), clipped to the metric's range (`METRIC_BOUNDS`); paired differences (a run minus
the baseline run on the same seed) tested with the paired t-test (`scipy.stats.ttest_rel`) and the
Wilcoxon signed-rank test (`scipy.stats.wilcoxon`). Seed-level metrics tie often (accuracy moves in
steps of 1/N), and scipy's "exact" method assumes no ties, so with tied |differences| the Wilcoxon
p-value is the permutation (sign-flip) p-value of the signed-rank statistic with average ranks for
ties (`scipy.stats.PermutationMethod`, every sign flip enumerated) up to 10 pairs, and beyond 10,
where enumerating 2^n flips gets slow, scipy's normal approximation with its tie correction
(`method="approx"`); without ties it is scipy's exact distribution. Differences are rounded to
`DIFFERENCE_DECIMALS` decimal places first: accuracies are k/N, so two seeds that gain the same
number of images differ in the last bits of their float differences and would not tie otherwise.
Zero differences are dropped (`zero_method="wilcox"`), so the test uses the m non-zero pairs; with
m < 6 its two-sided p-value cannot fall below 0.05 (its smallest value is 2 / 2^m), which the report
marks in every such row.

Values that do not vary (every seed the same, or every paired difference the same) have no
t-interval and no t-test: a zero standard deviation over a few seeds is not certainty, so
`Interval.constant` is set, lo/hi and the t-test's p are NaN, and the report says so in words.
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
# Metrics are k/N for N up to 10^6 test images, and their float64 differences carry ~1e-16 of
# rounding: 12 decimals keep every real difference and make the equal ones tie exactly.
DIFFERENCE_DECIMALS = 12


@dataclass(frozen=True)
class Interval:
    """Mean of n values with a 95 % t-interval; lo/hi are NaN when n < 2, and when the n values are
    all equal (`constant`: no spread to build an interval from)."""

    n: int
    mean: float
    lo: float
    hi: float
    constant: bool = False


def t_interval(values: np.ndarray, confidence: float = CONFIDENCE,
               bounds: tuple[float, float] | None = None) -> Interval:
    """Two-sided Student-t interval for the mean of the non-NaN values (n counts them), clipped to
    `bounds` (the values' possible range) when given: with 3 seeds, t(0.975, 2) = 4.3 stretches
    an interval for an ECE near 0 below 0.

    >>> i = t_interval(np.array([1.0, 2.0, 3.0]))
    >>> round(i.mean, 3), round(i.lo, 3), round(i.hi, 3)  # 2 ± 4.303 · 1 / sqrt(3)
    (2.0, -0.484, 4.484)
    >>> round(t_interval(np.array([1.0, 2.0, 3.0]), bounds=(0.0, 4.0)).lo, 3)
    0.0
    >>> t_interval(np.array([0.25, 0.25]))  # no spread: no interval, not a zero-width one
    Interval(n=2, mean=0.25, lo=nan, hi=nan, constant=True)
    """
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]  # a metric a run could not compute (NaN) is not a value
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    if n < 2:
        return Interval(n, mean, math.nan, math.nan)
    if np.ptp(np.round(values, DIFFERENCE_DECIMALS)) == 0:
        return Interval(n, mean, math.nan, math.nan, constant=True)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * values.std(ddof=1) / math.sqrt(n))
    lo, hi = mean - half, mean + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return Interval(n, mean, lo, hi)


# The range each per-run number can take; intervals over seeds are clipped to it. Not listed:
# unbounded or differences (paired differences are never clipped).
_UNIT = ("accuracy", "ece", "mce", "mean_confidence", "ece_over", "ece_under", "ece_adaptive", "ece_classwise",
         "smece", "aurc", "eaurc", "failure_auroc", "ece_ts", "mean_confidence_ts", "aurc_ts", "eaurc_ts",
         "aurc_max_logit", "aurc_margin", "auroc", "aupr_in", "aupr_out", "fpr95", "ece_low", "ece_high", "smece_low", "smece_high")
METRIC_BOUNDS: dict[str, tuple[float, float]] = {
    **{m: (0.0, 1.0) for m in _UNIT}, "overconfidence": (-1.0, 1.0), "brier": (0.0, 2.0),
    "test_nll": (0.0, math.inf), "nll_ts": (0.0, math.inf), "entropy": (0.0, math.inf),
    # A method's own loss may be negative (confidence penalty: CE - beta * H).
    "train_loss": (-math.inf, math.inf), "test_loss": (-math.inf, math.inf), "temperature": (0.0, math.inf)}


def at_level(i: Interval, confidence: float) -> Interval:
    """The same unclipped Student-t interval `i` (a 95 % one from `t_interval` without bounds, e.g.
    a paired difference) at another two-sided `confidence`: its half-width scaled by
    t(0.5 + confidence / 2, n - 1) / t(0.975, n - 1). NaN bounds stay NaN.

    >>> round(at_level(t_interval(np.array([1.0, 2.0, 3.0])), 0.99).hi, 3)  # 2 + 9.925 / sqrt(3)
    7.73
    """
    if i.n < 2 or math.isnan(i.lo) or math.isnan(i.hi):
        return i
    scale = float(stats.t.ppf(0.5 + confidence / 2, i.n - 1) / stats.t.ppf(0.5 + CONFIDENCE / 2, i.n - 1))
    half = (i.hi - i.lo) / 2 * scale
    return Interval(i.n, i.mean, i.mean - half, i.mean + half, i.constant)


def metric_interval(values: np.ndarray, metric: str) -> Interval:
    """`t_interval` of a per-run metric's values over seeds, clipped to the metric's range."""
    return t_interval(values, bounds=METRIC_BOUNDS.get(metric))


@dataclass(frozen=True)
class PairedTest:
    """A run minus the baseline on the same seeds: mean difference, its interval, two p-values, and
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
    diff = np.round(np.asarray(diff, dtype=float), DIFFERENCE_DECIMALS)
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
    """Paired comparison of two equally ordered per-seed arrays (n,) of float: NaN p-values when
    n < 2 or every difference is zero; no t-test (NaN, not scipy's p = 0) when every difference is
    the same. A pair with NaN on either side (a metric one run could not compute) is dropped first,
    so the interval, the t-test and the Wilcoxon test all see the same complete pairs.

    >>> paired_test(np.array([1.0, np.nan, 3.0, 4.0]), np.array([0.0, 1.0, 1.0, 3.0])).difference.n
    3
    """
    values, baseline = np.asarray(values, dtype=float), np.asarray(baseline, dtype=float)
    complete = ~(np.isnan(values) | np.isnan(baseline))
    values, baseline = values[complete], baseline[complete]
    diff = values - baseline
    interval = t_interval(diff)
    n_nonzero = int((np.round(diff, DIFFERENCE_DECIMALS) != 0).sum())
    if len(diff) < 2 or n_nonzero == 0:
        return PairedTest(interval, math.nan, math.nan, n_nonzero)
    p_t = math.nan if interval.constant else float(stats.ttest_rel(values, baseline).pvalue)
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


def runs_in_order(df: pd.DataFrame) -> list[tuple[tuple[str, float], pd.DataFrame]]:
    """((method, param), rows) of each run (method and parameter) of a frame, in
    `lsbench.methods.variant_order`: cross-entropy first, then each method's values ascending. The
    one order of every table, figure and finding."""
    from lsbench.methods import variant_order

    groups = [((str(m), float(p)), g) for (m, p), g in df.groupby(["method", "param"], sort=False)]
    return sorted(groups, key=lambda x: variant_order(*x[0]))


def rows_of(df: pd.DataFrame, run: tuple[str, float]) -> pd.DataFrame:
    """The rows of `df` that belong to `run` = (method, param)."""
    return df[(df["method"] == run[0]) & (df["param"] == run[1])]


def final_epoch_intervals(final: pd.DataFrame, metrics: tuple[str, ...]) -> dict[tuple[str, float], dict[str, Interval]]:
    """{(method, param): {metric: Interval over seeds}} for converged runs of the final epoch."""
    ok = final[~final["diverged"]]
    return {run: {m: metric_interval(group[m].to_numpy(), m) for m in metrics} for run, group in runs_in_order(ok)}


def paired_against(final: pd.DataFrame, metrics: tuple[str, ...],
                   baseline: tuple[str, float]) -> dict[tuple[str, float], dict[str, PairedTest]]:
    """{(method, param): {metric: PairedTest vs the baseline run}}, pairing runs by seed (converged
    pairs only; `paired_test` drops a pair whose metric is NaN on either side)."""
    ok = final[~final["diverged"]]
    base = rows_of(ok, baseline).set_index("seed")
    out: dict[tuple[str, float], dict[str, PairedTest]] = {}
    for run, group in runs_in_order(ok):
        if run == baseline:
            continue
        seeds = sorted(set(group["seed"]) & set(base.index))
        g = group.set_index("seed").loc[seeds]
        out[run] = {m: paired_test(g[m].to_numpy(), base.loc[seeds, m].to_numpy()) for m in metrics}
    return out
