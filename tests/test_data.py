import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from lsbench.data import (NO_DATA_HELP, STEMS, DataError, decode_idx, encode_idx, load_dataset,
                          load_idx_dir, resolve_dataset, write_idx)
from lsbench.pipeline import prepare_data

from conftest import write_tiny_idx


def test_idx_roundtrip_plain_and_gzip(tmp_path):
    a = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    assert np.array_equal(decode_idx(encode_idx(a), "x", 3), a)
    write_idx(tmp_path / "a.gz", a, compress=True)
    assert (tmp_path / "a.gz").read_bytes()[:2] == b"\x1f\x8b"
    ds_dir = write_tiny_idx(tmp_path / "plain", compress=False)
    gz_dir = write_tiny_idx(tmp_path / "gz", compress=True)
    plain, gz = load_idx_dir(ds_dir, real_sizes=False), load_idx_dir(gz_dir, real_sizes=False)
    assert torch.equal(plain.train_images, gz.train_images)
    assert plain.sha256 == gz.sha256
    assert plain.train_images.dtype == torch.uint8 and plain.train_labels.dtype == torch.int64
    assert plain.train_images.shape == (256, 28, 28) and plain.test_labels.shape == (64,)


def test_gzip_detected_by_content_not_name(tmp_path):
    d = write_tiny_idx(tmp_path / "d", compress=False)
    raw = (d / STEMS["train_labels"]).read_bytes()
    (d / STEMS["train_labels"]).write_bytes(gzip.compress(raw))  # gzip under a plain name
    assert load_idx_dir(d, real_sizes=False).train_labels.shape == (256,)


def _corrupt(directory: Path, role: str, payload: bytes) -> Path:
    path = directory / f"{STEMS[role]}.gz"
    path.write_bytes(gzip.compress(payload))
    return path


@pytest.mark.parametrize("role,payload,needle", [
    ("train_images", b"\x00\x00\x08\x01" + b"\x00" * 8, "bad magic number"),
    ("train_labels", b"\x00\x00\x0d\x01\x00\x00\x01\x00", "bad magic number"),
    ("train_images", encode_idx(np.zeros((256, 28, 28), np.uint8))[:-100], "truncated"),
    ("train_images", encode_idx(np.zeros((256, 27, 28), np.uint8)), "expected (28, 28)"),
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
        load_idx_dir(d, real_sizes=False)
    assert str(path) in str(info.value) and needle in str(info.value)


@pytest.mark.parametrize("split", ["train", "test"])
def test_empty_split_is_a_data_error(tmp_path, split):
    d = write_tiny_idx(tmp_path / "d")
    _corrupt(d, f"{split}_labels", encode_idx(np.zeros(0, np.uint8)))
    path = _corrupt(d, f"{split}_images", encode_idx(np.zeros((0, 28, 28), np.uint8)))
    with pytest.raises(DataError, match="0 images: the .* split is empty") as info:
        load_idx_dir(d, real_sizes=False)
    assert str(path) in str(info.value)


def test_truncated_gzip_stream(tmp_path):
    d = write_tiny_idx(tmp_path / "d")
    path = d / f"{STEMS['test_images']}.gz"
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(DataError, match="cannot decompress"):
        load_idx_dir(d, real_sizes=False)


def test_real_sizes_enforced_for_packaged_sources(tmp_path):
    d = write_tiny_idx(tmp_path / "d")
    with pytest.raises(DataError, match="expected 60000"):
        load_idx_dir(d, real_sizes=True)


def test_missing_file_names_it(tmp_path):
    d = write_tiny_idx(tmp_path / "d")
    (d / f"{STEMS['test_labels']}.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_idx_dir(d, real_sizes=False)


def _no_download(root):
    raise OSError("network unreachable")


def test_no_source_names_all_three_ways(tmp_path):
    with pytest.raises(DataError) as info:
        resolve_dataset(None, tmp_path / "dl", download=_no_download, debian_dir=tmp_path / "none")
    msg = str(info.value)
    assert "data_dir" in msg and "dataset-fashion-mnist" in msg and "torchvision" in msg
    assert "network unreachable" in msg


def test_empty_data_dir_names_all_three_ways(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as info:
        resolve_dataset(str(tmp_path / "empty"), tmp_path / "dl", download=_no_download)
    assert NO_DATA_HELP in str(info.value)


def test_source_order(tmp_path):
    configured = write_tiny_idx(tmp_path / "configured", n_train=20, n_test=10)
    debian = write_tiny_idx(tmp_path / "debian", n_train=30, n_test=10)
    # data_dir wins over the Debian directory; then Debian; then the downloader.
    assert resolve_dataset(str(configured), tmp_path, debian_dir=debian).source == str(configured)
    with pytest.raises(DataError, match="expected 60000"):  # Debian dir must hold the real set
        resolve_dataset(None, tmp_path, debian_dir=debian)
    calls = []

    def fake_download(root):
        calls.append(root)
        return configured

    with pytest.raises(DataError, match="expected 60000"):
        resolve_dataset(None, tmp_path / "dl", download=fake_download, debian_dir=tmp_path / "none")
    assert calls == [tmp_path / "dl"]


def test_prepare_data_caches_and_reloads(tmp_path, tiny_idx_dir):
    out = tmp_path / "cache" / "ds.pt"
    summary = prepare_data(str(tiny_idx_dir), out, log=lambda m: None)
    ds = load_dataset(out)
    assert ds.sha256 == summary["sha256"] and len(summary["sha256"]) == 64
    assert ds.train_images.dtype == torch.uint8 and ds.train_images.shape == (256, 28, 28)
    assert out.with_suffix(".json").exists()


def test_prepare_data_leaves_no_cache_on_error(tmp_path, tiny_idx_dir):
    _corrupt(tiny_idx_dir, "train_labels", encode_idx(np.full(256, 12, np.uint8)))
    out = tmp_path / "cache" / "ds.pt"
    with pytest.raises(DataError):
        prepare_data(str(tiny_idx_dir), out, log=lambda m: None)
    assert not out.exists() and not list((tmp_path).glob("cache/*"))
