"""Tests of `tfp_flows.data.files`: your own image folders and .npy/.npz arrays."""

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfp_flows.data import files, tfds_images

RNG = np.random.default_rng(1234)


def _rgb(h=6, w=6):
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _gray(h=6, w=6):
    return RNG.integers(0, 256, (h, w), dtype=np.uint8)


def _write_folder(folder, images, ext=".png", names=None):
    """Writes ``images`` (list of [H, W(, 3)] uint8) as files; returns paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        path = folder / (names[i] if names else f"img{i:03d}{ext}")
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def _as_nhwc(images):
    stacked = np.stack(images)
    return stacked[..., None] if stacked.ndim == 3 else stacked


# ------------------------------------------------------------------ is_path

def test_is_path(tmp_path, monkeypatch):
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mine").mkdir()
    monkeypatch.chdir(tmp_path)
    assert files.is_path("mine")
    assert files.is_path("./mnist")
    assert files.is_path(str(tmp_path / "mnist"))
    assert files.is_path(tmp_path)
    assert files.is_path("missing.npy") and files.is_path("missing.NPZ")
    assert files.is_path("no/such/dir")
    for name in ("mnist", "digits", "Fashion-MNIST", "two_moons", "missing", "", None):
        assert not files.is_path(name), name


# ------------------------------------------------------------------ flat folders

def test_flat_folder_splits_round_trip_and_order(tmp_path):
    images = [_rgb() for _ in range(25)]
    # Written in shuffled order, with names that sort differently by number.
    names = [f"p{i:02d}.PNG" if i % 2 else f"p{i:02d}.png" for i in range(25)]
    order = RNG.permutation(25)
    _write_folder(tmp_path / "d", [images[i] for i in order], names=[names[i] for i in order])
    (tmp_path / "d" / "notes.txt").write_text("ignored")
    (tmp_path / "d" / "sub").mkdir()
    _write_folder(tmp_path / "d" / "sub", [_rgb(8, 8)])  # not recursive

    expected = np.stack(images)  # sorted by file name == index order
    perm = np.random.default_rng(0).permutation(25)
    split_index = {"test": perm[:2], "validation": perm[2:4], "train": perm[4:]}
    seen = []
    for split, index in split_index.items():
        x, y = files.arrays(tmp_path / "d", split)
        assert y is None and x.dtype == np.uint8 and x.shape == (len(index), 6, 6, 3)
        assert not x.flags.writeable
        np.testing.assert_array_equal(x, expected[index])  # PNG round-trips exactly
        seen.extend(index)
    assert sorted(seen) == list(range(25))  # disjoint and complete

    meta = files.info(str(tmp_path / "d") + "/")
    assert meta.name == os.path.normpath(str(tmp_path / "d"))
    assert (meta.kind, meta.shape, meta.num_bins, meta.n_bits) == ("image", (6, 6, 3), 256, 8)
    assert meta.num_classes is None and meta.splits == ("train", "validation", "test")
    assert meta.source == f"files:{os.path.abspath(tmp_path / 'd')}"

    files._read_folder.cache_clear()  # deterministic on a fresh read
    np.testing.assert_array_equal(files.arrays(tmp_path / "d", "test")[0],
                                  expected[split_index["test"]])


@pytest.mark.parametrize("n, sizes", [(1, (1, 0, 0)), (3, (1, 1, 1)), (12, (10, 1, 1))])
def test_split_sizes(tmp_path, n, sizes):
    _write_folder(tmp_path, [_gray(4, 4) for _ in range(n)])
    got = tuple(len(files.arrays(tmp_path, s)[0]) for s in files.SPLITS)
    assert got == sizes
    assert files.arrays(tmp_path, "train")[0].shape[1:] == (4, 4, 1)


def test_jpeg_grayscale_and_mode_conversion(tmp_path):
    gray = [_gray() for _ in range(3)]
    _write_folder(tmp_path / "g", gray, ext=".JPEG")
    x = np.concatenate([files.arrays(tmp_path / "g", s)[0] for s in files.SPLITS])
    assert x.shape == (3, 6, 6, 1)
    decoded = [np.asarray(Image.open(tmp_path / "g" / f"img{i:03d}.JPEG")) for i in range(3)]
    assert {a.tobytes() for a in x[..., 0]} == {d.tobytes() for d in decoded}

    rgba = RNG.integers(0, 256, (6, 6, 4), dtype=np.uint8)
    la = RNG.integers(0, 256, (6, 6, 2), dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    Image.fromarray(_rgb()).convert("P").save(tmp_path / "pal.png")
    _write_folder(tmp_path / "c", [])
    os.replace(tmp_path / "rgba.png", tmp_path / "c" / "a.png")
    os.replace(tmp_path / "pal.png", tmp_path / "c" / "b.png")
    _write_folder(tmp_path / "c", [_rgb()], names=["c.jpg"])
    x = np.concatenate([files.arrays(tmp_path / "c", s)[0] for s in files.SPLITS])
    assert x.shape == (3, 6, 6, 3)
    assert any(np.array_equal(a, rgba[..., :3]) for a in x)  # alpha dropped

    (tmp_path / "l").mkdir()
    Image.fromarray(la).save(tmp_path / "l" / "a.png")
    x, _ = files.arrays(tmp_path / "l", "train")
    np.testing.assert_array_equal(x[0, ..., 0], la[..., 0])


def test_exif_orientation_is_applied(tmp_path):
    image = Image.fromarray(_rgb(4, 6))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    image.save(tmp_path / "a.png", exif=exif)
    assert files.arrays(tmp_path, "train")[0].shape == (1, 6, 4, 3)


def test_split_subfolders(tmp_path):
    sizes = {"train": 4, "validation": 2, "test": 3}
    written = {s: [_rgb() for _ in range(k)] for s, k in sizes.items()}
    for split, images in written.items():
        names = [f"{chr(ord('z') - i)}.png" for i in range(len(images))]  # reverse order
        _write_folder(tmp_path / split, images, names=names)
    for split, images in written.items():
        x, _ = files.arrays(tmp_path, split)
        np.testing.assert_array_equal(x, np.stack(images[::-1]))  # sorted by name

    os.remove(tmp_path / "validation" / "y.png")
    os.remove(tmp_path / "validation" / "z.png")
    with pytest.raises(ValueError, match="split folder.*validation.*no images"):
        files.arrays(tmp_path, "train")
    os.rmdir(tmp_path / "validation")
    with pytest.raises(ValueError, match="but not validation"):
        files.info(tmp_path)
    (tmp_path / "validation").mkdir()
    _write_folder(tmp_path / "validation", [_rgb()])
    _write_folder(tmp_path, [_rgb()], names=["stray.png"])
    with pytest.raises(ValueError, match="stray.png"):
        files.info(tmp_path)


# ------------------------------------------------------------------ sizes

def test_mixed_sizes_need_image_size_then_crop_resize(tmp_path):
    a, b, c = _rgb(6, 6), _rgb(8, 6), _rgb(6, 10)
    _write_folder(tmp_path, [a, b, c], names=["a.png", "b.png", "c.png"])
    with pytest.raises(ValueError, match=r"a\.png.*6x6.*b\.png.*6x8.*image_size"):
        files.info(tmp_path)
    meta = files.info(tmp_path, image_size=4)
    assert meta.shape == (4, 4, 3)
    got = {files.arrays(tmp_path, s, image_size=4)[0][0].tobytes() for s in files.SPLITS}
    want = {tfds_images.center_crop_resize(tf.constant(i), 4).numpy().tobytes()
            for i in (a, b, c)}
    assert got == want
    # Upsampling too; a 6x6 image at image_size=6 stays exact.
    assert files.info(tmp_path, image_size=7).shape == (7, 7, 3)
    sixes = [files.arrays(tmp_path, s, image_size=6)[0][0] for s in files.SPLITS]
    assert any(np.array_equal(x, a) for x in sixes)
    assert any(np.array_equal(x, b[1:7]) for x in sixes)  # central crop of 8 rows


def test_array_image_size(tmp_path):
    x = RNG.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", x)
    same, _ = files.arrays(tmp_path / "x.npy", "train", image_size=8)
    small, _ = files.arrays(tmp_path / "x.npy", "train", image_size=5)
    index = np.random.default_rng(0).permutation(10)[2:]
    np.testing.assert_array_equal(same, x[index])
    want = np.stack([tfds_images.center_crop_resize(tf.constant(i), 5).numpy()
                     for i in x[index]])
    np.testing.assert_array_equal(small, want)


# ------------------------------------------------------------------ arrays and labels

def test_npy_integer_dtypes_and_rank3(tmp_path):
    x = RNG.integers(0, 256, (5, 4, 4), dtype=np.int64)
    np.save(tmp_path / "x.npy", x)
    got = np.concatenate([files.arrays(tmp_path / "x.npy", s)[0] for s in files.SPLITS])
    assert got.dtype == np.uint8 and got.shape == (5, 4, 4, 1)
    perm = np.random.default_rng(0).permutation(5)
    np.testing.assert_array_equal(got[..., 0], x[np.concatenate([perm[2:], perm[1:2],
                                                                 perm[:1]])])


def test_npz_labels(tmp_path):
    x = np.arange(30, dtype=np.uint8).reshape(30, 1, 1, 1) * np.ones((1, 3, 3, 1), np.uint8)
    y = np.arange(30) % 7
    np.savez(tmp_path / "d.npz", x=x, y=y)
    assert files.info(tmp_path / "d.npz").num_classes == 7
    for split in files.SPLITS:
        images, labels = files.arrays(tmp_path / "d.npz", split)
        assert labels.dtype == np.int32
        np.testing.assert_array_equal(labels, images[:, 0, 0, 0] % 7)  # pairs kept

    splits = {"train": x[:20], "validation": x[20:25], "test": x[25:]}
    labels = {f"{k}_labels": y[: 20] if k == "train" else y[:5] for k in splits}
    np.savez(tmp_path / "s.npz", **splits, **labels)
    assert files.info(tmp_path / "s.npz").num_classes == 7
    got, lab = files.arrays(tmp_path / "s.npz", "validation")
    np.testing.assert_array_equal(got, x[20:25])
    np.testing.assert_array_equal(lab, y[:5])

    np.savez(tmp_path / "only.npz", x)  # key 'arr_0', no labels
    assert files.info(tmp_path / "only.npz").num_classes is None
    with pytest.raises(ValueError, match="only.npz.*no class labels"):
        files.load(tmp_path / "only.npz", "train", batch_size=2, with_labels=True)


# ------------------------------------------------------------------ pipeline

def test_load_pipeline_and_n_bits(tmp_path):
    x = RNG.integers(0, 256, (30, 4, 4, 3), dtype=np.uint8)
    y = np.arange(30) % 3
    np.savez(tmp_path / "d.npz", images=x, labels=y)
    path = str(tmp_path / "d.npz")
    train, _ = files.arrays(path, "train")
    test, test_labels = files.arrays(path, "test")

    batches = list(files.load(path, "train", batch_size=4, seed=0))
    assert len(batches) == 6 and all(b.shape == (4, 4, 4, 3) for b in batches)
    assert batches[0].dtype == tf.float32
    flat = np.concatenate([b.numpy() for b in batches])
    assert flat.min() >= 0 and flat.max() <= 255 and np.all(flat == np.round(flat))
    again = np.concatenate([b.numpy() for b in files.load(path, "train", batch_size=4, seed=0)])
    np.testing.assert_array_equal(flat, again)

    meta = files.info(path, n_bits=3)
    assert meta.num_bins == 8 and meta.n_bits == 3
    reduced = list(files.load(path, "test", batch_size=2, n_bits=3, with_labels=True))
    images = np.concatenate([b[0].numpy() for b in reduced])
    labels = np.concatenate([b[1].numpy() for b in reduced])
    np.testing.assert_array_equal(images, test >> 5)  # in order, every example
    np.testing.assert_array_equal(labels, test_labels)
    assert images.max() < 8 and reduced[0][1].dtype == tf.int32

    noisy = next(iter(files.load(path, "train", batch_size=24, dequantize=True, seed=1)))
    assert noisy.shape == (24, 4, 4, 3)
    assert np.all(np.sort(np.floor(noisy.numpy()).ravel()) == np.sort(train.ravel()))

    with pytest.raises(ValueError, match="unknown split 'val'"):
        files.load(path, "val", batch_size=2)
    _write_folder(tmp_path / "two", [_rgb(), _rgb()])
    with pytest.raises(ValueError, match="'test'.*two.*empty"):
        files.load(tmp_path / "two", "test", batch_size=2)


def test_cache_notices_changed_files(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((3, 2, 2), np.uint8))
    assert files.info(tmp_path / "x.npy").shape == (2, 2, 1)
    np.save(tmp_path / "x.npy", np.zeros((3, 5, 5, 3), np.uint8))
    os.utime(tmp_path / "x.npy", ns=(1, 1))
    assert files.info(tmp_path / "x.npy").shape == (5, 5, 3)


# ------------------------------------------------------------------ bad inputs

def _png_bytes(image):
    import io

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_corrupt_and_truncated_images(tmp_path):
    _write_folder(tmp_path, [_rgb() for _ in range(4)])
    (tmp_path / "corrupt.png").write_bytes(b"this is not an image")
    with pytest.raises(ValueError, match=r"corrupt\.png.*corrupt or truncated.*skip_bad"):
        files.info(tmp_path)
    os.remove(tmp_path / "corrupt.png")
    data = _png_bytes(_rgb(32, 32))
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])  # misnamed and truncated
    with pytest.raises(ValueError, match=r"trunc\.jpg.*truncated"):
        files.arrays(tmp_path, "train")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable.*corrupt\.png.*trunc\.jpg"):
        meta = files.info(tmp_path, skip_bad=True)
    assert meta.shape == (6, 6, 3)
    with pytest.warns(UserWarning, match="skipped 2"):
        total = sum(len(files.arrays(tmp_path, s, skip_bad=True)[0]) for s in files.SPLITS)
    assert total == 4


def test_all_bad_with_skip_bad(tmp_path):
    (tmp_path / "a.png").write_bytes(b"nope")
    with pytest.raises(ValueError, match="no readable images.*a.png"):
        files.arrays(tmp_path, "train", skip_bad=True)


def test_mixed_grayscale_and_rgb(tmp_path):
    _write_folder(tmp_path, [_gray(), _rgb()], names=["g.png", "r.png"])
    with pytest.raises(ValueError, match=r"mixes grayscale and RGB.*g\.png.*mode L.*r\.png"):
        files.info(tmp_path)


def test_unsupported_mode(tmp_path):
    Image.fromarray(np.full((4, 4), 1000, np.uint16)).save(tmp_path / "deep.png")
    with pytest.raises(ValueError, match=r"deep\.png.*mode 'I"):
        files.info(tmp_path)


def test_empty_folder_and_missing_paths(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match=r"empty.*no images.*\.png, \.jpg, \.jpeg.*\.txt"):
        files.info(tmp_path / "empty")
    for missing in ("nope.npz", "nope.npy", "no/such/dir"):
        with pytest.raises(FileNotFoundError, match=missing):
            files.info(tmp_path / missing)
    Image.fromarray(_rgb()).save(tmp_path / "one.png")
    with pytest.raises(ValueError, match=r"one\.png.*single image"):
        files.info(tmp_path / "one.png")


@pytest.mark.parametrize("array, pattern", [
    (np.zeros((4, 3, 3), np.float32), "dtype float32.*255"),
    (np.zeros((4, 3, 3), bool), "dtype bool"),
    (np.zeros((4, 3), np.uint8), r"rank 2 \(shape \(4, 3\)\)"),
    (np.zeros((2, 4, 3, 3, 1), np.uint8), "rank 5"),
    (np.zeros((4, 3, 3, 4), np.uint8), "4 channels"),
    (np.full((4, 3, 3), 300, np.int16), r"range over 300\.\.300"),
    (np.full((4, 3, 3), -1, np.int32), r"range over -1\.\.-1"),
    (np.zeros((0, 3, 3), np.uint8), "no images"),
])
def test_bad_arrays(tmp_path, array, pattern):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(ValueError, match=r"bad\.npy.*" + pattern):
        files.info(tmp_path / "bad.npy")
    np.savez(tmp_path / "bad.npz", train=array, validation=array, test=array)
    with pytest.raises(ValueError, match=r"bad\.npz\['train'\].*" + pattern):
        files.arrays(tmp_path / "bad.npz", "test")


def test_bad_npz_layouts(tmp_path):
    x = np.zeros((5, 3, 3), np.uint8)
    cases = {
        "missing_split.npz": (dict(train=x, test=x), "but not 'validation'"),
        "extra.npz": (dict(images=x, other=x), "unexpected key.*'other'"),
        "two.npz": (dict(a=x, b=x), "key.*'a', 'b'.*expected"),
        "both.npz": (dict(images=x, x=x), "both 'images' and 'x'"),
        "labels_len.npz": (dict(images=x, labels=np.zeros(4, int)), r"shape \(4,\).*\(5,\)"),
        "labels_float.npz": (dict(images=x, y=np.zeros(5)), "labels have dtype float64"),
        "labels_neg.npz": (dict(images=x, y=-np.ones(5, int)), "labels range over -1"),
        "half_labels.npz": (dict(train=x, validation=x, test=x, train_labels=np.zeros(5, int)),
                            "label every split"),
        "shapes.npz": (dict(train=x, validation=x[:, :2], test=x), "different image shapes"),
    }
    for name, (content, pattern) in cases.items():
        np.savez(tmp_path / name, **content)
        with pytest.raises(ValueError, match=name.replace(".", r"\.") + ".*" + pattern):
            files.info(tmp_path / name)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"junk\.npz.*corrupt"):
        files.info(tmp_path / "junk.npz")
    np.save(tmp_path / "arr.npy", x)
    os.replace(tmp_path / "arr.npy", tmp_path / "arr.npz")
    with pytest.raises(ValueError, match=r"arr\.npz.*rename it to end in \.npy"):
        files.info(tmp_path / "arr.npz")
