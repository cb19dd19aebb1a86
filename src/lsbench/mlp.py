"""The MLP, and its faster training step: a hand-written backward pass with a flat fused Adam.

Every other model trains through autograd (`lsbench.train.AutogradStepper`). This one special
path exists because the benchmark (`python -m lsbench.bench`) shows it pays for the seed
experiment's model: at batch 64 on a CPU, autograd's and `torch.optim.Adam`'s per-step Python
bookkeeping is a large share of a 4-6 ms step. It stays inside this module, and
`tests/test_train.py` checks its gradients and updates against autograd + `torch.optim.Adam`.

- Weights are stored (in, out) (`Dense`), so the forward's addmm gets a contiguous operand rather
  than nn.Linear's transposed view; initial weights are still nn.Linear's numbers for a seed.
- The backward pass is written out for the Linear/ReLU stack (no autograd graph per step). For
  cross-entropy and label smoothing the gradient at the logits is written out too (softmax minus
  the smoothed target, one `index_select` from a (C, C) table; the loss is one dot): the same
  numbers as `lsbench.methods`' objective, tested. Every other method's gradient at the logits
  comes from autograd on its `Method.loss` over the (B, C) logits alone, a graph of a few ops.
- Adam is torch's fused kernel applied to one flat buffer that every parameter is a view of
  (`FlatAdam`), layer by layer right after each layer's backward, while its gradient is in cache.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lsbench.methods import CROSS_ENTROPY, Method


class Dense(nn.Module):
    """x @ weight + bias, with weight stored (in_features, out_features): the transpose of
    nn.Linear's layout. On CPU at batch 64, addmm with a contiguous (in, out) operand is faster
    than with nn.Linear's transposed view (layer 3's forward: 70 µs instead of 139 µs).
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.empty(out_features))


