"""Accuracy and calibration metrics, computed in float64 NumPy from one set of probabilities.

One probability path. A run's logits (float32, as the network produced them) are cast to float64
once, and `probabilities` (softmax) and `log_probabilities` (log-softmax) of those float64 logits
feed every number: the per-epoch metrics, the reliability table, `predictions.parquet` (which
stores both the logits and these probabilities) and temperature scaling. So the final-epoch
metrics can be recomputed from `predictions.parquet` alone, bit for bit (tested). The module
imports no torch: `lsbench report` uses it on published tables.

Binning convention (top-label calibration, `n_bins` equal-width bins over [0, 1]): bin b holds
the float64 confidences c with b/n <= c < (b+1)/n, compared against float64 edges b/n (so a
float32 softmax value of 0.2, i.e. 0.200000003, lands in [3/15, 4/15)); the last bin is closed on
both sides, so a confidence of exactly 1.0 goes to bin n-1. torchmetrics differs in two places:
it compares in the input's dtype against float32 edges (`linspace(0, 1)` in float32 makes edge
3/15 0.20000002, so float32 0.2 falls into [2/15, 3/15) there), and it gives 1.0 a bin of its own.

`calibration_bins` is the single source for ECE, MCE and the reliability diagram, so they
cannot disagree.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import special

N_BINS = 15


def probabilities(logits: np.ndarray) -> np.ndarray:
    """Softmax of logits (N, C), any float dtype, computed in float64: (N, C) float64."""
    return special.softmax(_as_float64(logits), axis=1)


def log_probabilities(logits: np.ndarray) -> np.ndarray:
    """Log-softmax of the same float64 logits: (N, C) float64, finite where a probability underflows."""
    return special.log_softmax(_as_float64(logits), axis=1)


def _as_float64(logits: np.ndarray) -> np.ndarray:
    # C order too: NumPy's reductions round differently on a strided array (columns read back
    # from parquet are), and the same logits must give the same bits wherever they come from.
    return np.ascontiguousarray(logits, dtype=np.float64)


def bin_index(confidences: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Bin of each confidence (N,) under the module's convention: (N,) int64 in [0, n_bins).

    >>> bin_index(np.array([0.0, 0.2, np.float32(0.2), 0.5333332, 8 / 15, 1.0]), 15).tolist()
    [0, 3, 3, 7, 8, 14]
    """
    edges = np.arange(n_bins + 1, dtype=np.float64) / n_bins
    index = np.searchsorted(edges, np.asarray(confidences, dtype=np.float64), side="right") - 1
    return np.clip(index, 0, n_bins - 1)


