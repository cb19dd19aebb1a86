"""Temperature scaling and the validation split it is fitted on."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from conftest import train_run
from lsbench.config import ConfigError, TrainConfig, validation_count
from lsbench.metrics import fit_temperature, temperature_fit, temperature_scaled
from lsbench.train import validation_split


def calibrated_logits(n=20000, seed=0):
    """Logits z with labels drawn from softmax(z): calibrated by construction, so T=1 is optimal."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 10, generator=g) * 2
    labels = torch.multinomial(torch.softmax(z, 1), 1, generator=g).squeeze(1)
    return z.numpy(), labels.numpy()


def test_recovers_a_known_temperature():
    z, labels = calibrated_logits()
    assert fit_temperature(z, labels) == pytest.approx(1.0, abs=0.05)
    assert fit_temperature(z * 3, labels) == pytest.approx(3.0, rel=0.05)  # overconfident by 3x
    assert fit_temperature(z / 2, labels) == pytest.approx(0.5, rel=0.05)  # underconfident


def test_is_the_nll_minimum_on_a_grid():
    z, labels = calibrated_logits(n=3000, seed=1)
    z = z * 1.7
    t = fit_temperature(z, labels)
    grid = torch.linspace(0.5, 4.0, 701)
    nll = torch.stack([F.cross_entropy(torch.from_numpy(z).double() / s, torch.from_numpy(labels)) for s in grid])
    assert t == pytest.approx(float(grid[nll.argmin()]), abs=0.01)


def test_finds_200_over_ln_36_for_logits_of_200_with_one_error_in_five():
    # Issue 28 item 10: 10 classes, logit 200 on class 0, the label another class in one image of
    # five. The NLL's slope in 1/T is zero where 4 (1 - q) = q, q = e^x / (e^x + 9): x = ln 36.
    # The search was [0.05, 20] and returned 20, flagged as at its bound.
    z = np.zeros((500, 10))
    z[:, 0] = 200.0
    labels = np.where(np.arange(500) % 5 == 0, 1, 0)
    fit = temperature_fit(z, labels)
    assert fit.found and fit.temperature == pytest.approx(200 / math.log(36), rel=1e-9)
    out = temperature_scaled(z, labels, z, labels)
    assert out["temperature"] == pytest.approx(55.8111, rel=1e-5) and out["temperature_at_bound"] is False


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3, 1e6])
def test_a_fit_is_the_nll_minimum_at_any_logit_scale(scale):
    z, labels = calibrated_logits(n=2000, seed=4)
    z = z.astype(np.float64) * scale
    fit = temperature_fit(z, labels)

    def nll(t: float) -> float:
        return float(F.cross_entropy(torch.from_numpy(z) / t, torch.from_numpy(labels)))

    assert fit.found and fit.temperature == pytest.approx(scale, rel=0.1)
    assert nll(fit.temperature) <= min(nll(fit.temperature * 1.001), nll(fit.temperature / 1.001))


def test_only_a_true_failure_is_flagged():
    z = np.array([[4.0, 0.0], [0.0, 4.0], [4.0, 0.0], [0.0, 4.0]])
    # Half wrong: the NLL falls all the way to a uniform guess (T -> inf).
    far = temperature_fit(z, np.array([0, 1, 1, 0]))
    assert not far.found and far.temperature > 1e15
    # Every image ranked right: the NLL falls all the way to 0 (T -> 0).
    near = temperature_fit(z, np.array([0, 1, 0, 1]))
    assert not near.found and near.temperature < 4 / 1000
    # Every row constant: no T changes anything.
    assert not temperature_fit(np.zeros((3, 4)), np.array([0, 1, 2])).found
    # One error in four: a minimum, however far outside the old [0.05, 20]: at 4 / ln 3.
    for scale in (1e-4, 1.0, 1e4):
        fit = temperature_fit(z * scale, np.array([0, 1, 0, 0]))
        assert fit.found and fit.temperature == pytest.approx(4 * scale / math.log(3), rel=1e-9)
    assert temperature_scaled(z, np.array([0, 1, 1, 0]), z, np.array([0, 1, 1, 0]))["temperature_at_bound"] is True


