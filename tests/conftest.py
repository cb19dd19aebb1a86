"""Shared fixtures: a tiny, learnable Fashion-MNIST stand-in written as real IDX files."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from lsbench.data import STEMS, write_idx

REPO = Path(__file__).resolve().parents[1]


def make_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Noise plus a bright 6x6 block whose position encodes the class, so a model can learn it."""
    images = rng.integers(0, 80, size=(len(labels), 28, 28), dtype=np.uint8)
    for i, c in enumerate(labels):
        r, col = 2 + 6 * (c // 4), 2 + 6 * (c % 4)
        images[i, r:r + 6, col:col + 6] = 230
    return images


def write_tiny_idx(directory: Path, n_train: int = 256, n_test: int = 64, compress: bool = True,
                   seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    train_labels = np.arange(n_train, dtype=np.uint8) % 10
    test_labels = np.arange(n_test, dtype=np.uint8) % 10
    arrays = {"train_images": make_images(train_labels, rng), "train_labels": train_labels,
              "test_images": make_images(test_labels, rng), "test_labels": test_labels}
    for role, stem in STEMS.items():
        name = f"{stem}.gz" if compress else stem
        write_idx(directory / name, arrays[role], compress=compress)
    return directory


def workflow_dir(root: Path, idx: dict | None = None, **config) -> Path:
    """A working directory for the real Snakefile: the repo's config.yaml with `config` applied,
    and data_dir pointing at tiny IDX files (write_tiny_idx(**idx)) inside it."""
    root.mkdir(parents=True, exist_ok=True)
    merged = yaml.safe_load((REPO / "config.yaml").read_text())
    merged.update({"data_dir": str(write_tiny_idx(root / "idx", **(idx or {}))), **config})
    (root / "config.yaml").write_text(yaml.safe_dump(merged))
    return root


def snakemake_cmd(workdir: Path, *args: str) -> list[str]:
    """`snakemake` on the repo's Snakefile, run in `workdir`, with this Python."""
    return [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
            "--directory", str(workdir), *args]


@pytest.fixture
def tiny_idx_dir(tmp_path: Path) -> Path:
    return write_tiny_idx(tmp_path / "idx")


@pytest.fixture
def tiny_dataset_file(tmp_path: Path, tiny_idx_dir: Path) -> Path:
    from lsbench.pipeline import prepare_data

    out = tmp_path / "data" / "tiny.pt"
    prepare_data(str(tiny_idx_dir), out, log=lambda m: None)
    return out


@pytest.fixture(scope="session")
def report_results(tmp_path_factory) -> Path:
    """A results directory from 2 seeds x 2 epsilons on tiny data, as `collect` writes it."""
    from lsbench.config import TrainConfig
    from lsbench.pipeline import collect, prepare_data, train_one

    root = tmp_path_factory.mktemp("report")
    data = root / "data.pt"
    prepare_data(str(write_tiny_idx(root / "idx")), data, lambda m: None)
    cfg = TrainConfig(epochs=2, batch_size=32, device="cpu", validation_size=32)
    runs = []
    for seed in (0, 1):
        for eps in (0.0, 0.3):
            runs.append(root / f"runs/s{seed}e{eps}")
            train_one(data, runs[-1], seed, eps, cfg, False, lambda m: None)
    collect(runs, root / "results", lambda m: None, config={"epochs": 2, "seeds": [0, 1]}, source_dir=REPO)
    return root / "results"


@pytest.fixture
def report_tables():
    """Build synthetic results tables: `report_tables(seeds=..., epsilons=..., diverged=...)`."""
    from synthetic import make_tables

    return make_tables
