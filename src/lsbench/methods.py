"""The training methods: label smoothing and the methods it is compared with, one registry entry each.

A method is a training objective with at most one swept parameter (ε, γ, β, λ, α, τ). Its entry
owns everything about it: its name, its parameter's symbol, allowed range and neutral value (the
value at which it is plain cross-entropy), its fixed hyperparameters and where they come from, and
the objective itself (`Method.loss`). The autograd step (`lsbench.train.AutogradStepper`), the
MLP's fast step (`lsbench.mlp.ManualStepper`) and the test-set loss (`test_loss` in
metrics.parquet) all call `Method.loss`, or are tested against it.

A method may also act on the batch before the forward pass (`Method.mix`: mixup), drawing its
randomness from the run's seeded data-order generator; every other method leaves the batch and the
generator untouched, so runs that differ only in the objective see the same batches.

Every neutral value is one run: `variant("label_smoothing", 0.0)` is `("cross_entropy", 0.0)`,
trained once per (dataset, model, seed) and the baseline of every paired comparison. A method
without a parameter has `param` 0.0 in the tables.

Adding a method: one `Method(...)` in `METHODS` and a test of its objective against an independent
computation (tests/test_methods.py). The module imports torch lazily: config validation and the
report read the registry without the training stack.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import torch

# The one baseline run's method name; every method's neutral value maps to it.
CROSS_ENTROPY = "cross_entropy"
# A method's name and a parameter value as they stand in a run's path (`lsbench.plan.run_dir`); the
# workflow's wildcard constraints are these patterns, so every name and value a Method allows must
# match them (checked when the Method is made, and by a test over each range's edges).
NAME_PATTERN = r"[a-z][a-z0-9_]*"
PARAM_PATTERN = r"-?\d[0-9.e+-]*"


# Every parameter's numerically sensible range, besides its method's own. A non-zero value below
# PARAM_FLOOR changes a float32 run by less than its rounding (float32's epsilon is 1.2e-7: ε or β
# times an O(1) term, or (1 - p)^γ = exp(γ log(1 - p)) with |log(1 - p)| <= 87), so it would be
# cross-entropy under another name; a subnormal value (< 2.2e-308) is worse: the training job's
# flush-to-zero (`torch.set_flush_denormal`) turns it into 0, and NumPy's Beta(0, 0) draw raises.
# A weight or scale above PARAM_CEILING leaves the cross-entropy part of the objective (O(1))
# below float32's resolution of the weighted term, and 1/τ below it.
PARAM_FLOOR = 1e-6
PARAM_CEILING = 1e6


@dataclass(frozen=True)
class Param:
    """A method's swept parameter: name, symbol in the report, allowed range and neutral value
    (None: no value gives plain cross-entropy). Besides the range, a value is its neutral value or
    at least `floor` (`PARAM_FLOOR`), so no value is too small for a float32 run to tell it from 0."""

    name: str
    symbol: str
    low: float
    high: float = PARAM_CEILING
    low_open: bool = False  # whether `low` itself is excluded
    high_open: bool = False
    neutral: float | None = None
    floor: float = PARAM_FLOOR

    def allows(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return math.isfinite(value) and above and below and (value == self.neutral or abs(value) >= self.floor)

    @property
    def range_text(self) -> str:
        """The allowed values, e.g. "{0} ∪ [1e-06, 1)"; "[1e-06, 1e+06]" without a neutral value;
        "[-1, 1e+06] with |value| >= 1e-06" for a range around 0."""
        hi = f"{self.high:g}{')' if self.high_open else ']'}"
        whole = f"{'(' if self.low_open else '['}{self.low:g}, {hi}"
        near_zero = "" if self.neutral is None or abs(self.neutral) >= self.floor else f"{{{self.neutral:g}}} ∪ "
        if self.low < 0:
            return f"{near_zero}{whole} with |value| >= {self.floor:g}"
        return f"{near_zero}[{self.floor:g}, {hi}" if self.floor > self.low else whole


@dataclass(frozen=True)
class Method:
    """One training method. `loss(logits, target, param)`: logits (B, C) float, target int64 (B,)
    class indices or float (B, C) class probabilities (from `mix`), param the swept value (0.0
    for a method without one) -> the batch mean as a 0-dim tensor of the logits' dtype.
    `mix(x, y, param, num_classes, generator)`, for methods that act on the batch: x float
    (B, C, H, W), y int64 (B,) -> (inputs of x's shape, float (B, num_classes) targets), drawing
    from `generator` (the run's CPU torch.Generator of data order) only."""

    name: str
    title: str
    source: str
    loss: Callable[..., "torch.Tensor"]
    param: Param | None = None
    fixed: dict[str, str] = field(default_factory=dict)  # hyperparameter -> "value (source)"
    mix: Callable[..., tuple["torch.Tensor", "torch.Tensor"]] | None = None
    # A typical setting for `lsbench-bench --methods all` (a step's speed hardly depends on it).
    bench_param: float | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(NAME_PATTERN, self.name):
            raise ValueError(f"method name {self.name!r}: a run's path needs {NAME_PATTERN}")
        if (self.param is None) != (self.bench_param is None) or (
                self.param is not None and not self.param.allows(self.bench_param)):
            raise ValueError(f"method {self.name!r}: bench_param {self.bench_param!r} must be an allowed "
                             f"value of its parameter (None for a method without one)")

    def label(self, param: float) -> str:
        """How the report names a run of this method: "label smoothing ε = 0.05", "FLSD-53"."""
        if self.param is None:
            return self.title
        return f"{self.title} {self.param.symbol} = {format_param(param)}"


def format_param(value: float) -> str:
    """A parameter as in paths, tables and figures: the shortest repr that round-trips ("0.05");
    -0.0 is 0.0.

    >>> format_param(-0.0), format_param(1e-05), format_param(3)
    ('0.0', '1e-05', '3.0')
    """
    return repr(float(value) + 0.0)  # IEEE: -0.0 + 0.0 is +0.0


# --- objectives ----------------------------------------------------------------------------------
# torch is imported inside each: the registry is read by config validation and by the report.

def _cross_entropy(logits: "torch.Tensor", target: "torch.Tensor", param: float) -> "torch.Tensor":
    import torch.nn.functional as F

    # Class indices, or class probabilities (B, C): mixup trains on mixed targets with this loss,
    # and on the test set (class indices) its objective is plain cross-entropy.
    return F.cross_entropy(logits, target)


def _label_smoothing(logits: "torch.Tensor", target: "torch.Tensor", eps: float) -> "torch.Tensor":
    import torch.nn.functional as F

    # Exactly the seed experiment's CrossEntropyLoss(label_smoothing=eps): the same bits.
    return F.cross_entropy(logits, target, label_smoothing=eps)


def _focal(logits: "torch.Tensor", target: "torch.Tensor", gamma: float,
           gamma_of: Callable[["torch.Tensor"], "torch.Tensor"] | None = None) -> "torch.Tensor":
    import torch
    import torch.nn.functional as F

    log_pt = F.log_softmax(logits, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
    g = gamma_of(log_pt.detach().exp()) if gamma_of is not None else gamma
    # 1 - p_t as -expm1(log p_t): no cancellation where p_t is near 1. Where p_t rounds to 1 (a
    # float32 margin of about 20) it is 0, and d/dx x^γ = γ x^(γ-1) is infinite there for γ < 1:
    # 0 * inf = NaN. Clamped to the dtype's smallest normal number the pow's gradient stays finite
    # and the clamp passes none of it back: 0, the limit of the exact gradient as p_t -> 1.
    one_minus_pt = (-torch.expm1(log_pt)).clamp_min(torch.finfo(log_pt.dtype).tiny)
    return (-one_minus_pt ** g * log_pt).mean()


# Focal loss's largest γ: at γ = 100 the weight (1 - p_y)^γ is already below float32's smallest
# normal number (1.2e-38) once p_y > 0.58, so an image stops counting long before it is learnt
# (Lin et al. and Mukhoti et al. use γ <= 5).
FOCAL_GAMMA_MAX = 100.0


def _focal_adaptive(logits: "torch.Tensor", target: "torch.Tensor", param: float) -> "torch.Tensor":
    import torch

    # FLSD-53: gamma 5 where the true class's probability is below 0.2, else 3 (chosen on the
    # detached probability, as Mukhoti et al.'s code does: the choice is not differentiated).
    return _focal(logits, target, 0.0, lambda pt: torch.where(pt < 0.2, 5.0, 3.0).to(pt.dtype))


def _confidence_penalty(logits: "torch.Tensor", target: "torch.Tensor", beta: float) -> "torch.Tensor":
    import torch.nn.functional as F

    log_p = F.log_softmax(logits, dim=1)
    entropy = -(log_p.exp() * log_p).sum(dim=1)
    return F.nll_loss(log_p, target) - beta * entropy.mean()


MBLS_MARGIN = 10.0


def _margin_ls(logits: "torch.Tensor", target: "torch.Tensor", lam: float) -> "torch.Tensor":
    import torch.nn.functional as F

    # Liu et al. (2022)'s LogitMarginL1: the hinge on every logit's distance to the largest one,
    # averaged over batch and classes (their code's .mean()).
    gap = logits.max(dim=1, keepdim=True).values - logits
    return F.cross_entropy(logits, target) + lam * F.relu(gap - MBLS_MARGIN).mean()


def _label_relaxation(logits: "torch.Tensor", target: "torch.Tensor", alpha: float) -> "torch.Tensor":
    import torch.nn.functional as F

    if alpha == 0:  # the package requires alpha in (0, 1); at 0 the loss is cross-entropy
        return F.cross_entropy(logits, target)
    from label_relaxation import label_relaxation_loss

    return label_relaxation_loss(logits, target, alpha=alpha)


LOGIT_NORM_EPS = 1e-7


def _logit_norm(logits: "torch.Tensor", target: "torch.Tensor", tau: float) -> "torch.Tensor":
    import torch.nn.functional as F

    norms = logits.norm(p=2, dim=1, keepdim=True) + LOGIT_NORM_EPS
    return F.cross_entropy(logits / (norms * tau), target)


def _mixup(x: "torch.Tensor", y: "torch.Tensor", alpha: float, num_classes: int,
           generator: "torch.Generator") -> tuple["torch.Tensor", "torch.Tensor"]:
    import numpy as np
    import torch
    import torch.nn.functional as F

    # One lambda ~ Beta(alpha, alpha) per batch and a random pairing within it (Zhang et al.'s
    # code), both from the run's data generator: NumPy's Beta sampler seeded from it, since
    # torch's Beta takes no generator.
    draw = int(torch.randint(0, 2**62, (1,), generator=generator))
    lam = float(np.random.default_rng(draw).beta(alpha, alpha))
    order = torch.randperm(x.shape[0], generator=generator).to(x.device)
    onehot = F.one_hot(y, num_classes).to(x.dtype)
    return lam * x + (1 - lam) * x.index_select(0, order), lam * onehot + (1 - lam) * onehot.index_select(0, order)


METHODS: dict[str, Method] = {m.name: m for m in (
    Method(CROSS_ENTROPY, "cross-entropy", "the baseline: torch.nn.functional.cross_entropy", _cross_entropy),
    Method("label_smoothing", "label smoothing",
           "Szegedy et al. 2016, 'Rethinking the Inception architecture'; torch's CrossEntropyLoss(label_smoothing)",
           _label_smoothing, Param("epsilon", "ε", 0.0, 1.0, high_open=True, neutral=0.0), bench_param=0.1),
    Method("focal", "focal loss", "Lin et al. 2017; for calibration, Mukhoti et al. 2020",
           _focal, Param("gamma", "γ", 0.0, FOCAL_GAMMA_MAX, neutral=0.0), bench_param=3.0),
    Method("focal_adaptive", "FLSD-53", "Mukhoti et al. 2020 (sample-dependent focal loss)", _focal_adaptive,
           fixed={"gamma": "5 if p_y < 0.2 else 3 (Mukhoti et al. 2020, FLSD-53)"}),
    Method("confidence_penalty", "confidence penalty", "Pereyra et al. 2017: CE - beta * H(p)",
           _confidence_penalty, Param("beta", "β", 0.0, neutral=0.0), bench_param=0.1),
    Method("margin_ls", "margin-based LS", "Liu et al. 2022 (MbLS)", _margin_ls, Param("lambda", "λ", 0.0, neutral=0.0),
           fixed={"margin": f"{MBLS_MARGIN:g} (Liu et al. 2022)"}, bench_param=0.1),
    Method("label_relaxation", "label relaxation", "Lienen & Hüllermeier 2021; the label-relaxation package",
           _label_relaxation, Param("alpha", "α", 0.0, 1.0, high_open=True, neutral=0.0), bench_param=0.1),
    Method("logit_norm", "LogitNorm", "Wei et al. 2022: CE of logits / (tau * ||logits||)", _logit_norm,
           Param("tau", "τ", 0.0, low_open=True), fixed={"eps": f"{LOGIT_NORM_EPS:g} (Wei et al.'s code)"},
           bench_param=0.04),
    Method("mixup", "mixup", "Zhang et al. 2018; on calibration, Thulasidasan et al. 2019", _cross_entropy,
           Param("alpha", "α", 0.0, neutral=0.0), mix=_mixup, bench_param=0.2),
)}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]


def variant(method: str, param: float | None) -> tuple[str, float]:
    """The run (method, param) that trains: a method's neutral value is cross-entropy's one run,
    a method without a parameter has 0.0."""
    m = get_method(method)
    if m.param is None or param is None:
        return (method, 0.0)
    value = float(param) + 0.0
    return (CROSS_ENTROPY, 0.0) if m.param.neutral is not None and value == m.param.neutral else (method, value)


def variant_label(method: str, param: float) -> str:
    """The report's name of a run's method: "cross-entropy", "focal loss γ = 3.0"; an unknown
    method (a table from a later version) by its name."""
    m = METHODS.get(method)
    return m.label(param) if m is not None else f"{method} {format_param(param)}"


def variant_order(method: str, param: float) -> tuple[int, float]:
    """Registry order, then parameter: cross-entropy first, then each method's values ascending."""
    names = list(METHODS)
    return (names.index(method) if method in names else len(names), float(param))


def method_errors(methods: object, key: str = "methods") -> list[str]:
    """A message for every bad entry of a `methods:` mapping (method -> list of values, or null for
    a method without a parameter): unknown method, empty list, a value out of range or repeated,
    a value given to a method that takes none."""
    if not isinstance(methods, dict) or not methods:
        return [f"config key {key!r} = {methods!r}: a mapping from method to its parameter values, e.g. "
                f"{{label_smoothing: [0.0, 0.1], focal: [3.0]}}. Methods: {', '.join(METHODS)}"]
    errors = []
    for name, values in methods.items():
        where = f"config key '{key}[{name}]'"
        if name not in METHODS:
            errors.append(f"{where}: unknown method {name!r}. Allowed: {', '.join(METHODS)}")
            continue
        m = METHODS[name]
        if m.param is None:
            if values is not None:
                errors.append(f"{where} = {values!r}: {name} ({m.title}) takes no parameter. Allowed: null "
                              f"(write {name}: null)")
            continue
        allowed = (f"a list of {m.param.name} ({m.param.symbol}) values, each a number in {m.param.range_text}, "
                   "unique")
        if not isinstance(values, list) or not values:
            errors.append(f"{where} = {values!r}: {'an empty list' if values == [] else 'not a list'}. "
                          f"Allowed: {allowed}")
            continue
        for i, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not m.param.allows(float(v)):
                errors.append(f"config key '{key}[{name}][{i}]' = {v!r}: not an allowed {m.param.name} for {m.title}. "
                              f"Allowed: {allowed}")
        numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(set(numbers)) != len(numbers):
            errors.append(f"{where} = {values!r}: a value is repeated. Allowed: {allowed}")
    return errors


def grid_variants(methods: dict[str, list[float] | None]) -> tuple[tuple[str, float], ...]:
    """Every (method, param) a valid `methods:` mapping trains, cross-entropy first (always: it is
    the baseline every comparison pairs with), then in `variant_order`, each once."""
    found = {(CROSS_ENTROPY, 0.0)}
    for name, values in methods.items():
        found |= {variant(name, v) for v in (values or [None])}
    return tuple(sorted(found, key=lambda v: variant_order(*v)))