class MLP(nn.Module):
    """Dense layers with ReLU between them; input (B, C, H, W) or (B, C*H*W) float32, logits (B, classes) out."""

    def __init__(self, in_features: int, hidden: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        sizes = (in_features, *hidden, num_classes)
        self.layers = nn.ModuleList(Dense(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        # nn.Linear's default init (kaiming_uniform with a=sqrt(5) gives U(+-1/sqrt(fan_in)) for
        # weight and bias), from torch's default generator, which lsbench seeds with the run's seed
        # just before building a model. The weight is drawn in nn.Linear's (out, in) order, so a
        # seed gives nn.Linear's very numbers.
        for layer in self.layers:
            bound = 1.0 / math.sqrt(layer.in_features)
            drawn = torch.empty(layer.out_features, layer.in_features)
            layer.weight.copy_(drawn.uniform_(-bound, bound).t())
            layer.bias.uniform_(-bound, bound)

    def activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[x flattened to (B, in_features), h_1, ..., logits], each h after its ReLU."""
        acts = [x.flatten(1)]
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            h = torch.addmm(layer.bias, acts[-1], layer.weight)
            acts.append(h.relu_() if i < last else h)  # in place is safe for autograd too: addmm's
            # backward needs its inputs, not its output
        return acts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activations(x)[-1]

    def manual_stepper(self, lr: float, method: Method, param: float) -> "ManualStepper":
        """This model's fast training step on `method`'s objective (see the module docstring); the
        training loop uses it in place of autograd."""
        return ManualStepper(self, lr, method, param)


class FlatAdam:
    """Adam (torch's `_fused_adam_` kernel, the one behind `Adam(fused=True)`) over one flat buffer.

    The parameters and their .grad are re-homed as views of two flat tensors, so one kernel call
    updates the whole model with no per-step Python bookkeeping. Same update, same defaults
    (betas 0.9/0.999, eps 1e-8, no weight decay) as torch.optim.Adam; a test checks they agree
    bit for bit. `_fused_adam_` is a private op: safe here because torch is pinned in pyproject.
    """

    def __init__(self, params: list[torch.nn.Parameter], lr: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        params = list(params)
        device = params[0].device
        size = sum(p.numel() for p in params)
        self.lr, self.betas, self.eps = lr, betas, eps
        self.param = torch.empty(size, device=device)
        self.grad = torch.zeros(size, device=device)
        self.spans: dict[int, tuple[int, int]] = {}  # id(param) -> its [start, end) in the buffers
        offset = 0
        for p in params:
            n = p.numel()
            self.param[offset:offset + n].copy_(p.detach().flatten())
            p.data = self.param[offset:offset + n].view_as(p)
            p.grad = self.grad[offset:offset + n].view_as(p)
            self.spans[id(p)] = (offset, offset + n)
            offset += n
        self.exp_avg = torch.zeros_like(self.param)
        self.exp_avg_sq = torch.zeros_like(self.param)
        self.steps = torch.zeros((), device=device)  # float32, as the fused kernel expects
        # The kernel's tensor arguments per run of parameters (key: their ids; () is all of them),
        # sliced once: slicing four buffers per layer per step costs ~15 us. The views stay valid
        # because the buffers are only ever written in place.
        self._views: dict[tuple[int, ...], tuple[list[torch.Tensor], ...]] = {(): self._slice(slice(None))}

    def _slice(self, span: slice) -> tuple[list[torch.Tensor], ...]:
        return [self.param[span]], [self.grad[span]], [self.exp_avg[span]], [self.exp_avg_sq[span]]

    @torch.no_grad()
    def step(self) -> None:
        """Update every parameter, in one kernel call."""
        self.begin_step()
        self._update(())

    def begin_step(self) -> None:
        """Count a step; then `update` each parameter exactly once (the order does not matter)."""
        self.steps += 1

    @torch.no_grad()
    def update(self, *params: torch.nn.Parameter) -> None:
        """Update parameters that sit next to each other in the buffer (one layer's weight and bias).

        Adam is elementwise, so updating layer by layer gives the same bits as one `step`; done
        right after a layer's backward, its gradient and weight are still in cache.
        """
        key = tuple(map(id, params))
        if key not in self._views:
            start = min(self.spans[id(p)][0] for p in params)
            end = max(self.spans[id(p)][1] for p in params)
            if end - start != sum(p.numel() for p in params):
                raise ValueError("FlatAdam.update: the parameters are not contiguous in the buffer")
            self._views[key] = self._slice(slice(start, end))
        self._update(key)

    def _update(self, key: tuple[int, ...]) -> None:
        torch._fused_adam_(*self._views[key], [], [self.steps], lr=self.lr, beta1=self.betas[0],
                           beta2=self.betas[1], weight_decay=0.0, eps=self.eps, amsgrad=False, maximize=False)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq, "steps": self.steps}

    def load_state_dict(self, blob: dict[str, torch.Tensor]) -> None:
        for name, value in blob.items():
            getattr(self, name).copy_(value)


def target_table(num_classes: int, epsilon: float, device: torch.device) -> torch.Tensor:
    """(C, C): row c is CrossEntropyLoss(label_smoothing=eps)'s target for class c,
    (1-eps)*onehot(c) + eps/C. A batch's targets are `table.index_select(0, labels)`: one op."""
    table = torch.full((num_classes, num_classes), epsilon / num_classes, device=device)
    return table.fill_diagonal_(1.0 - epsilon + epsilon / num_classes)


def backward_(model: MLP, acts: list[torch.Tensor], grad_logits: torch.Tensor,
              layer_done: Callable[[Dense], None] | None = None) -> None:
    """Write d(loss)/d(param) into each parameter's .grad, given d(loss)/d(logits) (B, C).

    layer_done(layer), if given, runs once the layer's gradients are written and its weight is no
    longer needed by the backward pass, so it may update the layer in place.
    """
    grad = grad_logits
    for i in range(len(model.layers) - 1, -1, -1):
        layer = model.layers[i]
        torch.mm(acts[i].t(), grad, out=layer.weight.grad)  # weights are (in, out): see Dense
        torch.sum(grad, 0, out=layer.bias.grad)
        if i > 0:  # the input needs no gradient
            # ReLU's backward: pass the gradient where the activation was positive.
            grad = torch.ops.aten.threshold_backward(grad @ layer.weight.t(), acts[i], 0)
        if layer_done is not None:
            layer_done(layer)


# Methods whose gradient at the logits is written out here: softmax minus the smoothed target.
CLOSED_FORM = {CROSS_ENTROPY: lambda param: 0.0, "label_smoothing": lambda param: param}


class ManualStepper:
    """One Adam step on `method`'s objective at `param` for an `MLP`, without autograd through the
    network (see the module docstring).

    The same interface as `lsbench.train.AutogradStepper`: `step(x, target)` returns the batch loss
    as a device scalar; `state_dict` / `load_state_dict` hold the optimiser's moments for checkpoints.
    """

    def __init__(self, model: MLP, lr: float, method: Method, param: float) -> None:
        self.model, self.method, self.param = model, method, param
        self.optimizer = FlatAdam(list(model.parameters()), lr=lr)  # also allocates the .grad views
        smoothing = CLOSED_FORM.get(method.name)
        self.table = (target_table(model.layers[-1].out_features, smoothing(param), model.layers[0].weight.device)
                      if smoothing is not None else None)

    @torch.no_grad()
    def step(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        acts = self.model.activations(x)
        batch = x.shape[0]
        if self.table is not None and not target.is_floating_point():
            log_probs = F.log_softmax(acts[-1], dim=1)
            soft = self.table.index_select(0, target)
            loss = torch.dot(soft.view(-1), log_probs.view(-1)).div_(-batch)
            grad_logits = (log_probs.exp_() - soft).div_(batch)
        else:
            with torch.enable_grad():
                logits = acts[-1].detach().requires_grad_()
                loss = self.method.loss(logits, target, self.param)
                (grad_logits,) = torch.autograd.grad(loss, logits)
            loss = loss.detach()
        optimizer = self.optimizer
        optimizer.begin_step()
        # Each layer is updated as soon as its backward is done, while its gradient is in cache.
        backward_(self.model, acts, grad_logits, lambda layer: optimizer.update(layer.weight, layer.bias))
        return loss

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.optimizer.state_dict()

    def load_state_dict(self, blob: dict[str, torch.Tensor]) -> None:
        self.optimizer.load_state_dict(blob)
