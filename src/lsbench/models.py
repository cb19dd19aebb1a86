"""The model registry: a name maps to a builder `(input_shape, num_classes) -> nn.Module`.

Adding a model is one entry in `MODELS` (plus its test). A user's own model is an import path,
"package.module:function", naming a factory with the same signature that returns a module
mapping float32 images (B, C, H, W) to logits (B, num_classes); it must be importable on the
training jobs' PYTHONPATH. Every model, built-in or not, is built right after seeding torch's,
NumPy's global and Python's `random` generators with the run's seed, so the seed fixes its initial
weights whichever of them a factory draws from.
"""

from __future__ import annotations

import importlib
import random
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lsbench.config import ConfigError, is_factory_path
from lsbench.mlp import MLP

ModelBuilder = Callable[[tuple[int, int, int], int], nn.Module]


def users_failure(exc: BaseException) -> bool:
    """Whether an exception from a user's model code (import, factory, forward, backward) is that
    code's failure, to be named as a ConfigError: anything but a Ctrl-C (KeyboardInterrupt, which
    stays an interrupt). `except Exception` is not enough: a factory that calls sys.exit(0) raises
    SystemExit, which would end `lsbench train` with exit code 0 and no tables."""
    return not isinstance(exc, KeyboardInterrupt)


def linear(input_shape: tuple[int, int, int], num_classes: int) -> MLP:
    """Multinomial logistic regression on the flattened image: a fast sanity baseline."""
    return MLP(_numel(input_shape), (), num_classes)


def mlp(input_shape: tuple[int, int, int], num_classes: int) -> MLP:
    """The seed experiment's MLP, C*H*W-512-256-128-classes with ReLU (784-... on Fashion-MNIST)."""
    return MLP(_numel(input_shape), (512, 256, 128), num_classes)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


