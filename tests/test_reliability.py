"""Reliability (issue 8): ActNorm and 1x1-convolution edge cases, random
shapes for the bijectors the registry's hypothesis test does not reshape, and
the catalogue of bad inputs, each of which must raise an error that names the
problem.

Faults of runs (SIGKILL and resume, truncated or corrupted checkpoints, the
NaN guard) are in tests/test_runs.py; export never overwriting in
tests/test_cli.py and tests/test_export.py.
"""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tfp_flows
from tfp_flows import bijectors as B
from tfp_flows import masks, models
from tfp_flows.training import FlowModel

EPS32 = float(np.finfo(np.float32).eps)


def _tiny_glow(**kwargs):
    args = dict(num_levels=1, num_steps=2, hidden_channels=8, seed=0)
    args.update(kwargs)
    return models.glow([8, 8, 1], **args)


def _pixels(rng, shape, batch=4):
    return (rng.integers(0, 256, (batch,) + tuple(shape))
            + rng.random((batch,) + tuple(shape))).astype(np.float32)


# ---------------------------------------------------------------------------
# ActNorm
# ---------------------------------------------------------------------------
def test_actnorm_from_a_batch_of_one_image():
    """One image still has H*W positions per channel: the output of that
    image is standardised per channel and the layer inverts it."""
    x = tf.constant(_pixels(np.random.default_rng(0), (4, 4, 3), batch=1))
    norm = B.ActNorm(3)
    z, ildj = B.inverse_and_log_det(norm, x)
    # float32 statistics of 16 values in [0, 256): rounding ~1e-6 relative.
    np.testing.assert_allclose(z.numpy().mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.numpy().std(axis=(0, 1, 2)), 1.0, rtol=1e-5)
    assert np.isfinite(ildj.numpy()).all()
    x_back, fldj = B.forward_and_log_det(norm, z)
    # round trip through one affine map: a few ulps of values up to 256
    np.testing.assert_allclose(x_back.numpy(), x.numpy(), rtol=0,
                               atol=256 * 4 * EPS32)
    np.testing.assert_allclose(fldj.numpy(), -ildj.numpy(), rtol=1e-6)


def test_actnorm_from_a_batch_of_one_vector_keeps_unit_scale():
    """A single vector gives each channel one value, hence zero spread: every
    channel is constant, so the scale stays 1 (no division by zero) and the
    layer only shifts."""
    x = tf.constant([[3.5, -2.0, 117.25]])
    norm = B.ActNorm(3, event_ndims=1)
    z, ildj = B.inverse_and_log_det(norm, x)
    np.testing.assert_array_equal(norm.log_scale.numpy(), 0.0)
    np.testing.assert_array_equal(norm.loc.numpy(), x.numpy()[0])
    np.testing.assert_array_equal(z.numpy(), 0.0)
    np.testing.assert_array_equal(ildj.numpy(), 0.0)
    np.testing.assert_array_equal(norm.forward(z).numpy(), x)


@pytest.mark.parametrize("value", [0.0, 200.3, 117.77])
def test_actnorm_constant_channel_is_left_unscaled(value):
    """A channel constant over a 4x64x64 batch: its scale stays exactly 1 and
    its output exactly 0. (Before the shifted statistics in ActNorm.initialize,
    float32 rounding of the mean of 200.3 left a spurious std of ~0.03, which
    the layer scaled up to unit variance: a 30x amplification of rounding
    noise and a log-det off by ~3.5 nats per position.)"""
    rng = np.random.default_rng(1)
    x = _pixels(rng, (64, 64, 2))
    x[..., 1] = value
    norm = B.ActNorm(2)
    z, ildj = B.inverse_and_log_det(norm, tf.constant(x))
    assert norm.log_scale.numpy()[1] == 0.0
    assert norm.loc.numpy()[1] == np.float32(value)
    np.testing.assert_array_equal(z.numpy()[..., 1], 0.0)
    # the other channel is standardised (float32 stats over 16k values)
    assert abs(z.numpy()[..., 0].std() - 1.0) < 1e-4
    np.testing.assert_allclose(ildj.numpy(), -64 * 64 * norm.log_scale.numpy()[0],
                               rtol=1e-6)
    np.testing.assert_array_equal(norm.forward(z).numpy()[..., 1], np.float32(value))


