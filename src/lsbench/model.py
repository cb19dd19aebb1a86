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


class MLP(nn.Module):
    """Linear layers with ReLU between them; logits out. Weights are (out, in) as in nn.Linear."""

    def __init__(self, cfg: MLPConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        sizes = (cfg.in_features, *cfg.hidden, cfg.num_classes)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None) -> None:
        # nn.Linear's default init (kaiming_uniform with a=sqrt(5) gives U(+-1/sqrt(fan_in)) for
        # weight and bias), but drawn from our own generator so the seed alone fixes it.
        for layer in self.layers:
            bound = 1.0 / math.sqrt(layer.in_features)
            layer.weight.uniform_(-bound, bound, generator=generator)
            layer.bias.uniform_(-bound, bound, generator=generator)

    def activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[x, h_1, ..., logits]; x: (B, 784) float32, each h after its ReLU."""
        acts = [x]
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            h = torch.addmm(layer.bias, acts[-1], layer.weight.t())
            acts.append(h.relu_() if i < last else h)
        return acts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activations(x)[-1]


def build_model(name: str, generator: torch.Generator | None = None) -> MLP:
    if name not in MODELS:
        raise ValueError(f"model {name!r} is not one of {sorted(MODELS)}")
    return MLP(MODELS[name], generator)
