"""The model registry: every built-in model on every dataset shape, and a user's factory."""

import re
import sys
import textwrap

import pytest
import torch
from torch import nn

from lsbench.config import ConfigError, load_schema, model_from_slug, model_slug
from lsbench.datasets import DATASETS
from lsbench.mlp import MLP
from lsbench.models import MODELS, LeNet, ResNet20, build_model, check_output, resolve_builder

SHAPES = sorted({spec.image_shape for spec in DATASETS.values()})


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_gives_logits_for_every_dataset_shape(name, shape):
    model = build_model(name, shape, 10, seed=0)
    x = torch.randn(3, *shape)
    check_output(name, model, x, 10)
    logits = model(x)
    assert logits.shape == (3, 10) and logits.dtype == torch.float32
    logits.sum().backward()  # every built-in model trains through autograd
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_seed_fixes_the_initial_weights(name):
    a, b, c = (build_model(name, (1, 28, 28), 10, seed) for seed in (3, 3, 4))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())


def test_mlp_is_the_seed_experiment_and_input_size_follows_the_data():
    assert [(l.in_features, l.out_features) for l in build_model("mlp", (1, 28, 28), 10, 0).layers] == \
        [(784, 512), (512, 256), (256, 128), (128, 10)]
    assert build_model("mlp", (3, 32, 32), 10, 0).layers[0].in_features == 3072
    assert [l.in_features for l in build_model("linear", (1, 8, 8), 10, 0).layers] == [64]


def test_init_draws_nn_linears_numbers():
    """A seed gives the weights nn.Linear's init would draw after torch.manual_seed, transposed."""
    net = build_model("mlp", (1, 28, 28), 10, seed=3)
    torch.manual_seed(3)
    for layer in net.layers:
        ref = nn.Linear(layer.in_features, layer.out_features)
        assert torch.equal(layer.weight, ref.weight.t()) and torch.equal(layer.bias, ref.bias)


def test_resnet20_is_he_et_al_cifar_resnet():
    model = ResNet20((3, 32, 32), 10)
    # "0.27M" in He et al. (2016), Table 6: 19 convs (3x3), 19 BatchNorms, one 64x10 fc, no shortcut weights.
    assert sum(p.numel() for p in model.parameters()) == 269722
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19 and sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 19
    assert len([m for m in model.modules() if isinstance(m, nn.Linear)]) == 1  # 19 conv + 1 fc = 20 layers


def test_lenet_shapes():
    assert LeNet((1, 28, 28), 10).classifier[1].in_features == 400  # 16 x 5 x 5, the classic LeNet-5
    assert LeNet((3, 32, 32), 10).classifier[1].in_features == 576
    assert LeNet((1, 8, 8), 10).classifier[1].in_features == 64
    with pytest.raises(ConfigError, match="at least 4x4"):
        LeNet((1, 2, 2), 10)


def test_registry_and_schema_agree():
    schema = load_schema()
    models = schema["properties"]["models"]["items"]["anyOf"][0]["enum"]
    datasets = schema["properties"]["datasets"]["items"]["enum"]
    assert models == list(MODELS) and sorted(datasets) == sorted(DATASETS)
    assert schema["properties"]["validation_size"]["oneOf"][1]["propertyNames"]["enum"] == datasets


def test_the_schema_lists_no_registry_by_hand():
    """Datasets, shifts and methods are filled in from their registries when the schema loads: the
    file itself names none of them, so adding an entry cannot leave the schema behind."""
    from lsbench.config import SCHEMA_PATH
    from lsbench.methods import METHODS
    from lsbench.shifts import SHIFTS

    # Default values may name entries; no other line of the file may.
    lines = [line for line in SCHEMA_PATH.read_text().splitlines() if not line.strip().startswith("default:")]
    for name in [*DATASETS, *SHIFTS]:
        assert not [line for line in lines if re.search(rf"(?<![a-z_]){name}(?![a-z_])", line)], name
    assert "focal" not in "".join(lines)  # the methods' list (epsilons' description names label_smoothing)
    schema = load_schema()
    shifts = schema["properties"]["shifts"]["anyOf"][2]["items"]
    assert shifts["enum"] == list(SHIFTS) and shifts["description"].endswith(", ".join(SHIFTS))
    assert ", ".join(METHODS) in schema["properties"]["methods"]["description"]
    assert schema["properties"]["ood"]["additionalProperties"]["enum"] == [*DATASETS, None]


