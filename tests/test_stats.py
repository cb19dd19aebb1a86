import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from lsbench.stats import final_epoch_intervals, paired_against, paired_test, t_interval


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
    assert math.isnan(paired_test(a, a).p_ttest)


def _final(rows):
    return pd.DataFrame(rows, columns=["seed", "epsilon", "accuracy", "diverged"])


def test_pairs_by_seed_and_skips_diverged():
    final = _final([(0, 0.0, 0.80, False), (1, 0.0, 0.90, False), (2, 0.0, 0.70, False),
                    (2, 0.2, 0.78, False), (0, 0.2, 0.85, False), (1, 0.2, 0.10, True)])
    tests = paired_against(final, ("accuracy",), 0.0)
    diff = tests[0.2]["accuracy"].difference
    assert diff.n == 2 and diff.mean == pytest.approx(0.065)  # seeds 0 and 2; seed 1 diverged
    intervals = final_epoch_intervals(final, ("accuracy",))
    assert intervals[0.2]["accuracy"].n == 2 and intervals[0.0]["accuracy"].n == 3


def test_single_seed_report_says_no_interval(tmp_path, tiny_dataset_file):
    from lsbench.config import TrainConfig
    from lsbench.pipeline import collect, train_one
    from lsbench.report import Tables, render

    cfg = TrainConfig(epochs=1, batch_size=32, device="cpu")
    runs = [tmp_path / "a", tmp_path / "b"]
    train_one(tiny_dataset_file, runs[0], 0, 0.0, cfg, False, lambda m: None)
    train_one(tiny_dataset_file, runs[1], 0, 0.2, cfg, False, lambda m: None)
    collect(runs, tmp_path / "results", lambda m: None)
    html = render(Tables.read(tmp_path / "results"))
    section = html.split('id="statistics"')[1].split("</section>")[0]
    assert "n=1, no interval" in section and "cannot reach p &lt; 0.05" in section
