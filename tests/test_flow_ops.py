"""tfp_flows.flow_ops: bits/dim, sampling, encode/decode, interpolation,
initialisation, and their input validation."""

import numpy as np
import pytest
import tensorflow as tf

import tfp_flows
from tests.model_helpers import MODEL_NAMES, pixels, ready, tiny
from tfp_flows import bijectors as B

SHAPE = (8, 8, 1)
# float32 round trips through a tiny perturbed flow, relative to the pixel
# range (see test_models.RTOL_ROUND_TRIP).
RTOL = 1e-4


@pytest.fixture(scope="module")
def flows():
    """One perturbed tiny model of each kind over 8x8x1 images."""
    rng = np.random.default_rng(100)
    return {name: ready(tiny(name, SHAPE), rng) for name in MODEL_NAMES}


def _close(a, b, scale=256.0):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0,
                               atol=RTOL * scale)


# ---------------------------------------------------------------------------
# bits_per_dim
# ---------------------------------------------------------------------------
def test_bits_per_dim_batch_shapes_and_dtypes(flows):
    dist = flows["glow"]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2, 3) + SHAPE)
    assert tfp_flows.bits_per_dim(dist, images).shape == (2, 3)
    for dtype in (np.uint8, np.int32, np.int64, np.float32, np.float64):
        out = tfp_flows.bits_per_dim(dist, images[0].astype(dtype))
        assert out.shape == (3,) and out.dtype == tf.float32
    out = tfp_flows.bits_per_dim(dist, tf.constant(images[0], tf.int32))
    assert np.all(np.isfinite(out))


def test_bits_per_dim_adds_noise_within_one_bin(flows):
    """Each call draws fresh U[0, 1) noise (results differ between draws) and
    the noise stays inside the pixel's bin: the dequantised bits are close to
    the bits at the bin centres, far closer than a shift by a whole bin."""
    dist = flows["nice"]
    images = np.random.default_rng(1).integers(1, 255, size=(2,) + SHAPE)
    draws = np.stack([tfp_flows.bits_per_dim(dist, images) for _ in range(3)])
    assert not np.array_equal(draws[0], draws[1])
    centre = tfp_flows.bits_per_dim(dist, images + 0.5, dequantize=False)
    shifted = tfp_flows.bits_per_dim(dist, images + 5.0, dequantize=False)
    within_bin = np.max(np.abs(draws - centre))
    assert within_bin < np.max(np.abs(shifted - centre))


@pytest.mark.parametrize("bad, message", [
    (256, r"\[0, 255\].*max 256"),
    (-1, r"\[0, 255\].*min -1"),
    (np.nan, "NaN"),
    (np.inf, "NaN or Inf"),
    (3.5, "integer-valued"),
])
def test_bits_per_dim_rejects_bad_pixels(flows, bad, message):
    images = np.zeros((2,) + SHAPE, np.float64)
    images[1, 3, 4, 0] = bad
    with pytest.raises(ValueError, match=message):
        tfp_flows.bits_per_dim(flows["glow"], images)


def test_bits_per_dim_rejects_bad_shapes_and_types(flows):
    dist = flows["real_nvp"]
    with pytest.raises(ValueError, match=r"shape \[batch\.\.\., 8, 8, 1\]"):
        tfp_flows.bits_per_dim(dist, np.zeros((2, 8, 8, 3)))
    with pytest.raises(ValueError, match="shape"):
        tfp_flows.bits_per_dim(dist, np.zeros((8, 8)))
    with pytest.raises(ValueError, match="empty"):
        tfp_flows.bits_per_dim(dist, np.zeros((0,) + SHAPE))
    with pytest.raises(ValueError, match="numeric"):
        tfp_flows.bits_per_dim(dist, np.zeros((2,) + SHAPE, bool))


def test_bits_per_dim_range_follows_n_bits():
    """A 5-bit model (Glow's CelebA setting) takes pixels in [0, 32)."""
    dist = tiny("glow", SHAPE, n_bits=5)
    assert dist.bijector.description.num_bins == 32
    ok = np.full((1,) + SHAPE, 31)
    assert np.isfinite(tfp_flows.bits_per_dim(dist, ok)).all()
    with pytest.raises(ValueError, match=r"\[0, 31\].*max 32"):
        tfp_flows.bits_per_dim(dist, ok + 1)


# ---------------------------------------------------------------------------
# sample / encode / decode
# ---------------------------------------------------------------------------
def test_sample_validates_temperature(flows):
    with pytest.raises(ValueError, match="temperature"):
        tfp_flows.sample(flows["glow"], 2, temperature=-0.5)


@pytest.mark.parametrize("name, level_shapes", [
    ("nice", [(64,)]),
    ("real_nvp", [(4, 4, 2), (4, 4, 2)]),
    ("glow", [(4, 4, 2), (2, 2, 8)]),
])
def test_encode_levels_and_decode_from_levels(flows, name, level_shapes):
    dist = flows[name]
    x = pixels(SHAPE, np.random.default_rng(2), batch=3)
    latents = tfp_flows.encode(dist, x)
    assert [tuple(z.shape[1:]) for z in latents.levels] == level_shapes
    # the levels partition the flat latent
    assert sum(int(np.prod(s)) for s in level_shapes) == 64
    assert np.isclose(sum(float(tf.reduce_sum(z ** 2)) for z in latents.levels),
                      float(tf.reduce_sum(latents.flat ** 2)), rtol=1e-6)
    from_levels = tfp_flows.decode(dist, [z.numpy() for z in latents.levels])
    _close(from_levels, x)
    _close(tfp_flows.decode(dist, latents), x)
    _close(tfp_flows.decode(dist, latents.flat), x)


