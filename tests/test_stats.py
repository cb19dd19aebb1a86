import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from lsbench.stats import final_epoch_intervals, metric_interval, paired_against, paired_test, t_interval


def test_t_interval_by_hand():
    x = np.array([0.88, 0.89, 0.90, 0.87])
    i = t_interval(x)
    half = 3.182446305284263 * x.std(ddof=1) / 2  # t(0.975, 3) * s / sqrt(4)
    assert i.n == 4 and i.mean == pytest.approx(0.885)
    assert (i.lo, i.hi) == pytest.approx((0.885 - half, 0.885 + half))


def test_one_value_has_no_interval():
    i = t_interval(np.array([0.5]))
    assert i.n == 1 and i.mean == 0.5 and math.isnan(i.lo) and math.isnan(i.hi)


def test_paired_test_by_hand():
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.5, 2.1, 3.9, 4.2])
    d = a - b
    t = d.mean() / (d.std(ddof=1) / 2)
    expected_p = 2 * scipy_stats.t.sf(abs(t), 3)
    result = paired_test(a, b)
    assert result.difference.mean == pytest.approx(d.mean())
    assert result.p_ttest == pytest.approx(expected_p)
    # Exact Wilcoxon, n=4, all differences negative: p = 2 / 2**4.
    assert result.p_wilcoxon == pytest.approx(2 / 16)
    assert result.n_wilcoxon == 4 and not result.wilcoxon_can_reject
    assert math.isnan(paired_test(a, a).p_ttest)


def test_wilcoxon_with_tied_differences_is_the_sign_flip_p_value():
    d = np.array([10, 10, -10, 20, 30, 20]) * 1e-4
    result = paired_test(0.5 + d, np.full(6, 0.5))
    assert result.p_wilcoxon == pytest.approx(0.125, abs=1e-12)
    reference = scipy_stats.wilcoxon(d, method=scipy_stats.PermutationMethod()).pvalue
    assert result.p_wilcoxon == pytest.approx(reference, abs=1e-12)
    # By hand: average ranks |d| -> 2, 2, 2, 4.5, 6, 4.5 (W+ = 19); of the 64 sign flips, 8 have
    # W+ >= 19 or W+ <= 2 (the distribution is symmetric about 10.5): p = 8 / 64.
    assert result.wilcoxon_can_reject


def test_wilcoxon_drops_zero_differences_and_counts_what_is_left():
    base = np.full(7, 0.5)
    d = np.array([0.0, 0.0, 0.01, 0.02, 0.03, 0.04, -0.005])
    result = paired_test(base + d, base)
    assert result.difference.n == 7 and result.n_wilcoxon == 5 and not result.wilcoxon_can_reject
    nonzero = d[d != 0]
    expected = scipy_stats.wilcoxon(nonzero, method=scipy_stats.PermutationMethod()).pvalue
    assert result.p_wilcoxon == pytest.approx(expected, abs=1e-12)
    # Every sign flip of 5 distinct ranks: W+ = 14 of 15 is reached by 2 of 32 flips each side.
    assert result.p_wilcoxon == pytest.approx(4 / 32)


def _final(rows):
    df = pd.DataFrame(rows, columns=["seed", "param", "accuracy", "diverged"])
    return df.assign(dataset="d", model="m", method=np.where(df["param"] == 0, "cross_entropy", "label_smoothing"))


def test_pairs_by_seed_and_skips_diverged():
    final = _final([(0, 0.0, 0.80, False), (1, 0.0, 0.90, False), (2, 0.0, 0.70, False),
                    (2, 0.2, 0.78, False), (0, 0.2, 0.85, False), (1, 0.2, 0.10, True)])
    tests = paired_against(final, ("accuracy",), ("cross_entropy", 0.0))
    diff = tests["label_smoothing", 0.2]["accuracy"].difference
    assert diff.n == 2 and diff.mean == pytest.approx(0.065)  # seeds 0 and 2; seed 1 diverged
    intervals = final_epoch_intervals(final, ("accuracy",))
    assert intervals["label_smoothing", 0.2]["accuracy"].n == 2 and intervals["cross_entropy", 0.0]["accuracy"].n == 3
    assert list(intervals) == [("cross_entropy", 0.0), ("label_smoothing", 0.2)]


STATS = 'id="fashion_mnist-mlp-statistics"'


def test_single_seed_report_says_no_interval(report_tables):
    from lsbench.report import render

    html = render(report_tables(seeds=[0]))
    section = html.split(STATS)[1].split("</section>")[0]
    assert "n=1, no interval" in section and "cannot reach p &lt; 0.05" in section


def _paired_rows(html: str) -> list[str]:
    section = html.split(STATS)[1].split("</section>")[0]
    return section.split("<h4>")[1].split("<tr>")[2:]


def _rows_by_epsilon(rows: list[str]) -> dict[str, str]:
    return {row.split("<td>")[1].split("</td>")[0]: row for row in rows}