def write_user_module(tmp_path, body: str, name: str = "my_lsbench_models") -> str:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    sys.path.insert(0, str(tmp_path))
    sys.modules.pop(name, None)
    return name


USER = """
    import torch
    from torch import nn

    def tiny_cnn(input_shape, num_classes):
        c, h, w = input_shape
        return nn.Sequential(nn.Conv2d(c, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(4, num_classes))

    def not_a_module(input_shape, num_classes):
        return "nope"

    def wrong_width(input_shape, num_classes):
        return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[1] * input_shape[2] * input_shape[0], 3))

    def raises(input_shape, num_classes):
        raise RuntimeError("boom")

    NOT_CALLABLE = 5
"""


def test_user_factory(tmp_path):
    mod = write_user_module(tmp_path, USER)
    try:
        name = f"{mod}:tiny_cnn"
        model = build_model(name, (1, 28, 28), 10, seed=0)
        check_output(name, model, torch.randn(2, 1, 28, 28), 10)
        again = build_model(name, (1, 28, 28), 10, seed=0)
        assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))
        assert model_slug(name) == f"{mod}-tiny_cnn" and model_from_slug(model_slug(name)) == name
        with pytest.raises(ConfigError, match="returned str, not a torch.nn.Module"):
            build_model(f"{mod}:not_a_module", (1, 28, 28), 10, 0)
        with pytest.raises(ConfigError, match=r"expected logits of shape \(2, 10\), got \(2, 3\)"):
            check_output(f"{mod}:wrong_width", build_model(f"{mod}:wrong_width", (1, 28, 28), 10, 0),
                         torch.randn(2, 1, 28, 28), 10)
        with pytest.raises(ConfigError, match="raises.*failed: RuntimeError: boom"):
            build_model(f"{mod}:raises", (1, 28, 28), 10, 0)
        with pytest.raises(ConfigError, match="has no function 'missing'"):
            resolve_builder(f"{mod}:missing")
        with pytest.raises(ConfigError, match=f"{mod}.NOT_CALLABLE is a int, not a function"):
            resolve_builder(f"{mod}:NOT_CALLABLE")
    finally:
        sys.path.remove(str(tmp_path))


def test_unknown_models_name_what_exists():
    with pytest.raises(ConfigError, match="cannot import 'no_such_pkg.nets'.*PYTHONPATH"):
        resolve_builder("no_such_pkg.nets:lenet")
    with pytest.raises(ConfigError, match="not one of linear, mlp, lenet, resnet20"):
        resolve_builder("vgg")


def test_mlp_flattens_image_batches():
    model = MLP(12, (5,), 3)
    x = torch.randn(4, 3, 2, 2)
    assert torch.equal(model(x), model(x.flatten(1)))


def test_a_broken_user_module_or_a_model_without_parameters_is_a_config_error(tmp_path):
    broken = write_user_module(tmp_path, "def net(input_shape, num_classes)\n    pass\n", "lsbench_broken")
    empty = write_user_module(tmp_path, "from torch import nn\n\ndef net(input_shape, num_classes):\n"
                                        "    return nn.Flatten()\n", "lsbench_empty")
    try:
        with pytest.raises(ConfigError, match=f"importing '{broken}' failed: SyntaxError"):
            resolve_builder(f"{broken}:net")
        with pytest.raises(ConfigError, match="no trainable parameters"):
            build_model(f"{empty}:net", (1, 28, 28), 10, 0)
    finally:
        sys.path.remove(str(tmp_path))
        sys.path.remove(str(tmp_path))


def test_only_outputs_that_cannot_be_logits_are_called_so():
    from lsbench.models import not_logits

    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(8, 5, generator=g), dim=1)
    assert "sums to 1)" in not_logits(probs) and "sums to 10)" in not_logits(probs * 10)
    squashed = torch.sigmoid(torch.randn(8, 5, generator=g))
    assert "squashed into [0, 1]" in not_logits(squashed, lambda: torch.sigmoid(torch.randn(8, 5, generator=g) * 1e3))
    # Logits that only look odd: all zero (a zero-initialised head), small non-negative ones that
    # grow with the input (a final ReLU), one row of non-negative logits not summing to 1, and a
    # probe that cannot run.
    assert not_logits(torch.zeros(8, 5)) is None
    small = torch.relu(torch.randn(8, 5, generator=g)) * 0.01
    assert not_logits(small, lambda: small * 1e3) is None and not_logits(small, lambda: None) is None
    assert not_logits(torch.tensor([[0.2, 0.5, 3.0]])) is None