def test_encode_decode_with_two_batch_dims(flows):
    dist = flows["glow"]
    x = pixels(SHAPE, np.random.default_rng(3), batch=6).reshape((2, 3) + SHAPE)
    latents = tfp_flows.encode(dist, x)
    assert tuple(latents.flat.shape) == (2, 3) + SHAPE
    assert tuple(latents.levels[1].shape) == (2, 3, 2, 2, 8)
    _close(tfp_flows.decode(dist, latents.levels), x)


# ---------------------------------------------------------------------------
# interpolate
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["linear", "slerp"])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_interpolate_endpoints_and_shapes(flows, name, method):
    dist = flows[name]
    rng = np.random.default_rng(4)
    x0, x1 = pixels(SHAPE, rng, batch=2)
    path = tfp_flows.interpolate(dist, x0, x1, steps=5, method=method)
    assert tuple(path.shape) == (5,) + SHAPE
    _close(path[0], x0)
    _close(path[-1], x1)
    batch = tfp_flows.interpolate(dist, pixels(SHAPE, rng, 3),
                                  pixels(SHAPE, rng, 3), steps=4, method=method)
    assert tuple(batch.shape) == (4, 3) + SHAPE


def test_interpolate_is_linear_or_spherical_in_latent_space(flows):
    dist = flows["glow"]
    rng = np.random.default_rng(5)
    x0, x1 = pixels(SHAPE, rng, batch=2)
    z0, z1 = (tfp_flows.encode(dist, x).flat.numpy() for x in (x0, x1))
    lin = tfp_flows.interpolate(dist, x0, x1, steps=3)
    np.testing.assert_allclose(tfp_flows.encode(dist, lin[1]).flat, (z0 + z1) / 2,
                               rtol=0, atol=1e-3)  # float32 round trip
    sph = tfp_flows.interpolate(dist, x0, x1, steps=3, method="slerp")
    mid = tfp_flows.encode(dist, sph[1]).flat.numpy()
    omega = np.arccos(np.sum(z0 * z1) / np.linalg.norm(z0) / np.linalg.norm(z1))
    expected = np.sin(omega / 2) / np.sin(omega) * (z0 + z1)
    np.testing.assert_allclose(mid, expected, rtol=0, atol=1e-3)


def test_interpolate_class_conditional_and_bad_arguments():
    rng = np.random.default_rng(6)
    y = np.array([0, 2])
    kw = {"top_prior": {"labels": y}}
    dist = ready(tiny("glow", SHAPE, num_classes=3), rng, bijector_kwargs=kw,
                 batch=2)
    x0, x1 = pixels(SHAPE, rng, 2), pixels(SHAPE, rng, 2)
    path = tfp_flows.interpolate(dist, x0, x1, steps=3, bijector_kwargs=kw)
    assert tuple(path.shape) == (3, 2) + SHAPE
    _close(path[0], x0)
    _close(path[-1], x1)
    one = tfp_flows.interpolate(dist, x0[0], x1[0], steps=3,
                                bijector_kwargs={"top_prior": {"labels": 1}})
    assert tuple(one.shape) == (3,) + SHAPE
    with pytest.raises(ValueError, match="steps"):
        tfp_flows.interpolate(dist, x0, x1, steps=1, bijector_kwargs=kw)
    with pytest.raises(ValueError, match="method"):
        tfp_flows.interpolate(dist, x0, x1, method="cubic", bijector_kwargs=kw)
    with pytest.raises(ValueError, match="same shape"):
        tfp_flows.interpolate(dist, x0, x1[:1], bijector_kwargs=kw)


# ---------------------------------------------------------------------------
# initialize
# ---------------------------------------------------------------------------
def test_initialize_standardises_every_actnorm_input():
    rng = np.random.default_rng(7)
    dist = tiny("glow", SHAPE)
    x = pixels(SHAPE, rng, batch=16)
    assert tfp_flows.initialize(dist, x) == 4  # L * K ActNorms
    norms = [b for b in B.flow_bijectors(dist.bijector) if isinstance(b, B.ActNorm)]
    assert all(bool(b.initialized) for b in norms)
    # the very first ActNorm sees the rescaled, squeezed pixels
    first = dist.bijector.bijectors[0].inverse(x)
    first = tf.nn.space_to_depth(first, 2)
    out = norms_by_name(norms)["level1_step0_actnorm"].inverse(first).numpy()
    # data-dependent init: zero mean, unit variance per channel on the batch
    # (float32 moments of 256 values: ~1e-6)
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 1, 2)), 1, atol=1e-4)
    # initialising again, from other data, redoes it
    loc = norms[0].loc.numpy().copy()
    tfp_flows.initialize(dist, x * 0.5)
    assert not np.allclose(norms[0].loc.numpy(), loc)


def norms_by_name(norms):
    return {b.name: b for b in norms}


def test_initialize_refuses_graph_mode():
    dist = tiny("glow", SHAPE)
    x = pixels(SHAPE, np.random.default_rng(8))

    @tf.function
    def init():
        tfp_flows.initialize(dist, x)

    with pytest.raises(RuntimeError, match="eagerly"):
        init()
