import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest

from lsbench.config import ConfigError
from lsbench.data import (IDX_STEMS, DataError, decode_idx, encode_idx, files_sha256, load_data, load_digits_split,
                          write_idx)
from lsbench.datasets import DATASETS, decode, get_dataset, no_data_help, resolve_dataset, source_files
from lsbench.pipeline import prepare_data

from conftest import LAYOUT, write_tiny_cifar, write_tiny_idx, write_tiny_root

FMNIST = DATASETS["fashion_mnist"]


def _no_download(spec, root):
    raise OSError("network unreachable")


def load(directory: Path, spec=FMNIST, real_sizes=False):
    return decode(spec, directory, real_sizes)


def test_idx_roundtrip_plain_and_gzip(tmp_path):
    a = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    assert np.array_equal(decode_idx(encode_idx(a), "x", 3), a)
    write_idx(tmp_path / "a.gz", a, compress=True)
    assert (tmp_path / "a.gz").read_bytes()[:2] == b"\x1f\x8b"
    plain = load(write_tiny_idx(tmp_path / "plain", compress=False))
    gz = load(write_tiny_idx(tmp_path / "gz", compress=True))
    assert np.array_equal(plain.train_images, gz.train_images) and plain.sha256 == gz.sha256
    assert plain.train_images.dtype == np.uint8 and plain.train_labels.dtype == np.int64
    assert plain.train_images.shape == (256, 1, 28, 28) and plain.test_labels.shape == (64,)
    assert plain.class_names == FMNIST.class_names


def test_gzip_detected_by_content_not_name(tmp_path):
    d = write_tiny_idx(tmp_path / "d", compress=False)
    raw = (d / IDX_STEMS["train_labels"]).read_bytes()
    (d / IDX_STEMS["train_labels"]).write_bytes(gzip.compress(raw))  # gzip under a plain name
    assert load(d).train_labels.shape == (256,)


def _corrupt(directory: Path, role: str, payload: bytes) -> Path:
    path = directory / f"{IDX_STEMS[role]}.gz"
    path.write_bytes(gzip.compress(payload))
    return path


@pytest.mark.parametrize("role,payload,needle", [
    ("train_images", b"\x00\x00\x08\x01" + b"\x00" * 8, "bad magic number"),
    ("train_labels", b"\x00\x00\x0d\x01\x00\x00\x01\x00", "bad magic number"),
    ("train_images", encode_idx(np.zeros((256, 28, 28), np.uint8))[:-100], "truncated"),
    ("train_images", encode_idx(np.zeros((256, 27, 28), np.uint8)), "expected (1, 28, 28)"),
    ("train_labels", encode_idx(np.full(256, 10, np.uint8)), "label 10 out of range"),
    ("test_labels", encode_idx(np.zeros(63, np.uint8)), "64 images but"),
    ("test_labels", b"\x00\x00", "too short"),
    # The product of these sizes overflows int64 to 0, which used to pass the size check.
    ("train_images", b"\x00\x00\x08\x03" + (4194304).to_bytes(4, "big") * 2 + (1048576).to_bytes(4, "big"),
     "= 18446744073709551616 bytes of data, file has 0"),
])
def test_corrupt_files_name_file_and_problem(tmp_path, role, payload, needle):
    d = write_tiny_idx(tmp_path / "d")
    path = _corrupt(d, role, payload)
    with pytest.raises(DataError) as info:
        load(d)
    assert str(path) in str(info.value) and needle in str(info.value)


@pytest.mark.parametrize("split", ["train", "test"])
def test_empty_split_is_a_data_error(tmp_path, split):
    d = write_tiny_idx(tmp_path / "d")
    _corrupt(d, f"{split}_labels", encode_idx(np.zeros(0, np.uint8)))
    path = _corrupt(d, f"{split}_images", encode_idx(np.zeros((0, 28, 28), np.uint8)))
    with pytest.raises(DataError, match="0 images: the .* split is empty") as info:
        load(d)
    assert str(path) in str(info.value)


