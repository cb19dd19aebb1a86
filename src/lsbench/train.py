"""The one training loop: every seed, every epsilon, CPU or GPU, pipeline or benchmark.

Speed choices (measured in `lsbench.bench`):
- The dataset lives on the device as one float32 tensor, converted once; batches are slices of a
  random permutation, so there is no DataLoader and no per-sample transform.
- Forward and backward are written out for the Linear/ReLU stack (no autograd graph per step):
  at batch 64 autograd's per-step bookkeeping is a large share of a 3-4 ms step. A test checks the
  gradients against autograd and `CrossEntropyLoss(label_smoothing=eps)`. What remains is ~2 ms
  of matmuls and ~0.5-0.8 ms of (memory-bound) Adam per step on one core.
- Weights are stored (in, out) (`model.Dense`), so the forward's addmm gets a contiguous operand
  rather than nn.Linear's transposed view; with the per-step op trims (targets looked up in a
  (C, C) table, the loss as one dot product) a step is about 12 % faster (interleaved A/B).
- Adam is torch's fused kernel applied once to one flat buffer that every parameter is a view of
  (`FlatAdam`): `torch.optim.Adam(fused=True)` spends more time in Python per step than in the kernel.
  Each layer's slice is updated right after its backward, while its gradient is in cache (about
  4 % per step; Adam is memory-bound here), with the same bits as one whole-buffer update.
- The loss is summed on the device and read once per epoch: no host sync per step.
- Denormal floats are flushed on CPU: late in training they make matmuls about twice as slow.
- Separate generators for initialisation and for data order, both from the seed, so a seed means
  the same initial weights and batch order for every epsilon (a paired comparison).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from lsbench.config import ConfigError, TrainConfig
from lsbench.data import Dataset
from lsbench.metrics import evaluate_logits
from lsbench.model import MLP, Dense, build_model

EVAL_CHUNK = 8192
# A run has diverged when its mean training loss is not finite or exceeds this many times the loss
# of a uniform guess (log C): Adam with a huge lr (e.g. 10) keeps the loss finite, near 1e9, at
# chance accuracy. A sane run never comes near it (its first-epoch loss is below log C).
DIVERGENCE_FACTOR = 100.0
# Offsets of the data-order and validation-split streams from the init stream: independent
# streams for one seed, none of which depends on epsilon.
DATA_SEED_OFFSET = 2**32
SPLIT_SEED_OFFSET = 2**33


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config key 'device' = 'cuda': torch sees no CUDA device here (use 'auto' or 'cpu')")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"config key 'device' = {name!r}: not one of auto, cpu, cuda")
    return torch.device(name)


def configure_cpu(threads: int) -> None:
    """Pin torch to `threads` compute threads and flush denormals (see module docstring)."""
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set once in this process (e.g. by a previous run in the bench)
        pass
    torch.set_flush_denormal(True)


def to_inputs(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 784) in [-1, 1], as ToTensor + Normalize(0.5, 0.5)."""
    x = images.to(device).flatten(1).float()
    return x.div_(255).sub_(0.5).div_(0.5)


