import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_calibration_error

from lsbench.metrics import (calibration_bins, ece_from_bins, evaluate_logits,
                             expected_calibration_error, mce_from_bins, reliability_table)


def reference_ece_loop(conf: np.ndarray, correct: np.ndarray, n_bins: int) -> tuple[float, float]:
    """Plain-Python ECE/MCE with the documented convention: [lo, hi), last bin [lo, 1]."""
    ece, mce, n = 0.0, 0.0, len(conf)
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        mask = (conf >= lo) & ((conf < hi) if b < n_bins - 1 else (conf <= 1.0))
        if mask.any():
            gap = abs(conf[mask].mean() - correct[mask].mean())
            ece += mask.sum() / n * gap
            mce = max(mce, gap)
    return ece, mce


def random_probs(n=2000, c=10, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g) * scale
    return torch.softmax(logits, 1), torch.randint(0, c, (n,), generator=g)


def test_hand_computed_ece():
    probs = torch.tensor([[0.4, 0.3, 0.3], [0.9, 0.05, 0.05], [0.2, 0.2, 0.6]])
    # bin [0, .5): conf .4 correct -> gap .6 (1/3); bin [.5, 1]: .9 wrong + .6 correct -> .25 (2/3)
    assert expected_calibration_error(probs, torch.tensor([0, 1, 2]), n_bins=2) == pytest.approx(0.6 / 3 + 0.25 * 2 / 3)
    bins = calibration_bins(probs.max(1).values, torch.tensor([1, 0, 1]), n_bins=2)
    assert mce_from_bins(*bins) == pytest.approx(0.6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_torchmetrics_without_exact_ones(seed):
    probs, labels = random_probs(seed=seed)
    assert probs.max() < 1.0
    for norm, ours in (("l1", ece_from_bins), ("max", mce_from_bins)):
        ref = multiclass_calibration_error(probs, labels, num_classes=10, n_bins=15, norm=norm)
        conf, pred = probs.max(1)
        assert ours(*calibration_bins(conf, pred == labels)) == pytest.approx(float(ref), abs=1e-6)


def test_matches_reference_loop_and_bin_edges():
    # Confidences on exact bin edges (k/15 in float32) exercise which side is closed.
    conf = torch.tensor([k / 15 for k in range(16)] * 3, dtype=torch.float32)
    correct = torch.arange(len(conf)) % 3 == 0
    ece, mce = reference_ece_loop(conf.double().numpy(), correct.double().numpy(), 15)
    bins = calibration_bins(conf, correct)
    assert ece_from_bins(*bins) == pytest.approx(ece, abs=1e-12)
    assert mce_from_bins(*bins) == pytest.approx(mce, abs=1e-12)


def test_confidence_exactly_one_goes_to_last_bin():
    count, _, _ = calibration_bins(torch.tensor([1.0, 1.0, 0.99]), torch.tensor([1, 1, 0]))
    assert count[-1] == 3 and count.sum() == 3
    # torchmetrics gives 1.0 a bin of its own, so its ECE differs here: the documented difference.
    probs = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.99, 0.01]])
    labels = torch.tensor([0, 0, 1])
    ours = expected_calibration_error(probs, labels)
    ref = float(multiclass_calibration_error(probs, labels, num_classes=2, n_bins=15))
    assert ours == pytest.approx((1.0 + 1.0 + 0.99) / 3 - 2 / 3)
    assert ref == pytest.approx(0.99 / 3)


def test_edge_cases_empty_all_correct_all_wrong():
    conf = torch.tensor([0.95, 0.97, 0.99])
    count, s, k = calibration_bins(conf, torch.ones(3, dtype=torch.bool))
    assert int((count == 0).sum()) == 14  # empty bins contribute nothing
    assert ece_from_bins(count, s, k) == pytest.approx(1 - conf.double().mean().item())
    assert ece_from_bins(*calibration_bins(conf, torch.zeros(3, dtype=torch.bool))) == pytest.approx(conf.double().mean().item())
    table = reliability_table(torch.tensor([[0.95, 0.05]]), torch.tensor([0]))
    assert math.isnan(table["accuracy"][0]) and table["count"][-1] == 1 and table["accuracy"][-1] == 1.0