def test_truncated_gzip_stream(tmp_path):
    d = write_tiny_idx(tmp_path / "d")
    path = d / f"{IDX_STEMS['test_images']}.gz"
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(DataError, match="cannot decompress"):
        load(d)


def test_real_sizes_enforced_for_packaged_sources(tmp_path):
    with pytest.raises(DataError, match="expected 60000"):
        load(write_tiny_idx(tmp_path / "d"), real_sizes=True)


def test_missing_file_names_it(tmp_path):
    d = write_tiny_idx(tmp_path / "d")
    (d / f"{IDX_STEMS['test_labels']}.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load(d)


@pytest.mark.parametrize("name", ["mnist", "kmnist"])
def test_other_idx_datasets_from_torchvisions_layout(tmp_path, name):
    root = write_tiny_root(tmp_path / "root", [name], n_train=40, n_test=20)
    spec = get_dataset(name)
    data = resolve_dataset(spec, str(root), tmp_path / "dl", download=_no_download)
    assert data.source == str(root / LAYOUT[name]) and data.train_images.shape == (40, 1, 28, 28)
    assert data.class_names == spec.class_names and len(spec.class_names) == 10


def test_cifar_pickles_decode(tmp_path):
    root = tmp_path / "root"
    write_tiny_cifar(root / "cifar-10-batches-py", n_train=50, n_test=20)
    data = resolve_dataset(get_dataset("cifar10"), str(root), tmp_path / "dl", download=_no_download)
    assert data.train_images.shape == (50, 3, 32, 32) and data.test_images.shape == (20, 3, 32, 32)
    assert data.train_labels.tolist() == [i % 10 for i in range(50)]
    # Channel-major rows as CIFAR stores them: the 6x6 class block is bright in every channel.
    assert (data.train_images[0, :, 2:8, 2:8] == 230).all()


@pytest.mark.parametrize("breakage,needle", [
    (lambda d: (d / "data_batch_3").unlink(), "missing CIFAR-10 batch file(s): data_batch_3"),
    (lambda d: (d / "test_batch").write_bytes(b"not a pickle"), "test_batch: not a CIFAR-10 batch"),
    (lambda d: (d / "data_batch_1").write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8),
                                                             b"labels": [0, 1]})), "expected uint8 (N, 3072)"),
    (lambda d: (d / "data_batch_2").write_bytes(pickle.dumps({b"labels": [0]})), "data_batch_2: not a CIFAR-10"),
])
def test_broken_cifar_names_the_file(tmp_path, breakage, needle):
    d = write_tiny_cifar(tmp_path / "root" / "cifar-10-batches-py")
    breakage(d)
    with pytest.raises(DataError) as info:
        resolve_dataset(get_dataset("cifar10"), str(tmp_path / "root"), tmp_path / "dl", download=_no_download)
    assert needle in str(info.value)


def test_digits_split_is_fixed_and_stratified():
    splits = load_digits_split()
    train_y, test_y = splits["train"][1], splits["test"][1]
    assert len(train_y) == 1437 and len(test_y) == 360
    assert splits["train"][0].shape == (1437, 1, 8, 8) and splits["train"][0].dtype == np.uint8
    assert splits["train"][0].max() == 255  # 16 -> 255
    assert np.abs(np.bincount(test_y) / 360 - np.bincount(train_y) / 1437).max() < 0.01  # stratified
    again = load_digits_split()
    assert np.array_equal(again["test"][0], splits["test"][0])
    data = resolve_dataset(get_dataset("digits"), None, Path("/nonexistent"), download=_no_download)
    assert data.train_images.shape == (1437, 1, 8, 8) and data.source.endswith("digits.csv.gz")


