"""Findings in words, generated from the tables: each a record with its estimate, 95 % interval and
test, and a sentence that says no more than they do.

Rules (per study, over its converged runs, final epoch; a run is a (method, param) of
`lsbench.methods`; baseline = the study's cross-entropy run (`Study.baseline`), diverged runs
included: when every baseline run diverged, or a table from before 0.3 has none, there is no
comparison and no claim of an effect is made; intervals are Student-t over seeds, paired ones over
the seeds both runs share; p from the paired t-test, `lsbench.stats`):
- miscalibration_direction (per run): overconfidence = mean confidence - accuracy. Over- or
  underconfident when its one-sample t-test rejects 0 (Holm, below) and the mean lies beyond
  ± 0.01, "no over- or underconfidence that matters" when its interval lies within ± 0.01, else
  "cannot tell".
- miscalibration_flip (per method): the first parameter value that is detectably underconfident
  after one (cross-entropy counting as the neutral value) that was detectably overconfident.
- method_setting (per method): the setting chosen by the lowest mean validation NLL (`select`),
  with the test-set optimum by ECE beside it, labelled as such; its ECE paired against cross-entropy.
- accuracy_effect, aurc_effect, ood_auroc_effect (per run): paired difference against cross-entropy.
- temperature_scaling_vs_method (per method, at its chosen setting): ECE of cross-entropy after
  temperature scaling against the method's ECE, paired by seed.
- best_method: the lowest mean ECE among cross-entropy and every method at its chosen setting
  (`rank_lowest`: on the seeds all share, at least two; a difference within the margin ranks
  nothing), paired against label smoothing's chosen setting and against temperature scaling alone.
- underconfident_methods, method_costs: the methods whose chosen setting ends detectably
  underconfident, and those that detectably lower accuracy or raise AURC.
Deciding a claim (`Judge`, `_decide`): every distinct test the study's findings make (paired
t-tests of a run against another, one-sample t-tests of overconfidence against 0) forms one family,
and Holm's step-down procedure controls its family-wise error at ALPHA = 0.05. Each claim is
decided on, and printed with, its t-interval at the level Holm tested it at (`holm`,
`Claim.adjusted`: it excludes 0 exactly when the Holm-adjusted p < 0.05). A claim of an effect
("lowers", "overconfident") needs that interval to exclude 0 and the estimate to exceed
MARGINS[metric] (the smallest difference that matters); "no difference that matters" when the
interval lies within ± the margin, else "cannot tell" ("inconclusive"). Without an interval the sentence says the data
cannot tell, and why: no seed has both runs, one pair of seeds, or differences that do not vary
over the seeds (no spread is not certainty). Each claim on a per-epoch metric is also decided on
each seed's mean over the last LAST_EPOCHS epochs and at each of them, and says when it depends on
the epoch (the mean over them is a member of the family; a single epoch is judged with
Bonferroni's level 1 - ALPHA / family size). A temperature fit that found no minimum of the
held-out NLL (`temperature_at_bound`, `lsbench.metrics.temperature_fit`) in any run makes the
temperature-scaling finding "cannot tell".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from statsmodels.stats.multitest import multipletests

from lsbench.io import KEY, METRIC_COLUMNS
from lsbench.methods import CROSS_ENTROPY, METHODS, variant_label, variant_order
from lsbench.stats import (METRIC_BOUNDS, Interval, PairedTest, at_level, metric_interval, paired_test, rows_of,
                           runs_in_order, t_interval)
from lsbench.studies import Study, by_variant

Run = tuple[str, float]  # (method, param)
BASELINE: Run = (CROSS_ENTROPY, 0.0)

# The family-wise error rate of one study's findings, controlled by Holm's step-down procedure
# (Holm 1979; statsmodels.stats.multitest.multipletests(method="holm")) over every distinct test
# a finding of the study makes.
ALPHA = 0.05
CORRECTION = "holm"
# A conclusion is checked at each of the last LAST_EPOCHS epochs too (training curves move: with
# the seed MLP, cross-entropy's ECE climbs from 0.015 to 0.059 over 20 epochs).
LAST_EPOCHS = 5
# The smallest difference that matters, per metric (units of the metric): no smaller estimate is
# claimed as an effect or ranks a run, and a difference is "no difference that matters" when its
# Holm-level interval lies within ± this margin (an equivalence test, Schuirmann's TOST); a wider
# interval is "cannot tell".
# 0.005 accuracy = 50 of 10 000 test images; 0.01 of ECE or overconfidence is a third of the seed
# MLP's ECE gap between cross-entropy and ε = 0.05.
MARGINS = {"accuracy": 0.005, "ece": 0.005, "ece_ts": 0.005, "overconfidence": 0.01, "aurc": 0.005, "auroc": 0.01}
DIRECTIONS = ("over", "under", "none", "inconclusive", "unknown")
# Metrics that the tables hold per epoch, so that a conclusion on them can be checked over epochs.
PER_EPOCH = frozenset(METRIC_COLUMNS)


@dataclass(frozen=True)
class Claim:
    """One tested conclusion: the test, its Holm-adjusted p over the study's `family` tests, the
    `direction` it supports, the direction the same test gives at each of the last epochs and on
    each seed's mean over them (`over_last`; empty / None when the metric is recorded for the final
    epoch only)."""

    test: PairedTest
    metric: str
    test_name: str
    p_holm: float
    family: int
    direction: str
    by_epoch: dict[int, str]
    over_last_direction: str | None = None
    over_last: PairedTest | None = None
    over_last_p_holm: float = math.nan
    # Holm tested this claim at ALPHA / divisor (`holm`): its interval is at level 1 - ALPHA / divisor.
    divisor: float = 1.0
    over_last_divisor: float = 1.0

    @property
    def level(self) -> float:
        """The confidence level of `adjusted`: 1 - ALPHA / divisor."""
        return 1 - ALPHA / self.divisor

    @property
    def adjusted(self) -> Interval:
        """The paired difference's t-interval at the level Holm's procedure tested it at: it
        excludes 0 exactly when the Holm-adjusted p is below ALPHA. The interval every verdict is
        decided on and printed with."""
        return at_level(self.test.difference, self.level)

    @property
    def holds_over_epochs(self) -> bool | None:
        """Whether the conclusion survives the choice of epoch: the mean over the last epochs gives
        the final epoch's direction and no single one of them the opposite effect (None: not
        checked). A single epoch of five seeds is noisy, so one at which an effect is merely not
        detectable does not overturn it."""
        if self.over_last_direction is None:
            return None
        opposite = {"over": "under", "under": "over"}.get(self.direction)
        return self.over_last_direction == self.direction and opposite not in self.by_epoch.values()


def _decide(d: Interval, metric: str) -> str:
    """The direction a difference supports, from its interval `d` at the claim's Holm level
    (`Claim.adjusted`): "over"/"under" (a detectable effect that matters: the interval excludes 0,
    i.e. Holm-adjusted p < ALPHA, and the estimate lies beyond ± MARGINS[metric]), "none" (the
    interval lies within ± the margin: no difference that matters, detectable or not),
    "inconclusive" (neither), "unknown" (no interval: under two seeds, or no spread). An effect
    smaller than the margin is never claimed, however small its p (a 1e-6 ECE gain every seed)."""
    if d.n < 2 or math.isnan(d.lo):
        return "unknown"
    margin = MARGINS.get(metric, 0.0)
    if (d.lo > 0 or d.hi < 0) and abs(d.mean) > margin:
        return "over" if d.mean > 0 else "under"
    return "none" if -margin <= d.lo and d.hi <= margin else "inconclusive"


class Judge:
    """Every test of one study's findings, and Holm's correction over them.

    `study_findings` runs twice: the first pass (`adjusted` None) records each distinct test's raw
    p-value; the second decides every claim with the Holm-adjusted p-values of the first, so each
    sentence and `direction` already accounts for the whole family. A test is identified by what
    it compares (frame, runs, columns), so the same comparison made by two findings counts once.
    """

    def __init__(self, study: Study, adjusted: dict[tuple, tuple[float, float]] | None = None):
        self.adjusted = adjusted
        self.raw: dict[tuple, float] = {}
        final = study.final()
        runs = final.loc[~final["diverged"], KEY]
        last = int(final["epoch"].max()) if len(final) else 0
        self.epochs = list(range(max(1, last - LAST_EPOCHS + 1), last + 1))
        # Each checked epoch's rows of the runs that converged (their state at that epoch), and
        # each run's mean over those epochs.
        self.at_epoch = {e: study.metrics[study.metrics["epoch"] == e].merge(runs, on=KEY) for e in self.epochs}
        numeric = [c for c in PER_EPOCH if c not in (*KEY, "epoch", "diverged", "divergence")]
        frames = [f for f in self.at_epoch.values() if len(f)]
        self.over_last = (pd.concat(frames).groupby(KEY, as_index=False)[numeric].mean() if frames
                          else pd.DataFrame(columns=[*KEY, *numeric]))

    @property
    def family(self) -> int:
        return len(self.adjusted) if self.adjusted is not None else 0

    def paired(self, df: pd.DataFrame, run: Run, column: str, baseline: Run = BASELINE,
               baseline_column: str | None = None, frame: str = "final") -> Claim:
        """`column` of `run` minus `baseline_column` of `baseline` over the seeds both have."""
        key = (frame, run, column, baseline, baseline_column or column)
        t = paired(df, run, column, baseline, baseline_column)
        by_epoch, over_last = {}, None
        if frame == "final" and column in PER_EPOCH and (baseline_column or column) in PER_EPOCH:
            by_epoch = {e: paired(self.at_epoch[e], run, column, baseline, baseline_column)
                        for e in self.epochs}
            over_last = paired(self.over_last, run, column, baseline, baseline_column)
        return self._claim(key, t, column, by_epoch, "paired t-test", over_last)

    def one_sample(self, df: pd.DataFrame, run: Run, column: str, frame: str = "final") -> Claim:
        """`column` of `run` against 0 (one-sample t-test, as a paired test against zeros)."""
        def test(frame: pd.DataFrame) -> PairedTest:
            v = rows_of(frame, run)[column].to_numpy(float)
            v = v[~np.isnan(v)]
            return paired_test(v, np.zeros_like(v))

        per_epoch = frame == "final" and column in PER_EPOCH
        by_epoch = {e: test(self.at_epoch[e]) for e in self.epochs} if per_epoch else {}
        over_last = test(self.over_last) if per_epoch else None
        key = ("one_sample", run, column) if frame == "final" else ("one_sample", frame, run, column)
        return self._claim(key, test(df), column, by_epoch, "one-sample t-test", over_last)

    def _claim(self, key: tuple, t: PairedTest, metric: str, by_epoch: dict[int, PairedTest], name: str,
               over_last: PairedTest | None = None) -> Claim:
        adjusted = self.adjusted or {}
        if not math.isnan(t.p_ttest):
            self.raw[key] = t.p_ttest
        p_holm, divisor = adjusted.get(key, (t.p_ttest, 1.0))
        # The mean over the last epochs is a claim of its own (the report states it): one more
        # member of the family, with its own Holm-adjusted p.
        last_key = ("mean of last epochs", *key)
        if over_last is not None and not math.isnan(over_last.p_ttest):
            self.raw[last_key] = over_last.p_ttest
        p_last, last_divisor = adjusted.get(last_key, (math.nan if over_last is None else over_last.p_ttest, 1.0))
        # A single epoch is a description, not a member of the family: it is judged on its interval
        # at level 1 - ALPHA / family size (Bonferroni), so it never claims more than the family allows.
        m = max(self.family, 1)

        def single(te: PairedTest) -> str:
            return _decide(at_level(te.difference, 1 - ALPHA / m), metric)

        return Claim(t, metric, name, p_holm, self.family, _decide(at_level(t.difference, 1 - ALPHA / divisor), metric),
                     {e: single(te) for e, te in by_epoch.items()},
                     None if over_last is None else _decide(at_level(over_last.difference, 1 - ALPHA / last_divisor),
                                                            metric),
                     over_last, p_last, divisor, last_divisor)


def holm(raw: dict[tuple, float]) -> dict[tuple, tuple[float, float]]:
    """{test: (Holm-adjusted p, divisor)} for raw p-values (statsmodels): Holm's step-down procedure
    (Holm 1979) tests the k-th smallest of m p-values at ALPHA / (m - k + 1) and stops at the first
    it cannot reject. `divisor` is the level each test was decided at: m - k + 1 for a rejected one,
    m - r (r rejections) for the rest, so that the t-interval at level 1 - ALPHA / divisor
    (`Claim.adjusted`) excludes 0 exactly when the adjusted p is below ALPHA: the Holm-consistent
    intervals of Strassburger & Bretz (2008, Stat. Med. 27:4914), two-sided and without their
    truncation at 0 of the rejected ones."""
    if not raw:
        return {}
    keys = list(raw)
    p = np.array([raw[k] for k in keys])
    adjusted = multipletests(p, alpha=ALPHA, method="holm")[1]
    rank = np.empty(len(p), int)
    rank[np.argsort(p, kind="stable")] = np.arange(len(p))
    rejected = adjusted < ALPHA
    accepted_divisor = len(p) - int(rejected.sum())
    return {k: (float(a), float(len(p) - r if rej else accepted_divisor))
            for k, a, r, rej in zip(keys, adjusted, rank, rejected)}


def _level_text(level: float) -> str:
    """A confidence level in percent with as many decimals as it takes to stay below 100."""
    percent, digits = 100 * level, 2
    while round(percent, digits) >= 100 and digits < 12:
        digits += 1
    return f"{percent:.{digits}f}"


def _holm_ci(c: Claim, digits: int = 4) -> str:
    """"-0.0208 [Holm 99.85 % CI -0.0301, -0.0115]": a claim's estimate with the interval its
    verdict was decided on (or why it has none)."""
    a = c.adjusted
    if a.n < 2 or math.isnan(a.lo):
        return f"{a.mean:+.{digits}f} ({_no_interval(a, signed=True, digits=digits)})"
    return f"{a.mean:+.{digits}f} [Holm {_level_text(c.level)} % CI {a.lo:+.{digits}f}, {a.hi:+.{digits}f}]"


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


def _difference(c: Claim, digits: int = 4) -> str:
    """The signed paired difference (run minus baseline) with the interval at its Holm level."""
    return f"difference {_holm_ci(c, digits)}"


def _test(c: Claim) -> str:
    """The test in words: its p, the Holm-adjusted p over the study's family, the seeds."""
    t = c.test
    p = "–" if math.isnan(t.p_ttest) else f"{t.p_ttest:.3g}"
    holm_p = "" if math.isnan(c.p_holm) or not c.family else f", Holm-adjusted p = {c.p_holm:.3g} over {c.family} tests"
    return f"{c.test_name} p = {p}{holm_p}, {t.difference.n} seeds"


