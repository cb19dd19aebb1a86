import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_calibration_error

from lsbench.metrics import (adaptive_ece, bin_index, calibration_bins, classwise_ece, ece_from_bins,
                             evaluate_logits, expected_calibration_error, mce_from_bins, ood_detection,
                             probabilities, reliability_table, risk_coverage_curve, smooth_ece)


def reference_ece_loop(conf: np.ndarray, correct: np.ndarray, n_bins: int) -> tuple[float, float]:
    """Plain-Python ECE/MCE with the documented convention: [b/n, (b+1)/n) compared in float64,
    the last bin [lo, 1]."""
    ece, mce, n = 0.0, 0.0, len(conf)
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        mask = (conf >= lo) & ((conf < hi) if b < n_bins - 1 else (conf <= 1.0))
        if mask.any():
            gap = abs(conf[mask].mean() - correct[mask].mean())
            ece += mask.sum() / n * gap
            mce = max(mce, gap)
    return ece, mce


def random_logits(n=2000, c=10, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, c)) * scale).astype(np.float32), rng.integers(0, c, n)


def test_hand_computed_ece():
    probs = np.array([[0.4, 0.3, 0.3], [0.9, 0.05, 0.05], [0.2, 0.2, 0.6]])
    # bin [0, .5): conf .4 correct -> gap .6 (1/3); bin [.5, 1]: .9 wrong + .6 correct -> .25 (2/3)
    assert expected_calibration_error(probs, np.array([0, 1, 2]), n_bins=2) == pytest.approx(0.6 / 3 + 0.25 * 2 / 3)
    bins = calibration_bins(probs.max(1), np.array([1, 0, 1]), n_bins=2)
    assert mce_from_bins(*bins) == pytest.approx(0.6)


def test_one_probability_path_near_a_bin_edge():
    # The float64 softmax gives confidence 0.53333326 < 8/15, so row 1 (correct) shares bin 7,
    # [7/15, 8/15), with row 2 (confidence 0.5, wrong): gap 0.51666663 - 0.5. A float32
    # exp(log_softmax) rounded row 1 up into bin 8 and gave ECE 0.4833.
    logits = np.array([[0.13353109, 0.0], [0.0, 0.0]], dtype=np.float32)
    labels = np.array([0, 1])
    m = evaluate_logits(logits, labels)
    assert m["ece"] == pytest.approx(0.0167, abs=1e-4)
    probs = probabilities(logits)
    assert probs[0, 0] < 8 / 15
    table = reliability_table(probs, labels)
    assert table["count"][7] == 2
    assert m["ece"] == pytest.approx(expected_calibration_error(probs, labels), abs=0)


def test_bin_membership_is_exact_in_float64():
    # float32(0.2) = 0.200000003 belongs to [3/15, 4/15); float32 linspace edges put it lower.
    probs = np.array([[0.2] * 5, [0.25, 0.1875, 0.1875, 0.1875, 0.1875]], dtype=np.float32).astype(np.float64)
    assert expected_calibration_error(probs, np.array([0, 1])) == pytest.approx(0.275, abs=1e-7)
    assert bin_index(np.array([np.float32(0.2), 0.2, 3 / 15, np.nextafter(3 / 15, 0)])).tolist() == [3, 3, 3, 2]
    assert bin_index(np.array([0.0, 1.0, np.nextafter(1.0, 0)])).tolist() == [0, 14, 14]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_torchmetrics_away_from_edges(seed):
    logits, labels = random_logits(seed=seed)
    probs32 = torch.softmax(torch.from_numpy(logits), 1)
    conf32 = probs32.max(1).values.double().numpy()
    # Agreement is expected wherever the float32 and float64 views agree on every bin.
    assert (bin_index(conf32) == bin_index(probabilities(logits).max(1))).all()
    for norm, ours in (("l1", ece_from_bins), ("max", mce_from_bins)):
        ref = multiclass_calibration_error(probs32, torch.from_numpy(labels), num_classes=10, n_bins=15, norm=norm)
        conf, pred = probabilities(logits).max(1), probabilities(logits).argmax(1)
        assert ours(*calibration_bins(conf, pred == labels)) == pytest.approx(float(ref), abs=1e-6)