def test_no_source_names_every_way(tmp_path):
    spec = FMNIST.__class__(**{**FMNIST.__dict__, "system_dir": tmp_path / "none"})
    with pytest.raises(DataError) as info:
        resolve_dataset(spec, None, tmp_path / "dl", download=_no_download)
    msg = str(info.value)
    assert "data_root" in msg and "FashionMNIST/raw" in msg and "dataset-fashion-mnist" in msg
    assert "torchvision" in msg and "network unreachable" in msg
    cifar_msg = no_data_help(get_dataset("cifar10"))
    assert "cifar-10-batches-py" in cifar_msg and "dataset-fashion-mnist" not in cifar_msg


def test_source_order(tmp_path):
    configured = write_tiny_root(tmp_path / "configured", n_train=20, n_test=10)
    debian = write_tiny_idx(tmp_path / "debian", n_train=30, n_test=10)
    spec = FMNIST.__class__(**{**FMNIST.__dict__, "system_dir": debian})
    # data_root, when set, is the only source; without it the Debian directory, then the downloader.
    got = resolve_dataset(spec, str(configured), tmp_path, download=_no_download)
    assert got.source == str(configured / "FashionMNIST/raw")
    assert len(source_files(spec, str(configured))) == 4
    with pytest.raises(DataError, match="expected 60000"):  # the Debian dir must hold the real set
        resolve_dataset(spec, None, tmp_path, download=_no_download)
    calls = []

    def fake_download(s, root):
        calls.append(root)
        return configured / "FashionMNIST/raw"

    nowhere = FMNIST.__class__(**{**FMNIST.__dict__, "system_dir": tmp_path / "none"})
    with pytest.raises(DataError, match="expected 60000"):
        resolve_dataset(nowhere, None, tmp_path / "dl", download=fake_download)
    assert calls == [tmp_path / "dl"] and source_files(nowhere, None) == []


@pytest.mark.parametrize("where", ["empty/FashionMNIST/raw", "deep/x/FashionMNIST/raw", "noraw/FashionMNIST",
                                   "other/FashionMnist/raw"])
def test_a_data_root_without_the_dataset_names_where_it_looked(tmp_path, where):
    """data_root set: no fall-back to the Debian copy (60000 images), the user pointed elsewhere."""
    debian = write_tiny_idx(tmp_path / "debian", n_train=30, n_test=10)
    spec = FMNIST.__class__(**{**FMNIST.__dict__, "system_dir": debian})
    root = tmp_path / where.split("/")[0]
    if where.startswith("empty"):
        (tmp_path / where).mkdir(parents=True)  # a failed download leaves an empty folder
    else:
        write_tiny_idx(tmp_path / where)
    with pytest.raises(DataError) as info:
        resolve_dataset(spec, str(root), tmp_path / "dl", download=_no_download)
    message = str(info.value)
    assert f"no Fashion-MNIST files in {root / 'FashionMNIST/raw'}" in message and "data_root holds:" in message
    held = where.split("/")[1]
    assert f"{held}/" in message, message
    if not where.startswith(("empty", "other")):
        assert "were found in" in message


def test_prepare_data_caches_and_reloads(tmp_path, tiny_root):
    out = tmp_path / "cache" / "fashion_mnist.npz"
    summary = prepare_data("fashion_mnist", str(tiny_root), out, log=lambda m: None)
    data = load_data(out)
    assert data.train_images.shape == (256, 1, 28, 28) and data.sha256 == summary["sha256"]
    assert out.with_suffix(".json").exists() and data.class_names == FMNIST.class_names


def test_prepare_data_leaves_no_cache_on_error(tmp_path, tiny_root):
    _corrupt(tiny_root / "FashionMNIST/raw", "train_labels", b"junk")
    out = tmp_path / "cache" / "fashion_mnist.npz"
    with pytest.raises(DataError):
        prepare_data("fashion_mnist", str(tiny_root), out, log=lambda m: None)
    assert not out.exists() and not out.with_suffix(".json").exists()
    assert not list(out.parent.glob(".*tmp*")) if out.parent.exists() else True


