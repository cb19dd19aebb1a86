"""The method registry: each objective against an independent computation (the paper's formula
written out in NumPy, or a reference implementation), neutral values, the fast step, and the
errors a bad `methods:` entry gives."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lsbench.config import ConfigError, load_schema, to_workflow_config, validate_config
from lsbench.methods import CROSS_ENTROPY, METHODS, grid_variants, method_errors, variant, variant_label
from lsbench.mlp import ManualStepper
from lsbench.models import build_model
from lsbench.train import AutogradStepper, make_stepper, objective_on

G = torch.Generator().manual_seed(0)
LOGITS = torch.randn(40, 6, generator=G, dtype=torch.float64) * 3
LABELS = torch.randint(0, 6, (40,), generator=G)


def numpy_log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


Z, Y = LOGITS.numpy(), LABELS.numpy()
LOGP = numpy_log_softmax(Z)
P = np.exp(LOGP)
PY, LOGPY = P[np.arange(len(Y)), Y], LOGP[np.arange(len(Y)), Y]


def loss(name: str, param: float) -> float:
    return float(METHODS[name].loss(LOGITS, LABELS, param))


def test_label_smoothing_is_torchs_and_szegedys_formula():
    for eps in (0.0, 0.05, 0.3):
        assert loss("label_smoothing", eps) == float(F.cross_entropy(LOGITS, LABELS, label_smoothing=eps))
        # Szegedy et al. 2016: (1 - eps) * NLL + eps * mean over classes of -log p.
        assert loss("label_smoothing", eps) == pytest.approx(((1 - eps) * -LOGPY - eps * LOGP.mean(axis=1)).mean(),
                                                             rel=1e-12)


@pytest.mark.parametrize("gamma", [0.0, 1.0, 3.0])
def test_focal_loss_is_lins_formula(gamma):
    assert loss("focal", gamma) == pytest.approx((-(1 - PY) ** gamma * LOGPY).mean(), rel=1e-12)


@pytest.mark.parametrize("gamma", [0.01, 0.5, 0.999])
@pytest.mark.parametrize("margin", [17.0, 20.0, 40.0, 100.0])
def test_focal_gradient_where_p_t_rounds_to_1_is_finite_and_float64s(gamma, margin):
    # Issue 28 item 9: at a float32 margin of about 17, p_t rounds to 1 and (1 - p_t)^γ with γ < 1
    # had an infinite derivative: a NaN gradient. The exact gradient tends to 0 (about -4e-13 here).
    z32 = torch.tensor([[margin, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]], requires_grad=True)
    z64 = z32.detach().double().requires_grad_()
    label = torch.tensor([0])
    METHODS["focal"].loss(z32, label, gamma).backward()
    METHODS["focal"].loss(z64, label, gamma).backward()
    assert torch.isfinite(z64.grad).all()  # the float64 reference itself (NaN before, from margin 40)
    assert torch.isfinite(z32.grad).all()
    # float32 cannot resolve p_t there: agree to its resolution of the O(1) gradient scale.
    assert torch.allclose(z32.grad.double(), z64.grad, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", [n for n in METHODS if n != CROSS_ENTROPY])
@pytest.mark.parametrize("scale", [0.0, 20.0, 100.0, 1e4])
def test_every_objective_has_a_finite_gradient_at_extreme_logits(name, scale):
    # The same trap elsewhere (a pow of 0 with an exponent < 1, log of 0, 0/0): logits all zero
    # (a zero-initialised head), a float32-saturated softmax, and huge logits; at each parameter
    # bound and a middle value.
    m = METHODS[name]
    params = [0.0] if m.param is None else [p for p in (m.param.floor, 0.5, 3.0, m.param.high)
                                             if m.param.allows(p)]
    for param in params:
        z = (torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]) * scale
             ).requires_grad_()
        m.loss(z, torch.tensor([0, 1, 2, 1]), param).backward()
        assert torch.isfinite(z.grad).all(), (name, param, scale)


def test_the_smallest_mixup_alpha_draws_under_flush_to_zero():
    # 1e-310 passed validation before and, flushed to 0 by the job, made NumPy's Beta draw raise;
    # the floor (PARAM_FLOOR) is a normal number, and the draw works there.
    floor = METHODS["mixup"].param.floor
    was = torch.set_flush_denormal(True)
    try:
        x, target = METHODS["mixup"].mix(torch.ones(4, 1, 2, 2), torch.tensor([0, 1, 2, 0]), floor, 3,
                                         torch.Generator().manual_seed(0))
    finally:
        torch.set_flush_denormal(False)
    assert was and torch.isfinite(x).all() and torch.allclose(target.sum(dim=1), torch.ones(4))


def test_flsd53_switches_gamma_at_p_02():
    gamma = np.where(PY < 0.2, 5.0, 3.0)
    assert 0 < (PY < 0.2).sum() < len(PY)  # both branches are exercised
    assert loss("focal_adaptive", 0.0) == pytest.approx((-(1 - PY) ** gamma * LOGPY).mean(), rel=1e-12)


@pytest.mark.parametrize("beta", [0.0, 0.1, 1.0])
def test_confidence_penalty_is_ce_minus_beta_entropy(beta):
    entropy = -(P * LOGP).sum(axis=1)
    assert loss("confidence_penalty", beta) == pytest.approx((-LOGPY - beta * entropy).mean(), rel=1e-12)


@pytest.mark.parametrize("lam", [0.0, 0.1, 1.0])
def test_margin_ls_is_liu_et_al_with_margin_10(lam):
    gap = Z.max(axis=1, keepdims=True) - Z
    assert (gap > 10).any()  # the hinge is active somewhere
    assert loss("margin_ls", lam) == pytest.approx((-LOGPY).mean() + lam * np.maximum(gap - 10, 0).mean(), rel=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.4])
def test_label_relaxation_is_the_papers_credal_projection(alpha):
    # Lienen & Hüllermeier 2021, Eq. (7) and the original implementation: the target is the
    # projection of p onto {q: q_y >= 1 - alpha}: q_y = 1 - alpha, q_k = alpha p_k / (1 - p_y); the
    # loss is KL(q || p) where p_y < 1 - alpha, else 0.
    onehot = np.eye(6)[Y].astype(bool)
    rest = np.where(onehot, 0.0, P)
    q = np.where(onehot, 1 - alpha, alpha * rest / rest.sum(axis=1, keepdims=True))
    kl = np.where(q > 0, q * (np.log(np.where(q > 0, q, 1)) - LOGP), 0.0).sum(axis=1)
    want = np.where(PY >= 1 - alpha, 0.0, kl).mean()
    assert loss("label_relaxation", alpha) == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("tau", [0.04, 1.0])
def test_logit_norm_is_wei_et_als_formula(tau):
    scaled = Z / ((np.linalg.norm(Z, axis=1, keepdims=True) + 1e-7) * tau)
    want = -numpy_log_softmax(scaled)[np.arange(len(Y)), Y].mean()
    assert loss("logit_norm", tau) == pytest.approx(want, rel=1e-12)


def test_mixup_mixes_inputs_and_targets_as_zhang_et_al_from_the_runs_generator():
    m = METHODS["mixup"]
    x = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    a, b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    mixed, target = m.mix(x, y, 0.4, 4, a)
    again, target2 = m.mix(x, y, 0.4, 4, b)
    assert torch.equal(mixed, again) and torch.equal(target, target2)  # seeded by the generator alone
    # Each image and its target are mixed with one lambda and one partner: lam * x_i + (1 - lam) * x_j.
    assert torch.allclose(target.sum(dim=1), torch.ones(8, dtype=target.dtype))
    lam = float(target[0, y[0]]) if target[0].max() == target[0, y[0]] else 1 - float(target[0].max())
    partner = [j for j in range(8) if torch.allclose(mixed[0], lam * x[0] + (1 - lam) * x[j], atol=1e-6)]
    assert partner, "mixed image 0 is not lam * x_0 + (1 - lam) * x_j for any j"
    # The loss on soft targets is lam * CE(y_a) + (1 - lam) * CE(y_b), Zhang et al.'s formula.
    logits = torch.randn(8, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ce = -(F.log_softmax(logits, 1) * target.double()).sum(1).mean()
    assert float(m.loss(logits, target.double(), 0.4)) == pytest.approx(float(ce), rel=1e-12)
    # On class indices (the test set) mixup's objective is cross-entropy.
    assert float(m.loss(LOGITS, LABELS, 0.4)) == float(F.cross_entropy(LOGITS, LABELS))


def test_every_neutral_value_is_the_cross_entropy_run_and_gives_its_loss():
    ce = loss(CROSS_ENTROPY, 0.0)
    for name, m in METHODS.items():
        if m.param is not None and m.param.neutral is not None:
            assert variant(name, m.param.neutral) == (CROSS_ENTROPY, 0.0)
            assert loss(name, m.param.neutral) == pytest.approx(ce, rel=1e-12), name
    assert variant("focal_adaptive", None) == ("focal_adaptive", 0.0)
    assert variant("label_smoothing", -0.0) == (CROSS_ENTROPY, 0.0)
    assert variant_label("focal", 3.0) == "focal loss γ = 3.0" and variant_label(CROSS_ENTROPY, 0.0) == "cross-entropy"


def test_grid_variants_always_has_cross_entropy_first_once():
    runs = grid_variants({"focal": [0.0, 3.0], "label_smoothing": [0.1, 0.0], "focal_adaptive": None})
    assert runs == ((CROSS_ENTROPY, 0.0), ("label_smoothing", 0.1), ("focal", 3.0), ("focal_adaptive", 0.0))


def test_test_loss_is_the_methods_own_objective():
    assert objective_on("focal", 2.0, LOGITS.float(), LABELS) == pytest.approx(loss("focal", 2.0), rel=1e-6)
    assert objective_on("mixup", 0.2, LOGITS.float(), LABELS) == pytest.approx(loss(CROSS_ENTROPY, 0.0), rel=1e-6)


@pytest.mark.parametrize("name,param", [(n, 0.3 if m.param else 0.0) for n, m in METHODS.items()])
def test_the_mlp_fast_step_follows_autograd_for_every_method(name, param):
    """One step from the same weights: the MLP's manual step and autograd's give the same loss and
    the same gradients (within float32 rounding), for every objective. (Not the updated weights:
    Adam's first step is about ±lr wherever a gradient is non-zero, so a last-bit difference in a
    near-zero gradient can flip it; test_train checks the update itself.)"""
    torch.manual_seed(0)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    target = METHODS[name].mix(x, y, param, 10, torch.Generator().manual_seed(3)) if METHODS[name].mix else (x, y)
    fast_net, slow_net = build_model("mlp", (1, 8, 8), 10, seed=1), build_model("mlp", (1, 8, 8), 10, seed=1)
    fast, slow = make_stepper(fast_net, 1e-3, name, param), make_stepper(slow_net, 1e-3, name, param,
                                                                           allow_manual=False)
    assert isinstance(fast, ManualStepper) and isinstance(slow, AutogradStepper)
    assert float(fast.step(*target)) == pytest.approx(float(slow.step(*target)), rel=1e-5)
    for a, b in zip(fast_net.parameters(), slow_net.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("methods,needle", [
    ({"focl": [1.0]}, "methods[focl]': unknown method 'focl'. Allowed: cross_entropy, label_smoothing"),
    ({"focal": []}, "methods[focal]' = []: an empty list"),
    ({"label_smoothing": [1.0]}, "methods[label_smoothing][0]' = 1.0: not an allowed epsilon for label smoothing. Allowed: "
                                 "a list of epsilon (ε) values, each a number in {0} ∪ [1e-06, 1)"),
    ({"logit_norm": [0.0]}, "each a number in [1e-06, 1e+06]"),
    # Subnormal or too small to change a float32 run: refused at validation, not in the job.
    ({"mixup": [1e-310]}, "methods[mixup][0]' = 1e-310: not an allowed alpha for mixup. Allowed: a list of alpha "
                          "(α) values, each a number in {0} ∪ [1e-06, 1e+06]"),
    ({"focal": [1e-7]}, "methods[focal][0]' = 1e-07"),
    ({"label_smoothing": [5e-324]}, "methods[label_smoothing][0]' = 5e-324"),
    ({"logit_norm": [1e-300]}, "methods[logit_norm][0]' = 1e-300"),
    ({"confidence_penalty": [1e300]}, "methods[confidence_penalty][0]' = 1e+300"),
    ({"focal": [1000.0]}, "each a number in {0} ∪ [1e-06, 100]"),
    ({"focal_adaptive": [3.0]}, "focal_adaptive (FLSD-53) takes no parameter. Allowed: null"),
    ({"focal": [1.0, 1.0]}, "a value is repeated"),
    ({"mixup": 0.2}, "not a list"),
    ({"focal": [-1.0]}, "methods[focal][0]' = -1.0"),
])
def test_a_bad_methods_entry_names_key_value_and_what_is_allowed(methods, needle):
    errors = method_errors(methods)
    assert any(needle in e for e in errors), errors


def test_method_errors_accepts_a_good_grid():
    assert method_errors({"label_smoothing": [0.0, 0.1], "focal": [1, 3.0], "focal_adaptive": None,
                          "logit_norm": [0.04], "mixup": [0.2]}) == []


BASE = {"datasets": ["digits"], "models": ["linear"], "data_root": None, "seeds": [0], "epochs": 1,
        "batch_size": 64, "lr": 1e-3, "validation_size": 100, "ood": None, "device": "cpu", "threads": 1,
        "keep_checkpoints": False, "shifts": None, "shift_images": 2000}


def test_epsilons_is_a_shorthand_for_label_smoothing():
    config = validate_config({**BASE, "epsilons": [0.0, 0.1]}, load_schema())
    assert config["methods"] == {"label_smoothing": [0.0, 0.1]}
    assert to_workflow_config(config).variants == ((CROSS_ENTROPY, 0.0), ("label_smoothing", 0.1))


def test_methods_and_epsilons_in_one_source_is_an_error_naming_both():
    with pytest.raises(ConfigError, match="'methods' and 'epsilons' are both given"):
        validate_config({**BASE, "epsilons": [0.1], "methods": {"focal": [1.0]}}, load_schema())
    with pytest.raises(ConfigError, match="neither 'methods' nor 'epsilons'"):
        validate_config({**BASE, "methods": None, "epsilons": None}, load_schema())
    # Neither key at all (a module import's config): the schema's default epsilons.
    default = load_schema()["properties"]["epsilons"]["default"]
    assert validate_config(BASE, load_schema())["methods"] == {"label_smoothing": default}
    # One of them given: the other is not filled in from the defaults.
    assert validate_config({**BASE, "methods": {"focal": [1.0]}}, load_schema())["methods"] == {"focal": [1.0]}


def test_the_later_source_of_methods_or_epsilons_wins(tmp_path):
    configfile = tmp_path / "config.yaml"
    configfile.write_text("epsilons: [0.0, 0.1]\n")
    # --config methods=... replaces the file's epsilons; --config epsilons=... a file's methods.
    config = validate_config({**BASE, "epsilons": [0.0, 0.1], "methods": {"focal": [2.0]}}, load_schema(),
                             yaml_files=[configfile], override_keys={"methods"})
    assert config["methods"] == {"focal": [2.0]} and config["epsilons"] is None
    configfile.write_text("methods: {focal: [2.0]}\n")
    config = validate_config({**BASE, "epsilons": [0.2], "methods": {"focal": [2.0]}}, load_schema(),
                             yaml_files=[configfile], override_keys={"epsilons"})
    assert config["methods"] == {"label_smoothing": [0.2]}


def test_a_bad_method_stops_validation_with_its_message():
    with pytest.raises(ConfigError, match=r"methods\[focal\]\[0\]' = -1"):
        validate_config({**BASE, "methods": {"focal": [-1]}}, load_schema())


def test_every_method_documents_its_source_and_parameter():
    for name, m in METHODS.items():
        assert m.source and m.title and m.loss.__name__, name
        if m.param is not None:
            assert m.param.symbol and math.isfinite(m.param.low), name
            assert m.param.neutral is None or m.param.allows(m.param.neutral), name


def test_an_empty_methods_mapping_from_the_command_line_is_refused():
    # Snakemake merges `--config methods={}` into config.yaml's `methods: null` and leaves null.
    with pytest.raises(ConfigError, match=r"'methods' \(from --config\) names no method") as e:
        validate_config({**BASE, "epsilons": [0.1], "methods": None}, load_schema(), override_keys={"methods"})
    # The value is the merge's, not the user's: the message must not show "None" as if it were given.
    assert "None" not in str(e.value) and "cross-entropy" in str(e.value)


def test_an_empty_methods_mapping_is_refused_whatever_a_config_file_holds(tmp_path):
    """With a --configfile that sets methods, Snakemake's merge keeps the file's mapping under
    `methods={}`: the merged value looks fine, so the text the user typed decides."""
    merged = {**BASE, "methods": {"label_smoothing": [0.1]}, "epsilons": None}
    for text in ("{}", "null"):
        with pytest.raises(ConfigError, match=r"'methods' \(from --config\) names no method"):
            validate_config(merged, load_schema(), {"methods": text}, override_keys={"methods"})


def test_a_key_repeated_on_the_command_line_names_the_key():
    merged = {**BASE, "methods": {"focal": [3.0]}, "epsilons": None}
    with pytest.raises(ConfigError, match=r"config key 'methods\[focal\]' \(from --config\): given twice"):
        validate_config(merged, load_schema(), {"methods": "{focal: [1.0], focal: [3.0]}"}, override_keys={"methods"})
    assert validate_config(merged, load_schema(), {"methods": "{focal: [3.0]}"},
                           override_keys={"methods"})["methods"] == {"focal": [3.0]}


def test_a_method_without_a_parameter_refuses_an_empty_list_too():
    assert any("takes no parameter" in e for e in method_errors({"focal_adaptive": []}))


def test_a_scalar_yaml_octal_for_a_method_is_refused(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("methods: {focal: 010}\n")
    with pytest.raises(ConfigError, match="YAML 1.1 reads 010 as 8"):
        validate_config({**BASE, "methods": {"focal": 8}}, load_schema(), yaml_files=[f])


def test_both_keys_in_one_file_names_the_file(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("epsilons: [0.1]\nmethods: {focal: [1.0]}\n")
    with pytest.raises(ConfigError, match=rf"both given \(in {f}\)"):
        validate_config({**BASE, "epsilons": [0.1], "methods": {"focal": [1.0]}}, load_schema(), yaml_files=[f])


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_allowed_name_and_value_fits_the_workflows_path_patterns(name):
    """A run's path carries its method and parameter (lsbench.plan.run_dir) and the workflow's
    wildcard constraints are these patterns: a value the registry allows must always match, or the
    job is never found (a MissingInputException in rule collect)."""
    import math
    import re

    from lsbench.methods import NAME_PATTERN, PARAM_PATTERN, format_param

    m = METHODS[name]
    assert re.fullmatch(NAME_PATTERN, name)
    if m.param is None:
        return
    p = m.param
    candidates = [p.low, p.high, p.neutral or 0.0, 5e-324, 1e-300, 1e-5, 0.1, 1 - 1e-16, 123456789.0, 1e300,
                  -0.0, -1e-300, -0.5, -1e300, math.nextafter(p.low, math.inf)]
    allowed = [v for v in candidates if math.isfinite(v) and p.allows(v)]
    assert allowed
    for value in allowed:
        assert re.fullmatch(PARAM_PATTERN, format_param(value)), (name, value)
    for value in (-0.5, -1e-300, -1e300):  # negative values too, for a method that allows them
        assert re.fullmatch(PARAM_PATTERN, format_param(value))


def test_a_method_is_checked_when_it_is_registered():
    from lsbench.methods import Method, Param, _cross_entropy

    with pytest.raises(ValueError, match=r"method name 'Poly-1': a run's path needs"):
        Method("Poly-1", "poly-1", "Leng et al. 2022", _cross_entropy, Param("epsilon", "ε", -1.0), bench_param=1.0)
    with pytest.raises(ValueError, match="bench_param 5.0 must be an allowed value"):
        Method("poly1", "poly-1", "Leng et al. 2022", _cross_entropy, Param("epsilon", "ε", -1.0, 1.0), bench_param=5.0)
    assert Method("poly1", "poly-1", "Leng et al. 2022", _cross_entropy, Param("epsilon", "ε", -1.0),
                  bench_param=-0.5).name == "poly1"


def test_a_subnormal_epsilon_is_refused_under_the_key_the_user_wrote():
    with pytest.raises(ConfigError, match=r"config key 'epsilons\[1\]' = 1e-310: not an allowed epsilon"):
        validate_config({**BASE, "epsilons": [0.0, 1e-310]}, load_schema())