def test_actnorm_restored_from_a_checkpoint_is_not_reinitialised(tmp_path):
    rng = np.random.default_rng(2)
    first = _pixels(rng, (4, 4, 3))
    other = 5.0 * _pixels(rng, (4, 4, 3)) + 40.0  # different mean and spread
    trained = B.ActNorm(3, name="an")
    trained.inverse(first)
    trained.log_scale.assign_add([0.5, -0.25, 0.125])  # as if trained further
    path = tf.train.Checkpoint(norm=trained).write(str(tmp_path / "ckpt"))

    # Control: a fresh layer fed `other` does initialise from it.
    fresh = B.ActNorm(3, name="an")
    fresh.inverse(other)
    assert not np.allclose(fresh.log_scale.numpy(), trained.log_scale.numpy())

    restored = B.ActNorm(3, name="an")
    tf.train.Checkpoint(norm=restored).read(path).assert_consumed()
    assert bool(restored.initialized.numpy())
    z_eager = restored.inverse(other)
    z_traced = tf.function(restored.inverse)(other)  # a graph never inits it
    for v_restored, v_saved in [(restored.loc, trained.loc),
                                (restored.log_scale, trained.log_scale)]:
        np.testing.assert_array_equal(v_restored.numpy(), v_saved.numpy())
    np.testing.assert_array_equal(z_eager.numpy(), trained.inverse(other).numpy())
    np.testing.assert_array_equal(z_traced.numpy(), z_eager.numpy())


def test_restored_glow_keeps_its_actnorm_statistics(tmp_path):
    """The same at model level: log_prob of other data after a restore."""
    rng = np.random.default_rng(3)
    dist = _tiny_glow()
    tfp_flows.initialize(dist, _pixels(rng, (8, 8, 1), batch=8))
    path = tf.train.Checkpoint(dist=dist).write(str(tmp_path / "ckpt"))
    clone = _tiny_glow()
    tf.train.Checkpoint(dist=clone).read(path).assert_consumed()
    other = 0.25 * _pixels(rng, (8, 8, 1), batch=8)
    np.testing.assert_array_equal(clone.log_prob(other).numpy(),
                                  dist.log_prob(other).numpy())
    for a, b in zip(clone.variables, dist.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


# ---------------------------------------------------------------------------
# LU 1x1 convolution after large updates
# ---------------------------------------------------------------------------
def _perturbed_lu_conv(c, std, seed):
    conv = B.InvertibleConv1x1(c, lu=True, seed=seed)
    rng = np.random.default_rng(seed)
    # Noise on every entry, also the masked-out triangles of lower/upper.
    for name in ("lower", "upper", "log_abs_s"):
        v = conv._vars[name]  # pylint: disable=protected-access
        v.assign_add(std[name] * rng.standard_normal(v.shape).astype(np.float32))
    return conv, rng


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lu_conv_log_det_after_huge_updates(seed):
    """N(0, 10^2) noise on L, U and log|s| (thousands of Adam steps' worth):
    W = P L U is still assembled from a unit lower-triangular L and an upper
    U with non-zero diagonal sign*exp(log|s|), so it stays nonsingular, and
    the log-det is exactly P * sum(log|s|), finite, whatever W's conditioning."""
    c = 8
    conv, rng = _perturbed_lu_conv(c, {"lower": 10.0, "upper": 10.0,
                                       "log_abs_s": 10.0}, seed)
    v = {k: t.numpy().astype(np.float64) for k, t in conv._vars.items()}  # pylint: disable=protected-access
    lower = np.tril(v["lower"], -1) + np.eye(c)
    upper = np.triu(v["upper"], 1) + np.diag(v["sign_s"] * np.exp(v["log_abs_s"]))
    w = v["permutation"] @ lower @ upper
    # float32 assembly of entries up to ~1e15: relative rounding.
    np.testing.assert_allclose(conv.weight().numpy(), w, rtol=1e-5,
                               atol=1e-5 * np.abs(w).max())
    assert np.all(np.diag(upper) != 0)
    x = tf.constant(rng.standard_normal((2, 3, 3, c)), tf.float32)
    _, ildj = B.inverse_and_log_det(conv, x)
    _, fldj = B.forward_and_log_det(conv, x)
    expected = 9 * v["log_abs_s"].sum()  # 3x3 positions
    assert np.isfinite(ildj.numpy()).all() and np.isfinite(fldj.numpy()).all()
    # float32 sum of 8 values of size ~10: a few ulps.
    np.testing.assert_allclose(ildj.numpy(), expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(fldj.numpy(), -expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lu_conv_round_trip_after_large_updates(seed):
    """N(0, 1) noise on every parameter (far beyond an Adam step of 1e-3):
    forward(inverse(x)) == x within the float32 bound of solving with W,
    10 * cond(W) * eps * max|x|, and the log-det matches slogdet of the
    assembled W (float64)."""
    c = 8
    conv, rng = _perturbed_lu_conv(c, {"lower": 1.0, "upper": 1.0,
                                       "log_abs_s": 1.0}, seed)
    w = conv.weight().numpy().astype(np.float64)
    cond = np.linalg.cond(w)
    assert cond > 100  # the update really moved W away from a rotation
    x = tf.constant(rng.standard_normal((4, 3, 3, c)), tf.float32)
    z, ildj = B.inverse_and_log_det(conv, x)
    x_back, fldj = B.forward_and_log_det(conv, z)
    err = np.abs(x_back.numpy() - x.numpy()).max()
    assert err <= 10 * cond * EPS32 * np.abs(x.numpy()).max(), (err, cond)
    sign, logdet = np.linalg.slogdet(w)
    assert sign != 0
    # slogdet of the float32-rounded W vs the exact sum(log|s|): the rounding
    # of W's entries changes log|det| by about cond * eps per position.
    np.testing.assert_allclose(ildj.numpy(), 9 * logdet, rtol=0,
                               atol=9 * 10 * cond * EPS32 + 1e-4)
    np.testing.assert_allclose(fldj.numpy(), -ildj.numpy(), rtol=1e-6)


# ---------------------------------------------------------------------------
# Random shapes for the bijectors tests/test_bijector_hypothesis.py does not
# reshape: PixelRescale, PixelLogit, and FlowChain / FactorOut (through Glow).
# ---------------------------------------------------------------------------
_SETTINGS = settings(max_examples=6, deadline=None, derandomize=True,
                     suppress_health_check=[HealthCheck.too_slow])
_batch_shapes = st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple)
_image_shapes = st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 4))