_EPOCH_WORDS = {"over": "detectably positive", "under": "detectably negative",
                "none": "within the margin", "inconclusive": "cannot tell", "unknown": "no interval"}


def _span(epochs: list[int]) -> str:
    return f"epochs {epochs[0]}–{epochs[-1]}" if len(epochs) > 1 else f"epoch {epochs[0]}"


def _epochs_text(c: Claim) -> str:
    """Whether the conclusion holds over the last epochs, in a sentence ("" when not checked, or
    when a non-effect stays one)."""
    if not c.by_epoch or c.over_last_direction is None:
        return ""
    span = _span(list(c.by_epoch))
    groups: dict[str, list[int]] = {}
    for e, d in c.by_epoch.items():
        if d != c.direction:
            groups.setdefault(d, []).append(e)
    each = "; ".join(f"{_EPOCH_WORDS[d]} at epoch {', '.join(map(str, es))} alone" for d, es in groups.items())
    if c.holds_over_epochs:
        if c.direction not in ("over", "under"):
            return f" Over {span}: {each}." if each else ""
        return f" The same over {span} (each seed's mean over them)" + (f"; {each}" if each else "") + "."
    return (f" It depends on the epoch: on each seed's mean over {span}, {_EPOCH_WORDS[c.over_last_direction]}"
            + (f"; {each}" if each else "") + ".")


def _undecided(c: Claim) -> str:
    """Why an "inconclusive" claim is one, in words: the interval its verdict used reaches beyond
    the margin, and either includes 0 or lies beyond 0 by less than the margin's estimate."""
    a = c.adjusted
    if a.lo > 0 or a.hi < 0:
        return (f"the difference is detectable but its estimate is within{_margin_text(c)} and its interval "
                f"reaches beyond it")
    return f"not detectable, and the interval is wider than{_margin_text(c)}"


def _margin_text(c: Claim) -> str:
    margin = MARGINS.get(c.metric)
    return "" if margin is None else f" ± {margin:g}"


def _name(run: Run) -> str:
    return variant_label(*run)


def _run_fields(run: Run, prefix: str = "") -> dict[str, Any]:
    return {f"{prefix}method": run[0], f"{prefix}param": float(run[1]), f"{prefix}variant": _name(run)}


def _record(study: Study, id_: str, text: str, **numbers: Any) -> dict[str, Any]:
    return {"id": id_, "dataset": study.dataset, "model": study.model, "text": f"{study.title}: {text}", **numbers}


def _interval_fields(i: Interval) -> dict[str, Any]:
    return {"estimate": i.mean, "low": i.lo, "high": i.hi, "n": i.n}


def _holm_fields(i: Interval, divisor: float, metric: str | None = None) -> dict[str, Any]:
    """The interval a verdict was decided on: level (percent) and bounds at 1 - ALPHA / divisor.
    For a difference of `metric`, clipped to the differences its range allows (an ECE difference
    lies in [-1, 1]; with two seeds the Holm-level t-interval can reach +-5). Clipping keeps 0
    inside or outside, and an interval that reaches a clip is no narrower than the margin, so the
    verdict read from it is the same."""
    a = at_level(i, 1 - ALPHA / divisor)
    low, high = a.lo, a.hi
    if metric in METRIC_BOUNDS and all(map(math.isfinite, METRIC_BOUNDS[metric])):
        span = METRIC_BOUNDS[metric][1] - METRIC_BOUNDS[metric][0]
        low, high = (min(max(v, -span), span) for v in (low, high))
    return {"level_holm": 100 * (1 - ALPHA / divisor), "low_holm": low, "high_holm": high}


def _claim_fields(c: Claim) -> dict[str, Any]:
    """A claim's numbers under the names every record uses (docs/findings.md)."""
    return {"metric": c.metric, "margin": MARGINS.get(c.metric), **_interval_fields(c.test.difference),
            **_holm_fields(c.test.difference, c.divisor, c.metric),
            "p": c.test.p_ttest, "p_holm": c.p_holm,
            "family_size": c.family, "test": c.test_name, "direction": c.direction,
            "epochs_checked": list(c.by_epoch), "direction_by_epoch": {str(e): d for e, d in c.by_epoch.items()},
            "direction_over_last_epochs": c.over_last_direction,
            "over_last_epochs": None if c.over_last is None else {**_interval_fields(c.over_last.difference),
                                                                  **_holm_fields(c.over_last.difference,
                                                                                 c.over_last_divisor, c.metric),
                                                                  "p": c.over_last.p_ttest,
                                                                  "p_holm": c.over_last_p_holm},
            "holds_over_epochs": c.holds_over_epochs}