def validation_split(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, validation indices), both sorted: `size` of `n` images held out, chosen by
    the seed alone so every epsilon of a seed trains on the same images."""
    if not 0 <= size < n:
        raise ConfigError(f"config key 'validation_size' = {size}: must be >= 0 and smaller than "
                          f"the training set ({n} images)")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED_OFFSET + seed))
    return order[size:].sort().values, order[:size].sort().values


@dataclass(frozen=True)
class DeviceData:
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    val_x: torch.Tensor  # (0, 784) when validation_size is 0
    val_y: torch.Tensor

    @classmethod
    def from_dataset(cls, ds: Dataset, device: torch.device, seed: int = 0,
                     validation_size: int = 0) -> "DeviceData":
        train_idx, val_idx = validation_split(len(ds.train_labels), validation_size, seed)
        return cls(to_inputs(ds.train_images[train_idx], device), ds.train_labels[train_idx].to(device),
                   to_inputs(ds.test_images, device), ds.test_labels.to(device),
                   to_inputs(ds.train_images[val_idx], device), ds.train_labels[val_idx].to(device))


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


@dataclass
class TrainState:
    """Everything a resumed run needs: weights, optimiser moments, data-order RNG, history."""

    model: MLP
    optimizer: FlatAdam
    data_generator: torch.Generator
    epoch: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)
    diverged: bool = False

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "data_generator": self.data_generator.get_state(),
            "epoch": self.epoch,
            "records": self.records,
            "diverged": self.diverged,
        }

    def load_state_dict(self, blob: dict[str, Any]) -> None:
        self.model.load_state_dict(blob["model"])
        self.optimizer.load_state_dict(blob["optimizer"])
        self.data_generator.set_state(blob["data_generator"])
        self.epoch = int(blob["epoch"])
        self.records = list(blob["records"])
        self.diverged = bool(blob["diverged"])


def new_state(seed: int, cfg: TrainConfig, device: torch.device) -> TrainState:
    model = build_model(cfg.model, torch.Generator().manual_seed(seed)).to(device)
    optimizer = FlatAdam(list(model.parameters()), lr=cfg.lr)  # also allocates the .grad views
    return TrainState(model, optimizer, torch.Generator().manual_seed(DATA_SEED_OFFSET + seed))


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
        torch.mm(acts[i].t(), grad, out=layer.weight.grad)  # weights are (in, out): see model.Dense
        torch.sum(grad, 0, out=layer.bias.grad)
        if i > 0:  # the input needs no gradient
            # ReLU's backward: pass the gradient where the activation was positive.
            grad = torch.ops.aten.threshold_backward(grad @ layer.weight.t(), acts[i], 0)
        if layer_done is not None:
            layer_done(layer)


def train_step(state: TrainState, x: torch.Tensor, y: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """One Adam step on the smoothed cross-entropy, `table` being `target_table(C, eps, device)`;
    returns the batch loss as a device scalar."""
    acts = state.model.activations(x)
    log_probs = F.log_softmax(acts[-1], dim=1)
    target = table.index_select(0, y)
    batch = x.shape[0]
    loss = torch.dot(target.view(-1), log_probs.view(-1)).div_(-batch)
    optimizer = state.optimizer
    optimizer.begin_step()
    # Each layer is updated as soon as its backward is done, while its gradient is in cache.
    backward_(state.model, acts, (log_probs.exp_() - target).div_(batch),
              lambda layer: optimizer.update(layer.weight, layer.bias))
    return loss


@torch.no_grad()
def train_epoch(state: TrainState, data: DeviceData, epsilon: float, batch_size: int) -> torch.Tensor:
    """One pass over the training set in a seeded random order; returns the mean batch loss."""
    n, device = data.train_x.shape[0], data.train_x.device
    # The permutation is drawn on the CPU generator so CPU and GPU runs see the same order.
    order = torch.randperm(n, generator=state.data_generator).to(device)
    table = target_table(state.model.layers[-1].out_features, epsilon, device)
    total = torch.zeros((), device=device)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        # index_select: the same rows as train_x[idx], gathered faster.
        total += train_step(state, data.train_x.index_select(0, idx), data.train_y.index_select(0, idx), table)
    return total / math.ceil(n / batch_size)


@torch.inference_mode()
def predict_logits(model: MLP, x: torch.Tensor, chunk: int = EVAL_CHUNK) -> torch.Tensor:
    """Logits (N, C) float32, evaluated in large chunks; (0, C) for an empty x."""
    return torch.cat([model(x[i:i + chunk]) for i in range(0, max(x.shape[0], 1), chunk)])


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A tensor's values as a NumPy array on the host (the metrics are NumPy)."""
    return t.detach().cpu().numpy()


def sync_device(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings are real; a no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_epochs(state: TrainState, data: DeviceData, seed: int, epsilon: float,
               cfg: TrainConfig) -> Iterator[dict[str, Any]]:
    """Train from state.epoch to cfg.epochs, yielding each epoch's record after updating state.

    A non-finite or absurd training loss (see DIVERGENCE_FACTOR) marks the run diverged and ends it
    after that epoch's record.
    """
    device = data.train_x.device
    loss_limit = DIVERGENCE_FACTOR * math.log(state.model.layers[-1].out_features)
    while state.epoch < cfg.epochs and not state.diverged:
        start = time.perf_counter()
        train_loss = float(train_epoch(state, data, epsilon, cfg.batch_size))  # one sync per epoch
        metrics = evaluate_logits(to_numpy(predict_logits(state.model, data.test_x)), to_numpy(data.test_y), epsilon)
        sync_device(device)
        state.epoch += 1
        state.diverged = not (math.isfinite(train_loss) and train_loss <= loss_limit)
        record = {"seed": seed, "epsilon": epsilon, "epoch": state.epoch, "train_loss": train_loss,
                  **metrics, "epoch_seconds": time.perf_counter() - start, "diverged": state.diverged}
        state.records.append(record)
        yield record