def bin_sums(index: np.ndarray, confidences: np.ndarray, correct: np.ndarray,
             n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin (count, sum of confidence, number correct), each float64 (n_bins,), given each
    sample's bin `index` (N,) int."""
    conf = np.asarray(confidences, dtype=np.float64)
    hit = np.asarray(correct, dtype=np.float64)
    return (np.bincount(index, minlength=n_bins).astype(np.float64),
            np.bincount(index, weights=conf, minlength=n_bins),
            np.bincount(index, weights=hit, minlength=n_bins))


def calibration_bins(confidences: np.ndarray, correct: np.ndarray,
                     n_bins: int = N_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin (count, sum of confidence, number correct), each float64 of shape (n_bins,).

    confidences: (N,) float in [0, 1]; correct: (N,) bool or 0/1.

    Bins [0, 0.5) and [0.5, 1]: 0.5 opens the upper bin, and 1.0 stays in it.

    >>> c, s, k = calibration_bins(np.array([0.25, 0.75, 1.0, 0.5]), np.array([1, 1, 0, 1]), n_bins=2)
    >>> c.tolist(), s.tolist(), k.tolist()
    ([1.0, 3.0], [0.25, 2.25], [1.0, 2.0])
    """
    return bin_sums(bin_index(confidences, n_bins), confidences, correct, n_bins)


def bin_gaps(count: np.ndarray, conf_sum: np.ndarray, correct_sum: np.ndarray) -> np.ndarray:
    """Per-bin mean confidence minus accuracy; 0 for an empty bin."""
    return np.where(count > 0, (conf_sum - correct_sum) / np.maximum(count, 1), 0.0)


def ece_from_bins(count: np.ndarray, conf_sum: np.ndarray, correct_sum: np.ndarray) -> float:
    """Expected calibration error (Naeini et al. 2015; Guo et al. 2017): the sum over bins of
    |mean confidence - accuracy| weighted by the bin's share of the samples."""
    return float((np.abs(bin_gaps(count, conf_sum, correct_sum)) * count).sum() / count.sum())


def ece_split_from_bins(count: np.ndarray, conf_sum: np.ndarray,
                        correct_sum: np.ndarray) -> tuple[float, float]:
    """ECE split by the direction of miscalibration: (over, under), over + under = ECE.

    over sums the weighted gaps of bins whose mean confidence exceeds their accuracy; under those
    of bins where it falls short.

    Two bins of 2 samples, 1 correct each: confidence .3 (gap -.2) and .9 (gap +.4), weight 1/2.

    >>> ece_split_from_bins(np.array([2., 2.]), np.array([0.6, 1.8]), np.array([1., 1.]))
    (0.2, 0.1)
    """
    weighted = bin_gaps(count, conf_sum, correct_sum) * count / count.sum()
    return float(np.clip(weighted, 0, None).sum()), float(np.clip(-weighted, 0, None).sum())


def mce_from_bins(count: np.ndarray, conf_sum: np.ndarray, correct_sum: np.ndarray) -> float:
    """Maximum calibration error: the largest |conf - acc| over non-empty bins."""
    return float(np.abs(bin_gaps(count, conf_sum, correct_sum)).max())


def adaptive_ece(confidences: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> float:
    """AdaECE, top-label ECE over equal-mass bins (Mukhoti et al. 2020; not Nixon et al. 2019's
    class-wise ACE): bins of (nearly) equal count, weighted as for ECE.

    A confidence's bin is floor(r * n_bins / N), r being the rank of the first sample with that
    confidence in ascending order. Equal confidences therefore always share a bin, and the result
    does not depend on the order of the rows (a bin may hold more than N / n_bins samples, or none).

    By hand: bins {.2 wrong, .3 right} (gap |.25 - .5|) and {.8 wrong, .9 right} (gap .35), each 1/2.

    >>> round(adaptive_ece(np.array([0.9, 0.2, 0.8, 0.3]), np.array([1, 0, 0, 1]), n_bins=2), 4)
    0.3
    >>> round(adaptive_ece(np.full(30, 0.6), np.arange(30) % 2), 4)  # ties: one bin, |0.6 - 0.5|
    0.1
    """
    conf = np.asarray(confidences, dtype=np.float64)
    first_rank = np.searchsorted(np.sort(conf), conf, side="left")
    index = first_rank * n_bins // max(len(conf), 1)
    return ece_from_bins(*bin_sums(index, conf, correct, n_bins))


def classwise_ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> float:
    """Classwise ECE (Kull et al. 2019): for every class c, the ECE of p_c against 1[label = c]
    over all samples, with the same `n_bins` equal-width bins as `calibration_bins`; then the mean
    over classes. probs (N, C) float, labels (N,) int."""
    per_class = [ece_from_bins(*calibration_bins(probs[:, c], labels == c, n_bins))
                 for c in range(probs.shape[1])]
    return float(np.mean(per_class))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> float:
    """Top-label ECE of probs (N, C) against labels (N,) int.

    By hand, bins [0, .5) and [.5, 1]: bin 0 holds conf .4 (correct): gap .6, weight 1/3;
    bin 1 holds .9 (wrong) and .6 (correct): gap .75 - .5 = .25, weight 2/3. ECE = .2 + .1667.

    >>> p = np.array([[0.4, 0.3, 0.3], [0.9, 0.05, 0.05], [0.2, 0.2, 0.6]])
    >>> round(expected_calibration_error(p, np.array([0, 1, 2]), n_bins=2), 4)
    0.3667
    """
    conf, correct = top_label(probs, labels)
    return ece_from_bins(*calibration_bins(conf, correct, n_bins))


def top_label(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(confidence = max probability, whether the argmax is the label), both (N,)."""
    return probs.max(axis=1), probs.argmax(axis=1) == labels


def evaluate_logits(logits: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> dict[str, float]:
    """All per-epoch test metrics from logits (N, C) (float32 as the network gives them; cast to
    float64 here) and labels (N,) int; see the module docstring for the one probability path.

    test_nll is plain NLL (nats), comparable across methods (a run's own objective on the test set,
    `test_loss`, is computed by its method: `lsbench.train.objective_on`). brier sums squared error over classes and averages over samples
    (range [0, 2]); entropy is the mean predictive entropy in nats. ece_over + ece_under = ece
    (see `ece_split_from_bins`); ece_adaptive and ece_classwise use 15 bins too.
    """
    labels = np.asarray(labels)
    log_probs = log_probabilities(logits)
    probs = probabilities(logits)
    return evaluate_probabilities(probs, log_probs, labels, n_bins)


def evaluate_probabilities(probs: np.ndarray, log_probs: np.ndarray, labels: np.ndarray,
                           n_bins: int = N_BINS) -> dict[str, float]:
    """`evaluate_logits` given `probabilities(logits)` and `log_probabilities(logits)`."""
    n, num_classes = probs.shape
    conf, correct = top_label(probs, labels)
    return {**calibration_metrics(probs, log_probs, labels, conf, correct, n_bins),
            **selective_metrics(conf, correct)}


def calibration_metrics(probs: np.ndarray, log_probs: np.ndarray, labels: np.ndarray, conf: np.ndarray,
                        correct: np.ndarray, n_bins: int) -> dict[str, float]:
    n, num_classes = probs.shape
    bins = calibration_bins(conf, correct, n_bins)
    nll_each = -log_probs[np.arange(n), labels]
    accuracy = float(correct.mean())
    mean_conf = float(conf.mean())
    ece_over, ece_under = ece_split_from_bins(*bins)
    onehot = np.eye(num_classes)[labels]
    return {
        "test_nll": float(nll_each.mean()),
        "accuracy": accuracy,
        "ece": ece_from_bins(*bins),
        "mce": mce_from_bins(*bins),
        "ece_over": ece_over,
        "ece_under": ece_under,
        "ece_adaptive": adaptive_ece(conf, correct, n_bins),
        "ece_classwise": classwise_ece(probs, labels, n_bins),
        "mean_confidence": mean_conf,
        "overconfidence": mean_conf - accuracy,
        "brier": float(((probs - onehot) ** 2).sum(axis=1).mean()),
        # p log p with 0 log 0 = 0, using the log-softmax so tiny probabilities keep their exact log.
        "entropy": float(-(probs * np.where(probs > 0, log_probs, 0.0)).sum(axis=1).mean()),
    }


def selective_metrics(conf: np.ndarray, correct: np.ndarray) -> dict[str, float]:
    """Selective prediction and smooth calibration with the max probability (MSP) as confidence:
    aurc, eaurc, failure_auroc, smece (NaN where the confidences are not finite: a diverged run)."""
    if not np.isfinite(conf).all():
        return {"aurc": math.nan, "eaurc": math.nan, "failure_auroc": math.nan, "smece": math.nan}
    a = aurc(conf, correct)
    return {"aurc": a, "eaurc": a - ideal_aurc(correct), "failure_auroc": failure_auroc(conf, correct),
            "smece": smooth_ece(conf, correct)}


def aurc(scores: np.ndarray, correct: np.ndarray) -> float:
    """Area under the risk-coverage curve (Geifman, Uziel & El-Yaniv, ICLR 2019).

    Samples are accepted in descending order of `scores` (N,), and samples with equal scores are
    accepted together: with groups g of n_g samples at distinct scores c_g,
    AURC = sum_g (n_g / N) * (errors among samples with score >= c_g) / (samples with score >= c_g).
    Without ties this is the mean over i of the error rate of the i highest-scored samples.
    `correct` (N,) bool or 0/1.

    By hand: scores .9 (right), .8 (wrong), .7 (right): risks 0, 1/2, 1/3, AURC = (0 + .5 + .3333) / 3.

    >>> round(aurc(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1])), 4)
    0.2778
    >>> aurc(np.array([0.5, 0.5]), np.array([1, 0]))  # tied: both enter at once, risk 1/2
    0.5
    """
    scores = np.asarray(scores, dtype=np.float64)
    errors = 1.0 - np.asarray(correct, dtype=np.float64)
    n = len(scores)
    order = np.argsort(-scores, kind="stable")
    s, e = scores[order], errors[order]
    # The last index of each run of equal scores: the risk there counts for the whole run.
    ends = np.flatnonzero(np.append(s[1:] != s[:-1], True))
    accepted = ends + 1
    risk = np.cumsum(e)[ends] / accepted
    sizes = np.diff(np.concatenate([[0], accepted]))
    return float((sizes * risk).sum() / n)


def ideal_aurc(correct: np.ndarray) -> float:
    """The AURC of the ideal ranking (every right prediction before every wrong one, no ties):
    (1/N) sum_{i=N-E+1..N} (i - (N - E)) / i for N samples with E errors (Geifman, Uziel & El-Yaniv, ICLR 2019).

    >>> round(ideal_aurc(np.array([1, 0, 1])), 4)  # i = 3: (3 - 2) / 3, over N = 3
    0.1111
    """
    correct = np.asarray(correct, dtype=bool)
    n, e = len(correct), int((~correct).sum())
    i = np.arange(n - e + 1, n + 1, dtype=np.float64)
    return float(((i - (n - e)) / i).sum() / n)


def failure_auroc(conf: np.ndarray, correct: np.ndarray) -> float:
    """ROC AUC of the confidence for telling right from wrong predictions, ties counting one half
    (`sklearn.metrics.roc_auc_score`); NaN when every prediction is right, or every one wrong."""
    from sklearn.metrics import roc_auc_score

    correct = np.asarray(correct, dtype=bool)
    if correct.all() or not correct.any():
        return math.nan
    return float(roc_auc_score(correct, conf))


def smooth_ece(conf: np.ndarray, correct: np.ndarray) -> float:
    """Smooth ECE (Błasiok & Nakkiran 2023, "Smooth ECE: principled reliability diagrams via kernel
    smoothing") of (confidence (N,) in [0, 1], correct (N,) bool or 0/1): the fixed point σ* of
    σ = smECE_σ, smECE_σ = ∫_0^1 |(1/N) Σ_i K_σ(t, f_i) (f_i - y_i)| dt, K_σ the Gaussian kernel
    reflected at 0 and 1.

    relplot's own `smECE` (the authors' package) computes this on a grid, but its reflection
    drops the mirror image of the two end nodes, so mass at (or next to) a confidence of exactly
    0 or 1 is halved: confidences [.95, 1.0], correct [1, 0] give 0.301 there, [.95, .999] 0.476.
    Saturated models (ε = 0) sit at 1.0, smoothed ones do not, so that would bias the smECE-vs-ε
    comparison. This function calls relplot's own steps (grid rounding, kernel, bandwidth search,
    `relplot.metrics.search_param`) with that one reflection fixed (`_ReflectedGaussianKernel`);
    away from the end nodes it equals `relplot.smECE` bit for bit (tested).

    >>> round(smooth_ece(np.array([0.95, 1.0]), np.array([1, 0])), 3)
    0.477
    """
    from relplot.metrics import search_param

    f, y = np.asarray(conf, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    width = search_param(lambda sigma: sigma < 0.001 or sigma < _smooth_ece_at(f, y, sigma), start=1, refine=10)
    return _smooth_ece_at(f, y, width)


def _smooth_ece_at(f: np.ndarray, y: np.ndarray, sigma: float) -> float:
    """smECE at bandwidth σ, as `relplot.metrics.smooth_ece` computes it, with the fixed kernel."""
    from relplot import config

    t = np.linspace(0, 1, max(round(10 / sigma), config.smECE_mesh_pts))
    residual, density = _reflected_kernel(sigma).smooth(f, f - y, t)
    return float(np.sum(np.abs(residual) * density) / np.sum(density))


def _reflected_kernel(sigma: float):  # noqa: ANN202 - relplot's class, imported lazily
    from relplot.kernels import ReflectedGaussianKernel

    class _ReflectedGaussianKernel(ReflectedGaussianKernel):
        """relplot's reflected Gaussian kernel, with the end nodes' own mirror images: node 0 is its
        own reflection at 0 (and node n-1 at 1), so it counts twice, as K_σ(t, 0) = 2 φ_σ(t)."""

        def convolve(self, values: np.ndarray, eval_points: int) -> np.ndarray:
            n = len(values)
            extended = np.concatenate([np.flip(values)[:-1], values, np.flip(values)[1:]])
            extended[n - 1] += values[0]
            extended[2 * n - 2] += values[-1]
            return np.convolve(extended, self.kernel_ev(eval_points), "valid")[eval_points // 2:eval_points // 2
                                                                                + eval_points]

    return _ReflectedGaussianKernel(sigma)


# Bootstrap over test images for the final epoch's ECE and smECE intervals (percentile method,
# scipy.stats.bootstrap). smECE costs ~15 ms per resample, hence 100 resamples, as relplot itself
# uses for its interval.
BOOTSTRAP_RESAMPLES = {"ece": 1000, "smece": 100}
BOOTSTRAP_SEED = 0


def bootstrap_intervals(conf: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> dict[str, float]:
    """95 % percentile bootstrap intervals over the samples (resampled in pairs) for the ECE and
    the smECE: ece_low, ece_high, smece_low, smece_high (NaN for non-finite confidences)."""
    from scipy import stats

    if not np.isfinite(conf).all() or len(conf) < 2:
        return {"ece_low": math.nan, "ece_high": math.nan, "smece_low": math.nan, "smece_high": math.nan}
    conf, correct = np.asarray(conf, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    statistics = {"ece": lambda c, k: ece_from_bins(*calibration_bins(c, k, n_bins)), "smece": smooth_ece}
    out = {}
    for name, statistic in statistics.items():
        result = stats.bootstrap((conf, correct), statistic, paired=True, vectorized=False, method="percentile",
                                 n_resamples=BOOTSTRAP_RESAMPLES[name], confidence_level=0.95,
                                 rng=np.random.default_rng(BOOTSTRAP_SEED))
        out[f"{name}_low"], out[f"{name}_high"] = map(float, result.confidence_interval)
    return out


def rejection_scores(logits: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample confidence scores from logits (N, C), higher = more confident:
    msp (max softmax probability), max_logit, margin (top-1 minus top-2 logit), and energy
    (logsumexp of the logits, the negative free energy of Liu et al. 2020, at temperature 1)."""
    z = _as_float64(logits)
    top2 = np.sort(z, axis=1)[:, -2:] if z.shape[1] > 1 else np.concatenate([z, z], axis=1)
    return {"msp": probabilities(z).max(axis=1), "max_logit": top2[:, 1], "margin": top2[:, 1] - top2[:, 0],
            "energy": special.logsumexp(z, axis=1)}


def risk_coverage_curve(scores: np.ndarray, correct: np.ndarray, coverages: np.ndarray) -> np.ndarray:
    """Risk (error rate) at each coverage c in (0, 1]: of the k = ceil(c * N) highest-scored
    samples, with `aurc`'s tie rule, so the curve is the step function AURC integrates and does not
    depend on the order of the rows: samples with equal scores are accepted together, so a k that
    falls inside a run of ties takes the risk of accepting the whole run.

    >>> risk_coverage_curve(np.full(4, 0.7), np.array([1, 1, 0, 0]), np.array([0.5, 1.0])).tolist()
    [0.5, 0.5]
    """
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="stable")
    s = s[order]
    errors = np.cumsum(1.0 - np.asarray(correct, dtype=np.float64)[order])
    k = np.clip(np.ceil(np.asarray(coverages) * len(order)).astype(int), 1, len(order))
    ends = np.flatnonzero(np.append(s[1:] != s[:-1], True))  # the last index of each run of ties
    end = ends[np.searchsorted(ends, k - 1, side="left")]
    return errors[end] / (end + 1)