def runs_of(df: pd.DataFrame) -> list[Run]:
    """The (method, param) runs of a frame, cross-entropy first, then in registry order."""
    return [run for run, _ in runs_in_order(df)]



def _by_seed(df: pd.DataFrame, run: Run, column: str) -> pd.Series:
    """`column` of `run` by seed, without the seeds where it is NaN (a metric a run lacks)."""
    return rows_of(df, run).set_index("seed")[column].dropna()


def paired(df: pd.DataFrame, run: Run, column: str, baseline: Run = BASELINE,
           baseline_column: str | None = None) -> PairedTest:
    """`column` of `run` minus `baseline_column` (default: the same) of `baseline`, paired by seed."""
    a, b = _by_seed(df, run, column), _by_seed(df, baseline, baseline_column or column)
    seeds = sorted(set(a.index) & set(b.index))
    return paired_test(a.loc[seeds].to_numpy(float), b.loc[seeds].to_numpy(float))


def lowest(df: pd.DataFrame, runs: list[Run], column: str) -> Run:
    """The run among `runs` with the lowest mean `column` over the seeds that have it for every one
    of them, so that each mean is over the same seeds (a seed that diverged in one run would
    otherwise bias the comparison); over all seeds when no seed has every run."""
    wanted = set(runs)
    part = df[[r in wanted for r in zip(df["method"], df["param"].astype(float))]]
    per_seed = part.pivot_table(index="seed", columns=["method", "param"], values=column)
    common = per_seed.dropna()
    means = (common if not common.empty else per_seed).mean()
    return min(((str(m), float(p)) for m, p in means.index), key=lambda r: (means[r], variant_order(*r)))


@dataclass(frozen=True)
class Ranking:
    """The run with the lowest mean of a metric among candidates, as far as the data can rank them:
    `best` None with `why` when they cannot be ranked; `tied`, the other candidates whose mean lies
    within the metric's margin of the lowest (not ranked against `best`); `n`, the seeds compared."""

    best: Run | None
    tied: list[Run]
    n: int
    why: str = ""


def rank_lowest(df: pd.DataFrame, candidates: list[Run], column: str) -> Ranking:
    """Rank `candidates` by their mean `column` over the seeds on which every one of them has a
    value (never runs of different seeds against each other). No ranking of one candidate (a grid
    of cross-entropy alone), nor on fewer than two common seeds (one seed gives no interval). A
    difference within MARGINS[column] ranks nothing: candidates within it of the lowest mean are
    `tied`, and when cross-entropy (BASELINE) is one of them it is `best` (no method lowers the
    metric by a difference that matters)."""
    candidates = list(dict.fromkeys(candidates))
    if len(candidates) < 2:
        return Ranking(None, [], 0, "the grid has no method besides cross-entropy, so there is nothing to rank")
    wanted = set(candidates)
    part = df[[r in wanted for r in zip(df["method"], df["param"].astype(float))]]
    per_seed = part.pivot_table(index="seed", columns=["method", "param"], values=column)
    common = per_seed.reindex(columns=pd.MultiIndex.from_tuples(candidates)).dropna()
    if len(common) < 2:
        where = ("no seed has a converged run of every one of them" if common.empty else
                 f"only seed {int(common.index[0])} has a converged run of every one of them, and one seed "
                 "gives no interval")
        return Ranking(None, [], len(common), f"{where}, so no run is ranked against another")
    means = {r: float(common[r].mean()) for r in candidates}
    low = min(means.values())
    group = [r for r in candidates if means[r] - low <= MARGINS.get(column, 0.0)]
    best = BASELINE if BASELINE in group else min(group, key=lambda r: (means[r], variant_order(*r)))
    return Ranking(best, [r for r in group if r != best], len(common))


@dataclass(frozen=True)
class Selection:
    """A method's chosen setting: `chosen` by the lowest mean of `rule` ("val_nll", or "test_nll"
    when the tables hold no held-out NLL), and the test-set optimum by ECE, shown beside it. The
    candidates are the method's runs and, for a method with a neutral value, the cross-entropy run
    (its value 0: "this method does not help" is a possible answer)."""

    method: str
    chosen: Run
    rule: str
    test_optimum: Run
    candidates: int

    @property
    def label(self) -> str:
        """The chosen setting by the method's own name: cross-entropy as "label smoothing ε = 0.0
        (cross-entropy)"."""
        return setting_label(self.method, self.chosen)

    @property
    def test_set_choice(self) -> bool:
        return self.rule == "test_nll" and self.candidates > 1

    @property
    def rule_short(self) -> str:
        """The rule in a table cell."""
        if self.candidates == 1:
            return "its only setting"
        return "validation NLL" if self.rule == "val_nll" else "test NLL (no held-out images: a test-set choice)"

    @property
    def rule_text(self) -> str:
        if self.candidates == 1:
            return "its only setting"
        if self.rule == "val_nll":
            return "chosen by the lowest mean validation NLL (held-out training images)"
        return ("chosen by the lowest mean test NLL, a test-set choice: the tables hold no held-out NLL "
                "(validation_size 0, or tables of lsbench before 0.3)")


def setting_label(method: str, run: Run) -> str:
    """`run` named as a setting of `method`: the cross-entropy run as the method's neutral value."""
    spec = METHODS[method].param
    if run == BASELINE and method != CROSS_ENTROPY and spec is not None and spec.neutral is not None:
        return f"{variant_label(method, spec.neutral)} (cross-entropy)"
    return _name(run)


def select(df: pd.DataFrame) -> dict[str, Selection]:
    """Each method's chosen setting (not cross-entropy's own), by validation NLL (see `Selection`)."""
    out = {}
    present = runs_of(df)
    for method in dict.fromkeys(m for m, _ in present if m != CROSS_ENTROPY):
        spec = METHODS[method].param
        neutral = [BASELINE] if spec is not None and spec.neutral is not None and BASELINE in present else []
        runs = neutral + [r for r in present if r[0] == method]
        has_val = "val_nll" in df.columns and df.loc[df["method"] == method, "val_nll"].notna().any()
        rule = "val_nll" if has_val else "test_nll"
        out[method] = Selection(method, lowest(df, runs, rule), rule, lowest(df, runs, "ece"), len(runs))
    return out


def _effect(study: Study, id_: str, what: str, c: Claim, run: Run, up: str, down: str,
            digits: int = 4, baseline: Run = BASELINE, **extra: Any) -> dict[str, Any]:
    d, direction = c.test.difference, c.direction
    ci = _holm_ci(c, digits)
    if direction == "unknown":
        verdict = (f"cannot tell how {_name(run)} changes {what} against {_name(baseline)} "
                   f"({_no_interval(d, signed=True, digits=digits)})")
    elif direction == "none":
        verdict = (f"no difference that matters in {what} between {_name(run)} and {_name(baseline)} "
                   f"({ci}, within{_margin_text(c)}; {_test(c)})")
    elif direction == "inconclusive":
        verdict = (f"cannot tell whether {_name(run)} changes {what} against {_name(baseline)} by more than"
                   f"{_margin_text(c)}: {_undecided(c)} ({ci}; {_test(c)})")
    else:
        verdict = (f"{_name(run)} {up if direction == 'over' else down} {what} by {abs(d.mean):.{digits}f} against "
                   f"{_name(baseline)} ({_difference(c, digits)}, {_test(c)})")
    return _record(study, id_, verdict + "." + _epochs_text(c), **_run_fields(run), **_run_fields(baseline, "baseline_"),
                   **_claim_fields(c), **extra)


def direction_findings(study: Study, df: pd.DataFrame, judge: Judge) -> list[dict[str, Any]]:
    records, directions = [], {}
    for run in runs_of(df):
        i = metric_interval(rows_of(df, run)["overconfidence"].to_numpy(), "overconfidence")
        c = judge.one_sample(df, run, "overconfidence")
        d = directions[run] = c.direction
        words = {"over": "overconfident: mean confidence exceeds accuracy by",
                 "under": "underconfident: mean confidence falls short of accuracy by",
                 "none": "no over- or underconfidence that matters: mean confidence minus accuracy is",
                 "inconclusive": "cannot tell whether over- or underconfident: mean confidence minus accuracy is",
                 "unknown": "undetermined direction of miscalibration: mean confidence minus accuracy is"}[d]
        # The interval the verdict used (Holm level), clipped to overconfidence's range [-1, 1].
        a, (low, high) = c.adjusted, METRIC_BOUNDS["overconfidence"]
        a = Interval(a.n, a.mean, max(a.lo, low), min(a.hi, high), a.constant)
        shown = Interval(a.n, abs(a.mean), -a.hi, -a.lo, a.constant) if d == "under" else a
        why = {"none": f", within{_margin_text(c)}", "inconclusive": f"; {_undecided(c)}"}.get(d, "")
        level = f"Holm {_level_text(c.level)} % CI"
        shown_text = (f"{shown.mean:.4f} [{level} {shown.lo:.4f}, {shown.hi:.4f}]" if i.n >= 2 and not i.constant
                      else _ci(shown))
        fields = {**_claim_fields(c), **_interval_fields(i), "low_holm": a.lo, "high_holm": a.hi}
        records.append(_record(study, "miscalibration_direction",
                               f"{_name(run)}: {words} {shown_text}"
                               + (f" (t-interval over {i.n} seeds{why}; {_test(c)})." if i.n >= 2 else ".")
                               + _epochs_text(c),
                               **_run_fields(run), **fields))
    for method in dict.fromkeys(m for m, _ in directions if m != CROSS_ENTROPY):
        spec = METHODS[method].param
        chain = ([BASELINE] if spec is not None and spec.neutral is not None and BASELINE in directions else []) \
            + [r for r in directions if r[0] == method]
        last_over = None
        for run in chain:
            if directions[run] == "over":
                last_over = run
            elif directions[run] == "under" and last_over is not None:
                records.append(_record(study, "miscalibration_flip",
                                       f"{METHODS[method].title}: miscalibration flips from overconfidence at "
                                       f"{_name(last_over)} to underconfidence at {_name(run)}.",
                                       method=method, from_param=float(last_over[1]), to_param=float(run[1]),
                                       from_variant=_name(last_over), to_variant=_name(run)))
                break
    return records