def test_a_broken_cache_names_the_file(tmp_path):
    bad = tmp_path / "x.npz"
    bad.write_bytes(b"PK junk")
    with pytest.raises(DataError, match="x.npz: not a dataset cache"):
        load_data(bad)


def test_a_data_root_that_does_not_exist_is_an_error(tmp_path):
    with pytest.raises(DataError, match="data_root .*/typo: no such directory"):
        resolve_dataset(FMNIST, str(tmp_path / "typo"), tmp_path / "dl", download=_no_download)


@pytest.mark.parametrize("name,stray", [("fashion_mnist", "train-images-idx3-ubyte.gz"), ("cifar10", "data_batch_1")])
def test_files_at_the_top_of_data_root_get_a_hint(tmp_path, name, stray):
    (tmp_path / stray).write_bytes(b"x")
    spec = get_dataset(name)
    with pytest.raises(DataError) as info:
        resolve_dataset(spec, str(tmp_path), tmp_path / "dl", download=_no_download)
    assert stray in str(info.value) and str(tmp_path / LAYOUT[name]) in str(info.value)


def test_a_corrupt_deflate_stream_is_a_data_error(tmp_path):
    d = write_tiny_idx(tmp_path / "d")
    path = d / f"{IDX_STEMS['train_images']}.gz"
    raw = bytearray(path.read_bytes())
    raw[30:60] = b"\xff" * 30  # a valid gzip header, then garbage: zlib.error, not OSError
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="cannot decompress") as info:
        load(d)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("labels,needle", [
    (["a", "b"], "labels are not integers"),
    ([0], "2 images but labels of shape (1,)"),
    ([0, 10], "label 10 out of range 0..9"),
    ([-1, 0], "label -1 out of range 0..9"),
])
def test_bad_cifar_labels_name_the_batch(tmp_path, labels, needle):
    d = write_tiny_cifar(tmp_path / "root" / "cifar-10-batches-py")
    (d / "data_batch_4").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": labels}))
    with pytest.raises(DataError) as info:
        resolve_dataset(get_dataset("cifar10"), str(tmp_path / "root"), tmp_path / "dl", download=_no_download)
    assert "data_batch_4" in str(info.value) and needle in str(info.value), str(info.value)


def test_a_cache_of_another_dataset_is_refused(tmp_path, tiny_root):
    out = tmp_path / "fashion_mnist.npz"
    prepare_data("fashion_mnist", str(tiny_root), out, log=lambda m: None)
    assert load_data(out, FMNIST).class_names == FMNIST.class_names
    with pytest.raises(DataError, match="not mnist"):  # same image shape, other classes
        load_data(out, get_dataset("mnist"))
    digits = tmp_path / "digits.npz"
    prepare_data("digits", None, digits, log=lambda m: None)
    with pytest.raises(DataError, match=r"shape \(1, 8, 8\)"):
        load_data(digits, FMNIST)


def test_the_cache_must_be_an_npz_file(tmp_path):
    with pytest.raises(ConfigError, match="must end in .npz"):
        prepare_data("digits", None, tmp_path / "digits.json", log=lambda m: None)
    assert not list(tmp_path.iterdir())


def test_the_data_fingerprint_is_content_not_place(tmp_path):
    a, b = write_tiny_idx(tmp_path / "a"), write_tiny_idx(tmp_path / "b")
    files = sorted(IDX_STEMS.values())
    digest = files_sha256([a / f"{f}.gz" for f in files])
    assert digest == files_sha256([b / f"{f}.gz" for f in files])
    (b / f"{files[0]}.gz").write_bytes(b"other")
    assert digest != files_sha256([b / f"{f}.gz" for f in files])