def rejection_aurcs(logits: np.ndarray, correct: np.ndarray) -> dict[str, float]:
    """AURC when rejecting by the max logit or the top-1 minus top-2 logit margin instead of the
    max probability: aurc_max_logit, aurc_margin (NaN for non-finite logits)."""
    if not np.isfinite(logits).all():
        return {"aurc_max_logit": math.nan, "aurc_margin": math.nan}
    scores = rejection_scores(logits)
    return {"aurc_max_logit": aurc(scores["max_logit"], correct), "aurc_margin": aurc(scores["margin"], correct)}


OOD_METRICS = ("auroc", "aupr_in", "aupr_out", "fpr95")


def ood_detection(id_scores: np.ndarray, ood_scores: np.ndarray) -> dict[str, float]:
    """In- vs out-of-distribution with one score (higher = in-distribution): auroc (in-distribution
    as the positive class, `sklearn.metrics.roc_auc_score`, ties one half); aupr_in and aupr_out,
    the area under the precision-recall curve with the in-distribution samples as positives
    (score as is) and with the OOD samples as positives (score negated), as average precision
    (`sklearn.metrics.average_precision_score`; Hendrycks & Gimpel 2017, Table 2); and fpr95, the share of
    OOD samples accepted at the largest threshold that accepts >= 95 % of the in-distribution
    ones (from `sklearn.metrics.roc_curve` with `drop_intermediate=False`: its default drops the
    ROC points between collinear ones, and the first point past 95 % may then be a later one).

    By hand: 5 of the 6 (ID, OOD) pairs are ordered right; accepting all three ID samples (>= 1.0)
    accepts the OOD sample at 1.5, one of two.

    >>> {k: round(v, 4) for k, v in ood_detection(np.array([3.0, 2.0, 1.0]), np.array([0.0, 1.5])).items()}
    {'auroc': 0.8333, 'aupr_in': 0.9167, 'aupr_out': 0.8333, 'fpr95': 0.5}

    AUPR-In by hand: ranked 3.0 (in), 2.0 (in), 1.5 (out), 1.0 (in), 0.0 (out), precision at each
    in-sample is 1, 1, 3/4: mean 11/12. AUPR-Out, ranked by -score: 0.0 (out), 1.0, 1.5 (out):
    precision 1 and 2/3 at the two OOD samples, mean 5/6.

    Scores 1..20 on both sides: the threshold 2 accepts 19 of 20 of each.

    >>> ood_detection(np.arange(1.0, 21.0), np.arange(1.0, 21.0))["fpr95"]
    0.95
    """
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    y = np.concatenate([np.ones(len(id_scores)), np.zeros(len(ood_scores))])
    s = np.concatenate([id_scores, ood_scores]).astype(np.float64)
    if not np.isfinite(s).all():
        return dict.fromkeys(OOD_METRICS, math.nan)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return {"auroc": float(roc_auc_score(y, s)), "aupr_in": float(average_precision_score(y, s)),
            "aupr_out": float(average_precision_score(1 - y, -s)),
            "fpr95": float(fpr[np.searchsorted(tpr, 0.95, side="left")])}


