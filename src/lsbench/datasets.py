"""The dataset registry: a name maps to everything lsbench knows about that dataset.

Adding a dataset is one `DatasetSpec` entry here (plus its test); nothing outside this entry knows
its shape, class names, normalisation or where its files live. The module imports no torch.

Where a dataset's files are looked for (a source that exists but is incomplete or corrupt is an
error naming the file, never a silent fall-through):
1. with `data_root` set: `data_root`/<torchvision's folder> (`FashionMNIST/raw/`, `MNIST/raw/`,
   `KMNIST/raw/` with the four IDX files, gzipped or not; `cifar-10-batches-py/` with CIFAR-10's
   python pickles), any size, and nowhere else: a dataset that is not there is an error that names
   the folder looked in and what data_root holds (the user pointed here; another copy would be
   used behind their back);
2. without `data_root`: the Debian package `dataset-fashion-mnist`
   (`/usr/share/datasets/fashion-mnist/`), for Fashion-MNIST only, which must hold the real
   60000/10000 images; then torchvision's downloader when online (into `results/data/download`),
   with a bounded wait (`DOWNLOAD_TIMEOUT_S` per connection and read).
`digits` is scikit-learn's bundled 8x8 set and needs none of these.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lsbench.data import (IDX_STEMS, DataError, ImageData, MissingDataError, arrays_sha256, check_split,
                          cifar_files, digits_file, idx_files, load_cifar_dir, load_digits_split, load_idx_dir)

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
# Seconds torchvision's downloader may wait on a connection or a read before the next mirror (and
# then the "No ... data found" message): a proxy that never answers must not hang a job.
DOWNLOAD_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: shape, classes, normalisation and where its files are.

    image_shape: (C, H, W). mean/std: per channel, applied to images scaled to [0, 1] (as
    torchvision's ToTensor + Normalize). sizes: (train, test) images of the real set, enforced for
    the Debian package and downloads (a `data_root` copy may hold any number, e.g. a tiny test set).
    layout: "idx", "cifar" or "digits". subdir: torchvision's folder under `data_root`.
    """

    name: str
    title: str
    image_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    sizes: tuple[int, int]
    layout: str
    subdir: str | None = None
    system_dir: Path | None = None
    torchvision_class: str | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


DIGIT_NAMES = tuple(str(d) for d in range(10))
# Grey-scale sets are scaled to [-1, 1] (Normalize(0.5, 0.5)), as the seed Fashion-MNIST experiment did.
GREY = {"mean": (0.5,), "std": (0.5,)}

DATASETS: dict[str, DatasetSpec] = {
    "fashion_mnist": DatasetSpec(
        "fashion_mnist", "Fashion-MNIST", (1, 28, 28),
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        **GREY, sizes=(60000, 10000), layout="idx", subdir="FashionMNIST/raw", system_dir=DEBIAN_FASHION_MNIST,
        torchvision_class="FashionMNIST"),
    "mnist": DatasetSpec("mnist", "MNIST", (1, 28, 28), DIGIT_NAMES, **GREY, sizes=(60000, 10000), layout="idx",
                         subdir="MNIST/raw", torchvision_class="MNIST"),
    "kmnist": DatasetSpec("kmnist", "KMNIST", (1, 28, 28), ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
                          **GREY, sizes=(60000, 10000), layout="idx", subdir="KMNIST/raw", torchvision_class="KMNIST"),
    "cifar10": DatasetSpec(
        "cifar10", "CIFAR-10", (3, 32, 32),
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        # The training set's per-channel mean and std, as commonly used for CIFAR-10.
        mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), sizes=(50000, 10000), layout="cifar",
        subdir="cifar-10-batches-py", torchvision_class="CIFAR10"),
    "digits": DatasetSpec("digits", "scikit-learn digits (8×8)", (1, 8, 8), DIGIT_NAMES, **GREY, sizes=(1437, 360),
                          layout="digits"),
}

_DECODERS = {"idx": load_idx_dir, "cifar": load_cifar_dir}
# File names (before any suffix) that mark a dataset's files put straight into data_root.
_TOP_LEVEL_NAMES = {"idx": set(IDX_STEMS.values()), "cifar": {"data_batch_1", "test_batch"}}
_FILE_LISTS = {"idx": lambda d: list(idx_files(d).values()), "cifar": cifar_files}


