"""The shift suite (lsbench.shifts): every shift keeps shape and dtype, is the identity at severity
0, gives the same bytes for a seed, and moves the images further at each higher severity, on 8 x 8
digits, 28 x 28 grey images and 32 x 32 colour images alike."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from lsbench.data import load_digits_split, resize_images
from lsbench.shifts import SEVERITIES, SHIFTS, ShiftError, apply_shift, suite_sha256, shift_subset

GEOMETRIC = [name for name, s in SHIFTS.items() if s.family == "geometric"]


def _digits(n: int = 60) -> np.ndarray:
    return load_digits_split()["test"][0][:n]


def _colour(n: int = 40) -> np.ndarray:
    """Smooth random colour images: structure at several scales, as photographs have."""
    rng = np.random.default_rng(1)
    x = ndimage.gaussian_filter(rng.uniform(0, 255, (n, 3, 32, 32)), (0, 0, 2, 2))
    x = (x - x.min()) / (x.max() - x.min()) * 255
    return np.rint(x).astype(np.uint8)


IMAGES = {"digits 8x8": _digits, "digits 28x28": lambda: resize_images(_digits(), (28, 28)), "colour 32x32": _colour}


@pytest.fixture(scope="module", params=list(IMAGES))
def images(request) -> np.ndarray:
    return IMAGES[request.param]()


def test_the_suite_has_the_issues_shifts():
    assert len(SHIFTS) >= 12
    assert {"rotation", "translation", "scale", "shear"} <= set(GEOMETRIC)
    assert {"shot_noise", "impulse_noise", "motion_blur", "brightness", "contrast", "fog", "spatter", "stripe",
            "zigzag", "dotted_line", "canny_edges"} <= set(SHIFTS)
    assert {"gaussian_blur", "glass_blur"} & set(SHIFTS)
    for shift in SHIFTS.values():
        assert len(shift.levels) == len(SEVERITIES) == 5 and shift.source and shift.unit


@pytest.mark.parametrize("name", list(SHIFTS))
def test_shape_dtype_identity_and_seed(name, images):
    for severity in SEVERITIES:
        out = apply_shift(name, images, severity, seed=3)
        assert out.shape == images.shape and out.dtype == np.uint8
        assert np.array_equal(out, apply_shift(name, images, severity, seed=3))  # the same bytes
    assert np.array_equal(apply_shift(name, images, 0, seed=3), images)
    assert not np.shares_memory(apply_shift(name, images, 0, seed=3), images)


@pytest.mark.parametrize("name", [n for n in SHIFTS if n not in GEOMETRIC or n == "translation"])
def test_a_higher_severity_moves_the_images_further(name, images):
    """Mean absolute pixel change from the original rises strictly with severity."""
    distance = [np.abs(apply_shift(name, images, s, 0).astype(float) - images).mean() for s in range(6)]
    assert all(b > a for a, b in zip(distance, distance[1:])), distance


def _centroids(x: np.ndarray) -> np.ndarray:
    total = x.sum(axis=(1, 2, 3))
    rows, cols = np.arange(x.shape[2]), np.arange(x.shape[3])
    return np.stack([(x.sum(axis=(1, 3)) * rows).sum(1) / total, (x.sum(axis=(1, 2)) * cols).sum(1) / total], -1)


@pytest.mark.parametrize("size", [8, 28, 32])
@pytest.mark.parametrize("name", [n for n in GEOMETRIC if n != "translation"])
def test_a_geometric_shift_moves_a_spot_further(name, size):
    """Rotation by 135° and by 180° can bring an image closer to itself in pixels (a symmetric
    garment), so rotation, scale and shear are measured by how far they move an off-centre spot:
    its centroid's displacement rises strictly with severity (a translated spot leaves the frame;
    translation is measured in pixels above)."""
    x = np.zeros((20, 1, size, size), dtype=np.uint8)
    side = max(2, size // 8)  # a spot above the centre, where none of them moves it out of the frame
    r, c = size // 2 - size // 4 - side // 2, size // 2 - side // 2
    x[:, :, r:r + side, c:c + side] = 255
    start = _centroids(x.astype(float))
    moved = [np.linalg.norm(_centroids(apply_shift(name, x, s, 0).astype(float)) - start, axis=1).mean()
             for s in range(6)]
    assert all(b > a for a, b in zip(moved, moved[1:])), moved


def test_a_seed_draws_other_images():
    x = resize_images(_digits(), (28, 28))
    assert not np.array_equal(apply_shift("impulse_noise", x, 3, 0), apply_shift("impulse_noise", x, 3, 1))
    assert not np.array_equal(apply_shift("rotation", x, 3, 0), apply_shift("rotation", x, 3, 1))


def test_bad_input_is_named():
    x = _digits(4)
    with pytest.raises(ShiftError, match="unknown shift 'rotate'. Allowed: rotation"):
        apply_shift("rotate", x, 1, 0)
    for severity in (6, -1, 1.5, True):
        with pytest.raises(ShiftError, match="severity .* is not an integer in 0..5"):
            apply_shift("rotation", x, severity, 0)
    with pytest.raises(ShiftError, match=r"uint8 \(N, C, H, W\) with C = 1 or 3 \(channels first\), got float64"):
        apply_shift("rotation", x.astype(float), 1, 0)
    with pytest.raises(ShiftError, match=r"got uint8 \(4, 8, 8\)"):
        apply_shift("rotation", x[:, 0], 1, 0)
    with pytest.raises(ShiftError, match=r"C = 1 or 3 \(channels first\), got uint8 \(4, 8, 8, 3\)"):
        apply_shift("rotation", np.repeat(x[:, 0, :, :, None], 3, -1), 1, 0)
    for seed in (None, -1, 1.0):
        with pytest.raises(ShiftError, match="seed .* is not an integer >= 0"):
            apply_shift("rotation", x, 1, seed)


@pytest.mark.parametrize("name", list(SHIFTS))
def test_a_shift_is_as_strong_at_every_image_size(name):
    """The same images at half, once and twice 28 px: every length scales, so the mean pixel change
    at severity 3 stays within a factor of 2.5 across the sizes (spatter's mud once covered 20
    times less of a 56 px image)."""
    from lsbench.data import resize_images

    base = resize_images(_digits(40), (28, 28))
    changes = []
    for size in (14, 28, 56):
        x = resize_images(base, (size, size))
        changes.append(np.abs(apply_shift(name, x, 3, 0).astype(float) - x).mean())
    assert max(changes) < 2.5 * min(changes), changes


def test_the_subset_and_the_suite_hash():
    a = shift_subset(10000, 2000)
    assert len(a) == 2000 and np.array_equal(a, np.sort(a)) and np.array_equal(a, shift_subset(10000, 2000))
    assert np.array_equal(shift_subset(360, 2000), np.arange(360))
    assert suite_sha256() == suite_sha256(list(SHIFTS)) != suite_sha256(["rotation"])


def test_the_evaluation_reproduces_the_runs_own_numbers_and_trains_nothing(tiny_dataset_file, tmp_path):
    """On the whole test set unshifted ("none"), the final model evaluated from model.pt gives the
    run's own final-epoch numbers, and its temperature-scaled ECE and NLL; the run's files stay as
    they were."""
    import pandas as pd

    from conftest import train_run
    from lsbench.config import TrainConfig
    from lsbench.pipeline import evaluate_shifts, shift_data

    run = tmp_path / "run"
    train_run(tiny_dataset_file, run, 0, 0.1, TrainConfig(epochs=2, batch_size=32, device="cpu", validation_size=32))
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    shifted = tmp_path / "rotation.npz"
    shift_data("fashion_mnist", tiny_dataset_file, ["rotation"], shifted, 10**6, lambda m: None)
    out = tmp_path / "shift.parquet"
    evaluate_shifts([run], "mlp", tiny_dataset_file, shifted, out, "cpu", 1, lambda m: None)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    table = pd.read_parquet(out)
    assert len(table) == 1 + 5 and list(table["severity"]) == [0, 1, 2, 3, 4, 5]
    clean = table.iloc[0]
    final = pd.read_parquet(run / "metrics.parquet").iloc[-1]
    calibrated = pd.read_parquet(run / "calibrated.parquet").iloc[0]
    assert clean["shift"] == "none" and clean["n_images"] == 64
    for column in ("accuracy", "test_nll", "brier", "ece", "smece", "overconfidence", "aurc", "failure_auroc"):
        np.testing.assert_equal(clean[column], final[column], err_msg=column)  # NaN == NaN: all images right
    assert clean["ece_ts"] == calibrated["ece_ts"] and clean["nll_ts"] == pytest.approx(calibrated["nll_ts"], abs=1e-12)
    assert table["accuracy"].iloc[-1] < clean["accuracy"]  # a rotation by 180° hurts


def test_an_evaluation_without_a_model_names_the_file(tiny_dataset_file, tmp_path):
    from conftest import train_run
    from lsbench.config import ConfigError
    from lsbench.pipeline import evaluate_shifts

    run = tmp_path / "run"
    train_run(tiny_dataset_file, run, 0, 0.0)
    (run / "model.pt").write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="model.pt: not a readable model file"):
        evaluate_shifts([run], "mlp", tiny_dataset_file, None, tmp_path / "s.parquet", "cpu", 1, lambda m: None)
    (run / "model.pt").unlink()
    with pytest.raises(FileNotFoundError):
        evaluate_shifts([run], "mlp", tiny_dataset_file, None, tmp_path / "s.parquet", "cpu", 1, lambda m: None)


def test_nothing_read_from_a_model_file_decides_which_code_runs(tiny_dataset_file, tmp_path):
    """The model built is the run's definition (the workflow's --model); a model.pt naming another
    model, shape or class count is refused by name before anything is built."""
    import torch

    from conftest import train_run
    from lsbench.config import ConfigError
    from lsbench.pipeline import evaluate_shifts

    run, marker = tmp_path / "run", tmp_path / "pwned"
    train_run(tiny_dataset_file, run, 0, 0.0, model="linear")
    weights = torch.load(run / "model.pt", weights_only=True)

    def evaluate(model="linear"):
        evaluate_shifts([run], model, tiny_dataset_file, None, tmp_path / "s.parquet", "cpu", 1, lambda m: None)

    for tampered in ({"model": "subprocess:call", "input_shape": ["touch", str(marker)], "num_classes": 0},
                     {"model": "mlp"}, {"input_shape": [1, 8, 8]}, {"num_classes": 10.0},
                     {"num_classes": torch.tensor([10, 10])}):
        torch.save({**weights, **tampered}, run / "model.pt")
        with pytest.raises(ConfigError, match=r"run/model.pt: names model .* the run is model 'linear' for input "
                                              r"\[1, 28, 28\] and 10 classes"):
            evaluate()
        assert not marker.exists()
    torch.save(weights, run / "model.pt")
    with pytest.raises(ConfigError, match=r"run/runs.parquet: a run of model 'linear'; this evaluation is of model "
                                          "'mlp'"):
        evaluate("mlp")
    evaluate()
    assert (tmp_path / "s.parquet").is_file() and not marker.exists()


def test_bad_evaluation_inputs_are_named(tiny_dataset_file, tmp_path):
    from conftest import train_run
    from lsbench.config import ConfigError
    from lsbench.data import DataError
    from lsbench.pipeline import evaluate_shifts

    (tmp_path / "bad.npz").write_bytes(b"junk")
    run = tmp_path / "run"
    train_run(tiny_dataset_file, run, 0, 0.0)

    def evaluate(run_dirs, shifted=None):
        evaluate_shifts(run_dirs, "mlp", tiny_dataset_file, shifted, tmp_path / "s.parquet", "cpu", 1, lambda m: None)

    with pytest.raises(DataError, match=r"bad.npz: not a shifted test set \(an .npz file written by lsbench shift-data\)$"):
        evaluate([run], tmp_path / "bad.npz")
    with pytest.raises(DataError, match="nope/runs.parquet: missing; .* is not a finished run"):
        evaluate([tmp_path / "nope"])
    with pytest.raises(ConfigError, match="is given more than once"):
        evaluate([run, run])
    # The clean rows are checked against the run's own predictions: a table without them is named.
    import pandas as pd

    predictions = pd.read_parquet(run / "predictions.parquet")
    for damaged, reason in ((predictions.iloc[1:], "does not hold the run's predictions of the test images"),
                            (predictions.drop(columns="logit_3"), r"not the run's predictions \(need columns index"),
                            (predictions.assign(logit_10=0.0), "holds logits of another number of classes than 10")):
        damaged.to_parquet(run / "predictions.parquet")
        with pytest.raises(DataError, match=f"run/predictions.parquet: {reason}"):
            evaluate([run])


def test_the_docs_list_every_shift_with_its_constants():
    from conftest import REPO
    from lsbench.shifts import markdown_table

    assert markdown_table() in (REPO / "docs" / "shifts.md").read_text()
