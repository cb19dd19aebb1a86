"""Shared fixtures: tiny, learnable stand-ins for each dataset format, written as real files."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from lsbench.data import IDX_STEMS, write_cifar_batch, write_idx

REPO = Path(__file__).resolve().parents[1]
# Seconds after which a test's subprocess (a workflow, a venv install, a wait for a job) is taken as
# hung. A safety net, never a speed target: on a heavily loaded 2-core host fixed 600-900 s limits
# failed 26 end-to-end tests that were only slow. CI's own limit is 90 minutes.
HUNG_S = float(os.environ.get("LSBENCH_TEST_HUNG_S", 3600))
# torchvision's folder of each file-based dataset under data_root.
LAYOUT = {"fashion_mnist": "FashionMNIST/raw", "mnist": "MNIST/raw", "kmnist": "KMNIST/raw",
          "cifar10": "cifar-10-batches-py"}


def make_images(labels: np.ndarray, rng: np.random.Generator, channels: int = 1, size: int = 28) -> np.ndarray:
    """Noise plus a bright 6x6 block whose position encodes the class, so a model can learn it."""
    images = rng.integers(0, 80, size=(len(labels), channels, size, size), dtype=np.uint8)
    for i, c in enumerate(labels):
        r, col = 2 + 6 * (c // 4), 2 + 6 * (c % 4)
        images[i, :, r:r + 6, col:col + 6] = 230
    return images


def write_tiny_idx(directory: Path, n_train: int = 256, n_test: int = 64, compress: bool = True,
                   seed: int = 0) -> Path:
    """The four IDX files of a tiny 28x28, 10-class dataset in `directory` (a torchvision raw/ folder)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    train_labels = np.arange(n_train, dtype=np.uint8) % 10
    test_labels = np.arange(n_test, dtype=np.uint8) % 10
    arrays = {"train_images": make_images(train_labels, rng)[:, 0], "train_labels": train_labels,
              "test_images": make_images(test_labels, rng)[:, 0], "test_labels": test_labels}
    for role, stem in IDX_STEMS.items():
        write_idx(directory / (f"{stem}.gz" if compress else stem), arrays[role], compress=compress)
    return directory


def write_tiny_cifar(directory: Path, n_train: int = 250, n_test: int = 50, seed: int = 0) -> Path:
    """CIFAR-10's six pickled batches (3x32x32) in `directory`, as distributed, tiny."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    labels = np.arange(n_train) % 10
    images = make_images(labels, rng, channels=3, size=32)
    for i, part in enumerate(np.array_split(np.arange(n_train), 5), start=1):
        write_cifar_batch(directory / f"data_batch_{i}", images[part], labels[part])
    test_labels = np.arange(n_test) % 10
    write_cifar_batch(directory / "test_batch", make_images(test_labels, rng, channels=3, size=32), test_labels)
    return directory


def write_tiny_root(root: Path, datasets=("fashion_mnist",), **sizes) -> Path:
    """A data_root in torchvision's layout with tiny copies of `datasets` (digits needs none; the
    folder exists even then, as a data_root must)."""
    root.mkdir(parents=True, exist_ok=True)
    for name in datasets:
        if name == "cifar10":
            write_tiny_cifar(root / LAYOUT[name])
        elif name in LAYOUT:
            write_tiny_idx(root / LAYOUT[name], **sizes)
    return root


def workflow_dir(root: Path, idx: dict | None = None, **config) -> Path:
    """A working directory for the real Snakefile: the repo's config.yaml with `config` applied,
    and data_root "data" (relative, so a copy of the directory is still up to date) holding tiny
    files (write_tiny_root(**idx))."""
    root.mkdir(parents=True, exist_ok=True)
    merged = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    write_tiny_root(root / "data", config.get("datasets", ("fashion_mnist",)), **(idx or {}))
    # No shift stage unless a test asks for one (tests/test_workflow.py, test_slurm.py and the
    # braces-in-paths test run it): it adds a job or two to every run, and CI's time.
    merged.update({"data_root": "data", "shifts": None, "shift_images": 50, **config})
    (root / "config").mkdir(exist_ok=True)
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(merged))
    return root


def copy_config(workdir: Path) -> Path:
    """The repo's config/config.yaml, unchanged, where the Snakefile looks for it in `workdir`."""
    (workdir / "config").mkdir(parents=True, exist_ok=True)
    target = workdir / "config" / "config.yaml"
    target.write_text((REPO / "config" / "config.yaml").read_text())
    return target


