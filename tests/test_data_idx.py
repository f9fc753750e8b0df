"""MNIST-format IDX files (`tfp_flows.data.idx`) on small files the tests
write themselves; the three disjoint splits of every image dataset; the
digits test split as the benchmark has always defined it; and the fast,
one-line failure of a dataset that is neither on disk nor downloadable."""

import gzip
import hashlib
import os
import socket
import struct

import numpy as np
import pytest

from tfp_flows import data
from tfp_flows.data import digits, idx, tfds_images


def _write_idx(path, array, magic=None, gz=False, cut=0):
    array = np.asarray(array, np.uint8)
    magic = {3: 2051, 1: 2049}[array.ndim] if magic is None else magic
    raw = struct.pack(">i", magic) + struct.pack(f">{array.ndim}i", *array.shape)
    raw += array.tobytes()
    raw = raw[:len(raw) - cut] if cut else raw
    with open(path, "wb") as f:
        f.write(gzip.compress(raw) if gz else raw)
    return str(path)


def _mnist_dir(tmp_path, num_train=12, num_test=5, gz=True, size=(4, 5)):
    """Four IDX files with MNIST's names; pixel values encode the index."""
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    images = rng.integers(0, 256, (num_train + num_test,) + size)
    labels = np.arange(num_train + num_test) % 10
    for part, lo, hi in (("train", 0, num_train), ("t10k", num_train, num_train + num_test)):
        img_name, lab_name = idx.FILES[part]
        _write_idx(tmp_path / (img_name + suffix), images[lo:hi], gz=gz)
        _write_idx(tmp_path / (lab_name + suffix), labels[lo:hi], gz=gz)
    return str(tmp_path), images.astype(np.uint8), labels


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path, gz):
    a = np.random.default_rng(1).integers(0, 256, (3, 4, 5))
    path = _write_idx(tmp_path / "x", a, gz=gz)
    out = idx.read_idx(path, rank=3)
    np.testing.assert_array_equal(out, a)
    assert out.dtype == np.uint8 and not out.flags.writeable


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_splits_from_idx_files(tmp_path, gz):
    data_dir, images, labels = _mnist_dir(tmp_path, gz=gz)
    train, train_y = idx.arrays(data_dir, "train")
    val, val_y = idx.arrays(data_dir, "validation")
    test, test_y = idx.arrays(data_dir, "test")
    # the last sixth of the training files is validation (10,000 of 60,000)
    assert (len(train), len(val), len(test)) == (10, 2, 5)
    assert train.shape[1:] == (4, 5, 1)
    np.testing.assert_array_equal(np.concatenate([train, val])[..., 0], images[:12])
    np.testing.assert_array_equal(test[..., 0], images[12:])
    np.testing.assert_array_equal(np.concatenate([train_y, val_y, test_y]), labels)


