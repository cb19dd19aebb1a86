import pandas as pd
import pytest
import torch
from torch import nn

from lsbench.config import TrainConfig
from lsbench.data import load_dataset
from lsbench.model import build_model
from lsbench.pipeline import CHECKPOINT_FORMAT, CHECKPOINT_NAME, train_one
from lsbench.train import (DeviceData, FlatAdam, backward_, new_state, run_epochs, target_table,
                           to_inputs, train_step)

CPU = torch.device("cpu")
TINY = TrainConfig(epochs=3, batch_size=32, lr=1e-3, model="mlp", device="cpu", threads=1)


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("model", ["mlp", "linear"])
def test_manual_backward_matches_autograd(epsilon, model):
    g = torch.Generator().manual_seed(0)
    net = build_model(model, g)
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


def test_init_draws_nn_linears_numbers():
    """A seed gives the weights nn.Linear's init would draw from the same generator, transposed."""
    net = build_model("mlp", torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    for layer in net.layers:
        ref = nn.Linear(layer.in_features, layer.out_features)
        bound = 1 / layer.in_features ** 0.5
        with torch.no_grad():
            ref.weight.uniform_(-bound, bound, generator=g)
            ref.bias.uniform_(-bound, bound, generator=g)
        assert torch.equal(layer.weight, ref.weight.t()) and torch.equal(layer.bias, ref.bias)


def test_train_step_loss_is_label_smoothed_cross_entropy():
    state = new_state(0, TINY, CPU)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 784, generator=g), torch.randint(0, 10, (8,), generator=g)
    want = nn.CrossEntropyLoss(label_smoothing=0.2)(state.model(x), y).detach()
    with torch.no_grad():
        got = train_step(state, x, y, target_table(10, 0.2, CPU))
    assert float(got) == pytest.approx(want.item(), rel=1e-6)


def test_inputs_scaled_like_totensor_normalize():
    images = torch.tensor([[[0, 255], [128, 51]]], dtype=torch.uint8)
    want = ((images.float() / 255) - 0.5) / 0.5
    assert torch.equal(to_inputs(images, CPU), want.reshape(1, -1))


def _train(data, seed, epsilon, cfg=TINY):
    state = new_state(seed, cfg, CPU)
    return state, list(run_epochs(state, data, seed, epsilon, cfg))


def _strip_time(records):
    return [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in records]


def test_same_seed_same_metrics_and_paired_init(tiny_dataset_file):
    data = DeviceData.from_dataset(load_dataset(tiny_dataset_file), CPU)
    _, a = _train(data, 0, 0.1)
    _, b = _train(data, 0, 0.1)
    assert _strip_time(a) == _strip_time(b)
    _, c = _train(data, 1, 0.1)
    assert _strip_time(a) != _strip_time(c)
    # Initial weights depend on the seed only, not on epsilon.
    w0 = new_state(0, TINY, CPU).model.layers[0].weight
    assert torch.equal(w0, new_state(0, TINY, CPU).model.layers[0].weight)
    assert not torch.equal(w0, new_state(1, TINY, CPU).model.layers[0].weight)


def test_training_learns_the_tiny_task(tiny_dataset_file):
    data = DeviceData.from_dataset(load_dataset(tiny_dataset_file), CPU)
    _, records = _train(data, 0, 0.0, TrainConfig(epochs=5, batch_size=32, device="cpu"))
    assert records[-1]["accuracy"] > 0.9
    assert records[-1]["train_loss"] < records[0]["train_loss"]


@pytest.mark.parametrize("lr", [10.0, 1e30])  # a finite but absurd loss, and NaN
def test_divergence_stops_the_run(tiny_dataset_file, lr):
    data = DeviceData.from_dataset(load_dataset(tiny_dataset_file), CPU)
    _, records = _train(data, 0, 0.0, TrainConfig(epochs=50, batch_size=32, lr=lr, device="cpu"))
    assert records[-1]["diverged"] and len(records) < 50
    assert not any(r["diverged"] for r in records[:-1])
    _, healthy = _train(data, 0, 0.0, TrainConfig(epochs=3, batch_size=32, device="cpu"))
    assert not any(r["diverged"] for r in healthy)


def test_resume_from_checkpoint_equals_uninterrupted(tmp_path, tiny_dataset_file):
    log = lambda m: None  # noqa: E731
    train_one(tiny_dataset_file, tmp_path / "straight", 0, 0.1, TINY, False, log)
    # An interrupted run: one epoch with its checkpoint kept, then the full run resumes it.
    one = TrainConfig(**{**TINY.__dict__, "epochs": 1})
    train_one(tiny_dataset_file, tmp_path / "resumed", 0, 0.1, one, True, log)
    assert (tmp_path / "resumed" / CHECKPOINT_NAME).exists()
    messages = []
    train_one(tiny_dataset_file, tmp_path / "resumed", 0, 0.1, TINY, False, messages.append)
    assert any("resuming" in m and "after epoch 1" in m for m in messages)
    assert not (tmp_path / "resumed" / CHECKPOINT_NAME).exists()
    for table in ("metrics", "reliability", "predictions"):
        a = pd.read_parquet(tmp_path / "straight" / f"{table}.parquet").drop(columns="epoch_seconds", errors="ignore")
        b = pd.read_parquet(tmp_path / "resumed" / f"{table}.parquet").drop(columns="epoch_seconds", errors="ignore")
        pd.testing.assert_frame_equal(a, b)


def test_checkpoint_of_another_run_is_ignored(tmp_path, tiny_dataset_file):
    one = TrainConfig(**{**TINY.__dict__, "epochs": 1})
    train_one(tiny_dataset_file, tmp_path / "r", 0, 0.1, one, True, lambda m: None)
    messages = []
    train_one(tiny_dataset_file, tmp_path / "r", 0, 0.2, one, False, messages.append)
    assert any("ignoring" in m for m in messages)
    assert pd.read_parquet(tmp_path / "r" / "metrics.parquet")["epsilon"].tolist() == [0.2]


def test_checkpoint_of_an_older_format_is_ignored(tmp_path, tiny_dataset_file):
    """A checkpoint written before the weight layout changed is retrained, not misloaded."""
    one = TrainConfig(**{**TINY.__dict__, "epochs": 1})
    train_one(tiny_dataset_file, tmp_path, 0, 0.1, one, True, lambda m: None)
    blob = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    blob["run_key"]["format"] = CHECKPOINT_FORMAT - 1
    blob["model"] = {k: v.t() if v.ndim == 2 else v for k, v in blob["model"].items()}  # (out, in)
    torch.save(blob, tmp_path / CHECKPOINT_NAME)
    messages = []
    train_one(tiny_dataset_file, tmp_path, 0, 0.1, TINY, False, messages.append)
    assert any("ignoring" in m for m in messages) and not any("resuming" in m for m in messages)
    assert pd.read_parquet(tmp_path / "metrics.parquet")["epoch"].tolist() == [1, 2, 3]


def test_flat_adam_matches_torch_fused_adam():
    """One whole-buffer step and layer-by-layer updates (as train_step does) both equal torch's bits."""
    torch.manual_seed(0)
    a, b, c = build_model("mlp"), build_model("mlp"), build_model("mlp")
    b.load_state_dict(a.state_dict())
    c.load_state_dict(a.state_dict())
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