class _RunsCode:
    """A pickle that calls os.system when loaded, as a crafted data_batch_1 could."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_crafted_cifar_batch_runs_no_code(tmp_path):
    d = write_tiny_cifar(tmp_path / "root" / "cifar-10-batches-py")
    marker = tmp_path / "ran"
    (d / "data_batch_1").write_bytes(pickle.dumps({b"data": _RunsCode(marker), b"labels": [0]}))
    with pytest.raises(DataError) as info:
        resolve_dataset(get_dataset("cifar10"), str(tmp_path / "root"), tmp_path / "dl", download=_no_download)
    assert "data_batch_1" in str(info.value) and "refusing to load" in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("labels", [[2.5, 1.0], [True, 1], np.array([1.0, 2.0])])
def test_cifar_labels_that_are_not_integers_are_refused(tmp_path, labels):
    d = write_tiny_cifar(tmp_path / "root" / "cifar-10-batches-py")
    (d / "data_batch_2").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": labels}))
    with pytest.raises(DataError, match="data_batch_2: labels are not integers"):
        resolve_dataset(get_dataset("cifar10"), str(tmp_path / "root"), tmp_path / "dl", download=_no_download)


def test_a_download_behind_a_proxy_that_never_answers_gives_up(tmp_path, monkeypatch):
    """torchvision's urllib calls have no timeout of their own: a silent proxy must not hang the job."""
    import socket
    import time

    from lsbench.datasets import torchvision_download

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)  # accepts connections (the kernel does), never answers
    proxy = f"http://127.0.0.1:{server.getsockname()[1]}"
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(name, proxy)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    started = time.monotonic()
    try:
        with pytest.raises(DataError, match="No MNIST data found"):
            resolve_dataset(get_dataset("mnist"), None, tmp_path / "dl",
                            download=lambda spec, root: torchvision_download(spec, root, timeout=0.5))
    finally:
        server.close()
    assert time.monotonic() - started < 30


def test_a_cifar_label_beyond_int64_is_a_data_error(tmp_path):
    d = write_tiny_cifar(tmp_path / "root" / "cifar-10-batches-py")
    (d / "data_batch_3").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [2**70, 0]}))
    with pytest.raises(DataError, match="data_batch_3: a label is out of range"):
        resolve_dataset(get_dataset("cifar10"), str(tmp_path / "root"), tmp_path / "dl", download=_no_download)


def test_the_hint_does_not_point_at_another_datasets_folder(tmp_path):
    root = write_tiny_root(tmp_path / "root", ("fashion_mnist",))
    with pytest.raises(DataError) as info:
        resolve_dataset(get_dataset("mnist"), str(root), tmp_path / "dl", download=_no_download)
    assert "no MNIST files in" in str(info.value) and "were found in" not in str(info.value)


def test_data_changed_since_planning_is_a_data_error(tmp_path):
    # The workflow plans with each dataset's fingerprint; files that changed since stop the job
    # with the data error (it was a NameError: DataError was not imported).
    with pytest.raises(DataError, match="its files or the code that decodes them changed since the workflow was"):
        prepare_data("digits", None, tmp_path / "digits.npz", lambda message: None, "not-the-fingerprint")
    assert not (tmp_path / "digits.npz").exists()


def _numpy1_names(blob: bytes) -> bytes:
    """A NumPy 2 pickle as NumPy 1 writes it: its globals under numpy.core instead of numpy._core
    (the one frame of a small protocol-4/5 pickle shrinks by the bytes removed)."""
    renamed = blob.replace(b"\x8c\x16numpy._core.multiarray", b"\x8c\x15numpy.core.multiarray") \
        .replace(b"\x8c\x13numpy._core.numeric", b"\x8c\x12numpy.core.numeric") \
        .replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    if blob[2:3] == b"\x95":  # FRAME with an 8-byte length
        size = int.from_bytes(blob[3:11], "little") - (len(blob) - len(renamed))
        renamed = renamed[:3] + size.to_bytes(8, "little") + renamed[11:]
    return renamed