def test_load_mnist_from_data_dir(tmp_path):
    data_dir, images, labels = _mnist_dir(tmp_path, size=(28, 28))
    val = data.load("mnist", "validation", batch_size=4, data_dir=data_dir, n_bits=5,
                    with_labels=True)
    (x, y), = list(val)
    assert x.shape == (2, 28, 28, 1) and x.dtype == "float32"
    np.testing.assert_array_equal(x[..., 0], images[10:12] // 8)  # 5 bits
    np.testing.assert_array_equal(y, labels[10:12])
    train = np.concatenate([np.asarray(b) for b in data.load(
        "mnist", "train", batch_size=5, data_dir=data_dir, seed=0)])
    assert len(train) == 10  # shuffled, two full batches
    np.testing.assert_array_equal(np.sort(train[..., 0].reshape(10, -1), 0),
                                  np.sort(images[:10].reshape(10, -1), 0))


@pytest.mark.parametrize("case,message", [
    ("magic", "bad IDX magic number"),
    ("rank", "expected rank 3"),
    ("truncated", "truncated"),
    ("longer", "longer than its header"),
    ("gzip", "broken gzip stream"),
    ("empty", "not an IDX file"),
])
def test_bad_idx_files_name_the_file_and_the_problem(tmp_path, case, message):
    a = np.zeros((3, 4, 4))
    path = str(tmp_path / "train-images-idx3-ubyte")
    if case == "magic":
        _write_idx(path, a, magic=1234)
    elif case == "rank":
        _write_idx(path, np.zeros(3))
    elif case == "truncated":
        _write_idx(path, a, cut=5)
    elif case == "longer":
        _write_idx(path, a)
        with open(path, "ab") as f:
            f.write(b"\0")
    elif case == "gzip":
        _write_idx(path + ".tmp", a, gz=True)
        with open(path + ".tmp", "rb") as f:
            raw = f.read()
        with open(path, "wb") as f:
            f.write(raw[:len(raw) // 2])
    else:
        open(path, "wb").close()
    with pytest.raises(ValueError, match=message) as err:
        idx.read_idx(path, rank=3)
    assert path in str(err.value)


def test_idx_with_mismatched_label_count_and_missing_files(tmp_path):
    data_dir, _, _ = _mnist_dir(tmp_path, gz=False)
    _write_idx(os.path.join(data_dir, idx.FILES["train"][1]), np.zeros(11))
    with pytest.raises(ValueError, match="12 images but .* 11 labels"):
        idx.arrays(data_dir, "train")
    os.remove(os.path.join(data_dir, idx.FILES["t10k"][0]))
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        idx.arrays(data_dir, "test")


# --------------------------------------------------------------------------
# splits


def test_digits_test_split_is_unchanged_and_splits_are_disjoint():
    """The 359 test images are those the digits benchmark always used:
    ``perm[:359]`` of ``default_rng(0).permutation(1797)``; the validation
    split comes out of the former training part."""
    from sklearn.datasets import load_digits

    all_images = load_digits().images.astype(np.uint8)
    perm = np.random.default_rng(0).permutation(1797)
    test, _ = digits.arrays("test")
    np.testing.assert_array_equal(test[..., 0], all_images[perm[:359]])
    # pinned bytes of the test split, as published before the validation split
    assert hashlib.sha256(test.tobytes()).hexdigest()[:16] == _DIGITS_TEST_SHA256_16
    assert sum(digits.SPLIT_SIZES.values()) == 1797
    positions = {}
    for split in digits.SPLIT_SIZES:
        images = digits.arrays(split)[0][..., 0]
        # each image's position in the full set (digits has duplicate images,
        # so compare positions, not pixels)
        positions[split] = _positions(images, all_images, perm, split)
    assert not positions["train"] & positions["validation"]
    assert not positions["train"] & positions["test"]
    assert not positions["validation"] & positions["test"]
    assert len(positions["train"] | positions["validation"] | positions["test"]) == 1797


_DIGITS_TEST_SHA256_16 = "295371158138ec2b"  # of commit 364e1c0, before validation


def _positions(images, all_images, perm, split):
    lo, hi = {"test": (0, 359), "validation": (359, 599), "train": (599, 1797)}[split]
    np.testing.assert_array_equal(images, all_images[perm[lo:hi]])
    return set(perm[lo:hi].tolist())


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "celeb_a",
                                  "imagenet32", "imagenet64"])
def test_tfds_splits_are_disjoint(name):
    """Validation comes off the end of the training split where the dataset
    has none of its own; test is the held-out split."""
    train, _ = tfds_images.resolve_split(name, "train")
    val, _ = tfds_images.resolve_split(name, "validation")
    test, _ = tfds_images.resolve_split(name, "test")
    assert len({train, val, test}) == 3
    if name in ("mnist", "fashion_mnist"):
        assert (train, val, test) == ("train[:50000]", "train[50000:]", "test")
    # a sliced name slices the whole tfds split
    assert tfds_images.resolve_split(name, "train[:10%]") == ("train[:10%]", True)


def test_every_image_dataset_offers_three_splits():
    for name in ("digits",) + tfds_images.DATASETS:
        assert data.info(name).splits == ("train", "validation", "test"), name


# --------------------------------------------------------------------------
# offline


def test_offline_mnist_without_files_fails_fast_naming_data_dir(tmp_path, monkeypatch):
    """No prepared tfds data and no network: one probe with a timeout of a
    few seconds, then an error that names the data_dir way (no retries)."""
    timeouts = []

    def refuse(address, timeout=None, *args, **kwargs):
        timeouts.append(timeout)
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(data.DataUnavailableError, match="data_dir") as err:
        data.load("mnist", "train", batch_size=8, data_dir=str(tmp_path))
    assert "offline" in str(err.value) and "train-images-idx3-ubyte" in str(err.value)
    assert len(timeouts) == 1 and timeouts[0] <= 5