def run_file(workdir: Path, name: str, dataset: str = "fashion_mnist", model: str = "mlp", seed: int = 0,
             eps: str = "0.1", method: str | None = None) -> Path:
    """`name` in the one run directory of (dataset, model, seed, method at param `eps`; label
    smoothing by default, eps 0 being cross-entropy) under workdir/results/runs, whatever its
    definition digest (lsbench.plan); a path that does not exist if there is none."""
    from lsbench.methods import variant

    method, param = variant(method or "label_smoothing", float(eps))
    found = sorted((workdir / "results" / "runs" / dataset / model).glob(f"*/seed{seed}/{method}/p{param!r}"))
    assert len(found) <= 1, found
    return (found[0] if found else workdir / "results" / "runs" / "none") / name


def snakemake_cmd(workdir: Path, *args: str) -> list[str]:
    """`snakemake` on the repo's Snakefile, run in `workdir`, with this Python."""
    return [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile"),
            "--directory", str(workdir), *args]


def train_run(data_file: Path, run_dir: Path, seed: int = 0, epsilon: float = 0.1, cfg=None,
              dataset: str = "fashion_mnist", model: str = "mlp", keep: bool = False, log=None,
              ood: tuple[str, Path] | None = None, method: str = "label_smoothing") -> None:
    """`lsbench train` as a function call, with test defaults: `method` at param `epsilon`
    (label smoothing by default; its 0 is the cross-entropy run)."""
    from lsbench.config import TrainConfig
    from lsbench.methods import variant
    from lsbench.pipeline import train_one

    cfg = cfg or TrainConfig(epochs=2, batch_size=32, device="cpu")
    method, param = variant(method, epsilon)
    train_one(dataset, model, data_file, run_dir, seed, method, param, cfg, keep, log or (lambda m: None), ood=ood)


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    return write_tiny_root(tmp_path / "data")


@pytest.fixture
def tiny_idx_dir(tiny_root: Path) -> Path:
    return tiny_root / LAYOUT["fashion_mnist"]


@pytest.fixture
def tiny_dataset_file(tmp_path: Path, tiny_root: Path) -> Path:
    from lsbench.pipeline import prepare_data

    out = tmp_path / "cache" / "fashion_mnist.npz"
    prepare_data("fashion_mnist", str(tiny_root), out, log=lambda m: None)
    return out


@pytest.fixture(scope="session")
def report_results(tmp_path_factory) -> Path:
    """A results directory from 2 seeds x 2 epsilons on tiny data, as `collect` writes it."""
    from lsbench.config import TrainConfig
    from lsbench.pipeline import collect, evaluate_shifts, prepare_data, shift_data

    root = tmp_path_factory.mktemp("report")
    data, digits = root / "data" / "fashion_mnist.npz", root / "data" / "digits.npz"
    prepare_data("fashion_mnist", str(write_tiny_root(root / "data")), data, lambda m: None)
    prepare_data("digits", None, digits, lambda m: None)  # the default OOD set of fashion_mnist
    cfg = TrainConfig(epochs=2, batch_size=32, device="cpu", validation_size=32)
    runs = []
    for seed in (0, 1):
        for eps in (0.0, 0.3):
            runs.append(root / f"runs/s{seed}e{eps}")
            train_run(data, runs[-1], seed, eps, cfg, ood=("digits", digits))
    # Three shifts of the suite on 40 test images, every run's final model evaluated on them.
    shifts = ["rotation", "impulse_noise", "contrast"]
    shifted = root / "shifted.npz"
    shift_data("fashion_mnist", data, shifts, shifted, 40, lambda m: None)
    shift_tables = [root / "shift.parquet"]
    evaluate_shifts(runs, "mlp", data, shifted, shift_tables[0], "cpu", 1, lambda m: None)
    config = {**yaml.safe_load((REPO / "config" / "config.yaml").read_text()), "seeds": [0, 1], "epsilons": [0.0, 0.3],
              "epochs": 2, "batch_size": 32, "validation_size": 32, "device": "cpu", "data_root": str(root / "data"),
              "shifts": shifts, "shift_images": 40}
    collect(runs, root / "results", lambda m: None, config=config, source_dir=REPO,
            data_summaries=[data.with_suffix(".json"), digits.with_suffix(".json")],
            shift_tables=shift_tables, shifted_data=[shifted])
    return root / "results"


@pytest.fixture
def report_tables():
    """Build synthetic results tables: `report_tables(seeds=..., epsilons=..., diverged=...)`."""
    from synthetic import make_tables

    return make_tables


# The end-to-end tier: modules that run the workflow, SLURM, a browser or a fresh virtual
# environment (minutes each). Everything else is the fast tier (`pytest -m "not e2e"`).
E2E_MODULES = {"test_workflow", "test_slurm", "test_deploy", "test_reliability", "test_report_without_torch",
               "test_browser"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.stem in E2E_MODULES:
            item.add_marker(pytest.mark.e2e)