@pytest.mark.parametrize("numpy_names", ["numpy 2", "numpy 1"])
@pytest.mark.parametrize("protocol", range(6))
def test_cifar_batches_of_every_pickle_protocol_decode(tmp_path, protocol, numpy_names):
    """Protocol 5 stores arrays through numeric._frombuffer, 0-4 through multiarray._reconstruct,
    and NumPy 1 names both under numpy.core: each is NumPy's reconstruction, not code to refuse."""
    d = write_tiny_cifar(tmp_path / "root" / "cifar-10-batches-py")
    images = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    blob = pickle.dumps({b"data": images, b"labels": [np.int64(3), 7]}, protocol=protocol)
    (d / "data_batch_2").write_bytes(_numpy1_names(blob) if numpy_names == "numpy 1" else blob)
    if numpy_names == "numpy 1" and protocol >= 2:
        assert b"numpy.core." in (d / "data_batch_2").read_bytes()
    data = resolve_dataset(get_dataset("cifar10"), str(tmp_path / "root"), tmp_path / "dl", download=_no_download)
    assert (data.train_images[50:52].reshape(2, -1) == images).all()
    assert data.train_labels[50:52].tolist() == [3, 7]


@pytest.mark.parametrize("protocol", [2, 5])
def test_an_empty_cifar_batch_is_0_images(tmp_path, protocol):
    """Protocol 2 writes an empty array's bytes as bytes(): the file is empty, not crafted."""
    d = write_tiny_cifar(tmp_path / "root" / "cifar-10-batches-py")
    (d / "data_batch_3").write_bytes(pickle.dumps({b"data": np.zeros((0, 3072), np.uint8), b"labels": []},
                                                  protocol=protocol))
    with pytest.raises(DataError, match="data_batch_3: 0 images"):
        resolve_dataset(get_dataset("cifar10"), str(tmp_path / "root"), tmp_path / "dl", download=_no_download)


def _nested(depth: int) -> bytes:
    """The pickle opcodes of [[...[0]...]] `depth` lists deep (pickle.dumps would exceed the recursion limit)."""
    return b"(" * depth + b"K\x00" + b"l" * depth


@pytest.mark.parametrize("key,needle", [(b"labels", "labels are not integers"), (b"data", "data is not an array")])
def test_cifar_values_nested_100000_deep_are_one_data_error(tmp_path, key, needle):
    d = write_tiny_cifar(tmp_path / "root" / "cifar-10-batches-py")
    other = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]}
    other.pop(key)
    head = pickle.dumps(other, protocol=2)[:-1]  # without STOP: one more item goes into the dict
    (d / "data_batch_1").write_bytes(head + pickle.dumps(key, protocol=2)[2:-1] + _nested(100_000) + b"s.")
    with pytest.raises(DataError, match=f"data_batch_1: {needle}"):
        resolve_dataset(get_dataset("cifar10"), str(tmp_path / "root"), tmp_path / "dl", download=_no_download)


@pytest.mark.parametrize("payload", [
    b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x04\x00\x00\x00zlib\x86R.",  # another codec than latin1
    b"\x80\x02c__builtin__\nbytes\nJ\x00\xca\x9a;\x85R.",  # bytes(10**9): a gigabyte on the file's say
    b"\x80\x02cnumpy._core.numeric\nfrombuffer\n.",  # a NumPy function that is not a reconstruction
])
def test_cifar_unpickler_allows_only_what_arrays_need(tmp_path, payload):
    d = write_tiny_cifar(tmp_path / "root" / "cifar-10-batches-py")
    (d / "test_batch").write_bytes(payload)
    with pytest.raises(DataError, match="test_batch: not a CIFAR-10 batch .*refusing"):
        resolve_dataset(get_dataset("cifar10"), str(tmp_path / "root"), tmp_path / "dl", download=_no_download)