def test_temperature_scaled_metrics_and_empty_validation():
    z, labels = calibrated_logits(n=4000, seed=2)
    out = temperature_scaled(z[:2000] * 3, labels[:2000], z[2000:] * 3, labels[2000:])
    assert out["temperature"] == pytest.approx(3.0, rel=0.1)
    assert out["nll_ts"] < F.cross_entropy(torch.from_numpy(z[2000:] * 3), torch.from_numpy(labels[2000:])).item()
    assert out["ece_ts"] < 0.03
    empty = temperature_scaled(z[:0], labels[:0], z, labels)
    assert empty.pop("temperature_at_bound") is False
    assert all(math.isnan(v) for v in empty.values())


def test_validation_split_depends_on_seed_only():
    train, val = validation_split(1000, 100, seed=3)
    assert len(val) == 100 and len(train) == 900
    assert set(train.tolist()).isdisjoint(val.tolist()) and len(set(train.tolist()) | set(val.tolist())) == 1000
    assert torch.equal(val, validation_split(1000, 100, seed=3)[1])
    assert not torch.equal(val, validation_split(1000, 100, seed=4)[1])
    full, none = validation_split(1000, 0, seed=3)
    assert torch.equal(full, torch.arange(1000)) and len(none) == 0


def test_validation_size_too_large_names_the_key():
    with pytest.raises(ConfigError, match="validation_size.*1000.*1000 images"):
        validation_split(1000, 1000, seed=0)


def test_validation_count_images_or_fraction():
    assert validation_count(5000, 60000) == 5000 and validation_count(0, 10) == 0
    assert validation_count(0.1, 1437) == 143 and validation_count(0.0, 10) == 0
    # 1.0 is ambiguous (every image, or one?): refused, as is any whole number written as a float.
    for size in (1.0, 2.0):
        with pytest.raises(ConfigError, match="whole number written as a float, which is ambiguous"):
            validation_count(size, 10)
    with pytest.raises(ConfigError, match="of the 10 training images, this holds out 10 and must leave at least one"):
        validation_count(10, 10)
    # A fraction too small for the set holds out nothing: the temperature would silently be NaN.
    with pytest.raises(ConfigError, match=r"holds out 0 \(use 0 for none, or a fraction of at least 1/1437\)"):
        validation_count(0.0001, 1437)


def test_train_one_writes_calibrated_table(tmp_path, tiny_dataset_file):
    cfg = TrainConfig(epochs=2, batch_size=32, device="cpu", validation_size=64)
    train_run(tiny_dataset_file, tmp_path / "ts", 1, 0.1, cfg)
    row = pd.read_parquet(tmp_path / "ts" / "calibrated.parquet")
    assert list(row.columns) == ["dataset", "model", "method", "param", "seed", "temperature", "temperature_at_bound",
                                 "ece_ts", "nll_ts", "mean_confidence_ts", "aurc_ts", "eaurc_ts", "ece_low", "ece_high",
                                 "smece_low", "smece_high", "aurc_max_logit", "aurc_margin", "val_nll"]
    assert row["val_nll"].iloc[0] > 0
    t = row["temperature"].iloc[0]
    assert len(row) == 1 and row["seed"].iloc[0] == 1 and math.isfinite(t) and t > 0, t
    assert row["temperature_at_bound"].dtype == bool
    off = TrainConfig(epochs=1, batch_size=32, device="cpu", validation_size=0)
    train_run(tiny_dataset_file, tmp_path / "off", 1, 0.1, off)
    assert pd.read_parquet(tmp_path / "off" / "calibrated.parquet")["temperature"].isna().all()
