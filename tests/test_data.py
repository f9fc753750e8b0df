"""Tests of `tfp_flows.data`: tfds pipelines on `tfds.testing.mock_data`,
the offline digits and the 2-D toy densities."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from scipy.spatial import cKDTree

import tfp_flows
from tfp_flows import data
from tfp_flows.data import toy2d

TFDS_NAMES = ["mnist", "fashion_mnist", "cifar10", "celeb_a", "imagenet32", "imagenet64"]


def _batches(ds):
    return [np.asarray(b) for b in ds]


def _images(ds):
    return np.concatenate(_batches(ds))


# --------------------------------------------------------------------------
# tfds datasets (mock data: no download)


@pytest.mark.parametrize("name", TFDS_NAMES)
def test_tfds_pipeline_shapes_dtype_range(name):
    meta = data.info(name, n_bits=5)
    with tfds.testing.mock_data(num_examples=6):
        train = _batches(data.load(name, "train", batch_size=4, n_bits=5, seed=0))
        test = _batches(data.load(name, "test", batch_size=4, n_bits=5))
    # Training drops the partial batch; evaluation keeps every example.
    assert [b.shape[0] for b in train] == [4]
    assert [b.shape[0] for b in test] == [4, 2]
    assert meta.num_bins == 32 and meta.shape == train[0].shape[1:]
    expected = {"celeb_a": (64, 64, 3), "imagenet64": (64, 64, 3), "imagenet32": (32, 32, 3),
                "cifar10": (32, 32, 3)}.get(name, (28, 28, 1))
    assert meta.shape == expected
    x = np.concatenate(test)
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, np.round(x))
    assert x.min() >= 0 and x.max() <= 31
    if name in ("mnist", "fashion_mnist", "cifar10"):
        # Native size, no resampling: mock pixels are uniform on 0..254, so
        # after 5-bit reduction they cover the whole range 0..31.
        assert x.min() == 0 and x.max() == 31


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
@pytest.mark.parametrize("n_bits", [3, 8])
def test_tfds_reduction_is_glow_floor_division(name, n_bits):
    with tfds.testing.mock_data(num_examples=5):
        raw = np.stack([e["image"] for e in tfds.as_numpy(tfds.load(name, split="test"))])
        x = _images(data.load(name, "test", batch_size=2, n_bits=n_bits))
    np.testing.assert_array_equal(x, np.floor(raw / 2 ** (8 - n_bits)))


def test_tfds_labels():
    with tfds.testing.mock_data(num_examples=5):
        raw = [int(e["label"]) for e in tfds.as_numpy(tfds.load("mnist", split="test"))]
        batches = list(data.load("mnist", "test", batch_size=5, with_labels=True))
    (images, labels), = batches
    assert images.shape == (5, 28, 28, 1) and labels.dtype == tf.int32
    np.testing.assert_array_equal(labels, raw)


def _celeb_a_mock(images):
    """`as_dataset_fn` serving fixed 218x178x3 images as celeb_a examples."""
    def as_dataset(self, *args, **kwargs):
        del self, args, kwargs
        return tf.data.Dataset.from_tensor_slices({"image": images})
    return tfds.testing.mock_data(as_dataset_fn=as_dataset)


def test_celeb_a_center_crop_is_exact():
    rows, cols = np.meshgrid(np.arange(218), np.arange(178), indexing="ij")
    coords = np.stack([rows, cols, np.full_like(rows, 7)], -1).astype(np.uint8)[None]
    with _celeb_a_mock(coords):
        x = _images(data.load("celeb_a", "test", batch_size=1, image_size=148))
    # Central 148x148 crop of 218x178: offsets (218-148)/2 = 35, (178-148)/2 = 15.
    np.testing.assert_array_equal(x[0], coords[0, 35:183, 15:163])


def test_celeb_a_resize_keeps_geometry():
    image = np.zeros((2, 218, 178, 3), np.uint8)
    image[0, 35:183, 15:163] = 200  # bright exactly inside the crop
    image[1] = np.arange(178, dtype=np.uint8)[None, :, None]  # column ramp
    with _celeb_a_mock(image):
        x = _images(data.load("celeb_a", "test", batch_size=2, image_size=64))
    assert x.shape == (2, 64, 64, 3)
    # Nothing from outside the crop leaks in.
    np.testing.assert_array_equal(x[0], 200)
    # Output column j samples input column 15 + (j + 1/2) * 148/64 - 1/2; the
    # antialiased (normalised, symmetric) filter reproduces a linear ramp, so
    # only the final rounding to integers is left: error <= 0.5.
    centre = 15 + (np.arange(64) + 0.5) * 148 / 64 - 0.5
    assert np.abs(x[1, :, :, 0] - centre).max() <= 0.5


def test_split_names_and_slicing():
    resolve = data.tfds_images.resolve_split
    assert resolve("imagenet32", "test") == ("validation", False)
    assert resolve("celeb_a", "validation") == ("validation", False)
    assert resolve("cifar10", "train[:90%]") == ("train[:90%]", True)
    assert resolve("imagenet64", "test[:50%] + train[:10]") == (
        "validation[:50%]+train[:10]", False)
    for name, split in [("mnist", "valid"), ("imagenet32", "valid"), ("cifar10", ""),
                        ("mnist", "validation[:10]")]:
        with pytest.raises(ValueError, match="split"):
            resolve(name, split)


# --------------------------------------------------------------------------
# digits


def test_digits_split_protocol_and_range():
    meta = data.info("digits")
    assert (meta.shape, meta.num_bins, meta.num_classes) == ((8, 8, 1), 17, 10)
    test_x, test_y = data.digits.arrays("test")
    train_x, _ = data.digits.arrays("train")
    assert (len(train_x), len(test_x)) == (1198, 359)
    from sklearn.datasets import load_digits
    full = load_digits()
    perm = np.random.default_rng(0).permutation(1797)
    np.testing.assert_array_equal(test_x[..., 0], full.images[perm[:359]])
    np.testing.assert_array_equal(test_y, full.target[perm[:359]])
    x = _images(data.load("digits", "train", batch_size=500, drop_remainder=False))
    assert x.shape == (1198, 8, 8, 1) and x.dtype == np.float32
    assert x.min() == 0 and x.max() == 16
    np.testing.assert_array_equal(x, np.round(x))
    # Default training pipeline: shuffled, full batches only (1198 // 64).
    assert len(_batches(data.load("digits", "train", batch_size=64))) == 18


def test_digits_labels():
    (x, y), = list(data.load("digits", "test", batch_size=400, with_labels=True))
    ref_x, ref_y = data.digits.arrays("test")
    np.testing.assert_array_equal(x, ref_x)
    np.testing.assert_array_equal(y, ref_y)
    (xd, yd), = list(data.load("digits", "test", batch_size=400, with_labels=True,
                               dequantize=True, seed=0))
    np.testing.assert_array_equal(np.floor(xd), ref_x)
    np.testing.assert_array_equal(yd, ref_y)


def test_dequantize_on_and_off():
    plain = _images(data.load("digits", "test", batch_size=64))
    noisy = _images(data.load("digits", "test", batch_size=64, dequantize=True, seed=3))
    again = _images(data.load("digits", "test", batch_size=64, dequantize=True, seed=3))
    np.testing.assert_array_equal(plain, np.round(plain))
    np.testing.assert_array_equal(np.floor(noisy), plain)
    np.testing.assert_array_equal(noisy, again)
    u = noisy - plain
    assert u.min() >= 0 and u.max() < 1
    # 22976 U[0,1) draws: the mean's std is 0.0019, 0.01 is over 5 sigma.
    assert abs(u.mean() - 0.5) < 0.01


def test_seed_fixes_shuffle_and_epochs_differ():
    ds = data.load("digits", "train", batch_size=64, seed=7, dequantize=True)
    epoch1, epoch2 = _images(ds), _images(ds)
    np.testing.assert_array_equal(epoch1, _images(
        data.load("digits", "train", batch_size=64, seed=7, dequantize=True)))
    assert not np.array_equal(np.floor(epoch1), np.floor(epoch2))  # reshuffled
    other = _images(data.load("digits", "train", batch_size=64, seed=8))
    assert not np.array_equal(np.floor(epoch1), other)


# --------------------------------------------------------------------------
# 2-D toy densities


@pytest.mark.parametrize("name", toy2d.DATASETS)
def test_toy_pipelines(name):
    meta = data.info(name)
    assert (meta.kind, meta.shape, meta.num_bins) == ("vector", (2,), None)
    train = _images(data.load(name, "train", batch_size=1000, drop_remainder=False))
    test = _images(data.load(name, "test", batch_size=1000))
    assert train.shape == (20_000, 2) and test.shape == (5_000, 2)
    assert train.dtype == np.float32 and np.all(np.isfinite(train))
    assert not set(map(tuple, test)) & set(map(tuple, train))  # disjoint draws
    small = _images(data.load(name, "test", batch_size=10, num_examples=25))
    assert small.shape == (25, 2)
    stream = data.load(name, "train", batch_size=32, infinite=True, seed=1)
    first = [np.asarray(b) for b in stream.take(3)]
    assert all(b.shape == (32, 2) for b in first)
    assert not np.array_equal(first[0], first[1])
    np.testing.assert_array_equal(first[2], np.asarray(list(
        data.load(name, "train", batch_size=32, infinite=True, seed=1).take(3))[2]))


N = 4000


def _counts_balanced(labels, k):
    # Each count ~ Binomial(N, 1/k); 5 standard deviations.
    counts = np.bincount(labels, minlength=k)
    tol = 5 * math.sqrt(N * (1 / k) * (1 - 1 / k))
    return np.all(np.abs(counts - N / k) < tol), counts


def _distance_to_curve(points, curve):
    """Distance from each point to the nearest of ``curve``'s points, and its index."""
    return cKDTree(curve).query(points)