def test_matches_reference_loop_on_bin_edges():
    # Confidences on exact bin edges k/15 (float64) and just below them exercise which side is closed.
    edges = np.array([k / 15 for k in range(16)])
    conf = np.concatenate([edges, np.nextafter(edges[1:], 0), edges.astype(np.float32).astype(np.float64)])
    correct = np.arange(len(conf)) % 3 == 0
    ece, mce = reference_ece_loop(conf, correct.astype(float), 15)
    bins = calibration_bins(conf, correct)
    assert ece_from_bins(*bins) == pytest.approx(ece, abs=1e-12)
    assert mce_from_bins(*bins) == pytest.approx(mce, abs=1e-12)


def test_confidence_exactly_one_goes_to_last_bin():
    count, _, _ = calibration_bins(np.array([1.0, 1.0, 0.99]), np.array([1, 1, 0]))
    assert count[-1] == 3 and count.sum() == 3
    # torchmetrics gives 1.0 a bin of its own, so its ECE differs here: the documented difference.
    probs = np.array([[1.0, 0.0], [1.0, 0.0], [0.99, 0.01]])
    labels = np.array([0, 0, 1])
    ours = expected_calibration_error(probs, labels)
    ref = float(multiclass_calibration_error(torch.tensor(probs, dtype=torch.float32), torch.tensor(labels),
                                             num_classes=2, n_bins=15))
    assert ours == pytest.approx((1.0 + 1.0 + 0.99) / 3 - 2 / 3)
    assert ref == pytest.approx(0.99 / 3)


def test_edge_cases_empty_all_correct_all_wrong():
    conf = np.array([0.95, 0.97, 0.99])
    count, s, k = calibration_bins(conf, np.ones(3, dtype=bool))
    assert int((count == 0).sum()) == 14  # empty bins contribute nothing
    assert ece_from_bins(count, s, k) == pytest.approx(1 - conf.mean())
    assert ece_from_bins(*calibration_bins(conf, np.zeros(3, dtype=bool))) == pytest.approx(conf.mean())
    table = reliability_table(np.array([[0.95, 0.05]]), np.array([0]))
    assert math.isnan(table["accuracy"][0]) and table["count"][-1] == 1 and table["accuracy"][-1] == 1.0


def test_batched_bins_equal_full():
    logits, labels = random_logits(n=3000, seed=5)
    probs = probabilities(logits)
    conf, correct = probs.max(1), probs.argmax(1) == labels
    full = calibration_bins(conf, correct)
    parts = [calibration_bins(conf[i:i + 700], correct[i:i + 700]) for i in range(0, 3000, 700)]
    for j in range(3):
        np.testing.assert_allclose(full[j], sum(p[j] for p in parts))


def test_evaluate_logits_against_torch():
    logits, labels = random_logits(n=500, seed=3, scale=2.0)
    m = evaluate_logits(logits, labels)
    z, y = torch.from_numpy(logits).double(), torch.from_numpy(labels)
    p = torch.softmax(z, 1)
    onehot = F.one_hot(y, 10).double()
    assert m["accuracy"] == pytest.approx((p.argmax(1) == y).double().mean().item())
    assert m["test_nll"] == pytest.approx(F.cross_entropy(z, y).item(), rel=1e-12)
    assert "test_loss" not in m  # the run's own objective: lsbench.train.objective_on (test_methods)
    assert m["brier"] == pytest.approx(((p - onehot) ** 2).sum(1).mean().item(), rel=1e-12)
    assert m["entropy"] == pytest.approx(-(p * p.log()).sum(1).mean().item(), rel=1e-12)
    assert m["mean_confidence"] == pytest.approx(p.max(1).values.mean().item(), rel=1e-12)
    assert m["overconfidence"] == pytest.approx(m["mean_confidence"] - m["accuracy"])
    ref = multiclass_calibration_error(torch.softmax(z, 1), y, num_classes=10, n_bins=15)
    assert m["ece"] == pytest.approx(float(ref), abs=1e-6)  # torchmetrics sums in float32


def test_metrics_survive_underflowing_probabilities():
    # A logit gap of 800 underflows exp() even in float64: NLL and entropy stay finite via log-softmax.
    m = evaluate_logits(np.array([[800.0, 0.0], [0.0, 800.0]]), np.array([1, 1]))
    assert m["test_nll"] == pytest.approx(400.0) and m["entropy"] == pytest.approx(0.0)
    assert m["accuracy"] == 0.5