def get_dataset(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise DataError(f"dataset {name!r} is not one of {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def local_source(spec: DatasetSpec, data_root: str | None) -> tuple[Path, bool] | None:
    """(directory, whether it must hold the real sizes) of the local source of `spec`, or None
    (download). With `data_root` set that is its torchvision folder, else DataError naming the
    folder looked in and what data_root holds (not a directory; the files at its top level, one
    level too deep, or without raw/; an empty folder, as a failed download leaves one).
    """
    if spec.layout == "digits":
        return digits_file(), True
    if data_root is not None:
        return _data_root_folder(spec, Path(data_root)), False
    if spec.system_dir is not None and spec.system_dir.is_dir():
        return spec.system_dir, True
    return None


def _data_root_folder(spec: DatasetSpec, root: Path) -> Path:
    if not root.is_dir():
        raise DataError(f"data_root {root}: no such directory")
    folder = root / spec.subdir
    if folder.is_dir() and any(p.is_file() for p in folder.iterdir()):
        return folder
    def place(p: Path) -> str:
        return "data_root itself" if p.parent == root else f"{p.parent.relative_to(root)}/"

    # Only on this error path: where the dataset's files are, if they are anywhere under data_root,
    # but not in another dataset's own folder (MNIST's and Fashion-MNIST's files share names).
    markers = _TOP_LEVEL_NAMES[spec.layout]
    others = {f"{d.subdir}/" for d in DATASETS.values() if d.subdir and d.name != spec.name}
    found = sorted({place(p) for p in root.rglob("*") if p.is_file() and p.name.split(".")[0] in markers} - others)
    held = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    hint = (f"; {spec.title}'s files were found in {', '.join(found)} (under data_root), "
            f"but torchvision's layout puts them in {spec.subdir}/" if found else "")
    raise DataError(f"data_root {root}: no {spec.title} files in {folder} ({_layout_files(spec)}){hint}. "
                    f"data_root holds: {', '.join(held[:20]) or 'nothing'}"
                    + (f" and {len(held) - 20} more" if len(held) > 20 else ""))


def source_files(spec: DatasetSpec, data_root: str | None) -> list[Path]:
    """The files `prepare_data` will read for `spec`, as far as they exist (none when it would
    download): the workflow's inputs, so replacing them reruns everything downstream."""
    if spec.layout == "digits":
        return [digits_file()]
    found = local_source(spec, data_root)
    if found is None:
        return []
    try:
        return sorted(_FILE_LISTS[spec.layout](found[0]))
    except MissingDataError:  # prepare_data will say which; list what is there
        return sorted(p for p in found[0].iterdir() if p.is_file())


def decode(spec: DatasetSpec, directory: Path, real_sizes: bool) -> ImageData:
    """Decode and validate one local source of `spec`."""
    splits = load_digits_split() if spec.layout == "digits" else _DECODERS[spec.layout](directory)
    for (split, (images, labels, img_file, lbl_file)), expected in zip(splits.items(), spec.sizes):
        check_split(images, labels, img_file, lbl_file, split, spec.image_shape, spec.num_classes,
                    expected if real_sizes else None)
    arrays = [splits["train"][0], splits["train"][1], splits["test"][0], splits["test"][1]]
    return ImageData(*(a.copy() for a in arrays), class_names=spec.class_names, sha256=arrays_sha256(arrays),
                     source=str(directory))


def torchvision_download(spec: DatasetSpec, root: Path, timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Fetch `spec` with torchvision (needs the network); return the directory of its raw files.
    Every connection and read waits at most `timeout` seconds (torchvision's urllib calls take no
    timeout of their own, so the process-wide socket default bounds them)."""
    import socket

    import torchvision.datasets

    cls = getattr(torchvision.datasets, spec.torchvision_class)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
    finally:
        socket.setdefaulttimeout(previous)
    return root / spec.subdir


def no_data_help(spec: DatasetSpec) -> str:
    lines = [f"No {spec.title} data found. Provide it in one of these ways:",
             f"  - set data_root in config/config.yaml (or --config data_root=DIR) to a directory holding "
             f"{spec.subdir}/ in torchvision's layout ({_layout_files(spec)});"]
    if spec.system_dir is not None:
        lines.append(f"  - apt-get install dataset-fashion-mnist (installs the files in {spec.system_dir}, "
                     "works offline);")
    lines.append("  - run on a machine with internet access so torchvision can download it.")
    return "\n".join(lines)


def _layout_files(spec: DatasetSpec) -> str:
    if spec.layout == "idx":
        return "the four IDX files " + ", ".join(IDX_STEMS.values()) + ", .gz or plain"
    return "data_batch_1 .. data_batch_5 and test_batch, as distributed"



def resolve_dataset(spec: DatasetSpec, data_root: str | None, download_root: Path,
                    download: Callable[[DatasetSpec, Path], Path] = torchvision_download) -> ImageData:
    """Decode `spec` from the first source that has it (see the module docstring)."""
    found = local_source(spec, data_root)
    if found is not None:
        return decode(spec, *found)
    try:
        raw_dir = download(spec, download_root)
    except (OSError, RuntimeError) as exc:  # URLError and timeouts are OSErrors; torchvision raises RuntimeError
        raise DataError(f"{no_data_help(spec)}\n(torchvision download failed: {exc})") from exc
    return decode(spec, raw_dir, real_sizes=True)