def test_two_moons_lie_on_the_moons():
    x = toy2d.sample("two_moons", N, seed=0).numpy() / 2 + [0.5, 0.25]
    t = np.linspace(0, np.pi, 2000)
    upper = np.stack([np.cos(t), np.sin(t)], -1)
    lower = np.stack([1 - np.cos(t), 0.5 - np.sin(t)], -1)
    dist, idx = _distance_to_curve(x, np.concatenate([upper, lower]))
    s = toy2d.MOONS_NOISE
    # Perpendicular noise ~ |N(0, s^2)|: P(> 5 s) ~ 6e-7 per point, and
    # about 68% within 1 s (more, as the nearest curve point is closer).
    assert dist.max() < 5 * s and np.mean(dist < s) > 0.66
    ok, counts = _counts_balanced((idx >= 2000).astype(int), 2)
    assert ok, counts


def test_eight_gaussians_components():
    x = toy2d.sample("eight_gaussians", N, seed=0).numpy()
    angle = np.arange(8) * np.pi / 4
    centres = toy2d.GAUSSIANS_RADIUS * np.stack([np.cos(angle), np.sin(angle)], -1)
    dist, k = _distance_to_curve(x, centres)
    s = toy2d.GAUSSIANS_STD
    # |N(0, s^2 I_2)| is Rayleigh: P(> 5 s) = exp(-12.5) ~ 4e-6 per point;
    # E[d^2] = 2 s^2 (checked to 5% with 4000 draws: std of the mean is 1.6%).
    assert dist.max() < 5 * s
    assert abs(np.mean(dist ** 2) / (2 * s ** 2) - 1) < 0.05
    ok, counts = _counts_balanced(k, 8)
    assert ok, counts