def reference_adaptive_ece(conf: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    order = np.argsort(conf, kind="stable")
    total = 0.0
    for chunk in np.array_split(order, n_bins):  # equal mass, sizes differ by at most one
        if len(chunk):
            total += len(chunk) / len(conf) * abs(conf[chunk].mean() - correct[chunk].mean())
    return total


def test_adaptive_ece_matches_reference_loop_without_ties():
    logits, labels = random_logits(n=1500, seed=7)
    probs = probabilities(logits)
    conf, correct = probs.max(1), (probs.argmax(1) == labels).astype(float)
    assert len(np.unique(conf)) == len(conf)
    ref = reference_adaptive_ece(conf, correct, 15)
    assert adaptive_ece(conf, correct) == pytest.approx(ref, abs=1e-12)
    # Equal mass: with N a multiple of n_bins every bin holds N / n_bins samples.
    assert adaptive_ece(np.full(30, 0.7), np.ones(30)) == pytest.approx(0.3)


def test_adaptive_ece_keeps_ties_in_one_bin_whatever_the_row_order():
    conf = np.full(30, 0.6)
    correct = np.array([1] * 15 + [0] * 15)
    rng = np.random.default_rng(0)
    values = {round(adaptive_ece(conf, correct[rng.permutation(30)]), 12) for _ in range(20)}
    values |= {round(adaptive_ece(conf, correct), 12), round(adaptive_ece(conf, correct[::-1]), 12)}
    assert values == {0.1}
    # Ties among distinct values: the result depends on the multiset of (confidence, correct) only.
    conf2 = np.repeat([0.3, 0.6, 0.9], 10)
    correct2 = np.arange(30) % 2
    perm = rng.permutation(30)
    assert adaptive_ece(conf2, correct2, n_bins=4) == pytest.approx(adaptive_ece(conf2[perm], correct2[perm], n_bins=4))


def test_classwise_ece_matches_reference_loop():
    logits, labels = random_logits(n=1200, c=4, seed=8)
    probs = probabilities(logits)
    expected = np.mean([reference_ece_loop(probs[:, c], (labels == c).astype(float), 15)[0] for c in range(4)])
    assert classwise_ece(probs, labels) == pytest.approx(expected, abs=1e-12)


def test_ece_over_and_under_add_up():
    for seed, scale in ((0, 4.0), (1, 0.5)):
        logits, labels = random_logits(n=800, seed=seed, scale=scale)
        m = evaluate_logits(logits, labels)
        assert m["ece_over"] + m["ece_under"] == pytest.approx(m["ece"], abs=1e-12)
        assert m["ece_over"] >= 0 and m["ece_under"] >= 0
    # Random labels with sharp logits: confident and wrong, so the ECE is all overconfidence.
    sharp_logits, _ = random_logits(n=800, seed=9, scale=20.0)
    sharp = evaluate_logits(sharp_logits, labels)
    assert sharp["ece_under"] == pytest.approx(0.0, abs=1e-3) and sharp["ece_over"] > 0.5


# --- selective prediction, smooth ECE, OOD --------------------------------------------------------

def aurc_by_definition(scores, correct) -> float:
    """The issue's formula, group by group: sum_g (n_g / N) * risk of everything scored >= c_g."""
    scores, correct = np.asarray(scores, float), np.asarray(correct, bool)
    total = 0.0
    for c in np.unique(scores):
        group = scores == c
        accepted = scores >= c
        total += group.sum() / len(scores) * (~correct[accepted]).mean()
    return total


def test_aurc_by_hand_and_by_definition():
    from lsbench.metrics import aurc, ideal_aurc

    assert aurc(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1])) == pytest.approx((0 + 1 / 2 + 1 / 3) / 3)
    # Ties enter together: the two 0.5s have risk 1/2 however the rows are ordered.
    assert aurc(np.array([0.5, 0.5]), np.array([1, 0])) == aurc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 20, 500) / 20  # many ties
    correct = rng.random(500) < 0.3 + scores / 2
    assert aurc(scores, correct) == pytest.approx(aurc_by_definition(scores, correct), abs=1e-12)
    # Without ties: the mean over i of the risk of the i most confident.
    distinct = rng.random(300)
    right = rng.random(300) < distinct
    order = np.argsort(-distinct)
    risks = np.cumsum(~right[order]) / np.arange(1, 301)
    assert aurc(distinct, right) == pytest.approx(risks.mean(), abs=1e-12)
    # The ideal ranking's AURC is ideal_aurc, so its E-AURC is 0; a reversed ranking is worse.
    ideal_scores = right.astype(float) + distinct * 1e-3
    assert aurc(ideal_scores, right) == pytest.approx(ideal_aurc(right), abs=1e-12)
    assert aurc(-ideal_scores, right) > aurc(distinct, right) > ideal_aurc(right)


