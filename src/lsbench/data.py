"""Fashion-MNIST: decode and validate IDX files, cache them as one uint8 tensor file.

IDX layout (big-endian): two zero bytes, a type byte (0x08 = unsigned byte), the number of
dimensions, then one uint32 size per dimension, then the data. Images are idx3 (N, 28, 28),
labels idx1 (N,). Files may be gzip-compressed; we sniff the gzip magic rather than trust the
file name, because the Debian package re-compresses them (so torchvision's MD5s don't match).
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
REAL_SIZES = {"train": 60000, "test": 10000}
NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28)
_UBYTE = 0x08


class DataError(ValueError):
    """An IDX file is missing, truncated or inconsistent; the message names the file."""


class MissingDataError(DataError):
    """A directory lacks some of the four IDX files (or does not exist)."""


@dataclass(frozen=True)
class Dataset:
    """Fashion-MNIST as tensors: images uint8 (N, 28, 28), labels int64 (N,)."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    sha256: str
    source: str


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        head = f.read(2)
    try:
        if head == b"\x1f\x8b":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as exc:  # gzip raises these on a truncated or corrupt stream
        raise DataError(f"{path}: cannot decompress ({exc})") from exc


def decode_idx(raw: bytes, name: str, ndim: int) -> np.ndarray:
    """Decode one unsigned-byte IDX payload with `ndim` dimensions; `name` is for errors."""
    if len(raw) < 4:
        raise DataError(f"{name}: file too short for an IDX header ({len(raw)} bytes)")
    zero, kind, dims = struct.unpack(">HBB", raw[:4])
    expected_magic = (_UBYTE << 8) | ndim
    if zero != 0 or kind != _UBYTE or dims != ndim:
        raise DataError(
            f"{name}: bad magic number 0x{int.from_bytes(raw[:4], 'big'):08x}, "
            f"expected 0x{expected_magic:08x} (unsigned-byte IDX with {ndim} dimension(s))"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{name}: truncated header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    # Python integers: NumPy's int64 product of three uint32 sizes can overflow (2^22 * 2^22 * 2^20
    # wraps to 0) and let a header with no data through to a reshape error.
    size = math.prod(shape)
    if len(raw) - header != size:
        raise DataError(
            f"{name}: truncated or padded: header says shape {shape} = {size} bytes of data, "
            f"file has {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    return decode_idx(_read_bytes(path), str(path), ndim)


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX bytes of a uint8 array (used by tests and for writing tiny datasets)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    head = struct.pack(">HBB", 0, _UBYTE, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return head + array.tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    payload = encode_idx(array)
    if compress:
        payload = gzip.compress(payload, mtime=0)
    Path(path).write_bytes(payload)


def find_idx_files(directory: Path) -> dict[str, Path]:
    """Map each of the four roles to `stem` or `stem.gz` in `directory`; DataError if any is missing."""
    found: dict[str, Path] = {}
    missing = []
    for role, stem in STEMS.items():
        candidates = [directory / stem, directory / f"{stem}.gz"]
        hit = next((p for p in candidates if p.is_file()), None)
        if hit is None:
            missing.append(f"{stem}[.gz]")
        else:
            found[role] = hit
    if missing:
        raise MissingDataError(f"{directory}: missing IDX file(s): {', '.join(missing)}")
    return found


def _check_split(images: np.ndarray, labels: np.ndarray, files: dict[str, Path], split: str,
                 expected_n: int | None) -> None:
    img_file, lbl_file = files[f"{split}_images"], files[f"{split}_labels"]
    if images.shape[0] == 0:  # training would run and write NaN metrics that look like results
        raise DataError(f"{img_file}: 0 images: the {split} split is empty")
    if images.shape[1:] != IMAGE_SHAPE:
        raise DataError(f"{img_file}: images are {images.shape[1:]}, expected {IMAGE_SHAPE}")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{img_file} has {images.shape[0]} images but {lbl_file} has {labels.shape[0]} labels"
        )
    if expected_n is not None and images.shape[0] != expected_n:
        raise DataError(f"{img_file}: {images.shape[0]} images, expected {expected_n} for Fashion-MNIST")
    if labels.size and labels.max() >= NUM_CLASSES:
        raise DataError(f"{lbl_file}: label {int(labels.max())} out of range 0..{NUM_CLASSES - 1}")


def dataset_sha256(arrays: list[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()


def load_idx_dir(directory: Path, real_sizes: bool) -> Dataset:
    """Decode and validate the four files; `real_sizes` demands 60000/10000 images."""
    files = find_idx_files(directory)
    arrays = {role: read_idx(path, 3 if role.endswith("images") else 1) for role, path in files.items()}
    for split in ("train", "test"):
        _check_split(arrays[f"{split}_images"], arrays[f"{split}_labels"], files, split,
                     REAL_SIZES[split] if real_sizes else None)
    ordered = [arrays[r] for r in STEMS]
    return Dataset(
        train_images=torch.from_numpy(arrays["train_images"].copy()),
        train_labels=torch.from_numpy(arrays["train_labels"].astype(np.int64)),
        test_images=torch.from_numpy(arrays["test_images"].copy()),
        test_labels=torch.from_numpy(arrays["test_labels"].astype(np.int64)),
        sha256=dataset_sha256([ordered[0], ordered[1].astype(np.int64), ordered[2], ordered[3].astype(np.int64)]),
        source=str(directory),
    )


def torchvision_download(root: Path) -> Path:
    """Fetch Fashion-MNIST with torchvision (needs the network); return the raw IDX directory."""
    from torchvision.datasets import FashionMNIST

    FashionMNIST(str(root), train=True, download=True)
    return root / "FashionMNIST" / "raw"


NO_DATA_HELP = (
    "No Fashion-MNIST data found. Provide it in one of three ways:\n"
    "  1. set data_dir in config.yaml (or --config data_dir=DIR) to a directory with the four IDX files\n"
    "     train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (.gz or plain);\n"
    f"  2. apt-get install dataset-fashion-mnist (installs them in {DEBIAN_DIR}, works offline);\n"
    "  3. run on a machine with internet access so torchvision can download them."
)


def resolve_dataset(data_dir: str | None, download_root: Path,
                    download: Callable[[Path], Path] = torchvision_download,
                    debian_dir: Path = DEBIAN_DIR) -> Dataset:
    """Load from `data_dir` if set, else the Debian package, else torchvision's downloader.

    A configured or installed source that is corrupt is an error (naming the file), never a
    silent fall-through to another source.
    """
    if data_dir is not None:
        try:
            return load_idx_dir(Path(data_dir), real_sizes=False)
        except MissingDataError as exc:
            raise MissingDataError(f"data_dir: {exc}\n{NO_DATA_HELP}") from exc
    if debian_dir.is_dir():
        return load_idx_dir(debian_dir, real_sizes=True)
    try:
        raw_dir = download(download_root)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; torchvision raises RuntimeError
        raise DataError(f"{NO_DATA_HELP}\n(torchvision download failed: {exc})") from exc
    return load_idx_dir(raw_dir, real_sizes=True)


def save_dataset(ds: Dataset, path: Path) -> None:
    """Write atomically: a temporary file in the same directory, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    payload = {
        "train_images": ds.train_images, "train_labels": ds.train_labels,
        "test_images": ds.test_images, "test_labels": ds.test_labels,
        "sha256": ds.sha256, "source": ds.source,
    }
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_dataset(path: Path) -> Dataset:
    """Load the cached file (well under a second: ~55 MB of uint8, memory-mapped)."""
    blob = torch.load(path, weights_only=True, mmap=True)
    return Dataset(**blob)