def test_checkerboard_squares():
    x = toy2d.sample("checkerboard", N, seed=0).numpy()
    assert np.all((x >= -2) & (x < 2))
    cell = np.floor(x).astype(int)
    assert np.all((cell.sum(axis=1) % 2) == 0)  # dark squares only
    dark = {(i, j): n for n, (i, j) in enumerate(
        (i, j) for i in range(-2, 2) for j in range(-2, 2) if (i + j) % 2 == 0)}
    ok, counts = _counts_balanced(np.array([dark[tuple(c)] for c in cell]), 8)
    assert ok, counts
    # Uniform inside each square: the fractional parts have mean 1/2 and
    # variance 1/12 (std of the mean 0.0046; 0.02 is over 4 sigma).
    frac = x - np.floor(x)
    assert np.all(np.abs(frac.mean(0) - 0.5) < 0.02)
    assert np.all(np.abs(frac.var(0) - 1 / 12) < 0.01)


def test_spirals_lie_on_the_arms():
    x = toy2d.sample("spirals", N, seed=0).numpy()
    t = np.linspace(0, 2 * np.pi * toy2d.SPIRALS_TURNS, 4000)
    arms = [np.stack([t * np.cos(t + a * np.pi), t * np.sin(t + a * np.pi)], -1) / np.pi
            for a in (0, 1)]
    dist, idx = _distance_to_curve(x, np.concatenate(arms))
    s = toy2d.SPIRALS_NOISE
    # The arms are 1 apart (10 s), so every point is within 5 s of its arm.
    assert dist.max() < 5 * s
    ok, counts = _counts_balanced((idx >= 4000).astype(int), 2)
    assert ok, counts
    # sqrt(u) sampling: the radius r = t/pi has density 2 r / 9 on [0, 3],
    # so E[r] = 2; noise shifts it by O(s^2) (std of the mean 0.011).
    assert abs(np.linalg.norm(x, axis=1).mean() - 2.0) < 0.05