def test_selective_metrics_from_evaluate_logits():
    from sklearn.metrics import roc_auc_score

    from lsbench.metrics import aurc, ideal_aurc, top_label

    logits, labels = random_logits(n=1000, seed=11, scale=2.0)
    m = evaluate_logits(logits, labels)
    conf, correct = top_label(probabilities(logits), labels)
    assert m["aurc"] == aurc(conf, correct) and m["eaurc"] == pytest.approx(m["aurc"] - ideal_aurc(correct))
    assert m["failure_auroc"] == pytest.approx(roc_auc_score(correct, conf))
    import relplot

    assert m["smece"] == pytest.approx(relplot.smECE(conf, correct.astype(float)))
    nan = evaluate_logits(np.full((3, 2), np.nan, np.float32), np.array([0, 1, 0]))
    assert all(math.isnan(nan[k]) for k in ("aurc", "eaurc", "failure_auroc", "smece"))


def test_failure_auroc_counts_ties_one_half():
    from lsbench.metrics import failure_auroc

    assert failure_auroc(np.array([0.7, 0.7, 0.9, 0.1]), np.array([1, 0, 1, 0])) == pytest.approx(
        (1 + 1 + 0.5 + 1) / 4)  # pairs (right, wrong): (.7,.7) ties, the others ordered
    assert math.isnan(failure_auroc(np.array([0.5, 0.6]), np.array([1, 1])))


def test_rejection_scores_and_alternative_aurcs():
    from scipy.special import logsumexp

    from lsbench.metrics import aurc, rejection_aurcs, rejection_scores

    z = np.array([[3.0, 1.0, 0.0], [0.5, 0.4, 2.0]])
    s = rejection_scores(z)
    assert s["max_logit"].tolist() == [3.0, 2.0] and s["margin"].tolist() == pytest.approx([2.0, 1.5])
    assert s["energy"] == pytest.approx(logsumexp(z, axis=1)) and s["msp"] == pytest.approx(probabilities(z).max(1))
    logits, labels = random_logits(n=400, seed=12)
    correct = probabilities(logits).argmax(1) == labels
    alt = rejection_aurcs(logits, correct)
    assert alt["aurc_max_logit"] == aurc(logits.max(1), correct)


def test_ood_detection_against_sklearn_and_by_hand():
    from sklearn.metrics import roc_auc_score

    from lsbench.metrics import ood_detection

    rng = np.random.default_rng(3)
    inside, outside = rng.normal(1, 1, 400), rng.normal(0, 1, 300)
    got = ood_detection(inside, outside)
    y = np.r_[np.ones(400), np.zeros(300)]
    assert got["auroc"] == pytest.approx(roc_auc_score(y, np.r_[inside, outside]))
    threshold = np.sort(inside)[int(np.floor(0.05 * 400))]  # keeps 380 of 400 = 95 %
    assert got["fpr95"] == pytest.approx((outside >= threshold).mean())
    # AUPR: average precision with either side as the positive class (scikit-learn).
    from sklearn.metrics import average_precision_score

    assert got["aupr_in"] == pytest.approx(average_precision_score(y, np.r_[inside, outside]))
    assert got["aupr_out"] == pytest.approx(average_precision_score(1 - y, -np.r_[inside, outside]))
    assert ood_detection(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == {"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0,
                                                                       "fpr95": 0.0}


def test_bootstrap_intervals_bracket_the_estimate_and_repeat():
    from lsbench.metrics import bootstrap_intervals, smooth_ece, top_label

    logits, labels = random_logits(n=500, seed=13, scale=3.0)
    conf, correct = top_label(probabilities(logits), labels)
    a, b = bootstrap_intervals(conf, correct), bootstrap_intervals(conf, correct)
    assert a == b  # seeded
    ece = expected_calibration_error(probabilities(logits), labels)
    assert a["ece_low"] < ece < a["ece_high"] and a["smece_low"] < smooth_ece(conf, correct) < a["smece_high"]
    assert 0 < a["ece_high"] - a["ece_low"] < 0.2


def test_risk_coverage_curve():
    from lsbench.metrics import risk_coverage_curve

    scores, correct = np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0])
    assert risk_coverage_curve(scores, correct, np.array([0.25, 0.5, 1.0])).tolist() == [0.0, 0.5, 0.5]


