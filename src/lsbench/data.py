"""Image data formats and the decoded cache, in NumPy (no torch: `prepare-data` and the Snakefile
use this module, and neither should pay for importing torch).

Formats:
- IDX (MNIST, Fashion-MNIST, KMNIST), big-endian: two zero bytes, a type byte (0x08 = unsigned
  byte), the number of dimensions, one uint32 size per dimension, then the data. Images are idx3
  (N, H, W), labels idx1 (N,). Files may be gzip-compressed; gzip is sniffed from the content
  rather than trusted from the name, because the Debian package re-compresses them (so
  torchvision's MD5s do not match).
- CIFAR-10's python pickles as distributed (`data_batch_1..5`, `test_batch`): a dict with
  b"data" (N, 3072) uint8 in channel-major order and b"labels" (N ints).
- scikit-learn's bundled 8x8 digits (values 0..16), scaled to uint8 as round(v * 255 / 16).

Every decoder returns `ImageData`: uint8 images (N, C, H, W) and int64 labels, validated
(shapes, counts, label range, no empty split) with errors that name the file.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import pickle
import reprlib
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # datasets imports this module
    from lsbench.datasets import DatasetSpec

IDX_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = ("test_batch",)
_UBYTE = 0x08


class DataError(ValueError):
    """A data file is missing, truncated or inconsistent; the message names the file."""


class MissingDataError(DataError):
    """A source directory lacks some of its files (or does not exist)."""


@dataclass(frozen=True)
class ImageData:
    """A dataset as arrays: images uint8 (N, C, H, W), labels int64 (N,), for train and test."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]
    sha256: str
    source: str

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.train_images.shape[1:])  # type: ignore[return-value]

    def summary(self) -> dict:
        return {"source": self.source, "sha256": self.sha256, "train": list(self.train_images.shape),
                "test": list(self.test_images.shape), "class_names": list(self.class_names)}


# --- IDX -----------------------------------------------------------------------------------------

def read_bytes(path: Path) -> bytes:
    """A file's bytes, gunzipped when it starts with the gzip magic."""
    with open(path, "rb") as f:
        head = f.read(2)
    try:
        if head == b"\x1f\x8b":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:  # a truncated or corrupt gzip stream
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
    return decode_idx(read_bytes(path), str(path), ndim)


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


def idx_files(directory: Path) -> dict[str, Path]:
    """Map each of the four roles to `stem` or `stem.gz` in `directory`; MissingDataError naming
    the missing ones."""
    found: dict[str, Path] = {}
    missing = []
    for role, stem in IDX_STEMS.items():
        hit = next((p for p in (directory / stem, directory / f"{stem}.gz") if p.is_file()), None)
        if hit is None:
            missing.append(f"{stem}[.gz]")
        else:
            found[role] = hit
    if missing:
        raise MissingDataError(f"{directory}: missing IDX file(s): {', '.join(missing)}")
    return found


def load_idx_dir(directory: Path) -> dict[str, tuple[np.ndarray, np.ndarray, Path, Path]]:
    """{split: (images (N, 1, H, W), labels (N,) int64, image file, label file)} from four IDX files."""
    files = idx_files(directory)
    out = {}
    for split in ("train", "test"):
        img_file, lbl_file = files[f"{split}_images"], files[f"{split}_labels"]
        images = read_idx(img_file, 3)
        out[split] = (images[:, None], read_idx(lbl_file, 1).astype(np.int64), img_file, lbl_file)
    return out


# --- CIFAR-10 pickles ----------------------------------------------------------------------------