def test_toy_samples_are_reproducible():
    a = toy2d.sample("spirals", 10, seed=5)
    np.testing.assert_array_equal(a, toy2d.sample("spirals", 10, seed=5))
    assert not np.array_equal(a, toy2d.sample("spirals", 10, seed=6))


# --------------------------------------------------------------------------
# info and bad arguments


def test_info_and_package_exports():
    assert tfp_flows.data is data
    assert data.DEFAULT_DATASET == "digits"
    assert data.info("cifar10", n_bits=5).num_bins == 32
    assert data.info("downsampled_imagenet/64x64").name == "imagenet64"
    assert data.info("celeb_a", image_size=32).shape == (32, 32, 3)
    _, meta = data.load("digits", "test", 8, with_info=True)
    assert meta == data.info("digits")


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="svhn"), "unknown dataset 'svhn'; choose one of: digits"),
    (dict(split="valid"),
     "unknown split 'valid' for dataset 'digits'; valid splits: train, validation, test"),
    (dict(name="imagenet32", split="dev"), "valid splits: train, validation, test"),
    (dict(name="mnist", n_bits=0), "n_bits must be an integer in 1..8"),
    (dict(name="mnist", n_bits=9), "n_bits must be an integer in 1..8"),
    (dict(n_bits=5), "n_bits does not apply to 'digits'"),
    (dict(name="spirals", n_bits=4), "n_bits does not apply to 'spirals'"),
    (dict(batch_size=0), "batch_size must be a positive integer"),
    (dict(batch_size=-3), "batch_size must be a positive integer"),
    (dict(batch_size=2.5), "batch_size must be a positive integer"),
    (dict(shuffle_buffer=0), "shuffle_buffer must be a positive integer"),
    (dict(seed="x"), "seed must be None or an integer"),
    (dict(name="celeb_a", with_labels=True), "'celeb_a' has no class labels"),
    (dict(name="two_moons", with_labels=True), "'two_moons' has no class labels"),
    (dict(name="two_moons", dequantize=True), "continuous data"),
    (dict(name="mnist", image_size=32), "image_size applies to celeb_a only"),
    (dict(name="celeb_a", image_size=200), "at most the 148x148 crop"),
    (dict(image_size=16), "image_size applies to celeb_a only"),
    (dict(num_examples=10), "num_examples and infinite apply to the toy densities"),
    (dict(name="checkerboard", split="test", infinite=True), "infinite=True streams"),
    (dict(name="checkerboard", num_examples=0), "num_examples must be a positive"),
])
def test_bad_arguments(kwargs, message):
    args = dict(name="digits", split="train", batch_size=4)
    args.update(kwargs)
    with pytest.raises(ValueError) as err:
        data.load(args.pop("name"), args.pop("split"), args.pop("batch_size"), **args)
    assert message in str(err.value)
