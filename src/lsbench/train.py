"""The one training loop: every dataset, model, method and seed, CPU or GPU, pipeline or benchmark.

- The dataset lives on the device as one float32 tensor (N, C, H, W), normalised once; batches
  are slices of a seeded random permutation, so there is no DataLoader and no per-sample transform.
- A step is autograd + `torch.optim.Adam(fused=True)` on the run's method's objective
  (`lsbench.methods`; `AutogradStepper`), unless the model brings a faster step of its own
  (`manual_stepper`; only the MLP does, see `lsbench.mlp`). Either way the loop around it is this
  one, and a method that acts on the batch (mixup) does so here, before either step sees it.
- The loss is summed on the device and read once per epoch: no host sync per step.
- Denormal floats are flushed on CPU: late in training they make matmuls about twice as slow.
- Separate generators for initialisation (torch's default generator, seeded just before the model
  is built) and for data order, both from the seed, so a seed means the same initial weights and
  batch order for every method (a paired comparison; only mixup draws more from the data stream).
- `model.train()` while training, `model.eval()` while evaluating (BatchNorm, dropout).
- A model is someone else's code: it gets copies of lsbench's tensors (a forward that scales its
  input in place changes nothing here), never a one-image training batch (BatchNorm cannot take
  one: a last batch of one joins the batch before it), and one evaluation of the test set per
  epoch feeds every number of that epoch, the final tables included (a model that is random at
  test time, such as MC dropout, cannot give metrics that disagree with its predictions).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol

import numpy as np
import torch
from torch import nn

from lsbench.config import ConfigError, TrainConfig
from lsbench.data import ImageData
from lsbench.methods import Method, get_method
from lsbench.metrics import divergence, evaluate_logits
from lsbench.models import build_model, check_output, users_failure

# Images per forward pass when evaluating: large enough to amortise launches on a GPU, small
# enough that a ResNet's activations for one chunk stay well under a GiB.
EVAL_CHUNK = 1024
# Offsets of the data-order and validation-split streams from the init stream: independent
# streams for one seed, none of which depends on the method.
DATA_SEED_OFFSET = 2**32
SPLIT_SEED_OFFSET = 2**33
# Images of the first forward pass that checks a model's output (shape, logits not probabilities).
CHECK_BATCH = 64


def resolve_device(name: str) -> torch.device:
    """"auto" is resolved here, where the job runs (on a cluster: the compute node)."""
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


def to_inputs(images: np.ndarray | torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...],
              device: torch.device) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 (N, C, H, W), as ToTensor + Normalize(mean, std) per channel."""
    x = torch.as_tensor(images).to(device).float()
    shape = (1, -1, 1, 1)
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(shape)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(shape)
    return x.div_(255).sub_(m).div_(s)


def validation_split(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, validation indices), both sorted: `size` of `n` images held out, chosen by
    the seed alone so every method and model of a seed trains on the same images."""
    if not 0 <= size < n:
        raise ConfigError(f"config key 'validation_size' = {size}: must be >= 0 and smaller than "
                          f"the training set ({n} images)")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED_OFFSET + seed))
    return order[size:].sort().values, order[:size].sort().values


@dataclass(frozen=True)
class DeviceData:
    """A run's images on the device, normalised: x float32 (N, C, H, W), y int64 (N,)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    val_x: torch.Tensor  # (0, C, H, W) when no images are held out
    val_y: torch.Tensor

    @classmethod
    def from_data(cls, data: ImageData, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device,
                  seed: int = 0, validation_size: int = 0) -> "DeviceData":
        train_idx, val_idx = validation_split(len(data.train_labels), validation_size, seed)
        images, labels = torch.from_numpy(data.train_images), torch.from_numpy(data.train_labels)

        def inputs(x: np.ndarray | torch.Tensor) -> torch.Tensor:
            return to_inputs(x, mean, std, device)

        return cls(inputs(images[train_idx]), labels[train_idx].to(device),
                   inputs(data.test_images), torch.from_numpy(data.test_labels).to(device),
                   inputs(images[val_idx]), labels[val_idx].to(device))