def test_fpr95_reads_every_roc_point():
    """roc_curve's default drop_intermediate=True skips the point where TPR first reaches 95 %."""
    scores = np.arange(1.0, 21.0)
    assert ood_detection(scores, scores)["fpr95"] == pytest.approx(0.95)
    assert ood_detection(scores, scores - 100)["fpr95"] == 0.0


def test_risk_coverage_curve_breaks_ties_as_aurc_does():
    conf, correct = np.full(4, 0.7), np.array([1, 1, 0, 0])
    for order in ([0, 1, 2, 3], [2, 3, 0, 1], [2, 0, 3, 1]):
        risk = risk_coverage_curve(conf[order], correct[order], np.array([0.25, 0.5, 1.0]))
        assert risk.tolist() == [0.5, 0.5, 0.5]
    # Untied scores: the risk of the top k exactly.
    risk = risk_coverage_curve(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1]), np.array([1 / 3, 2 / 3, 1.0]))
    assert risk.tolist() == pytest.approx([0.0, 0.5, 1 / 3])


def _smece_by_definition(conf: np.ndarray, correct: np.ndarray) -> float:
    """smECE from its definition (Błasiok & Nakkiran 2023), independent of relplot: the Gaussian
    kernel reflected at 0 and 1 (images up to two reflections), integrated by the trapezoid rule
    on a fine grid, and the fixed point sigma = smECE_sigma found by bisection."""
    t = np.linspace(0, 1, 20001)

    def at(sigma: float) -> float:
        residual = np.zeros_like(t)
        for f, r in zip(conf, conf - correct):
            for image in (f, -f, 2 - f, f - 2, f + 2, -2 - f):
                residual += np.exp(-((t - image) ** 2) / (2 * sigma**2)) / (np.sqrt(2 * np.pi) * sigma) * r
        return float(np.trapezoid(np.abs(residual / len(conf)), t))

    lo, hi = 1e-3, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if at(mid) > mid else (lo, mid)
    return at(lo)


@pytest.mark.parametrize("conf,correct", [
    ([0.95, 1.0], [1, 0]),          # mass at exactly 1.0, where relplot's reflection loses half of it
    ([0.95, 0.999], [1, 0]),
    ([0.0, 0.3, 0.6], [1, 0, 1]),   # and at exactly 0
    ([1.0, 1.0, 1.0, 0.9, 0.8], [1, 1, 0, 1, 1]),
])
def test_smooth_ece_is_the_definitions_value_at_the_boundary(conf, correct):
    conf, correct = np.array(conf, dtype=float), np.array(correct, dtype=float)
    assert smooth_ece(conf, correct) == pytest.approx(_smece_by_definition(conf, correct), abs=0.01)


def test_smooth_ece_equals_relplot_away_from_the_end_nodes_and_is_continuous_at_one():
    import relplot

    rng = np.random.default_rng(0)
    conf = rng.uniform(0.1, 0.9, 2000)
    correct = (rng.uniform(size=2000) < conf**1.2).astype(float)
    assert smooth_ece(conf, correct) == relplot.smECE(conf, correct)
    # Moving one confidence from .999 to 1.0 barely moves it (relplot: 0.476 -> 0.301).
    near, at_one = (smooth_ece(np.array([0.95, c]), np.array([1.0, 0.0])) for c in (0.999, 1.0))
    assert abs(near - at_one) < 0.005