@pytest.mark.parametrize("make", [
    lambda: B.PixelRescale(256, shift=-0.5, dtype=tf.float64),
    lambda: B.PixelLogit(256, alpha=0.05, dtype=tf.float64),
], ids=["pixel_rescale", "pixel_logit"])
def test_pixel_bijectors_random_shapes(make):
    bijector = make()

    @_SETTINGS
    @given(shape=_image_shapes, batch=_batch_shapes, seed=st.integers(0, 2**16))
    def check(shape, batch, seed):
        rng = np.random.default_rng(seed)
        x = tf.constant(rng.integers(0, 256, batch + shape) + rng.random(batch + shape))
        z, ildj = B.inverse_and_log_det(bijector, x)
        assert tuple(ildj.shape) == batch and tuple(z.shape) == batch + shape
        x_back, fldj = B.forward_and_log_det(bijector, z)
        # float64: exact up to rounding (the logit near the ends of [0, 256)
        # loses a few digits).
        np.testing.assert_allclose(x_back.numpy(), x.numpy(), rtol=1e-9, atol=1e-8)
        np.testing.assert_allclose(fldj.numpy(), -ildj.numpy(), rtol=1e-9, atol=1e-8)
        assert np.isfinite(ildj.numpy()).all()

    check()


def test_glow_random_shapes_and_batch_dims():
    """Two levels (FlowChain, FactorOut, split priors) over random image
    shapes and 0-2 batch dimensions: log_prob has the batch shape and
    encode/decode round-trips."""
    built = {}

    @settings(max_examples=5, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(hw=st.tuples(st.integers(1, 3), st.integers(1, 3)),
           c=st.integers(1, 3), batch=_batch_shapes, seed=st.integers(0, 2**16))
    def check(hw, c, batch, seed):
        shape = (4 * hw[0], 4 * hw[1], c)
        rng = np.random.default_rng(seed)
        if shape not in built:
            dist = models.glow(shape, num_levels=2, num_steps=1, hidden_channels=4,
                               seed=0, dtype=tf.float64)
            tfp_flows.initialize(dist, _pixels(rng, shape).astype(np.float64))
            for v in dist.trainable_variables:  # off the identity
                v.assign_add(0.05 * rng.standard_normal(v.shape))
            built[shape] = dist
        dist = built[shape]
        x = rng.integers(0, 256, batch + shape) + rng.random(batch + shape)
        log_p = dist.log_prob(x).numpy()
        assert log_p.shape == batch and np.isfinite(log_p).all()
        latents = tfp_flows.encode(dist, x)
        assert tuple(latents.flat.shape) == batch + shape
        # float64 round trip through ~10 bijectors: rounding only
        np.testing.assert_allclose(tfp_flows.decode(dist, latents).numpy(), x,
                                   rtol=0, atol=1e-8)

    check()


# ---------------------------------------------------------------------------
# The bad-input catalogue: each case raises a ValueError (TypeError where the
# type itself is wrong) whose message names the problem.
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def glow():
    """A tiny data-initialised float32 Glow over 8x8x1 pixels, 256 bins."""
    dist = _tiny_glow()
    tfp_flows.initialize(dist, _pixels(np.random.default_rng(4), (8, 8, 1)))
    return dist


@pytest.fixture(scope="module")
def flow_model(glow):
    model = FlowModel(glow)
    model.compile(optimizer="adam")
    return model


def _images(value=0.0, shape=(2, 8, 8, 1), dtype=np.float32):
    x = np.zeros(shape, dtype)
    if shape[0]:
        x.flat[5] = value
    return x


def _dataset(x):
    return tf.data.Dataset.from_tensor_slices(x).batch(4)


CATALOGUE = {
    # -- wrong shapes --------------------------------------------------------
    "shape_log_prob_channels": (
        lambda g, m: g.log_prob(np.zeros((2, 8, 8, 3), np.float32)),
        ValueError, r"expects data of event shape \(8, 8, 1\); got an input of "
        r"shape \(2, 8, 8, 3\)"),
    "shape_bits_per_dim_rank": (
        lambda g, m: tfp_flows.bits_per_dim(g, np.zeros((8, 8))),
        ValueError, r"shape \[batch\.\.\., 8, 8, 1\]"),
    "shape_fit_array": (
        lambda g, m: m.fit(np.zeros((4, 4, 4, 1)), verbose=0),
        ValueError, r"shape \[batch\.\.\., 8, 8, 1\]; got \(4, 4, 4, 1\)"),
    "shape_fit_unbatched_dataset": (
        lambda g, m: m.fit(tf.data.Dataset.from_tensor_slices(np.zeros((4, 8, 8, 1))),
                           verbose=0),
        ValueError, r"did you forget \.batch\(\)"),
    "shape_decode_latent": (
        lambda g, m: tfp_flows.decode(g, np.zeros((2, 4, 4, 1), np.float32)),
        ValueError, r"latents must have shape \[batch\.\.\., 8, 8, 1\]"),
    "shape_actnorm_channels": (
        lambda g, m: B.ActNorm(3).inverse(tf.zeros([2, 4, 4, 2])),
        ValueError, "input has 2 channels"),
    "shape_conv1x1_channels": (
        lambda g, m: B.InvertibleConv1x1(4).inverse(tf.zeros([2, 3, 3, 3])),
        ValueError, "input has 3 channels"),
    # -- wrong dtypes --------------------------------------------------------
    "dtype_float64_tensor_into_float32_model": (
        lambda g, m: g.log_prob(tf.zeros([2, 8, 8, 1], tf.float64)),
        ValueError, "requested dtype float32 for Tensor with dtype float64"),
    "dtype_string_tensor_log_prob": (
        lambda g, m: g.log_prob(tf.fill([2, 8, 8, 1], "a")),
        ValueError, "requested dtype float32 for Tensor with dtype string"),
    "dtype_string_array_bits_per_dim": (
        lambda g, m: tfp_flows.bits_per_dim(g, np.full((2, 8, 8, 1), "7")),
        ValueError, "images must be numeric, got dtype <U1"),
    "dtype_bool_array_fit": (
        lambda g, m: m.fit(np.zeros((4, 8, 8, 1), bool), verbose=0),
        ValueError, "images must be numeric, got dtype bool"),
    # -- NaN / Inf, pixels out of range ------------------------------------------
    "nan_bits_per_dim": (
        lambda g, m: tfp_flows.bits_per_dim(g, _images(np.nan)),
        ValueError, "images contain 1 NaN or Inf values"),
    "inf_fit": (
        lambda g, m: m.fit(_images(np.inf, (4, 8, 8, 1)), verbose=0),
        ValueError, "images contain 1 NaN or Inf values"),
    "nan_fit_dataset_first_batch": (
        lambda g, m: _fresh_flow_model().fit(_dataset(_images(np.nan, (4, 8, 8, 1))),
                                             verbose=0),
        ValueError, "images contain 1 NaN or Inf values"),
    "nan_encode": (
        lambda g, m: tfp_flows.encode(g, _images(np.nan)),
        ValueError, "images contain 1 NaN or Inf values"),
    "inf_decode": (
        lambda g, m: tfp_flows.decode(g, _images(-np.inf)),
        ValueError, "latents contain 1 NaN or Inf values"),
    "nan_actnorm_initialisation": (
        lambda g, m: tfp_flows.initialize(_tiny_glow(), _images(np.nan)),
        ValueError, "initialisation batch contains NaN or Inf"),
    "range_pixel_256": (
        lambda g, m: tfp_flows.bits_per_dim(g, _images(256)),
        ValueError, r"must lie in \[0, 255\].*max 256"),
    "range_pixel_negative_fit": (
        lambda g, m: m.fit(_images(-3, (4, 8, 8, 1)), verbose=0),
        ValueError, r"must lie in \[0, 255\].*min -3"),
    "range_pixel_not_integer": (
        lambda g, m: m.evaluate(_images(2.5, (4, 8, 8, 1)), verbose=0),
        ValueError, "integer-valued"),
    # -- empty batch ---------------------------------------------------------
    "empty_bits_per_dim": (
        lambda g, m: tfp_flows.bits_per_dim(g, _images(shape=(0, 8, 8, 1))),
        ValueError, r"empty batch of shape \(0, 8, 8, 1\)"),
    "empty_fit_array": (
        lambda g, m: m.fit(_images(shape=(0, 8, 8, 1)), verbose=0),
        ValueError, "empty batch"),
    "empty_evaluate_array": (
        lambda g, m: m.evaluate(_images(shape=(0, 8, 8, 1)), verbose=0),
        ValueError, "empty batch"),
    "empty_fit_dataset_uninitialised": (
        lambda g, m: _fresh_flow_model().fit(_dataset(_images(shape=(0, 8, 8, 1))),
                                             verbose=0),
        ValueError, "the training dataset is empty"),
    "empty_fit_dataset_initialised": (
        lambda g, m: m.fit(_dataset(_images(shape=(0, 8, 8, 1))), verbose=0),
        ValueError, "the training dataset is empty"),
    "empty_log_prob_uninitialised": (
        lambda g, m: _tiny_glow().log_prob(_images(shape=(0, 8, 8, 1))),
        ValueError, "cannot initialise from an empty batch"),
    "empty_initialize": (
        lambda g, m: tfp_flows.initialize(_tiny_glow(), _images(shape=(0, 8, 8, 1))),
        ValueError, "cannot initialise from an empty batch"),
    # -- masks ---------------------------------------------------------------
    "mask_event_shape_mismatch": (
        lambda g, m: B.AffineCoupling(masks.checkerboard([4, 4, 2]), hidden=4)
        .inverse(tf.zeros([1, 4, 4, 3])),
        ValueError, r"event shape \(4, 4, 3\), expected \(4, 4, 2\)"),
    "mask_all_ones": (
        lambda g, m: B.AdditiveCoupling(np.ones([4])),
        ValueError, "both 0s"),
    "mask_not_binary": (
        lambda g, m: B.AdditiveCoupling(np.array([0, 1, 2, 1])),
        ValueError, "only 0 and 1"),
    # -- spatial sizes / levels ------------------------------------------------
    "divisible_squeeze_odd_size": (
        lambda g, m: B.Squeeze(2).forward(tf.zeros([1, 5, 4, 1])),
        ValueError, "5x4 is not divisible by the squeeze factor 2"),
    "divisible_glow_12x12_three_levels": (
        lambda g, m: models.glow((12, 12, 1), num_levels=3, num_steps=1,
                                 hidden_channels=4),
        ValueError, r"12x12 is not divisible by 8"),
    "divisible_real_nvp_6x8": (
        lambda g, m: models.real_nvp((6, 8, 1), num_scales=3, hidden_channels=4),
        ValueError, r"6x8.*divisible by 4"),
    "levels_glow_too_many_for_8x8": (
        lambda g, m: models.glow((8, 8, 1), num_levels=4, num_steps=1,
                                 hidden_channels=4),
        ValueError, r"8x8 is not divisible by 16, which 4 Glow levels needs"),
    "levels_real_nvp_too_many_scales_for_8x8": (
        lambda g, m: models.real_nvp((8, 8, 1), num_scales=4, hidden_channels=4),
        ValueError, r"4 RealNVP scales are too many for a 8x8 image: the last "
        r"scale would be 1x1"),
    "dtype_int_model": (
        lambda g, m: models.glow((8, 8, 1), num_levels=1, num_steps=1,
                                 hidden_channels=4, dtype=tf.int32),
        ValueError, "dtype must be a float dtype .* got int32"),
    "levels_glow_zero": (
        lambda g, m: models.glow((8, 8, 1), num_levels=0),
        ValueError, "num_levels and num_steps must be >= 1"),
}


def _fresh_flow_model():
    model = FlowModel(_tiny_glow())
    model.compile(optimizer="adam")
    return model


@pytest.mark.parametrize("case", sorted(CATALOGUE))
def test_bad_input_catalogue(glow, flow_model, case):
    call, error, message = CATALOGUE[case]
    before = [v.numpy().copy() for v in glow.variables]
    with pytest.raises(error, match=message):
        call(glow, flow_model)
    # a refused input never touches the model (no training, no ActNorm init)
    for v, b in zip(glow.variables, before):
        np.testing.assert_array_equal(v.numpy(), b)


def test_log_prob_of_an_empty_batch_of_an_initialised_model_is_empty(glow):
    """Policy: scoring functions that average (bits_per_dim, fit, evaluate)
    refuse an empty batch, above; the per-example maps of an initialised
    model (log_prob, encode, decode) return an empty batch, like TFP."""
    empty = _images(shape=(0, 8, 8, 1))
    assert glow.log_prob(empty).shape == (0,)
    assert tfp_flows.encode(glow, empty).flat.shape == (0, 8, 8, 1)
    assert tfp_flows.decode(glow, empty).shape == (0, 8, 8, 1)


# ---------------------------------------------------------------------------
# validate_args: run-time checks of what reaches log_prob and forward
# ---------------------------------------------------------------------------
VALIDATED_BUILDERS = {
    "glow": lambda v: models.glow([8, 8, 1], num_levels=2, num_steps=1,
                                  hidden_channels=8, n_bits=5, seed=0, validate_args=v),
    "real_nvp": lambda v: models.real_nvp([8, 8, 1], 2, hidden_channels=8, num_blocks=1,
                                          n_bits=5, validate_args=v),
    "nice": lambda v: models.nice(64, num_couplings=2, hidden_units=16, n_bits=5,
                                  validate_args=v),
    "glow_memory_efficient": lambda v: tfp_flows.memory_efficient(
        models.glow([8, 8, 1], num_levels=2, num_steps=1, hidden_channels=8,
                    n_bits=5, seed=0, validate_args=v)),
}


def _validated(name):
    dist = VALIDATED_BUILDERS[name](True)
    x = np.random.default_rng(0).integers(0, 32, (4,) + tuple(dist.event_shape))
    x = x.astype(np.float32)
    tfp_flows.initialize(dist, x)
    return dist, x


@pytest.mark.parametrize("name, mode", [(name, "eager") for name in sorted(VALIDATED_BUILDERS)]
                         + [("glow", "graph"), ("glow_memory_efficient", "graph")])
@pytest.mark.parametrize("value, message", [
    (np.nan, "the pixels contain NaN or Inf"),
    (np.inf, "the pixels contain NaN or Inf"),
    (-1.0, "pixels must be >= 0"),
    (32.5, "pixels must be <= num_bins = 32"),
])
def test_validate_args_refuses_bad_pixels_in_log_prob(name, mode, value, message):
    """With validate_args=True, log_prob of a NaN, an Inf, a negative pixel or
    one above num_bins raises an error naming the problem (without it, TFP's
    convention, such input gives NaN or a meaningless density)."""
    dist, x = _validated(name)
    bad = x.copy()
    bad[1].flat[5] = value
    log_prob = dist.log_prob if mode == "eager" else tf.function(dist.log_prob)
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        log_prob(tf.constant(bad))


@pytest.mark.parametrize("name", sorted(VALIDATED_BUILDERS))
def test_validate_args_refuses_non_finite_latents_in_forward(name):
    dist, _ = _validated(name)
    z = np.zeros((2,) + tuple(dist.distribution.event_shape), np.float32)
    z[0].flat[3] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="the latents contain NaN or Inf"):
        dist.bijector.forward(tf.constant(z))