def setting_finding(study: Study, df: pd.DataFrame, s: Selection, judge: Judge) -> dict[str, Any]:
    ece = metric_interval(rows_of(df, s.chosen)["ece"].to_numpy(), "ece")
    optimum = "" if s.candidates == 1 else (
        f"; the test-set optimum by ECE is {setting_label(s.method, s.test_optimum)}"
        + (" (the same)" if s.test_optimum == s.chosen else " (a test-set choice, shown for reference)"))
    head = f"{s.label}, {s.rule_text}{optimum}. "
    fields = {**_run_fields(s.chosen), "variant": s.label, "setting_of": s.method, "selection": s.rule,
              "candidates": s.candidates,
              **_run_fields(s.test_optimum, "test_optimum_"), "test_optimum_variant": setting_label(s.method, s.test_optimum),
              "ece": ece.mean, "ece_low": ece.lo, "ece_high": ece.hi}
    if s.chosen == BASELINE:
        text = head + (f"So {METHODS[s.method].title} does not help here: none of its other settings has a lower "
                       f"{'validation' if s.rule == 'val_nll' else 'test'} NLL than cross-entropy.")
        return _record(study, "method_setting", text, **fields, direction="none",
                       **{"estimate": 0.0, "low": 0.0, "high": 0.0, "n": ece.n, "p": math.nan, "p_holm": math.nan,
                          "family_size": judge.family, "test": "none", "epochs_checked": [], "direction_by_epoch": {},
                          "direction_over_last_epochs": None, "holds_over_epochs": None})
    c = judge.paired(df, s.chosen, "ece")
    head += f"Its ECE is {_ci(ece)}"
    tail = _verdict(c, "cross-entropy's", "cross-entropy")
    return _record(study, "method_setting", head + ": " + tail + "." + _epochs_text(c), **fields, **_claim_fields(c))


def _ts_at_bound(df: pd.DataFrame) -> int:
    return int(rows_of(df, BASELINE)["temperature_at_bound"].astype(bool).sum())


def temperature_finding(study: Study, df: pd.DataFrame, run: Run, judge: Judge) -> dict[str, Any] | None:
    if rows_of(df, BASELINE)["ece_ts"].isna().all():
        return None
    # The method's ECE minus temperature scaling's, as best_method's vs_temperature_scaling: one
    # test, one sign (over: temperature scaling is better).
    c = judge.paired(df, run, "ece", BASELINE, baseline_column="ece_ts")
    d, direction = c.test.difference, c.direction
    ts = metric_interval(_by_seed(df, BASELINE, "ece_ts").to_numpy(), "ece_ts")
    head = f"temperature scaling alone (cross-entropy's ECE after scaling, {_ci(ts)}) against {_name(run)}: "
    fields = {**_run_fields(run), **_claim_fields(c), "ece_ts": ts.mean, "ece_ts_low": ts.lo, "ece_ts_high": ts.hi}
    at_bound = _ts_at_bound(df)
    if at_bound:
        tail = (f"cannot tell: the held-out NLL has no minimum at a finite temperature (the fit ran to its search "
                f"bound) in {at_bound} of {len(rows_of(df, BASELINE))} runs, so the held-out images did not determine "
                "it (too few of them, or all ranked right?).")
        return _record(study, "temperature_scaling_vs_method", head + tail,
                       **{**fields, "direction": "unknown"}, runs_at_bound=at_bound)
    if direction == "over":
        tail = f"temperature scaling is better by {d.mean:.4f} ({_name(run)} minus it: {_difference(c)}, {_test(c)})."
    elif direction == "under":
        tail = f"{_name(run)} is better by {abs(d.mean):.4f} ({_difference(c)}, {_test(c)})."
    else:
        tail = _verdict(c) + "."
    return _record(study, "temperature_scaling_vs_method", head + tail, **fields, runs_at_bound=0)


def best_method_finding(study: Study, df: pd.DataFrame, chosen: dict[str, Selection], judge: Judge) -> dict[str, Any]:
    """The lowest mean test ECE among cross-entropy and each method's chosen setting, against
    cross-entropy, label smoothing's chosen setting and temperature scaling alone (paired tests)."""
    candidates = list(dict.fromkeys([BASELINE, *(s.chosen for s in chosen.values())]))
    # Every method's chosen setting may be cross-entropy itself (its neutral value): then it stands alone.
    ranking = rank_lowest(df, candidates, "ece") if len(candidates) > 1 else Ranking(BASELINE, [], 0)
    common = {"compared": [_name(r) for r in candidates],
              "test_set_choices": [s.method for s in chosen.values() if s.test_set_choice]}
    if ranking.best is None:
        return _record(study, "best_method", f"no method is ranked by test ECE: {ranking.why}.", method=None,
                       param=None, variant=NOT_RANKED, ece=math.nan, ece_low=math.nan, ece_high=math.nan,
                       n=ranking.n, within_margin=[], not_ranked=ranking.why, **common)
    best = ranking.best
    ece = metric_interval(rows_of(df, best)["ece"].to_numpy(), "ece")
    tied = [_name(r) for r in ranking.tied]
    margin = f"± {MARGINS['ece']:g}"
    if best == BASELINE and tied:
        parts = [f"of cross-entropy and every method at its chosen setting, none has a mean test ECE lower than "
                 f"cross-entropy's {_ci(ece)} by more than {margin} (the smallest difference that matters): "
                 f"{', '.join(tied)} {'is' if len(tied) == 1 else 'are'} within it and not ranked"]
    else:
        parts = [f"of cross-entropy and every method at its chosen setting, {_name(best)} has the lowest mean "
                 f"test ECE, {_ci(ece)}"]
        if tied:
            parts.append(f"{', '.join(tied)} {'is' if len(tied) == 1 else 'are'} within {margin} of it on the "
                         f"same seeds, so the grid does not rank {'it' if len(tied) == 1 else 'them'} against it")
    fields: dict[str, Any] = {**_run_fields(best), "ece": ece.mean, "ece_low": ece.lo, "ece_high": ece.hi,
                              "n": ece.n, "within_margin": tied, **common}
    if best != BASELINE:
        c = judge.paired(df, best, "ece")
        fields["vs_cross_entropy"] = _claim_fields(c)
        parts.append(f"against cross-entropy: {_verdict(c)}")
        acc = judge.paired(df, best, "accuracy")
        fields["accuracy_vs_cross_entropy"] = _claim_fields(acc)
        if acc.direction in ("under", "over"):
            parts.append(f"it also {'lowers' if acc.direction == 'under' else 'raises'} accuracy "
                         f"({_difference(acc)}, {_test(acc)})")
    ls = chosen.get("label_smoothing")
    if ls is not None and best != ls.chosen:
        c = judge.paired(df, best, "ece", ls.chosen)
        fields["vs_label_smoothing"] = {**_run_fields(ls.chosen), **_claim_fields(c)}
        parts.append(f"against label smoothing's chosen {ls.label}: {_verdict(c)}")
    if not rows_of(df, BASELINE)["ece_ts"].isna().all() and not _ts_at_bound(df):
        c = judge.paired(df, best, "ece", BASELINE, baseline_column="ece_ts")
        fields["vs_temperature_scaling"] = _claim_fields(c)
        parts.append(f"against temperature scaling alone: {_verdict(c)}")
    if fields["test_set_choices"]:
        parts.append("the settings of " + ", ".join(fields["test_set_choices"]) + " are test-set choices (no "
                     "held-out NLL in the tables), so this comparison favours them")
    return _record(study, "best_method", "; ".join(parts) + ".", **fields)


NOT_RANKED = "(not ranked)"


def _verdict(c: Claim, whose: str = "", other: str = "") -> str:
    """A comparison's outcome in words ("lower by ...", "no detectable difference ...", "cannot
    tell ..."); `whose`/`other` name the baseline in the sentence ("lower than cross-entropy's")."""
    d, direction = c.test.difference, c.direction
    ci = _holm_ci(c)
    against = f" from {other}" if other else ""
    if direction == "unknown":
        return f"the data cannot tell it{against} ({_no_interval(d, signed=True)})" if other \
            else f"cannot tell ({_no_interval(d, signed=True)})"
    if direction == "none":
        return f"no difference that matters{against} ({ci}, within{_margin_text(c)}; {_test(c)})"
    if direction == "inconclusive":
        return (f"cannot tell{(' it' + against) if other else ''}: {_undecided(c)} ({ci}; {_test(c)})")
    than = f" than {whose}" if whose else ""
    return f"{'lower' if direction == 'under' else 'higher'}{than} by {abs(d.mean):.4f} ({_difference(c)}, {_test(c)})"