class LeNet(nn.Module):
    """LeNet-5 style CNN (LeCun et al. 1998) as commonly written for PyTorch: conv 5x5 (6, padded
    to keep the size), ReLU, max-pool 2; conv 5x5 (16), ReLU, max-pool 2; fully connected
    120-84-classes with ReLU. On 28x28 inputs that is the classic 16x5x5 = 400 features. Inputs
    smaller than 12x12 (the 8x8 digits) pad the second conv too, keeping a 2x2 map.
    """

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        c, h, w = input_shape
        pad = 0 if min(h, w) // 2 >= 6 else 2
        fh, fw = ((h // 2) - 4 + 2 * pad) // 2, ((w // 2) - 4 + 2 * pad) // 2
        if fh < 1 or fw < 1:
            raise ConfigError(f"model 'lenet' needs images of at least 4x4 pixels, got {h}x{w}")
        self.features = nn.Sequential(
            nn.Conv2d(c, 6, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, padding=pad), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * fh * fw, 120), nn.ReLU(inplace=True),
            nn.Linear(120, 84), nn.ReLU(inplace=True), nn.Linear(84, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """Two 3x3 conv + BatchNorm layers with an identity shortcut; where the block halves the size
    and doubles the channels, the shortcut subsamples and pads with zero channels (He et al. 2016,
    option A, the parameter-free shortcut of their CIFAR ResNets)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.stride, self.extra = stride, out_channels - in_channels

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1 and self.extra == 0:
            return x
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet20(nn.Module):
    """ResNet-20 for CIFAR (He et al. 2016, section 4.2): a 3x3 conv (16), three stages of three
    BasicBlocks with 16, 32 and 64 channels (the last two halve the size), global average pooling,
    one linear layer. 0.27 M parameters. Conv and linear weights use He (Kaiming) normal init."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(input_shape[0], 16, 3, padding=1, bias=False), nn.BatchNorm2d(16),
                                  nn.ReLU(inplace=True))
        blocks, channels = [], 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                blocks.append(BasicBlock(channels, width, stride if i == 0 else 1))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


MODELS: dict[str, ModelBuilder] = {
    "linear": linear,
    "mlp": mlp,
    "lenet": LeNet,
    "resnet20": ResNet20,
}


def resolve_builder(name: str) -> ModelBuilder:
    """The registry's builder, or the factory a "package.module:function" path names (imported here)."""
    if name in MODELS:
        return MODELS[name]
    if not is_factory_path(name):
        raise ConfigError(f"model {name!r} is not one of {', '.join(MODELS)}, nor a 'package.module:function' path")
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"model {name!r}: cannot import {module_name!r} ({exc}); is it on PYTHONPATH?") from exc
    except BaseException as exc:  # a user's module may fail in any way (SyntaxError, sys.exit...)
        if not users_failure(exc):
            raise
        raise ConfigError(f"model {name!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    if not hasattr(module, attr):
        raise ConfigError(f"model {name!r}: module {module_name!r} has no function {attr!r}")
    builder = getattr(module, attr)
    if not callable(builder):
        raise ConfigError(f"model {name!r}: {module_name}.{attr} is a {type(builder).__name__}, not a function")
    return builder


def seed_everything(seed: int) -> None:
    """Seed what a factory may reasonably draw from: torch's default generator (and CUDA's), NumPy's
    global generator and Python's `random`."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int, seed: int) -> nn.Module:
    """Seed torch, NumPy and `random` with `seed` (`seed_everything`), then build model `name` for
    images `input_shape` (C, H, W) and `num_classes` classes; ConfigError naming the model if the
    factory fails or returns something other than an nn.Module."""
    builder = resolve_builder(name)
    seed_everything(seed)
    try:
        model = builder(tuple(input_shape), num_classes)
    except ConfigError:
        raise
    except BaseException as exc:  # a user's factory may raise anything, sys.exit(0) too; say whose it was
        if not users_failure(exc):
            raise
        raise ConfigError(f"model {name!r}: building it for input {tuple(input_shape)} and {num_classes} "
                          f"classes failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model {name!r}: the factory returned {type(model).__name__}, not a torch.nn.Module")
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"model {name!r}: has no trainable parameters, so there is nothing to train")
    return model


# How much the probe of `check_output` amplifies a batch: logits of a network of linear maps and
# ReLUs grow with it; outputs squashed into [0, 1] (a final Sigmoid) cannot.
PROBE_GAIN = 1000.0


def check_output(name: str, model: nn.Module, x: torch.Tensor, num_classes: int) -> None:
    """ConfigError naming the model unless it maps a batch x (B, C, H, W) to finite logits
    (B, num_classes). Outputs that are plainly not logits are refused, as far as they can be told
    apart from logits safely (`not_logits`): lsbench applies the softmax itself, and a model
    whose outputs already are probabilities would make every run look underconfident."""
    out = _forward(name, model, x)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (x.shape[0], num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"model {name!r}: expected logits of shape {(x.shape[0], num_classes)}, got {got}")
    if not torch.isfinite(out).all():
        raise ConfigError(f"model {name!r}: its untrained outputs are not finite (NaN or inf)")
    reason = not_logits(out, lambda: _probe(model, x * PROBE_GAIN))
    if reason:
        raise ConfigError(f"model {name!r}: returns {reason}, not logits; return the last layer's raw scores "
                          "(remove a final Softmax or Sigmoid): lsbench applies the softmax itself")


def _forward(name: str, model: nn.Module, x: torch.Tensor) -> object:
    """model(x) in eval mode without gradients (the mode restored after); ConfigError naming the model
    if the forward fails."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(x)
    except BaseException as exc:  # noqa: BLE001 - a user's forward may raise anything (see users_failure)
        if not users_failure(exc):
            raise
        raise ConfigError(f"model {name!r}: forward on a batch of shape {tuple(x.shape)} failed: "
                          f"{type(exc).__name__}: {exc}") from exc
    finally:
        model.train(was_training)


def _probe(model: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """model(x) in eval mode, or None if that forward fails or returns no tensor: a probe that
    cannot run tells nothing, and refuses nothing."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except BaseException as exc:  # noqa: BLE001 - a model may refuse inputs far outside its data's range
        if not users_failure(exc):
            raise
        return None
    finally:
        model.train(was_training)
    return out if isinstance(out, torch.Tensor) else None


def not_logits(out: torch.Tensor, amplified: Callable[[], torch.Tensor | None] = lambda: None) -> str | None:
    """What outputs (B, C) of an untrained model are instead of logits, or None where they may be
    logits. Refused only where no logits look alike:

    - probabilities, or probabilities times a constant (softmax x 10): every row non-negative and
      summing to the same positive number, for a batch of one row to 1 (all-zero rows, e.g. a
      zero-initialised last layer, are logits: uniform);
    - a squashing such as Sigmoid: every output in [0, 1], not all equal, and still in [0, 1] for
      the batch amplified `PROBE_GAIN` times (`amplified()`: the model's (B, C) outputs for it, or
      None), where logits of linear maps and ReLUs would have grown past 1 (a final ReLU's
      non-negative logits do).

    >>> not_logits(torch.softmax(torch.randn(4, 3), dim=1) * 10)
    'probabilities (every row is non-negative and sums to 10)'
    >>> not_logits(torch.zeros(4, 3)) is None
    True
    """
    out = out.double()
    sums = out.sum(dim=1)
    # One row always "sums to a constant": then only a sum of 1 (a Softmax) tells.
    constant = float(sums[0]) > 0 and (len(sums) > 1 or abs(float(sums[0]) - 1) < 1e-4)
    if bool((out >= 0).all()) and constant and torch.allclose(sums, sums[0].expand_as(sums), rtol=1e-4, atol=0):
        return f"probabilities (every row is non-negative and sums to {float(sums[0]):.4g})"
    in_unit = bool(((out >= 0) & (out <= 1)).all()) and bool((out != out.flatten()[0]).any())
    big = amplified() if in_unit else None
    if big is not None and big.shape == out.shape:
        big = big.double()
        if bool(torch.isfinite(big).all()) and bool(((big >= 0) & (big <= 1)).all()):
            return (f"values squashed into [0, 1] (a final Sigmoid?: every output stays in [0, 1] even for inputs "
                    f"{PROBE_GAIN:g} times larger)")
    return None