def cifar_files(directory: Path) -> list[Path]:
    """The six batch files of `cifar-10-batches-py`; MissingDataError naming the missing ones."""
    paths = [directory / name for name in (*CIFAR_TRAIN, *CIFAR_TEST)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise MissingDataError(f"{directory}: missing CIFAR-10 batch file(s): {', '.join(missing)}")
    return paths


def _numpy_function(module: str, name: str):  # noqa: ANN202 - a NumPy callable
    """NumPy's own reconstruction function `name` of its module `module` ("multiarray" or "numeric"),
    found under NumPy 2's `numpy._core` or NumPy 1's `numpy.core`: a batch pickled under either names
    its own, and the other NumPy must still read it."""
    import importlib

    for package in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{package}.{module}"), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"this NumPy has no {module}.{name}")


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """`_codecs.encode` as pickle protocols 0-2 use it for bytes (always latin1); any other codec
    (zlib, bz2, ...) is not what such a pickle holds."""
    if not isinstance(text, str) or encoding.replace("-", "").lower() not in ("latin1", "latin_1", "iso88591"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with {encoding!r}: protocol 0-2 pickles use latin1")
    return text.encode("latin1")


def _empty_bytes(*args: object) -> bytes:
    """`bytes()` as pickle protocols 0-2 write an empty bytes object (e.g. an array with 0 images);
    with an argument, `bytes(n)` would allocate n bytes on the pickle's say."""
    if args:
        raise pickle.UnpicklingError("refusing bytes(...) with arguments: protocol 0-2 pickles call it with none")
    return b""


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what a CIFAR-10 batch holds (dicts, lists, bytes, str, numbers and NumPy
    arrays): a pickle can name any callable, and a crafted batch file would otherwise run code.

    Allowed are exactly the globals NumPy 1 and 2 and pickle protocols 0-5 write for arrays, dtypes
    and scalars (`ndarray.__reduce_ex__`: `_reconstruct` up to protocol 4 and for non-contiguous
    arrays, `numeric._frombuffer` at protocol 5; `multiarray.scalar`), each resolved to this NumPy's
    function rather than imported by the name the file gives, plus protocol 2's bytes encoders."""

    ALLOWED = {
        **{(f"{package}.multiarray", name): ("multiarray", name) for package in ("numpy.core", "numpy._core")
           for name in ("_reconstruct", "scalar")},
        **{(f"{package}.numeric", "_frombuffer"): ("numeric", "_frombuffer") for package in ("numpy.core", "numpy._core")},
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's protocol
        if (module, name) in self.ALLOWED:
            return _numpy_function(*self.ALLOWED[module, name])
        plain = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): _latin1_encode,
                 ("__builtin__", "bytes"): _empty_bytes, ("builtins", "bytes"): _empty_bytes}
        if (module, name) not in plain:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR-10 batch holds only "
                                         "dicts, lists, bytes and NumPy arrays")
        return plain[module, name]


def _integer_labels(labels: object, path: Path) -> np.ndarray:
    """Labels (a list, as CIFAR-10 stores them, or an array) as int64; DataError unless every one
    is an integer: 2.5 or True would otherwise be truncated or cast to a class silently."""
    if isinstance(labels, np.ndarray) and labels.dtype != object:
        bad = None if np.issubdtype(labels.dtype, np.integer) else labels.dtype
    else:
        items = list(labels) if isinstance(labels, (list, tuple, np.ndarray)) else [labels]
        bad = next((v for v in items if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer))),
                   None)
    if bad is not None:
        # reprlib: a crafted batch's labels may nest 100,000 lists deep, beyond repr's recursion.
        raise DataError(f"{path}: labels are not integers (e.g. {reprlib.repr(bad)})")
    try:
        return np.asarray(labels, dtype=np.int64)
    except OverflowError as exc:  # a Python int beyond int64: far out of any class range
        raise DataError(f"{path}: a label is out of range 0..9 ({exc})") from exc


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 from one pickled batch (`_CifarUnpickler`)."""
    try:
        with open(path, "rb") as f:
            batch = _CifarUnpickler(f, encoding="bytes").load()
        data, labels = batch[b"data"], batch[b"labels"]
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError,
            AttributeError, IndexError, RecursionError) as exc:
        raise DataError(f"{path}: not a CIFAR-10 batch ({type(exc).__name__}: {exc})") from exc
    try:
        data = np.asarray(data)
    except (ValueError, TypeError, RecursionError) as exc:  # ragged or nested past NumPy's 64 dimensions
        raise DataError(f"{path}: data is not an array of uint8 (N, 3072) ({type(exc).__name__})") from exc
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: data is {data.dtype} {data.shape}, expected uint8 (N, 3072)")
    if len(data) == 0:  # each batch of CIFAR-10 holds 10,000 images; an empty one is a broken file
        raise DataError(f"{path}: 0 images: the batch is empty")
    labels = _integer_labels(labels, path)
    if labels.shape != (len(data),):
        raise DataError(f"{path}: {len(data)} images but labels of shape {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= 10):
        bad = int(labels.max()) if labels.max() >= 10 else int(labels.min())
        raise DataError(f"{path}: label {bad} out of range 0..9")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar_dir(directory: Path) -> dict[str, tuple[np.ndarray, np.ndarray, Path, Path]]:
    """{split: (images (N, 3, 32, 32), labels (N,) int64, first file, first file)}."""
    cifar_files(directory)  # all six present, or one error naming the missing ones
    out = {}
    for split, names in (("train", CIFAR_TRAIN), ("test", CIFAR_TEST)):
        parts = [read_cifar_batch(directory / n) for n in names]
        first = directory / names[0]
        out[split] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), first, first)
    return out


def write_cifar_batch(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Write a batch as CIFAR-10 distributes it (used by tests for tiny datasets)."""
    blob = {b"data": np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), -1),
            b"labels": [int(v) for v in labels], b"batch_label": path.name.encode()}
    path.write_bytes(pickle.dumps(blob, protocol=2))


# --- scikit-learn digits -------------------------------------------------------------------------

DIGITS_TEST_SIZE = 0.2
DIGITS_SPLIT_SEED = 0


