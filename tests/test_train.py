import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import train_run, write_tiny_root
from lsbench.config import ConfigError, TrainConfig
from lsbench.data import load_data
from lsbench.datasets import DATASETS
from lsbench.mlp import FlatAdam, ManualStepper, backward_, target_table
from lsbench.models import build_model
from lsbench.pipeline import CHECKPOINT_FORMAT, CHECKPOINT_NAME, prepare_data
from lsbench.train import DeviceData, make_stepper, new_state, run_epochs, to_inputs

CPU = torch.device("cpu")
TINY = TrainConfig(epochs=3, batch_size=32, lr=1e-3, device="cpu", threads=1)
FMNIST = DATASETS["fashion_mnist"]


def device_data(path, seed=0, validation_size=0) -> DeviceData:
    return DeviceData.from_data(load_data(path), FMNIST.mean, FMNIST.std, CPU, seed, validation_size)


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("model", ["mlp", "linear"])
def test_manual_backward_matches_autograd(epsilon, model):
    net = build_model(model, (1, 28, 28), 10, seed=0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(17, 784, generator=g), torch.randint(0, 10, (17,), generator=g)
    nn.CrossEntropyLoss(label_smoothing=epsilon)(net(x), y).backward()
    expected = [p.grad.clone() for p in net.parameters()]
    with torch.no_grad():
        acts = net.activations(x)
        target = target_table(10, epsilon, CPU)[y]
        grad = (torch.softmax(acts[-1], 1) - target) / x.shape[0]
        backward_(net, acts, grad)
    for got, want in zip((p.grad for p in net.parameters()), expected):
        assert torch.allclose(got, want, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("epsilon", [0.0, 0.2])
def test_mlp_fast_step_follows_autograd_and_torch_adam(epsilon):
    """The MLP's special path (manual backward + FlatAdam) against the generic one (autograd +
    torch.optim.Adam(fused=True)), one step at a time from the same weights: the same loss, the
    same gradients within float32 rounding, and the very update torch's Adam makes from them.

    Not whole trajectories: Adam's normalised update turns a last-bit difference in a near-zero
    gradient (another CPU's kernels) into a full step, so weights after several steps may differ
    by ~lr on any machine. A wrong formula shows at the first step, in the loss or the gradient."""
    fast_model = build_model("mlp", (1, 28, 28), 10, seed=1)
    fast = make_stepper(fast_model, 1e-3, "label_smoothing", epsilon)
    assert isinstance(fast, ManualStepper)
    shadow = [p.detach().clone() for p in fast_model.parameters()]
    reference = torch.optim.Adam(shadow, lr=1e-3, fused=True)
    g = torch.Generator().manual_seed(2)
    for _ in range(5):
        x, y = torch.randn(32, 1, 28, 28, generator=g), torch.randint(0, 10, (32,), generator=g)
        probe = build_model("mlp", (1, 28, 28), 10, seed=0)
        probe.load_state_dict(fast_model.state_dict())
        want = F.cross_entropy(probe(x), y, label_smoothing=epsilon)
        want.backward()
        assert float(fast.step(x, y)) == pytest.approx(want.item(), rel=1e-5)
        for p, q in zip(fast_model.parameters(), probe.parameters()):
            # p.grad: the gradient the fast step computed and applied (FlatAdam's buffer).
            assert (p.grad - q.grad).abs().max() <= 1e-4 * q.grad.abs().max() + 1e-9
        for s, p in zip(shadow, fast_model.parameters()):
            s.grad = p.grad.clone()
        reference.step()
        assert all(torch.equal(s, p) for s, p in zip(shadow, fast_model.parameters()))


def test_flat_adam_matches_torch_fused_adam():
    """One whole-buffer step and layer-by-layer updates (as the fast step does) both equal torch's bits."""
    a, b, c = (build_model("mlp", (1, 28, 28), 10, seed=0) for _ in range(3))
    ref = torch.optim.Adam(a.parameters(), lr=1e-3, fused=True)
    flat, by_layer = FlatAdam(list(b.parameters()), lr=1e-3), FlatAdam(list(c.parameters()), lr=1e-3)
    for _ in range(5):
        grads = [torch.randn_like(p) for p in a.parameters()]
        for p, q, r, g in zip(a.parameters(), b.parameters(), c.parameters(), grads):
            p.grad = g.clone()
            q.grad.copy_(g)  # FlatAdam's grads are views of its buffer: write in place
            r.grad.copy_(g)
        ref.step()
        flat.step()
        by_layer.begin_step()
        for layer in reversed(c.layers):
            by_layer.update(layer.weight, layer.bias)
    for p, q, r in zip(a.parameters(), b.parameters(), c.parameters()):
        assert torch.equal(p, q) and torch.equal(p, r)
    with pytest.raises(ValueError, match="not contiguous"):
        by_layer.update(c.layers[0].weight, c.layers[1].weight)


@pytest.mark.parametrize("model", ["mlp", "lenet"])
def test_step_loss_is_label_smoothed_cross_entropy(model):
    net = build_model(model, (1, 28, 28), 10, seed=0)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 1, 28, 28, generator=g), torch.randint(0, 10, (8,), generator=g)
    net.eval()
    want = nn.CrossEntropyLoss(label_smoothing=0.2)(net(x), y).item()
    net.train()
    assert float(make_stepper(net, 1e-3, "label_smoothing", 0.2).step(x, y)) == pytest.approx(want, rel=1e-5)


def test_inputs_scaled_like_totensor_normalize():
    images = np.array([[[[0, 255], [128, 51]]]], dtype=np.uint8)
    want = ((torch.from_numpy(images).float() / 255) - 0.5) / 0.5
    assert torch.equal(to_inputs(images, (0.5,), (0.5,), CPU), want)
    rgb = np.stack([images[0, 0]] * 3)[None]
    cifar = DATASETS["cifar10"]
    got = to_inputs(rgb, cifar.mean, cifar.std, CPU)
    for c in range(3):
        assert torch.allclose(got[0, c], (torch.from_numpy(images[0, 0]).float() / 255 - cifar.mean[c]) / cifar.std[c])


def _train(data, seed, epsilon, cfg=TINY, model="mlp", method="label_smoothing"):
    state = new_state(model, data, 10, seed, method, epsilon, cfg)
    return state, list(run_epochs(state, data, method, epsilon, cfg, 10))


def _strip_time(records):
    return [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in records]


@pytest.mark.parametrize("model", ["mlp", "lenet"])
def test_same_seed_same_metrics_and_paired_init(tiny_dataset_file, model):
    data = device_data(tiny_dataset_file)
    _, a = _train(data, 0, 0.1, model=model)
    _, b = _train(data, 0, 0.1, model=model)
    assert _strip_time(a) == _strip_time(b)
    _, c = _train(data, 1, 0.1, model=model)
    assert _strip_time(a) != _strip_time(c)
    # Initial weights depend on the seed only, not on the method.
    w0 = new_state(model, data, 10, 0, "cross_entropy", 0.0, TINY).model.state_dict()
    w1 = new_state(model, data, 10, 0, "label_smoothing", 0.3, TINY).model.state_dict()
    w2 = new_state(model, data, 10, 0, "mixup", 0.2, TINY).model.state_dict()
    assert all(torch.equal(w0[k], w1[k]) and torch.equal(w0[k], w2[k]) for k in w0)


@pytest.mark.parametrize("model", ["mlp", "lenet"])
def test_training_learns_the_tiny_task(tiny_dataset_file, model):
    data = device_data(tiny_dataset_file)
    _, records = _train(data, 0, 0.0, TrainConfig(epochs=6, batch_size=32, device="cpu"), model)
    assert records[-1]["accuracy"] > 0.9
    assert records[-1]["train_loss"] < records[0]["train_loss"]


@pytest.mark.parametrize("lr,reason", [(10.0, "training loss .* above 100 × log\\(10\\) = 230"),
                                       (1e30, "non-finite training loss")])
def test_divergence_stops_the_run_and_says_why(tiny_dataset_file, lr, reason):
    data = device_data(tiny_dataset_file)
    _, records = _train(data, 0, 0.0, TrainConfig(epochs=50, batch_size=32, lr=lr, device="cpu"))
    assert records[-1]["diverged"] and len(records) < 50
    assert re.search(reason, records[-1]["divergence"])
    assert not any(r["diverged"] for r in records[:-1]) and all(r["divergence"] == "" for r in records[:-1])
    _, healthy = _train(data, 0, 0.0, TrainConfig(epochs=3, batch_size=32, device="cpu"))
    assert not any(r["diverged"] for r in healthy)


@pytest.mark.parametrize("model", ["mlp", "lenet", "resnet20"])
def test_resume_from_checkpoint_equals_uninterrupted(tmp_path, tiny_dataset_file, model):
    train_run(tiny_dataset_file, tmp_path / "straight", cfg=TINY, model=model)
    # An interrupted run: one epoch with its checkpoint kept, then the full run resumes it.
    one = TrainConfig(**{**TINY.__dict__, "epochs": 1})
    train_run(tiny_dataset_file, tmp_path / "resumed", cfg=one, model=model, keep=True)
    assert (tmp_path / "resumed" / CHECKPOINT_NAME).exists()
    messages = []
    train_run(tiny_dataset_file, tmp_path / "resumed", cfg=TINY, model=model, log=messages.append)
    assert any("resuming" in m and "after epoch 1" in m for m in messages)
    assert not (tmp_path / "resumed" / CHECKPOINT_NAME).exists()
    for table in ("runs", "metrics", "reliability", "predictions", "calibrated"):
        a = pd.read_parquet(tmp_path / "straight" / f"{table}.parquet").drop(columns="epoch_seconds", errors="ignore")
        b = pd.read_parquet(tmp_path / "resumed" / f"{table}.parquet").drop(columns="epoch_seconds", errors="ignore")
        pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_checkpoint_of_another_run_is_ignored(tmp_path, tiny_dataset_file):
    one = TrainConfig(**{**TINY.__dict__, "epochs": 1})
    train_run(tiny_dataset_file, tmp_path / "r", epsilon=0.1, cfg=one, keep=True)
    for other in ({"epsilon": 0.2}, {"model": "linear"}):
        messages = []
        train_run(tiny_dataset_file, tmp_path / "r", **{"epsilon": 0.1, **other}, cfg=one, keep=True,
                  log=messages.append)
        assert any("ignoring" in m for m in messages), other
        train_run(tiny_dataset_file, tmp_path / "r", epsilon=0.1, cfg=one, keep=True)


def test_checkpoint_of_an_older_format_is_ignored(tmp_path, tiny_dataset_file):
    """A checkpoint written before the format changed is retrained, not misloaded."""
    one = TrainConfig(**{**TINY.__dict__, "epochs": 1})
    train_run(tiny_dataset_file, tmp_path, cfg=one, keep=True)
    blob = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    blob["run_key"]["format"] = CHECKPOINT_FORMAT - 1
    blob["model"] = {k: v.t() if v.ndim == 2 else v for k, v in blob["model"].items()}  # (out, in)
    torch.save(blob, tmp_path / CHECKPOINT_NAME)
    messages = []
    train_run(tiny_dataset_file, tmp_path, cfg=TINY, log=messages.append)
    assert any("ignoring" in m for m in messages) and not any("resuming" in m for m in messages)
    assert pd.read_parquet(tmp_path / "metrics.parquet")["epoch"].tolist() == [1, 2, 3]


def test_runs_table_records_what_defines_the_run(tmp_path, tiny_dataset_file):
    cfg = TrainConfig(epochs=1, batch_size=16, lr=2e-3, validation_size=0.25, device="cpu")
    train_run(tiny_dataset_file, tmp_path, seed=5, epsilon=0.05, cfg=cfg, model="lenet")
    row = pd.read_parquet(tmp_path / "runs.parquet").iloc[0]
    assert (row["dataset"], row["model"], row["method"], row["param"], row["seed"]) == (
        "fashion_mnist", "lenet", "label_smoothing", 0.05, 5)
    assert (row["epochs"], row["batch_size"], row["lr"]) == (1, 16, 2e-3)
    assert (row["n_validation"], row["n_train"], row["n_test"]) == (64, 192, 64)  # 25 % of 256
    assert json.loads(row["class_names"]) == list(FMNIST.class_names) and row["image_shape"] == "1x28x28"
    assert row["data_sha256"] == load_data(tiny_dataset_file).sha256 and row["parameters"] == 61706


def test_validation_size_that_leaves_nothing_names_the_key(tmp_path, tiny_dataset_file):
    with pytest.raises(ConfigError, match="validation_size.*256 training images"):
        train_run(tiny_dataset_file, tmp_path, cfg=TrainConfig(epochs=1, validation_size=256, device="cpu"))


def test_three_channel_data_trains(tmp_path):
    root = write_tiny_root(tmp_path / "data", ["cifar10"])
    data = tmp_path / "cifar10.npz"
    prepare_data("cifar10", str(root), data, lambda m: None)
    train_run(data, tmp_path / "run", cfg=TrainConfig(epochs=1, batch_size=25, device="cpu"),
              dataset="cifar10", model="resnet20")
    metrics = pd.read_parquet(tmp_path / "run" / "metrics.parquet")
    assert metrics["accuracy"].between(0, 1).all() and (metrics["model"] == "resnet20").all()


def test_an_unreadable_checkpoint_is_ignored(tmp_path, tiny_dataset_file):
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"not a checkpoint")
    messages = []
    train_run(tiny_dataset_file, tmp_path, cfg=TrainConfig(epochs=1, batch_size=32, device="cpu"), log=messages.append)
    assert any("ignoring" in m and "cannot be read" in m for m in messages)
    assert pd.read_parquet(tmp_path / "metrics.parquet")["epoch"].tolist() == [1]