def test_small_n_caveat_follows_the_pairs_in_each_row(report_tables):
    """6 seeds, one eps=0.1 run diverged: eps=0.1 has 5 pairs (no p < 0.05 possible), eps=0.2 six."""
    from lsbench.report import render

    html = render(report_tables(seeds=range(6), epsilons=(0.0, 0.1, 0.2), diverged={(3, 0.1)}))
    rows = _rows_by_epsilon(_paired_rows(html))
    a, b = "label smoothing ε = 0.1", "label smoothing ε = 0.2"
    assert set(rows) == {a, b}
    # Five pairs: every Wilcoxon cell marked. Six: only a metric whose tied seeds leave fewer non-zero.
    assert "<td>5</td>" in rows[a] and rows[a].count("†") == 6
    assert "<td>6</td>" in rows[b] and rows[b].count("†") < 6


def test_close_epsilons_get_distinct_labels(report_tables):
    from lsbench.report import render

    html = render(report_tables(seeds=range(2), epsilons=(0.0, 0.001, 0.004)))
    for section in ("summary", "statistics", "temperature"):
        body = html.split(f'id="fashion_mnist-mlp-{section}"')[1].split("</section>")[0]
        assert "<td>label smoothing ε = 0.001</td>" in body and "<td>label smoothing ε = 0.004</td>" in body, section
    assert "<td>0.00</td>" not in html


def test_intervals_stay_within_the_metrics_range():
    # ECEs near 0 over 3 seeds: mean 0.0077, half-width 4.3 * 0.0107 / sqrt(3) = 0.0266.
    ece = metric_interval(np.array([0.001, 0.002, 0.02]), "ece")
    assert ece.lo == 0.0 and ece.hi == pytest.approx(0.0077 + 0.0266, abs=1e-4)
    assert metric_interval(np.array([0.99, 0.999, 1.0]), "accuracy").hi == 1.0
    assert metric_interval(np.array([0.1, 0.12, 0.5]), "temperature").lo == 0.0
    # Overconfidence may be negative; differences and unknown columns are not clipped.
    assert metric_interval(np.array([-0.01, 0.0, 0.02]), "overconfidence").lo < 0
    assert t_interval(np.array([0.001, 0.002, 0.02])).lo < 0


def test_missing_values_are_not_counted():
    i = t_interval(np.array([0.1, np.nan, 0.3]))
    assert i.n == 2 and i.mean == pytest.approx(0.2) and not math.isnan(i.lo)


def test_differences_that_do_not_vary_have_no_interval_and_no_t_test():
    """Two seeds, both exactly +1/64: no spread is not certainty (scipy's t-test says p = 0)."""
    base = np.array([0.5, 0.25])
    result = paired_test(base + 1 / 64, base)
    assert result.difference.constant and result.difference.mean == 1 / 64
    assert math.isnan(result.difference.lo) and math.isnan(result.difference.hi)
    assert math.isnan(result.p_ttest)
    assert t_interval(np.array([0.9, 0.9, 0.9])).constant


def test_wilcoxon_ties_equal_image_count_gains():
    """Accuracies are k/N: equal gains in images tie although their float differences differ in
    the last bits. Ranks 5, 5, 5, 2.5, 2.5, 1 give p = 0.3125 (the exact no-ties method: 0.28125)."""
    k = np.array([8735, 8607, 8846, 8819, 8922, 8902])
    gain = np.array([30, 30, 30, -20, -20, 10])
    result = paired_test((k + gain) / 10_000, k / 10_000)
    assert result.p_wilcoxon == pytest.approx(0.3125, abs=1e-12)
    integers = scipy_stats.wilcoxon(gain, method=scipy_stats.PermutationMethod()).pvalue
    assert result.p_wilcoxon == pytest.approx(integers, abs=1e-12)


def test_paired_against_drops_a_pair_with_nan_before_every_test():
    # Seed 1's ECE is NaN on the method's side: the interval, the t-test and the Wilcoxon test all
    # use the four complete pairs (before: an interval over 4, p = NaN, Wilcoxon over 5).
    base = [0.05, 0.06, 0.055, 0.052, 0.058]
    mine = [0.03, np.nan, 0.031, 0.029, 0.035]
    f = pd.DataFrame({"seed": list(range(5)) * 2, "method": ["cross_entropy"] * 5 + ["label_smoothing"] * 5,
                      "param": [0.0] * 5 + [0.1] * 5, "diverged": False, "ece": base + mine})
    test = paired_against(f, ("ece",), ("cross_entropy", 0.0))[("label_smoothing", 0.1)]["ece"]
    keep = [0, 2, 3, 4]
    a, b = np.array(mine)[keep], np.array(base)[keep]
    assert test.difference.n == 4 and test.n_wilcoxon == 4
    assert test.p_ttest == pytest.approx(scipy_stats.ttest_rel(a, b).pvalue)
    assert test.p_wilcoxon == pytest.approx(scipy_stats.wilcoxon(a - b).pvalue)
    # NaN on the baseline's side, the same.
    assert paired_test(np.array(base), np.array(mine)).difference.n == 4


def test_an_interval_at_another_level_by_hand():
    from lsbench.stats import at_level

    x = np.array([0.88, 0.89, 0.90, 0.87])
    i = at_level(t_interval(x), 1 - 0.05 / 4)
    half = scipy_stats.t.ppf(1 - 0.05 / 8, 3) * x.std(ddof=1) / 2
    assert (i.lo, i.hi) == pytest.approx((0.885 - half, 0.885 + half))
    assert math.isnan(at_level(t_interval(np.array([0.5])), 0.99).lo)