class Stepper(Protocol):
    """One optimisation step per call on inputs x and targets (int64 (B,) class indices, or float
    (B, C) probabilities from a method's `mix`); its state is what a checkpoint needs besides the model."""

    def step(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, blob: dict[str, Any]) -> None: ...


class AutogradStepper:
    """Adam (`torch.optim.Adam(fused=True)`, lr `lr`, torch's defaults otherwise) on
    `method.loss(model(x), target, param)`; `step` returns the batch loss as a device scalar. A
    forward or backward that fails is a ConfigError naming the model (`name`)."""

    def __init__(self, model: nn.Module, lr: float, method: Method, param: float, name: str = "model") -> None:
        self.model, self.method, self.param, self.name = model, method, param, name
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=True)

    def step(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        try:
            loss = self.method.loss(self.model(x), target, self.param)
            loss.backward()  # a forward that changed a tensor autograd needs fails only here
        except BaseException as exc:  # noqa: BLE001 - a user's model may raise anything (users_failure)
            if not users_failure(exc):
                raise
            raise ConfigError(f"model {self.name!r}: a training step on a batch of shape {tuple(x.shape)} failed: "
                              f"{type(exc).__name__}: {exc}") from exc
        self.optimizer.step()
        return loss.detach()

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, blob: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(blob)


def make_stepper(model: nn.Module, lr: float, method: str, param: float, allow_manual: bool = True,
                 name: str = "model") -> Stepper:
    """The model's own fast step if it has one (and `allow_manual`), else autograd's, on the
    objective of `method` (a `lsbench.methods` name) at `param`."""
    manual = getattr(model, "manual_stepper", None) if allow_manual else None
    m = get_method(method)
    return manual(lr, m, param) if manual is not None else AutogradStepper(model, lr, m, param, name)


@dataclass
class TrainState:
    """Everything a resumed run needs: weights (and buffers), optimiser state, RNG states, history,
    and the last epoch's test logits (N, C) float32 on the CPU, from which its tables are written."""

    model: nn.Module
    stepper: Stepper
    data_generator: torch.Generator
    epoch: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)
    diverged: bool = False
    test_logits: torch.Tensor | None = None

    def state_dict(self) -> dict[str, Any]:
        numpy_rng = np.random.get_state()
        return {
            "model": self.model.state_dict(),
            "optimizer": self.stepper.state_dict(),
            "data_generator": self.data_generator.get_state(),
            # A user's model may draw random numbers while training (dropout, from torch, NumPy or
            # Python's random): resume those too. NumPy's key goes as a tensor (weights_only loads).
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy_rng": (numpy_rng[0], torch.from_numpy(numpy_rng[1].astype(np.int64)), *numpy_rng[2:]),
            "python_rng": random.getstate(),
            "epoch": self.epoch,
            "records": self.records,
            "diverged": self.diverged,
            "test_logits": self.test_logits,
        }

    def load_state_dict(self, blob: dict[str, Any]) -> None:
        self.model.load_state_dict(blob["model"])
        self.stepper.load_state_dict(blob["optimizer"])
        self.data_generator.set_state(blob["data_generator"])
        torch.set_rng_state(blob["torch_rng"])
        if blob["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(blob["cuda_rng"])
        kind, key, *rest = blob["numpy_rng"]
        np.random.set_state((kind, key.numpy().astype(np.uint32), *rest))
        random.setstate(blob["python_rng"])
        self.epoch = int(blob["epoch"])
        self.records = list(blob["records"])
        self.diverged = bool(blob["diverged"])
        self.test_logits = blob["test_logits"]


def new_state(model_name: str, data: DeviceData, num_classes: int, seed: int, method: str, param: float,
              cfg: TrainConfig, allow_manual: bool = True) -> TrainState:
    """A fresh run: the model built from the seed (and checked to give (B, num_classes) logits),
    its stepper, and the data-order generator."""
    device = data.train_x.device
    model = build_model(model_name, tuple(data.train_x.shape[1:]), num_classes, seed).to(device)
    check_output(model_name, model, data.train_x[:CHECK_BATCH].clone(), num_classes)
    stepper = make_stepper(model, cfg.lr, method, param, allow_manual, model_name)
    return TrainState(model, stepper, torch.Generator().manual_seed(DATA_SEED_OFFSET + seed))


def batch_bounds(n: int, batch_size: int) -> list[int]:
    """Start of every batch of an epoch of n images, then n. A last batch of one image joins the
    batch before it: BatchNorm cannot normalise a batch of one in training mode.

    >>> batch_bounds(7, 3), batch_bounds(6, 3), batch_bounds(1, 3)
    ([0, 3, 7], [0, 3, 6], [0, 1])
    """
    bounds = [*range(0, n, batch_size), n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
        del bounds[-2]
    return bounds


def train_epoch(state: TrainState, data: DeviceData, batch_size: int,
                mix: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
                ) -> torch.Tensor:
    """One pass over the training set in a seeded random order; returns the mean batch loss.
    `mix(x, y) -> (inputs, targets)`: a method's batch transform (mixup), else the batch as is."""
    n, device = data.train_x.shape[0], data.train_x.device
    # The permutation is drawn on the CPU generator so CPU and GPU runs see the same order.
    order = torch.randperm(n, generator=state.data_generator).to(device)
    total = torch.zeros((), device=device)
    state.model.train()
    bounds = batch_bounds(n, batch_size)
    for start, end in zip(bounds[:-1], bounds[1:]):
        idx = order[start:end]
        # index_select: the same rows as train_x[idx], gathered faster (and a copy the model may change).
        x, y = data.train_x.index_select(0, idx), data.train_y.index_select(0, idx)
        total += state.stepper.step(*(mix(x, y) if mix is not None else (x, y)))
    return total / (len(bounds) - 1)


@torch.inference_mode()
def predict_logits(model: nn.Module, x: torch.Tensor, chunk: int = EVAL_CHUNK) -> torch.Tensor:
    """Logits (N, C) float32 in eval mode, in chunks; (0, C) for an empty x. The model sees a copy
    of each chunk, so a forward that changes its input in place cannot change `x`."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(x[i:i + chunk].clone()).float() for i in range(0, max(x.shape[0], 1), chunk)])
    finally:
        model.train(was_training)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A tensor's values as a NumPy array on the host (the metrics are NumPy)."""
    return t.detach().cpu().numpy()


def sync_device(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings are real; a no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def objective_on(method: str, param: float, logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The method's own objective (`Method.loss`, unmixed) on logits (N, C) and labels (N,),
    computed in float64: a run's `test_loss`."""
    with torch.no_grad():
        return float(get_method(method).loss(logits.double(), labels, param))


def run_epochs(state: TrainState, data: DeviceData, method: str, param: float, cfg: TrainConfig,
               num_classes: int) -> Iterator[dict[str, Any]]:
    """Train from state.epoch to cfg.epochs, yielding each epoch's record after updating state.

    A training loss that fails `lsbench.metrics.divergence` marks the run diverged and ends it
    after that epoch's record, which says why.
    """
    device = data.train_x.device
    test_y = to_numpy(data.test_y)
    m = get_method(method)
    mix = None
    if m.mix is not None:
        def mix(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return m.mix(x, y, param, num_classes, state.data_generator)
    while state.epoch < cfg.epochs and not state.diverged:
        start = time.perf_counter()
        train_loss = float(train_epoch(state, data, cfg.batch_size, mix))  # one sync per epoch
        state.test_logits = predict_logits(state.model, data.test_x).cpu()
        metrics = {"test_loss": objective_on(method, param, state.test_logits, data.test_y.cpu()),
                   **evaluate_logits(state.test_logits.numpy(), test_y)}
        sync_device(device)
        state.epoch += 1
        reason = divergence(train_loss, num_classes)
        state.diverged = reason is not None
        record = {"epoch": state.epoch, "train_loss": train_loss, **metrics,
                  "epoch_seconds": time.perf_counter() - start, "diverged": state.diverged,
                  "divergence": reason or ""}
        state.records.append(record)
        yield record