@pytest.mark.parametrize("name", sorted(VALIDATED_BUILDERS))
def test_validate_args_passes_good_input_unchanged(name):
    """The checks change no value: a validated model and one without checks
    sharing its variables give the same densities, samples and gradients,
    in eager and graph mode; pixels at both ends of [0, num_bins] pass."""
    dist, x = _validated(name)
    x[0].flat[0], x[0].flat[1] = 0.0, 32.0   # the closed range's ends
    plain = tfp_flows.memory_efficient(dist, dist.bijector.memory_efficient)
    plain = type(plain)(plain.distribution, _without_checks(plain.bijector),
                        name=plain.name)
    assert not plain.bijector.validate_args
    def log_prob(d):
        return d.log_prob(x)

    for fn in (log_prob, tf.function(log_prob)):
        np.testing.assert_array_equal(fn(dist).numpy(), fn(plain).numpy())
    # a stateless seed: both draw the same base noise
    np.testing.assert_array_equal(dist.sample(3, seed=(4, 5)).numpy(),
                                  plain.sample(3, seed=(4, 5)).numpy())
    grads = []
    for d in (dist, plain):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(d.log_prob(tf.constant(x)))
        grads.append(tape.gradient(loss, d.trainable_variables))
    for a, b in zip(*grads):
        np.testing.assert_array_equal(tf.convert_to_tensor(a).numpy(),
                                      tf.convert_to_tensor(b).numpy())


