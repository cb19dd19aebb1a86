"""Accuracy and calibration metrics, computed from logits on any device.

Binning convention (top-label calibration, `n_bins` equal-width bins over [0, 1]):
bin b holds confidences in [b/n, (b+1)/n), closed on the left like torchmetrics
(`bucketize(..., right=True) - 1`). The last bin is closed on both sides: a confidence of
exactly 1.0 goes to bin n-1. torchmetrics instead gives 1.0 a bin of its own; the two agree
whenever no confidence equals 1.0. (In float32 a softmax often *is* exactly 1.0 for an
unsmoothed network, so the choice matters.)

`calibration_bins` is the single source for ECE, MCE and the reliability diagram, so they
cannot disagree.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

N_BINS = 15


def calibration_bins(confidences: torch.Tensor, correct: torch.Tensor,
                     n_bins: int = N_BINS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-bin (count, sum of confidence, number correct), each float64 of shape (n_bins,).

    confidences: (N,) float in [0, 1]; correct: (N,) bool or 0/1.

    Bins [0, 0.5) and [0.5, 1]: 0.5 opens the upper bin, and 1.0 stays in it.

    >>> c, s, k = calibration_bins(torch.tensor([0.25, 0.75, 1.0, 0.5]),
    ...                            torch.tensor([1, 1, 0, 1]), n_bins=2)
    >>> c.tolist(), s.tolist(), k.tolist()
    ([1.0, 3.0], [0.25, 2.25], [1.0, 2.0])
    """
    edges = torch.linspace(0, 1, n_bins + 1, dtype=confidences.dtype, device=confidences.device)
    # Bucketize against edges in the input dtype so bin membership matches torchmetrics bit for bit.
    index = (torch.bucketize(confidences.detach(), edges, right=True) - 1).clamp_(0, n_bins - 1)
    return bin_sums(index, confidences, correct, n_bins)


def bin_sums(index: torch.Tensor, confidences: torch.Tensor, correct: torch.Tensor,
             n_bins: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-bin (count, sum of confidence, number correct) in float64, given each sample's bin."""
    conf = confidences.detach().to(torch.float64)
    zeros = torch.zeros(n_bins, dtype=torch.float64, device=conf.device)
    count = zeros.clone().scatter_add_(0, index, torch.ones_like(conf))
    conf_sum = zeros.clone().scatter_add_(0, index, conf)
    correct_sum = zeros.clone().scatter_add_(0, index, correct.detach().to(torch.float64))
    return count, conf_sum, correct_sum


def bin_gaps(count: torch.Tensor, conf_sum: torch.Tensor, correct_sum: torch.Tensor) -> torch.Tensor:
    """Per-bin mean confidence minus accuracy; 0 for an empty bin."""
    safe = count.clamp(min=1)
    return torch.where(count > 0, (conf_sum - correct_sum) / safe, torch.zeros_like(count))


def ece_from_bins(count: torch.Tensor, conf_sum: torch.Tensor, correct_sum: torch.Tensor) -> float:
    """Expected calibration error: sum over bins of |conf - acc| weighted by the bin's share."""
    return float((bin_gaps(count, conf_sum, correct_sum).abs() * count).sum() / count.sum())


def ece_split_from_bins(count: torch.Tensor, conf_sum: torch.Tensor,
                        correct_sum: torch.Tensor) -> tuple[float, float]:
    """ECE split by the direction of miscalibration: (over, under), over + under = ECE.

    over sums the weighted gaps of bins whose mean confidence exceeds their accuracy; under those
    of bins where it falls short.

    Two bins of 2 samples, 1 correct each: confidence .3 (gap -.2) and .9 (gap +.4), weight 1/2.

    >>> f64 = lambda *v: torch.tensor(v, dtype=torch.float64)
    >>> ece_split_from_bins(f64(2., 2.), f64(0.6, 1.8), f64(1., 1.))
    (0.2, 0.1)
    """
    weighted = bin_gaps(count, conf_sum, correct_sum) * count / count.sum()
    return float(weighted.clamp(min=0).sum()), float((-weighted).clamp(min=0).sum())


def adaptive_ece(confidences: torch.Tensor, correct: torch.Tensor, n_bins: int = N_BINS) -> float:
    """Equal-mass ECE: sort by confidence, cut into `n_bins` bins of (nearly) equal count
    (sample of rank r goes to bin floor(r * n_bins / N); ties broken by a stable sort), then
    sum |mean confidence - accuracy| weighted by each bin's share, as for ECE.

    By hand: bins {.2 wrong, .3 right} (gap |.25 - .5|) and {.8 wrong, .9 right} (gap .35), each 1/2.

    >>> round(adaptive_ece(torch.tensor([0.9, 0.2, 0.8, 0.3]), torch.tensor([1, 0, 0, 1]), n_bins=2), 4)
    0.3
    """
    order = torch.sort(confidences.detach(), stable=True).indices
    n = confidences.shape[0]
    index = torch.empty_like(order)
    index[order] = torch.arange(n, device=order.device) * n_bins // max(n, 1)
    return ece_from_bins(*bin_sums(index, confidences, correct, n_bins))


def classwise_ece(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS) -> float:
    """Classwise ECE (Kull et al. 2019): for every class c, the ECE of p_c against 1[label = c]
    over all samples, with the same `n_bins` equal-width bins as `calibration_bins`; then the mean
    over classes.
    """
    per_class = [ece_from_bins(*calibration_bins(probs[:, c].contiguous(), labels == c, n_bins))
                 for c in range(probs.shape[1])]
    return sum(per_class) / len(per_class)


def mce_from_bins(count: torch.Tensor, conf_sum: torch.Tensor, correct_sum: torch.Tensor) -> float:
    """Maximum calibration error: the largest |conf - acc| over non-empty bins."""
    return float(bin_gaps(count, conf_sum, correct_sum).abs().max())


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS) -> float:
    """Top-label ECE of probs (N, C) against labels (N,) int64.

    By hand, bins [0, .5) and [.5, 1]: bin 0 holds conf .4 (correct): gap .6, weight 1/3;
    bin 1 holds .9 (wrong) and .6 (correct): gap .75 - .5 = .25, weight 2/3. ECE = .2 + .1667.

    >>> p = torch.tensor([[0.4, 0.3, 0.3], [0.9, 0.05, 0.05], [0.2, 0.2, 0.6]])
    >>> round(expected_calibration_error(p, torch.tensor([0, 1, 2]), n_bins=2), 4)
    0.3667
    """
    conf, pred = probs.max(dim=1)
    return ece_from_bins(*calibration_bins(conf, pred == labels, n_bins))