def load_digits_split() -> dict[str, tuple[np.ndarray, np.ndarray, Path, Path]]:
    """scikit-learn's 1797 bundled 8x8 digits, split once and for all: a stratified 20 % test set
    (`train_test_split(test_size=0.2, stratify=labels, random_state=0)`: 1437 train, 360 test).
    Values 0..16 become uint8 as round(v * 255 / 16)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.rint(digits.images * (255 / 16)).astype(np.uint8)[:, None]
    labels = digits.target.astype(np.int64)
    train, test = train_test_split(np.arange(len(labels)), test_size=DIGITS_TEST_SIZE, stratify=labels,
                                   random_state=DIGITS_SPLIT_SEED)
    source = digits_file()
    return {"train": (images[np.sort(train)], labels[np.sort(train)], source, source),
            "test": (images[np.sort(test)], labels[np.sort(test)], source, source)}


def digits_file() -> Path:
    """scikit-learn's bundled digits file (an input of the workflow's data rule)."""
    import sklearn.datasets

    return Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"


def resize_images(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 images (N, C, H, W) resized to (H', W') = `size`, each channel with Pillow's bilinear
    filter (`Image.resize(..., Image.BILINEAR)`); returned unchanged when already that size."""
    if tuple(images.shape[2:]) == tuple(size):
        return images
    from PIL import Image

    height, width = size
    out = np.empty((*images.shape[:2], height, width), dtype=np.uint8)
    for i, image in enumerate(images):
        for c, plane in enumerate(image):
            out[i, c] = np.asarray(Image.fromarray(plane).resize((width, height), Image.BILINEAR))
    return out


# --- validation, hashing, cache ------------------------------------------------------------------

def check_split(images: np.ndarray, labels: np.ndarray, img_file: Path, lbl_file: Path, split: str,
                image_shape: tuple[int, int, int], num_classes: int, expected_n: int | None) -> None:
    """Raise DataError naming the file if a split is empty, mis-shaped, miscounted or mislabelled."""
    if images.shape[0] == 0:  # training would run and write NaN metrics that look like results
        raise DataError(f"{img_file}: 0 images: the {split} split is empty")
    if images.shape[1:] != image_shape:
        raise DataError(f"{img_file}: images are {images.shape[1:]}, expected {image_shape}")
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{img_file} has {images.shape[0]} images but {lbl_file} has {labels.shape[0]} labels")
    if expected_n is not None and images.shape[0] != expected_n:
        raise DataError(f"{img_file}: {images.shape[0]} images, expected {expected_n} for the {split} split")
    if labels.min() < 0 or labels.max() >= num_classes:
        bad = int(labels.max()) if labels.max() >= num_classes else int(labels.min())
        raise DataError(f"{lbl_file}: label {bad} out of range 0..{num_classes - 1}")


def arrays_sha256(arrays: list[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()


def files_sha256(paths: list[Path]) -> str:
    """One sha256 over the named files' contents (in the given order; each prefixed with its size
    so that bytes cannot move between files unnoticed): what Snakemake compares to notice data
    replaced in place, whatever its modification time. Paths are not hashed: the same files in
    another folder give the same digest."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).stat().st_size.to_bytes(8, "little"))
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def save_data(data: ImageData, path: Path) -> None:
    """Write the cache (uncompressed .npz) atomically; see `lsbench.io.atomic_write_bytes`."""
    from lsbench.io import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, train_images=data.train_images, train_labels=data.train_labels,
             test_images=data.test_images, test_labels=data.test_labels,
             meta=np.array(json.dumps({"class_names": list(data.class_names), "sha256": data.sha256,
                                       "source": data.source})))
    atomic_write_bytes(buf.getvalue(), Path(path))


def load_data(path: Path, spec: DatasetSpec | None = None) -> ImageData:
    """Load a cache written by `save_data` (well under a second for Fashion-MNIST's 55 MB).

    With `spec`, DataError unless the cache holds that dataset (its image shape and class names),
    so a cache of another dataset is not trained on under this one's name."""
    try:
        with np.load(path, allow_pickle=False) as blob:
            arrays = {k: blob[k] for k in ("train_images", "train_labels", "test_images", "test_labels")}
            meta = json.loads(str(blob["meta"]))
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: not a dataset cache written by `lsbench prepare-data` ({exc})") from exc
    data = ImageData(**arrays, class_names=tuple(meta["class_names"]), sha256=meta["sha256"], source=meta["source"])
    if spec is not None and (data.image_shape != spec.image_shape or data.class_names != spec.class_names):
        raise DataError(f"{path}: holds images of shape {data.image_shape} with classes {list(data.class_names)}, "
                        f"not {spec.name} ({spec.image_shape}, {list(spec.class_names)}); is it the cache "
                        f"`lsbench prepare-data --dataset {spec.name}` wrote?")
    return data