def summary_findings(study: Study, records: list[dict[str, Any]], chosen: dict[str, Selection]) -> list[dict]:
    """Which methods end underconfident at their chosen setting, which cost accuracy or AURC."""
    picked = {s.chosen for s in chosen.values()} - {BASELINE}  # cross-entropy is no method's setting to list

    def hits(id_: str, direction: str) -> list[str]:
        return [r["variant"] for r in records if r["id"] == id_ and (r["method"], r["param"]) in picked
                and r["direction"] == direction]

    under = hits("miscalibration_direction", "under")
    lower_acc, higher_aurc = hits("accuracy_effect", "under"), hits("aurc_effect", "over")
    out = [_record(study, "underconfident_methods",
                   ("at their chosen settings, detectably underconfident (conf − acc < 0): " + ", ".join(under))
                   if under else "no method is detectably underconfident at its chosen setting.",
                   variants=under, count=len(under))]
    costs = [f"{v} lowers accuracy" for v in lower_acc] + [f"{v} raises AURC" for v in higher_aurc]
    out.append(_record(study, "method_costs",
                       ("against cross-entropy, at their chosen settings: " + "; ".join(costs))
                       if costs else "no method at its chosen setting detectably lowers accuracy or raises AURC "
                                     "against cross-entropy.",
                       lower_accuracy=lower_acc, higher_aurc=higher_aurc, count=len(costs)))
    return out


def ood_frame(study: Study, score: str = "msp") -> pd.DataFrame:
    return study.ood[study.ood["score"] == score].merge(study.converged_runs(), on=KEY)


def study_findings(study: Study) -> list[dict[str, Any]]:
    """Every finding for one study (a single record when all its runs diverged), each decided with
    Holm's correction over all the study's tests (`Judge`). The shift findings (`shift_findings`)
    form a family of their own, so that evaluating shifts cannot change a claim on clean data."""
    first = Judge(study)
    _findings(study, first)
    records = _findings(study, Judge(study, holm(first.raw)))
    if study.shifted().empty:
        return records
    first = Judge(study)
    shift_findings(study, first)
    shifted = shift_findings(study, Judge(study, holm(first.raw)))
    if records and records[0]["id"] == "answer":
        records[0] = with_shift_answer(study, records[0], shifted)
    return records + shifted


def with_shift_answer(study: Study, answer: dict[str, Any], shifted: list[dict[str, Any]]) -> dict[str, Any]:
    """The answer with one more sentence: at the highest severity, pooled over the shifts, which
    run has the lowest mean ECE, against cross-entropy and cross-entropy with clean-fitted
    temperature scaling (fields `shift_*`; each comparison a claim of the shift family)."""
    pooled = study.shift_pooled()
    top = int(pooled["severity"].max())
    at_top = pooled[pooled["severity"] == top]
    ranking = rank_lowest(at_top, runs_of(at_top), "ece")
    if ranking.best is None:
        sentence = (f"Under distribution shift (severity {top}, pooled over the shifts), no run is ranked by ECE: "
                    f"{ranking.why}.")
        sentences = [*answer["sentences"], sentence]
        return {**answer, "shift_severity": top, "shift_not_ranked": ranking.why, "sentences": sentences,
                "text": f"{study.title}: {' '.join(sentences)}"}
    best = ranking.best
    ece = metric_interval(rows_of(at_top, best)["ece"].to_numpy(), "ece")
    base = rows_of(at_top, BASELINE)
    fields: dict[str, Any] = {"shift_severity": top, **_run_fields(best, "shift_best_"),
                              "shift_best_ece": _interval_fields(ece),
                              "shift_within_margin": [_name(r) for r in ranking.tied]}
    clean = metric_interval(rows_of(pooled[pooled["severity"] == 0], best)["ece"].to_numpy(), "ece")
    fields["shift_best_ece_unshifted"] = _interval_fields(clean)
    parts = [f"Under distribution shift (severity {top}, pooled over the shifts), {_name(best)} has the lowest mean ECE, "
             f"{_range(fields['shift_best_ece'], signed=False)} ({_range(fields['shift_best_ece_unshifted'], signed=False)}"
             " on the same images unshifted)"
             + (f" ({', '.join(fields['shift_within_margin'])}: within ± {MARGINS['ece']:g} of it, not ranked)"
                if ranking.tied else "")]
    if not base.empty:
        fields["shift_baseline_ece"] = _interval_fields(metric_interval(base["ece"].to_numpy(), "ece"))
        fields["shift_temperature_scaling_ece"] = _interval_fields(metric_interval(base["ece_ts"].to_numpy(), "ece_ts"))
        for id_, key, what in (("shift_ece", "shift_best_vs_cross_entropy", "cross-entropy"),
                               ("shift_vs_temperature_scaling", "shift_best_vs_temperature_scaling",
                                "temperature scaling fitted on clean images")):
            rec = next((r for r in shifted if r["id"] == id_ and (r["method"], r["param"]) == best), None)
            if rec is not None:
                fields[key] = {k: rec["by_severity"][str(top)][k] for k in CLAIM_SUMMARY}
        parts.append(f"against cross-entropy's {_range(fields['shift_baseline_ece'], signed=False)} and "
                     f"{_range(fields['shift_temperature_scaling_ece'], signed=False)} after temperature scaling "
                     "fitted on clean images")
        claims = [f"{what}: {_holm_range(fields[key])}{_holm_text(fields[key])} "
                  f"({'detectably lower' if fields[key]['direction'] == 'under' else 'not detectably lower'})"
                  for key, what in (("shift_best_vs_cross_entropy", "vs cross-entropy"),
                                    ("shift_best_vs_temperature_scaling", "vs temperature scaling"))
                  if key in fields]
        if claims:
            parts.append("difference " + "; ".join(claims))
    sentence = ", ".join(parts[:2]) + (f" ({parts[2]})" if len(parts) > 2 else "") + "."
    versus = fields.get("shift_best_vs_cross_entropy")
    if best != BASELINE and (versus is None or versus["direction"] != "under"):
        # A lowest mean that no test separates from cross-entropy's is not a ranking.
        sentence += " That lowest mean is not separated from cross-entropy's: no method is shown better under shift."
    sentences = [*answer["sentences"], sentence]
    return {**answer, **fields, "sentences": sentences, "text": f"{study.title}: {' '.join(sentences)}"}


def _findings(study: Study, judge: Judge) -> list[dict[str, Any]]:
    df = study.converged()
    if df.empty:
        return [_record(study, "all_diverged", "every run diverged; there is nothing to conclude.")]
    records = direction_findings(study, df, judge)
    if rows_of(df, BASELINE).empty:
        why = ("every cross-entropy run diverged" if not rows_of(study.runs, BASELINE).empty
               else "the study has no cross-entropy run (a grid of lsbench before 0.3 without ε = 0)")
        return records + [_record(study, "baseline_diverged",
                                  f"{why}, so nothing can be compared with it: no claim of an effect of a method, "
                                  "of a best setting or of temperature scaling alone is made.",
                                  **_run_fields(BASELINE, "baseline_"))]
    others = [r for r in runs_of(df) if r != BASELINE]
    chosen = select(df)
    records += [setting_finding(study, df, s, judge) for s in chosen.values()]
    effects = [_effect(study, "accuracy_effect", "accuracy", judge.paired(df, r, "accuracy"), r, "raises", "lowers")
               for r in others]
    effects += [_effect(study, "aurc_effect", "AURC (risk–coverage with the max probability; lower is better)",
                        judge.paired(df, r, "aurc"), r, "raises", "lowers") for r in others]
    ood = ood_frame(study)
    if not ood.empty:
        what = f"OOD AUROC (max probability, {study.dataset} against {study.ood_set})"
        effects += [_effect(study, "ood_auroc_effect", what, judge.paired(ood, r, "auroc", frame="ood"), r,
                            "raises", "lowers", ood_set=study.ood_set, score="msp") for r in others]
    records += effects
    records += [ts for s in chosen.values()
                if s.chosen != BASELINE and (ts := temperature_finding(study, df, s.chosen, judge))]
    if chosen:
        records.append(best_method_finding(study, df, chosen, judge))
        records += summary_findings(study, records, chosen)
    return [answer_finding(study, df, records), *records]


SHIFT_FAMILY = "shift"
# A shift breaks a run at the highest severity when the run keeps less than this share of its
# accuracy above chance (1 / classes) on the unshifted images, even at the upper end of its interval.
BROKEN_SHARE = 0.5


def _severity_frames(pooled: pd.DataFrame) -> dict[int, pd.DataFrame]:
    return {int(s): g.reset_index(drop=True) for s, g in pooled.groupby("severity")}


def _severity_text(claims: dict[int, Claim], lower: str, higher: str) -> str:
    """"1: +0.0123 [Holm 99.85 % CI +0.0100, +0.0146] higher, Holm p = 0.003; 2: ..." for a
    severity -> claim mapping: each interval at the level its verdict was decided at (`Claim.adjusted`)."""
    words = {"over": higher, "under": lower, "none": "no difference that matters", "inconclusive": "cannot tell",
             "unknown": "no interval"}
    parts = []
    for s, c in claims.items():
        d = c.adjusted
        value = _holm_ci(c) if d.n >= 2 and not math.isnan(d.lo) else f"{d.mean:+.4f}"
        holm_p = f", Holm p = {c.p_holm:.3g}" if c.direction in ("over", "under") else ""
        parts.append(f"{'clean' if s == 0 else s}: {value} {words[c.direction]}{holm_p}")
    return "; ".join(parts)


def _by_severity(claims: dict[int, Claim]) -> dict[str, Any]:
    return {str(s): _claim_fields(c) for s, c in claims.items()}