def evaluate_logits(logits: torch.Tensor, labels: torch.Tensor, epsilon: float,
                    n_bins: int = N_BINS) -> dict[str, float]:
    """All per-epoch test metrics from logits (N, C) float32 and labels (N,) int64.

    test_loss is the smoothed cross-entropy that training optimises; test_nll is plain NLL.
    brier sums squared error over classes and averages over samples (range [0, 2]);
    entropy is the mean predictive entropy in nats. ece_over + ece_under = ece (see
    `ece_split_from_bins`); ece_adaptive and ece_classwise use 15 bins too.
    """
    logits = logits.float()
    log_probs = F.log_softmax(logits, dim=1)
    probs = log_probs.exp()
    conf, pred = probs.max(dim=1)
    correct = pred == labels
    onehot = F.one_hot(labels, probs.shape[1]).to(probs.dtype)
    bins = calibration_bins(conf, correct, n_bins)
    accuracy = float(correct.double().mean())
    mean_conf = float(conf.double().mean())
    ece_over, ece_under = ece_split_from_bins(*bins)
    return {
        "test_loss": float(F.cross_entropy(logits, labels, label_smoothing=epsilon)),
        "test_nll": float(F.nll_loss(log_probs, labels)),
        "accuracy": accuracy,
        "ece": ece_from_bins(*bins),
        "mce": mce_from_bins(*bins),
        "ece_over": ece_over,
        "ece_under": ece_under,
        "ece_adaptive": adaptive_ece(conf, correct, n_bins),
        "ece_classwise": classwise_ece(probs, labels, n_bins),
        "mean_confidence": mean_conf,
        "overconfidence": mean_conf - accuracy,
        "brier": float(((probs - onehot) ** 2).sum(dim=1).double().mean()),
        "entropy": float(-(probs * log_probs).sum(dim=1).double().mean()),
    }


def reliability_table(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS) -> dict[str, list]:
    """Columns bin, bin_lower, bin_upper, count, mean_confidence, accuracy (NaN for empty bins)."""
    conf, pred = probs.max(dim=1)
    count, conf_sum, correct_sum = calibration_bins(conf, pred == labels, n_bins)
    nan = torch.full_like(count, float("nan"))
    has = count > 0
    return {
        "bin": list(range(n_bins)),
        "bin_lower": [b / n_bins for b in range(n_bins)],
        "bin_upper": [(b + 1) / n_bins for b in range(n_bins)],
        "count": count.long().tolist(),
        "mean_confidence": torch.where(has, conf_sum / count.clamp(min=1), nan).tolist(),
        "accuracy": torch.where(has, correct_sum / count.clamp(min=1), nan).tolist(),
    }


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T > 0 minimising the NLL of softmax(logits / T) (Guo et al. 2017).

    logits: (N, C) float, labels: (N,) int64. One scalar, so a bounded 1-D search on log T over
    [0.05, 20] (scipy's `minimize_scalar`) in float64 is exact enough and deterministic.

    >>> z = torch.tensor([[4.0, 0.0], [0.0, 4.0], [4.0, 0.0], [0.0, 4.0]])
    >>> round(fit_temperature(z, torch.tensor([0, 1, 1, 0])), 1)  # half wrong: flatten fully
    20.0
    """
    from scipy.optimize import minimize_scalar

    z, y = logits.detach().double().cpu(), labels.detach().cpu()

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(z / math.exp(log_t), y))

    result = minimize_scalar(nll, bounds=(math.log(0.05), math.log(20.0)), method="bounded",
                             options={"xatol": 1e-6})
    return math.exp(result.x)


def temperature_scaled(val_logits: torch.Tensor, val_labels: torch.Tensor, test_logits: torch.Tensor,
                       test_labels: torch.Tensor) -> dict[str, float]:
    """Fit T on validation logits; test ECE, NLL and mean confidence of softmax(test_logits / T).

    All NaN when there is no validation set or the logits are not finite (a diverged run).
    """
    nan = float("nan")
    if len(val_labels) == 0 or not bool(torch.isfinite(val_logits).all()):
        return {"temperature": nan, "ece_ts": nan, "nll_ts": nan, "mean_confidence_ts": nan}
    t = fit_temperature(val_logits, val_labels)
    scaled = evaluate_logits(test_logits.float() / t, test_labels, epsilon=0.0)
    return {"temperature": t, "ece_ts": scaled["ece"], "nll_ts": scaled["test_nll"],
            "mean_confidence_ts": scaled["mean_confidence"]}