def test_batched_bins_equal_full():
    probs, labels = random_probs(n=3000, seed=5)
    conf, pred = probs.max(1)
    full = calibration_bins(conf, pred == labels)
    parts = [calibration_bins(conf[i:i + 700], (pred == labels)[i:i + 700]) for i in range(0, 3000, 700)]
    for j in range(3):
        assert torch.allclose(full[j], sum(p[j] for p in parts))


def test_evaluate_logits_against_direct_formulas():
    g = torch.Generator().manual_seed(3)
    logits, labels = torch.randn(500, 10, generator=g) * 2, torch.randint(0, 10, (500,), generator=g)
    m = evaluate_logits(logits, labels, epsilon=0.1)
    p = torch.softmax(logits.double(), 1)
    onehot = F.one_hot(labels, 10).double()
    assert m["accuracy"] == pytest.approx((p.argmax(1) == labels).double().mean().item())
    assert m["test_nll"] == pytest.approx(-torch.log(p[torch.arange(500), labels]).mean().item(), rel=1e-5)
    assert m["test_loss"] == pytest.approx(F.cross_entropy(logits, labels, label_smoothing=0.1).item(), rel=1e-6)
    assert m["brier"] == pytest.approx(((p - onehot) ** 2).sum(1).mean().item(), rel=1e-5)
    assert m["entropy"] == pytest.approx(-(p * p.log()).sum(1).mean().item(), rel=1e-5)
    assert m["mean_confidence"] == pytest.approx(p.max(1).values.mean().item(), rel=1e-6)
    assert m["overconfidence"] == pytest.approx(m["mean_confidence"] - m["accuracy"])
    ref = multiclass_calibration_error(torch.softmax(logits, 1), labels, num_classes=10, n_bins=15)
    assert m["ece"] == pytest.approx(float(ref), abs=1e-6)


def reference_adaptive_ece(conf: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    order = np.argsort(conf, kind="stable")
    total = 0.0
    for chunk in np.array_split(order, n_bins):  # equal mass, sizes differ by at most one
        if len(chunk):
            total += len(chunk) / len(conf) * abs(conf[chunk].mean() - correct[chunk].mean())
    return total


def test_adaptive_ece_matches_reference_loop():
    probs, labels = random_probs(n=1500, seed=7)
    conf, pred = probs.max(1)
    correct = (pred == labels)
    from lsbench.metrics import adaptive_ece

    ref = reference_adaptive_ece(conf.double().numpy(), correct.double().numpy(), 15)
    assert adaptive_ece(conf, correct) == pytest.approx(ref, abs=1e-12)
    # Equal mass: with N a multiple of n_bins every bin holds N / n_bins samples.
    assert adaptive_ece(torch.full((30,), 0.7), torch.ones(30)) == pytest.approx(0.3)


def test_classwise_ece_matches_reference_loop():
    probs, labels = random_probs(n=1200, c=4, seed=8)
    from lsbench.metrics import classwise_ece

    expected = np.mean([reference_ece_loop(probs[:, c].double().numpy(), (labels == c).double().numpy(), 15)[0]
                        for c in range(4)])
    assert classwise_ece(probs, labels) == pytest.approx(expected, abs=1e-12)


def test_ece_over_and_under_add_up():
    for seed, scale in ((0, 4.0), (1, 0.5)):
        g = torch.Generator().manual_seed(seed)
        logits, labels = torch.randn(800, 10, generator=g) * scale, torch.randint(0, 10, (800,), generator=g)
        m = evaluate_logits(logits, labels, epsilon=0.0)
        assert m["ece_over"] + m["ece_under"] == pytest.approx(m["ece"], abs=1e-12)
        assert m["ece_over"] >= 0 and m["ece_under"] >= 0
    # Random labels with sharp logits: confident and wrong, so the ECE is all overconfidence.
    sharp = evaluate_logits(torch.randn(800, 10, generator=g) * 20, labels, epsilon=0.0)
    assert sharp["ece_under"] == pytest.approx(0.0, abs=1e-3) and sharp["ece_over"] > 0.5