def _severities_where(claims: dict[int, Claim], direction: str) -> list[int]:
    return [s for s, c in claims.items() if s > 0 and c.direction == direction]


def _lower_higher(lower: list[int], higher: list[int]) -> str:
    """"detectably lower at severities 3, 4, 5 and higher at severity 1", "not detectably lower or
    higher at any severity"."""
    if not lower and not higher:
        return "not detectably lower or higher at any severity"
    return " and ".join(part for part in (f"detectably lower {_levels(lower)}" if lower else "",
                                          f"{'' if lower else 'detectably '}higher {_levels(higher)}" if higher else "")
                        if part)


def _levels(severities: list[int]) -> str:
    """"at severities 3, 4, 5", "at severity 2", "at no severity"."""
    if not severities:
        return "at no severity"
    return f"at severit{'y' if len(severities) == 1 else 'ies'} {', '.join(map(str, severities))}"


def shift_findings(study: Study, judge: Judge) -> list[dict[str, Any]]:
    """The distribution-shift findings of a study (Ovadia et al. 2019's questions), each on every
    seed's mean over the shifts at one severity (`Study.shift_pooled`), paired by seed, Holm over
    the shift family:
    - shift_pooled: each run's pooled accuracy, ECE and ECE after temperature scaling per severity;
    - shift_ece (per run but cross-entropy): its ECE minus cross-entropy's at severities 1..5;
      `onset_severity` the first at which it is detectably lower (None: at none);
    - shift_vs_temperature_scaling (per run but cross-entropy): its ECE minus that of cross-entropy
      after clean-fitted temperature scaling (temperature scaling alone), unshifted and at 1..5;
    - shift_temperature_scaling (per run): ECE after the temperature fitted on clean held-out
      images minus ECE without it, unshifted and at severities 1..5 (negative: it still helps);
    - shift_aurc_penalty (per run but cross-entropy): its AURC minus cross-entropy's, unshifted and
      at the highest severity, and the change between the two (positive: the penalty grows);
    - shift_breaks: the shifts under which every run, at the highest severity, keeps less than
      BROKEN_SHARE of its unshifted accuracy above chance (upper 95 % bound)."""
    pooled = study.shift_pooled()
    frames = _severity_frames(pooled)
    shifted = study.shifted()
    n_shifts = shifted.loc[shifted["severity"] > 0, "shift"].nunique()
    n_images = int(shifted["n_images"].max())
    where = f"mean over {n_shifts} shifts per seed, {n_images} test images each"
    runs = runs_of(pooled)
    records = [pooled_shift_finding(study, pooled, where)]
    has_baseline = BASELINE in runs
    for run in runs:
        if run == BASELINE or not has_baseline:
            continue
        by = {s: judge.paired(f, run, "ece", frame=f"shift severity {s}") for s, f in frames.items() if s > 0}
        lower = _severities_where(by, "under")
        onset = lower[0] if lower else None
        head = (f"under shift ({where}), {_name(run)}'s ECE is detectably lower than cross-entropy's from severity "
                f"{onset} on" if onset is not None and lower == list(range(onset, max(by) + 1))
                else f"under shift ({where}), {_name(run)}'s ECE is detectably lower than cross-entropy's "
                f"{_levels(lower)}")
        records.append(_record(study, "shift_ece", f"{head} (ECE difference by severity: "
                               f"{_severity_text(by, 'lower', 'higher')}).", family=SHIFT_FAMILY,
                               **_run_fields(run), **_run_fields(BASELINE, "baseline_"), metric="ece",
                               onset_severity=onset, lower_at=lower, higher_at=_severities_where(by, "over"),
                               n_shifts=n_shifts, n_images=n_images, by_severity=_by_severity(by)))
        # Does the method beat temperature scaling alone (cross-entropy + clean-fitted T) under shift?
        by = {s: judge.paired(f, run, "ece", baseline_column="ece_ts", frame=f"shift severity {s}")
              for s, f in frames.items()}
        lower, higher = _severities_where(by, "under"), _severities_where(by, "over")
        records.append(_record(study, "shift_vs_temperature_scaling",
                               f"under shift ({where}), against cross-entropy with temperature scaling fitted on "
                               f"clean images, {_name(run)}'s ECE is {_lower_higher(lower, higher)} (ECE difference, "
                               f"by severity: {_severity_text(by, 'lower', 'higher')}).", family=SHIFT_FAMILY,
                               **_run_fields(run), **_run_fields(BASELINE, "baseline_"), metric="ece",
                               lower_at=lower, higher_at=higher, n_shifts=n_shifts, n_images=n_images,
                               by_severity=_by_severity(by)))
    for run in runs:
        by = {s: judge.paired(f, run, "ece_ts", baseline=run, baseline_column="ece", frame=f"shift severity {s}")
              for s, f in frames.items()}
        helps, hurts = _severities_where(by, "under"), _severities_where(by, "over")
        clean = by.get(0)
        clean_words = ("" if clean is None else
                       {"under": "lowers", "over": "raises", "none": "does not change (by more than the margin)"}.get(
                           clean.direction, "may or may not change (cannot tell)"))
        under = ("does not detectably change it by more than the margin at any severity" if not helps and not hurts else
                 " and ".join(part for part in (f"lowers it {_levels(helps)}" if helps else "",
                                                f"raises it {_levels(hurts)}" if hurts else "") if part))
        text = (f"temperature scaling fitted on clean held-out images {clean_words} {_name(run)}'s ECE on the unshifted "
                f"images; under shift ({where}) it {under} (ECE after minus before, by severity: "
                f"{_severity_text(by, 'lower', 'higher')}).")
        records.append(_record(study, "shift_temperature_scaling", text, family=SHIFT_FAMILY, **_run_fields(run),
                               metric="ece_ts", helps_at=helps, hurts_at=hurts, n_shifts=n_shifts,
                               n_images=n_images, by_severity=_by_severity(by)))
    top = max(frames) if frames else 0
    if has_baseline and top > 0 and 0 in frames:
        base = {s: frames[s][frames[s]["method"] == BASELINE[0]][["seed", "aurc"]] for s in (0, top)}
        for run in runs:
            if run == BASELINE:
                continue
            penalty = {}
            for s in (0, top):
                mine = rows_of(frames[s], run)[["seed", "aurc"]].merge(base[s], on="seed", suffixes=("", "_base"))
                penalty[s] = mine.assign(aurc=mine["aurc"] - mine["aurc_base"])[["seed", "aurc"]]
            change = penalty[top].merge(penalty[0], on="seed", suffixes=("", "_clean"))
            change = change.assign(aurc=change["aurc"] - change["aurc_clean"], method=run[0], param=run[1])
            c = judge.one_sample(change, run, "aurc", frame=f"shift AURC penalty change at severity {top}")
            at = {s: t_interval(p["aurc"].to_numpy()) for s, p in penalty.items()}  # a difference: unbounded
            verb = {"over": "grows", "under": "shrinks", "none": "does not change by more than the margin",
                    "inconclusive": "may or may not change (cannot tell)", "unknown": "cannot be compared"}[c.direction]
            text = (f"{_name(run)}'s AURC penalty against cross-entropy (its AURC minus cross-entropy's) is "
                    f"{at[0].mean:+.4f} [{at[0].lo:+.4f}, {at[0].hi:+.4f}] on the unshifted images and "
                    f"{at[top].mean:+.4f} [{at[top].lo:+.4f}, {at[top].hi:+.4f}] at severity {top} ({where}): it "
                    f"{verb} under shift (change {_holm_ci(c)}, {_test(c)}).")
            records.append(_record(study, "shift_aurc_penalty", text, family=SHIFT_FAMILY, **_run_fields(run),
                                   **_run_fields(BASELINE, "baseline_"), severity=top,
                                   penalty_clean=_interval_fields(at[0]), penalty_shifted=_interval_fields(at[top]),
                                   n_shifts=n_shifts, n_images=n_images, **_claim_fields(c)))
    if top > 0:
        records.append(broken_shifts_finding(study, shifted, top))
    return records


POOLED_SHIFT_METRICS = ("accuracy", "ece", "ece_ts")


def pooled_shift_finding(study: Study, pooled: pd.DataFrame, where: str) -> dict[str, Any]:
    """shift_pooled: per run and severity the accuracy, ECE and ECE after clean-fitted temperature
    scaling, mean [95 % t-interval] over seeds of each seed's mean over the shifts (the report's
    pooled tables; a description, no test). `by_run`: {variant: {severity: {metric: interval}}}."""
    by_run: dict[str, Any] = {}
    for run in runs_of(pooled):
        rows = rows_of(pooled, run)
        by_run[_name(run)] = {str(int(s)): {m: _interval_fields(metric_interval(g[m].to_numpy(), m))
                                            for m in POOLED_SHIFT_METRICS}
                              for s, g in rows.groupby("severity")}
    top = str(int(pooled["severity"].max()))

    def ece(name: str, severity: str, metric: str = "ece") -> str:
        return _range(by_run[name][severity][metric], signed=False)

    parts = [f"{name}'s ECE is {ece(name, '0')} unshifted and {ece(name, top)} at severity {top} "
             f"({ece(name, '0', 'ece_ts')} and {ece(name, top, 'ece_ts')} after temperature scaling fitted on clean "
             "images)" for name in by_run]
    return _record(study, "shift_pooled", f"pooled over the shifts ({where}): " + "; ".join(parts) + ".",
                   family=SHIFT_FAMILY, by_run=by_run)