def _without_checks(chain):
    """The same chain (same children, hence variables) without checks."""
    new = type(chain)(chain.bijectors, data_event_shape=chain.data_event_shape,
                      validate_args=False, name=chain.name)
    new.description = chain.description
    return new


def test_validate_args_of_a_vector_flow_refuses_nan_data():
    dist = models.vector_flow(3, num_couplings=2, hidden_units=8, validate_args=True)
    good = np.array([[0.5, -1.0, 2.0]], np.float32)
    assert np.isfinite(dist.log_prob(good).numpy()).all()
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="'vector_flow_chain': the data contain NaN or Inf"):
        dist.log_prob(np.array([[0.5, np.nan, 2.0]], np.float32))


@pytest.mark.parametrize("make", [lambda v: B.PixelRescale(32, validate_args=v),
                                  lambda v: B.PixelLogit(32, validate_args=v)])
def test_pixel_maps_validate_their_input_on_their_own(make):
    """A pixel map used outside the builders checks its own input."""
    checked, plain = make(True), make(False)
    x = np.array([[[[0.0], [31.5]]]], np.float32)
    np.testing.assert_array_equal(checked.inverse(x).numpy(), plain.inverse(x).numpy())
    for value, message in [(np.nan, "pixels contain NaN"), (-0.5, ">= 0"),
                           (40.0, "<= num_bins = 32")]:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            checked.inverse(np.full((1, 1, 2, 1), value, np.float32))


def test_validate_args_through_from_config_and_the_default():
    """from_config rebuilds with checks only when asked (the config does not
    record the flag, a run-time choice); the builders' default is TFP's,
    no checks."""
    dist, _ = _validated("glow")
    config = dist.bijector.description.config
    assert "validate_args" not in config
    assert models.from_config(config, validate_args=True).bijector.validate_args
    rebuilt = models.from_config(config)
    assert not rebuilt.bijector.validate_args and not rebuilt.validate_args
    assert not rebuilt.bijector.bijectors[0].validate_args