def reliability_table(probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> dict[str, list]:
    """Columns bin, bin_lower, bin_upper, count, mean_confidence, accuracy (NaN for empty bins)."""
    count, conf_sum, correct_sum = calibration_bins(*top_label(probs, labels), n_bins)
    has = count > 0
    safe = np.maximum(count, 1)
    return {
        "bin": list(range(n_bins)),
        "bin_lower": [b / n_bins for b in range(n_bins)],
        "bin_upper": [(b + 1) / n_bins for b in range(n_bins)],
        "count": count.astype(np.int64).tolist(),
        "mean_confidence": np.where(has, conf_sum / safe, np.nan).tolist(),
        "accuracy": np.where(has, correct_sum / safe, np.nan).tolist(),
    }


# What the shift evaluation records per (run, shift, severity), besides ece_ts and nll_ts.
SHIFT_METRICS = ("accuracy", "test_nll", "brier", "ece", "smece", "mean_confidence", "overconfidence", "aurc",
                 "failure_auroc")


def shift_metrics(logits: np.ndarray, labels: np.ndarray, temperature: float) -> dict[str, float]:
    """The `SHIFT_METRICS` of logits (N, C) and labels (N,) (`evaluate_logits`), and ece_ts and
    nll_ts: ECE and NLL of softmax(logits / temperature), the temperature fitted on the clean
    held-out images (NaN without one). All NaN for logits that are not finite (a diverged run)."""
    names = (*SHIFT_METRICS, "ece_ts", "nll_ts")
    if not np.isfinite(logits).all():
        return dict.fromkeys(names, math.nan)
    found = evaluate_logits(logits, labels)
    out = {k: found[k] for k in SHIFT_METRICS}
    if math.isfinite(temperature) and temperature > 0:
        scaled = np.asarray(logits, dtype=np.float64) / temperature
        out["ece_ts"] = expected_calibration_error(probabilities(scaled), labels)
        out["nll_ts"] = mean_nll(scaled, labels)
    else:
        out["ece_ts"] = out["nll_ts"] = math.nan
    return out


def mean_nll(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood (nats) of labels (N,) under softmax(logits (N, C)), float64."""
    log_probs = log_probabilities(logits)
    return float(-log_probs[np.arange(len(labels)), labels].mean())


# The interval the fits of lsbench 0.3 searched, and flagged a fit at either end of: only what
# tables written then mean by a missing `temperature_at_bound` (`temperature_at_bound`).
TEMPERATURE_BOUNDS = (0.05, 20.0)


def temperature_at_bound(temperature: np.ndarray | float) -> np.ndarray:
    """Whether a temperature of lsbench 0.3 lies at its search bound (`TEMPERATURE_BOUNDS`, within
    1e-4 in log T): the flag that tables written before `temperature_at_bound` lack. bool, the
    shape of `temperature`; False for NaN (no fit).

    >>> temperature_at_bound(np.array([20.0, 1.7, 0.05000001, np.nan])).tolist()
    [True, False, True, False]
    """
    log_t = np.log(np.asarray(temperature, dtype=np.float64))
    with np.errstate(invalid="ignore"):
        return np.any([np.abs(log_t - math.log(b)) < 1e-4 for b in TEMPERATURE_BOUNDS], axis=0)


class TemperatureFit(NamedTuple):
    """A fitted temperature and whether the held-out NLL has its minimum there (False: it has none
    at a finite T > 0, and `temperature` is the end of the search it decreases towards)."""

    temperature: float
    found: bool


# How far past the logits' own scales the search goes, in log T: beyond log(largest logit
# spread) + 40, softmax(z / T) is uniform to float64's precision (e^-40 = 4e-18); below
# log(smallest logit gap) - 8, it is one-hot (e^-e^8 underflows), so the NLL is flat there.
_LOG_T_MARGIN_ABOVE, _LOG_T_MARGIN_BELOW = 40.0, 8.0


def _nll_slope(z: np.ndarray, y: np.ndarray, log_t: float) -> float:
    """d NLL / d(1/T) at T = exp(log_t): the mean over rows of E_softmax(z/T)[z] - z_y. Increasing
    in 1/T (the NLL is convex in 1/T: a log-partition minus a linear term), so log T's search is a
    root of a monotone function."""
    p = special.softmax((z - z.max(axis=1, keepdims=True)) * math.exp(-log_t), axis=1)
    return float(((p * z).sum(axis=1) - z[np.arange(len(y)), y]).mean())


def temperature_fit(logits: np.ndarray, labels: np.ndarray) -> TemperatureFit:
    """The temperature T > 0 minimising the NLL of softmax(logits / T) (Guo et al. 2017).

    logits: (N, C) float, labels: (N,) int; computed in float64. The NLL is convex in 1/T, so it
    has a finite minimiser exactly when its slope in 1/T is negative at 1/T = 0 (the labels' logits
    beat the row means) and positive as 1/T -> inf (some image is misranked); then the root of that
    slope in log T (scipy's `brentq`, log T to 1e-12) is searched over a range bounded only by
    numerics (see `_LOG_T_MARGIN_ABOVE`). Otherwise `found` is False and T is the end the NLL
    decreases towards: T -> inf (the logits help no more than a uniform guess) or T -> 0 (every
    image ranked right).

    >>> z = np.array([[4.0, 0.0], [0.0, 4.0], [4.0, 0.0], [0.0, 4.0]])
    >>> temperature_fit(z, np.array([0, 1, 1, 0])).found  # half wrong: no finite optimum
    False
    >>> round(temperature_fit(z, np.array([0, 1, 1, 1])).temperature, 4)  # 4 / ln 3
    3.641
    """
    from scipy.optimize import brentq

    z, y = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    gaps = np.diff(np.sort(z, axis=1), axis=1)
    if not (gaps > 0).any():  # every row constant: the NLL is log C at any T
        return TemperatureFit(1.0, False)
    low = max(math.log(gaps[gaps > 0].min()) - _LOG_T_MARGIN_BELOW, -700.0)
    high = min(math.log(gaps.sum(axis=1).max()) + _LOG_T_MARGIN_ABOVE, 700.0)
    if _nll_slope(z, y, high) >= 0:
        return TemperatureFit(math.exp(high), False)
    if _nll_slope(z, y, low) <= 0:
        return TemperatureFit(math.exp(low), False)
    return TemperatureFit(math.exp(brentq(lambda t: _nll_slope(z, y, t), low, high, xtol=1e-12)), True)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """`temperature_fit(logits, labels).temperature`: T > 0 minimising the held-out NLL, or the end
    of the search the NLL decreases towards where it has no finite minimum."""
    return temperature_fit(logits, labels).temperature


def temperature_scaled(val_logits: np.ndarray, val_labels: np.ndarray, test_logits: np.ndarray,
                       test_labels: np.ndarray) -> dict[str, float]:
    """Fit T on validation logits; test ECE, NLL and mean confidence of softmax(test_logits / T),
    the logits divided in float64 and passed through the same `evaluate_logits`. val_nll: the
    NLL of the unscaled validation logits (what a method's setting is selected by).

    All NaN when there is no validation set or the logits are not finite (a diverged run).
    """
    if len(val_labels) == 0 or not np.isfinite(val_logits).all():
        return {**dict.fromkeys(("temperature", "ece_ts", "nll_ts", "mean_confidence_ts", "aurc_ts", "eaurc_ts",
                                 "val_nll"), math.nan), "temperature_at_bound": False}
    t, found = temperature_fit(val_logits, val_labels)
    scaled = evaluate_logits(np.asarray(test_logits, dtype=np.float64) / t, test_labels)
    return {"temperature": t, "temperature_at_bound": not found, "ece_ts": scaled["ece"],
            "nll_ts": scaled["test_nll"],
            "mean_confidence_ts": scaled["mean_confidence"], "aurc_ts": scaled["aurc"], "eaurc_ts": scaled["eaurc"],
            "val_nll": mean_nll(val_logits, val_labels)}


# A run has diverged when its mean training loss is not finite or exceeds this many times the loss
# of a uniform guess (log C): Adam with a huge lr (e.g. 10) keeps the loss finite, near 1e9, at
# chance accuracy. A sane run never comes near it (its first-epoch loss is below log C).
DIVERGENCE_FACTOR = 100.0


def divergence(train_loss: float, num_classes: int) -> str | None:
    """Which divergence test an epoch's mean training loss fails, in words; None if neither.

    >>> divergence(float("nan"), 10)
    'non-finite training loss (nan)'
    >>> divergence(1.2e9, 10)
    'training loss 1.2e+09 above 100 × log(10) = 230 (100 times a uniform guess)'
    >>> divergence(0.4, 10) is None
    True
    """
    if not math.isfinite(train_loss):
        return f"non-finite training loss ({train_loss})"
    limit = DIVERGENCE_FACTOR * math.log(num_classes)
    if train_loss > limit:
        return (f"training loss {train_loss:.3g} above {DIVERGENCE_FACTOR:g} × log({num_classes}) = {limit:.3g} "
                f"({DIVERGENCE_FACTOR:g} times a uniform guess)")
    return None
