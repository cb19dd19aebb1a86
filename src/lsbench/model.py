"""The classifier: a ReLU MLP whose forward pass keeps its activations for a manual backward."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class MLPConfig:
    in_features: int = 784
    hidden: tuple[int, ...] = (512, 256, 128)
    num_classes: int = 10


# The names accepted by config key `model`.
MODELS: dict[str, MLPConfig] = {
    "mlp": MLPConfig(),  # 784-512-256-128-10, the seed experiment
    "linear": MLPConfig(hidden=()),  # multinomial logistic regression, a fast sanity baseline
}


class Dense(nn.Module):
    """x @ weight + bias, with weight stored (in_features, out_features): the transpose of
    nn.Linear's layout. On CPU at batch 64, addmm with a contiguous (in, out) operand is faster
    than with nn.Linear's transposed view: about 10 % of a whole training step (see lsbench.train).
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.empty(out_features))


class MLP(nn.Module):
    """Dense layers with ReLU between them; logits out."""

    def __init__(self, cfg: MLPConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        sizes = (cfg.in_features, *cfg.hidden, cfg.num_classes)
        self.layers = nn.ModuleList(Dense(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None) -> None:
        # nn.Linear's default init (kaiming_uniform with a=sqrt(5) gives U(+-1/sqrt(fan_in)) for
        # weight and bias), but drawn from our own generator so the seed alone fixes it. The weight
        # is drawn in nn.Linear's (out, in) order, so a seed gives nn.Linear's very numbers.
        for layer in self.layers:
            bound = 1.0 / math.sqrt(layer.in_features)
            drawn = torch.empty(layer.out_features, layer.in_features)
            layer.weight.copy_(drawn.uniform_(-bound, bound, generator=generator).t())
            layer.bias.uniform_(-bound, bound, generator=generator)

    def activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[x, h_1, ..., logits]; x: (B, 784) float32, each h after its ReLU."""
        acts = [x]
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            h = torch.addmm(layer.bias, acts[-1], layer.weight)
            acts.append(h.relu_() if i < last else h)
        return acts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activations(x)[-1]


def build_model(name: str, generator: torch.Generator | None = None) -> MLP:
    if name not in MODELS:
        raise ValueError(f"model {name!r} is not one of {sorted(MODELS)}")
    return MLP(MODELS[name], generator)