def broken_shifts_finding(study: Study, shifted: pd.DataFrame, top: int) -> dict[str, Any]:
    """shift_breaks: see `shift_findings`."""
    chance = 1 / study.num_classes
    clean = shifted[shifted["severity"] == 0].groupby(["method", "param"])["accuracy"].mean()
    worst = shifted[shifted["severity"] == top]
    broken, detail = [], {}
    from lsbench.shifts import suite_order

    order = {name: i for i, name in enumerate(suite_order(worst["shift"]))}
    worst = worst.sort_values("shift", key=lambda c: c.map(order), kind="stable")
    for shift, g in worst.groupby("shift", sort=False):
        rows = {}
        for run, label, r in by_variant(g):
            i = metric_interval(r["accuracy"].to_numpy(), "accuracy")
            limit = chance + BROKEN_SHARE * (float(clean.get(run, np.nan)) - chance)
            high = i.hi if i.n >= 2 and not math.isnan(i.hi) else i.mean
            rows[label] = {**_interval_fields(i), "limit": limit, "broken": bool(high < limit)}
        detail[shift] = rows
        if rows and all(v["broken"] for v in rows.values()):
            broken.append(shift)
    pooled = worst.groupby("shift")["accuracy"].mean().sort_values()
    hardest = str(pooled.index[0]) if len(pooled) else None
    if broken:
        text = (f"at severity {top}, {', '.join(broken)} {'breaks' if len(broken) == 1 else 'break'} every method: "
                f"each keeps less than "
                f"{BROKEN_SHARE:.0%} of its unshifted accuracy above chance ({chance:.2f}), at the upper end of its "
                f"95 % interval over seeds.")
    else:
        text = (f"at severity {top}, no shift breaks every method (each keeping less than {BROKEN_SHARE:.0%} of its "
                "unshifted accuracy above chance).")
    if hardest is not None:
        text += f" The hardest shift is {hardest} (accuracy {pooled.iloc[0]:.4f}, mean over methods and seeds)."
    ordered = [s for s in worst["shift"].drop_duplicates()]
    return _record(study, "shift_breaks", text, family=SHIFT_FAMILY, severity=top, shifts=broken, count=len(broken),
                   chance=chance, share=BROKEN_SHARE, hardest=hardest,
                   hardest_accuracy=None if hardest is None else float(pooled.iloc[0]),
                   by_shift={s: detail[s] for s in ordered})


def _range(fields: dict[str, Any], digits: int = 4, signed: bool = True) -> str:
    """"+0.0123 [+0.0100, +0.0146]" from estimate/low/high (no brackets without an interval)."""
    f = "+" if signed else ""
    est, lo, hi = fields["estimate"], fields["low"], fields["high"]
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return f"{est:{f}.{digits}f} ({_why_no_interval(fields)})"
    return f"{est:{f}.{digits}f} [{lo:{f}.{digits}f}, {hi:{f}.{digits}f}]"


def _why_no_interval(fields: dict[str, Any]) -> str:
    n = fields.get("n")
    if n == 1:
        return "one seed: no interval"
    return "no seed to compare on" if n == 0 else "no spread over seeds: no interval"


def _holm_range(fields: dict[str, Any], digits: int = 4) -> str:
    """"+0.0123 [Holm 99.85 % CI +0.0100, +0.0146]" from a claim's fields: the interval its
    direction was decided on (`_claim_fields`), or why there is none."""
    est, lo, hi = fields["estimate"], fields.get("low_holm"), fields.get("high_holm")
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return f"{est:+.{digits}f} ({_why_no_interval(fields)})"
    return f"{est:+.{digits}f} [Holm {_level_text(fields['level_holm'] / 100)} % CI {lo:+.{digits}f}, {hi:+.{digits}f}]"


# A claim's numbers as the answer copies them (docs/findings.md, record `answer`).
CLAIM_SUMMARY = ("metric", "estimate", "low", "high", "level_holm", "low_holm", "high_holm", "n", "direction",
                 "p_holm")


def _holm_text(fields: dict[str, Any]) -> str:
    """", Holm-adjusted p = ..." as the findings print it ("" without a test)."""
    p = fields.get("p_holm")
    return "" if p is None or (isinstance(p, float) and math.isnan(p)) else f", Holm-adjusted p = {p:.3g}"


def _change(fields: dict[str, Any] | None, what: str) -> str:
    """A paired claim in a clause: "accuracy falls by 0.0030 [...]", "no detectable change in ..."."""
    if fields is None:
        return f"{what} is not compared"
    d = fields["direction"]
    if d in ("over", "under"):
        return (f"{what} {'rises' if d == 'over' else 'falls'} by {abs(fields['estimate']):.4f} "
                f"(difference {_holm_range(fields)}{_holm_text(fields)})")
    if d == "none":
        return (f"{what} does not change by more than ± {MARGINS[fields['metric']]:g} "
                f"({_holm_range(fields)}{_holm_text(fields)})")
    if d == "inconclusive":
        return (f"the data cannot tell whether {what} changes by more than ± {MARGINS[fields['metric']]:g} "
                f"({_holm_range(fields)}{_holm_text(fields)})")
    return f"the data cannot tell how {what} changes ({_why_no_interval(fields)})"


def answer_finding(study: Study, df: pd.DataFrame, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The study's question answered in three to five sentences, from its other records: is
    cross-entropy over- or underconfident, which method (at its chosen setting) has the lowest
    ECE, does temperature scaling alone beat it, and what it costs in accuracy and AURC. Each
    number a sentence quotes is a field (`sentences` holds the text, one item per sentence)."""
    def get(id_: str, **where: Any) -> dict[str, Any] | None:
        return next((r for r in records if r["id"] == id_ and all(r.get(k) == v for k, v in where.items())), None)

    base = get("miscalibration_direction", method=CROSS_ENTROPY, param=0.0)
    fields: dict[str, Any] = {"baseline_overconfidence": {k: base[k] for k in ("estimate", "low", "high", "level_holm",
                                                                                "low_holm", "high_holm", "n",
                                                                                "direction", "p_holm")}}
    state = {"over": "overconfident", "under": "underconfident",
             "none": "calibrated to within ± 0.01 (no over- or underconfidence that matters)",
             "inconclusive": "over- or underconfident by an amount the data cannot tell from 0 or from ± 0.01",
             "unknown": "miscalibrated in a direction the data cannot tell"}[base["direction"]]
    if base["n"] == 1:
        value = (f"is {base['estimate']:+.4f} on its one converged seed, and one seed gives no interval and no "
                 "test")
    elif base["low_holm"] is None or math.isnan(base["low_holm"]):
        value = f"is {base['estimate']:+.4f} on every seed alike, and no spread over seeds gives no interval"
    else:
        value = f"is {_holm_range(base)} over {base['n']} seeds{_holm_text(base)}"
    sentences = [f"Trained with cross-entropy, {study.model} on {study.title.split(' × ')[0]} is {state}: mean "
                 f"confidence − accuracy {value}."]
    flips = [r for r in records if r["id"] == "miscalibration_flip"]
    if flips:
        under = {r["to_variant"]: get("miscalibration_direction", method=r["method"], param=r["to_param"])
                 for r in flips}
        sentences[0] += " " + "; ".join(f"{r['to_variant'][:1].upper()}{r['to_variant'][1:]} overshoots: it "
                                       f"makes the model underconfident ({_holm_range(under[r['to_variant']])})"
                                       for r in flips) + "."
        fields["flips"] = [{**{k: r[k] for k in ("method", "from_param", "to_param")},
                            "overconfidence": {k: under[r["to_variant"]][k] for k in ("estimate", "low", "high",
                                                                                      "level_holm", "low_holm",
                                                                                      "high_holm", "n")}}
                           for r in flips]
    best = get("best_method")
    if best is None:  # no method besides cross-entropy: nothing to compare it with, not even itself
        sentences.append("The grid trains cross-entropy alone, so no method is compared with it.")
        return _record(study, "answer", " ".join(sentences), sentences=sentences, **fields)
    if best["method"] is None:
        fields["best"] = {"method": None, "param": None, "variant": best["variant"], "not_ranked": best["not_ranked"]}
        sentences.append(f"No method is ranked by ECE: {best['not_ranked']}.")
        return _record(study, "answer", " ".join(sentences), sentences=sentences, **fields)
    ce = metric_interval(rows_of(df, BASELINE)["ece"].to_numpy(), "ece")
    fields["cross_entropy_ece"] = _interval_fields(ce)
    fields["best"] = {k: best[k] for k in ("method", "param", "variant", "ece", "ece_low", "ece_high", "within_margin")}
    ece = {"estimate": best["ece"], "low": best["ece_low"], "high": best["ece_high"], "n": best["n"]}
    tied = best["within_margin"]
    if (best["method"], best["param"]) == BASELINE:
        sentences.append(f"No method at its chosen setting has a mean ECE lower than cross-entropy's "
                         f"{_range(ece, signed=False)} by more than ± {MARGINS['ece']:g}"
                         + (f" ({', '.join(tied)}: within it, not ranked)" if tied else "") + ".")
    else:
        vs = best["vs_cross_entropy"]
        fields["best_vs_cross_entropy"] = vs
        verdict = ("lower" if vs["direction"] == "under" else
                   "not detectably lower" if vs["direction"] in ("none", "inconclusive", "unknown") else "higher")
        sentences.append(f"Of the methods at their chosen settings, {best['variant']} has the lowest ECE, "
                         f"{_range(ece, signed=False)}, {verdict} than cross-entropy's {_range(_interval_fields(ce), signed=False)} "
                         f"(difference {_holm_range(vs)}{_holm_text(vs)})"
                         + (f"; {', '.join(tied)} {'is' if len(tied) == 1 else 'are'} within ± {MARGINS['ece']:g} "
                            "of it, not ranked against it" if tied else "") + ".")
    ts = best.get("vs_temperature_scaling")
    if ts is not None:
        fields["best_vs_temperature_scaling"] = ts
        ts_ece = metric_interval(rows_of(df, BASELINE)["ece_ts"].to_numpy(), "ece_ts")
        fields["temperature_scaling_ece"] = _interval_fields(ts_ece)
        word = {"over": "beats it", "under": "does not beat it (the method is lower)",
                "none": "does as well (no difference that matters)", "inconclusive": "cannot be told apart from it",
                "unknown": "cannot be told apart from it"}[ts["direction"]]
        sentences.append(f"Temperature scaling alone (cross-entropy rescaled on held-out images) reaches ECE "
                         f"{_range(_interval_fields(ts_ece), signed=False)} and {word}: {best['variant']}'s ECE "
                         f"minus temperature scaling's is {_holm_range(ts)}{_holm_text(ts)}.")
    else:
        at_bound = _ts_at_bound(df)
        why = (f"its temperature fit found no minimum of the held-out NLL (search bound) in {at_bound} of "
               f"{len(rows_of(df, BASELINE))} runs"
               if at_bound else "no held-out images to fit it on (validation_size 0)")
        fields["temperature_scaling_not_compared"] = {"runs_at_bound": at_bound}
        sentences.append(f"Temperature scaling alone cannot be compared here: {why}.")
    if (best["method"], best["param"]) != BASELINE:
        acc = get("accuracy_effect", method=best["method"], param=best["param"])
        aurc = get("aurc_effect", method=best["method"], param=best["param"])
        fields["best_accuracy_change"] = None if acc is None else {k: acc[k] for k in CLAIM_SUMMARY}
        fields["best_aurc_change"] = None if aurc is None else {k: aurc[k] for k in CLAIM_SUMMARY}
        sentences.append(f"Its cost against cross-entropy: {_change(acc, 'accuracy')}; "
                         f"{_change(aurc, 'AURC (selective prediction; lower is better)')}.")
    return _record(study, "answer", " ".join(sentences), sentences=sentences, **fields)


def json_ready(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """NaN and NumPy scalars as JSON has them: null and plain numbers (nested ones too)."""
    def clean(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        if isinstance(v, (np.floating, float)):
            return None if math.isnan(float(v)) else float(v)
        if isinstance(v, np.integer):
            return int(v)
        return v

    return [{k: clean(v) for k, v in r.items()} for r in records]


def claims(records: list[dict[str, Any]]) -> dict[str, str]:
    """Every claim of a findings document's records, as {what is claimed: the claim}: each tested
    record's direction, each method's chosen setting, the flips, the best method and its
    comparisons, the lists of underconfident and costly settings. Two grids make the same claims
    when these agree (`compare_claims`)."""
    out: dict[str, str] = {}
    for r in records:
        study = f"{r['dataset']} × {r['model']}"
        id_ = r["id"]
        # A claim on a per-epoch metric is also made on each seed's mean over the last epochs.
        last = (f" (mean of epochs {r['epochs_checked'][0]}–{r['epochs_checked'][-1]})"
                if r.get("direction_over_last_epochs") else None)
        if id_ in ("miscalibration_direction", "accuracy_effect", "aurc_effect", "ood_auroc_effect",
                   "temperature_scaling_vs_method"):
            out[f"{study}: {id_}, {r['variant']}"] = r["direction"]
            if last:
                out[f"{study}: {id_}, {r['variant']}{last}"] = r["direction_over_last_epochs"]
        elif id_ == "method_setting":
            out[f"{study}: chosen setting of {r['setting_of']}"] = r["variant"]
            out[f"{study}: method_setting, {r['setting_of']} ECE against cross-entropy"] = r["direction"]
            if last:
                out[f"{study}: method_setting, {r['setting_of']} ECE against cross-entropy{last}"] = \
                    r["direction_over_last_epochs"]
        elif id_ == "miscalibration_flip":
            out[f"{study}: miscalibration_flip, {r['method']}"] = f"{r['from_variant']} → {r['to_variant']}"
        elif id_ == "best_method":
            tied = r.get("within_margin") or []
            out[f"{study}: best method"] = r["variant"] + (f" (within the margin: {', '.join(tied)})" if tied else "")
            for part in ("vs_cross_entropy", "accuracy_vs_cross_entropy", "vs_label_smoothing", "vs_temperature_scaling"):
                if part in r:
                    out[f"{study}: best method {part}"] = r[part]["direction"]
        elif id_ in ("underconfident_methods",):
            out[f"{study}: {id_}"] = ", ".join(r["variants"]) or "none"
        elif id_ == "method_costs":
            out[f"{study}: {id_}"] = "; ".join(r["lower_accuracy"] + r["higher_aurc"]) or "none"
        elif id_ in ("baseline_diverged", "all_diverged"):
            out[f"{study}: {id_}"] = "yes"
        elif id_ in ("shift_ece", "shift_temperature_scaling", "shift_vs_temperature_scaling"):
            for severity, c in r["by_severity"].items():
                out[f"{study}: {id_}, {r['variant']}, severity {severity}"] = c["direction"]
            if id_ == "shift_ece":
                out[f"{study}: shift_ece onset, {r['variant']}"] = str(r["onset_severity"])
        elif id_ == "shift_aurc_penalty":
            out[f"{study}: {id_}, {r['variant']}"] = r["direction"]
        elif id_ == "shift_breaks":
            out[f"{study}: {id_}"] = ", ".join(r["shifts"]) or "none"
    return out


_STR, _STRS = {"type": "string"}, {"type": "array", "items": {"type": "string"}}
_DIRECTION = {"type": "object", "required": ["direction"], "properties": {"direction": _STR}}
# What `claims` reads of each kind of record, by id: the fields a findings.json must hold for its
# claims to be compared (`record_schema`).
_CLAIM_FIELDS: dict[tuple[str, ...], dict[str, dict]] = {
    ("miscalibration_direction", "accuracy_effect", "aurc_effect", "ood_auroc_effect", "temperature_scaling_vs_method",
     "shift_aurc_penalty"): {"variant": _STR, "direction": _STR},
    ("method_setting",): {"setting_of": _STR, "variant": _STR, "direction": _STR},
    ("miscalibration_flip",): {"method": _STR, "from_variant": _STR, "to_variant": _STR},
    ("best_method",): {"variant": _STR},
    ("underconfident_methods",): {"variants": _STRS},
    ("method_costs",): {"lower_accuracy": _STRS, "higher_aurc": _STRS},
    ("shift_ece", "shift_temperature_scaling", "shift_vs_temperature_scaling"):
        {"variant": _STR, "by_severity": {"type": "object", "additionalProperties": _DIRECTION}},
    ("shift_ece",): {"onset_severity": {"type": ["integer", "null", "string"]}},
    ("shift_breaks",): {"shifts": _STRS},
}


def record_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one findings record as far as `claims` reads it: id,
    dataset and model strings, each id's claim fields (`_CLAIM_FIELDS`), and epochs_checked
    non-empty wherever direction_over_last_epochs names a direction."""
    by_id = [{"if": {"required": ["id"], "properties": {"id": {"enum": list(ids)}}},
              "then": {"required": list(fields), "properties": fields}} for ids, fields in _CLAIM_FIELDS.items()]
    last = {"if": {"required": ["direction_over_last_epochs"],
                   "properties": {"direction_over_last_epochs": {"type": "string", "minLength": 1}}},
            "then": {"required": ["epochs_checked"], "properties": {"epochs_checked": {"type": "array", "minItems": 1}}}}
    parts = {part: _DIRECTION for part in ("vs_cross_entropy", "accuracy_vs_cross_entropy", "vs_label_smoothing",
                                           "vs_temperature_scaling")}
    return {"type": "object", "required": ["id", "dataset", "model"],
            "properties": {"id": _STR, "dataset": _STR, "model": _STR, **parts,
                           "direction_over_last_epochs": {"type": ["string", "null"]}},
            "allOf": [*by_id, last]}


# Outcomes that claim no effect. "none" also bounds the difference within the margin, which
# "cannot tell" does not: two grids that differ so claim no effect either way, but not the same;
# an effect against either is a difference, and opposite effects contradict.
_NON_EFFECTS = {"none", "inconclusive", "unknown"}


def compare_claims(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Each claim of two findings documents' records side by side: `agreement` is "same",
    "no effect either way" (neither claims an effect: one "no detectable difference", i.e. within the
    margin, the other "cannot tell"),
    "differs" (an effect against a non-effect, another setting, a claim only one makes),
    "contradicts" (opposite effects) or "not compared" (a shift claim when only one of the two grids
    evaluated shifts)."""
    ca, cb = claims(a), claims(b)
    # A grid that evaluated no shifts makes no shift claim: those of the other are not compared.
    shifted = [any(r.get("family") == SHIFT_FAMILY for r in doc) for doc in (a, b)]
    rows = []
    for key in list(dict.fromkeys([*ca, *cb])):
        x, y = ca.get(key, "(not made)"), cb.get(key, "(not made)")
        if ": shift_" in key and not all(shifted):
            agreement = "not compared"
        elif x == y:
            agreement = "same"
        elif x in _NON_EFFECTS and y in _NON_EFFECTS:
            agreement = "no effect either way"
        elif {x, y} == {"over", "under"}:
            agreement = "contradicts"
        else:
            agreement = "differs"
        rows.append({"claim": key, "a": x, "b": y, "agreement": agreement})
    return rows
