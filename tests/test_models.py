"""The model builders (issue 3): shapes, finiteness, exact round trips,
bits/dim accounting, temperature, class conditioning and bad input."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.distributions import transformed_distribution

import tfp_flows
from tests.model_helpers import MODEL_NAMES, SHAPES, perturb, pixels, ready, tiny
from tfp_flows import bijectors as B
from tfp_flows import models

tfb, tfd = tfp.bijectors, tfp.distributions

# float32 round trips through a few dozen layers: each op rounds at ~6e-8
# relative; the acceptance bound is 1e-4 relative to the data scale.
RTOL_ROUND_TRIP = 1e-4


def _rel_err(a, b):
    """max |a - b| / max |b|: relative error at the scale of the data."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# ---------------------------------------------------------------------------
# shapes and finiteness, all three models on both image shapes
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES, ids=["8x8x1", "32x32x3"])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_tiny_models_sample_log_prob_and_round_trip(name, shape):
    rng = np.random.default_rng(0)
    dist = ready(tiny(name, shape), rng)
    # TFP returns its non-CompositeTensor variant for Keras-backed bijectors
    # (as for tfb.Glow); TransformedDistribution subclasses it.
    assert isinstance(dist, transformed_distribution._TransformedDistribution)
    assert tuple(dist.event_shape) == shape
    assert dist.bijector.description.model == name

    # sample shapes, through the helper and the plain TFP API
    s = tfp_flows.sample(dist, 3, seed=(1, 2))
    assert tuple(s.shape) == (3,) + shape
    assert np.all(np.isfinite(s))
    assert tuple(dist.sample([2, 3], seed=(3, 4)).shape) == (2, 3) + shape

    # finite log_prob on data and on the model's own samples
    x = pixels(shape, rng, batch=3)
    lp = dist.log_prob(x)
    assert tuple(lp.shape) == (3,)
    assert np.all(np.isfinite(lp))
    assert np.all(np.isfinite(dist.log_prob(s)))
    bpd = tfp_flows.bits_per_dim(dist, np.floor(x).astype(np.int32), seed=1)
    assert tuple(bpd.shape) == (3,)
    assert np.all(np.isfinite(bpd)) and np.all(bpd > 0)

    # data -> latent -> data, flat and per level
    z = tfp_flows.encode(dist, x)
    latent_shape = tuple(dist.distribution.event_shape)  # [D] for NICE
    assert tuple(z.flat.shape) == (3,) + latent_shape
    assert _rel_err(tfp_flows.decode(dist, z), x) < RTOL_ROUND_TRIP
    assert _rel_err(tfp_flows.decode(dist, z.levels), x) < RTOL_ROUND_TRIP
    # latent -> data -> latent, from typical latents
    eps = rng.standard_normal((3,) + latent_shape).astype(np.float32)
    eps_back = tfp_flows.encode(dist, tfp_flows.decode(dist, eps)).flat
    assert _rel_err(eps_back, eps) < RTOL_ROUND_TRIP


@pytest.mark.parametrize("shape", SHAPES, ids=["8x8x1", "32x32x3"])
def test_glow_l3_k8_decode_encode_is_exact_in_float32(shape):
    """Acceptance item: Glow with L=3, K=8 round-trips to 1e-4 relative."""
    rng = np.random.default_rng(2)
    h, w, c = shape
    dist = ready(models.glow(shape, num_levels=3, num_steps=8,
                             hidden_channels=8, seed=3), rng)
    x = pixels(shape, rng, batch=2)
    latents = tfp_flows.encode(dist, x)
    assert [tuple(z.shape[1:]) for z in latents.levels] == [
        (h // 2, w // 2, 2 * c), (h // 4, w // 4, 4 * c), (h // 8, w // 8, 16 * c)]
    back = tfp_flows.decode(dist, latents)
    assert back.dtype == tf.float32
    assert _rel_err(back, x) < RTOL_ROUND_TRIP


# ---------------------------------------------------------------------------
# accounting sanity: uniform densities over pixel space score exactly n bits
# ---------------------------------------------------------------------------
def _uniform(low, high, shape):
    return tfd.Sample(tfd.Uniform(np.float32(low), np.float32(high)),
                      sample_shape=shape)


def _set_volume_preserving_cube_maps(dist, rng):
    """Every learned layer of a fresh Glow set to a map of the cube onto itself.

    ActNorm: identity (marked initialised). 1x1 convolutions: a random channel
    permutation (``W = P`` with ``L = U = 0``, ``s = 1``). Couplings and learned
    priors stay at their zero (identity) initialisation.
    """
    for b in B.flow_bijectors(dist.bijector):
        if isinstance(b, B.ActNorm):
            b.initialized.assign(True)
        if isinstance(b, B.InvertibleConv1x1):
            v = b._vars  # pylint: disable=protected-access
            c = b.num_channels
            v["permutation"].assign(np.eye(c)[rng.permutation(c)])
            v["lower"].assign(tf.zeros([c, c]))
            v["upper"].assign(tf.zeros([c, c]))
            v["log_abs_s"].assign(tf.zeros([c]))
            v["sign_s"].assign(tf.ones([c]))


@pytest.mark.parametrize("n_bits", [8, 5])
def test_uniform_glow_scores_exactly_n_bits(n_bits):
    """The whole Glow chain (preprocessing, squeezes, 2 levels of steps,
    split/top priors, unsqueezes) with its learned layers set to maps of the
    cube [-1/2, 1/2)^D onto itself, over a uniform base on that cube, is the
    uniform density on pixel space: every log-det but the preprocessing's
    must be exactly 0 and the preprocessing's -D log 2^n."""
    rng = np.random.default_rng(3)
    shape = (8, 8, 1)
    glow = models.glow(shape, num_levels=2, num_steps=2, hidden_channels=8,
                       n_bits=n_bits)
    _set_volume_preserving_cube_maps(glow, rng)
    dist = tfd.TransformedDistribution(_uniform(-0.5, 0.5, shape), glow.bijector)
    images = rng.integers(0, 2 ** n_bits, size=(16,) + shape)
    bpd = tfp_flows.bits_per_dim(dist, images, seed=4).numpy()
    # exact up to float32 rounding of a ~D log(2^n) = 355 nat sum
    np.testing.assert_allclose(bpd, n_bits, atol=1e-5)
    # and the latent really is the rescaled image, rearranged
    z = tfp_flows.encode(dist, images + 0.5).flat.numpy()
    np.testing.assert_allclose(np.sort(z.reshape(16, -1), 1),
                               np.sort((images + 0.5).reshape(16, -1) / 2 ** n_bits
                                       - 0.5, 1), atol=1e-6)


def test_uniform_nice_scores_exactly_8_bits():
    """A fresh NICE (rescale, flatten, additive couplings at zero, scaling at
    one; the paper's model, so no data-initialised ActNorm) over a uniform
    base on [0, 1)^D: exactly 8 bits/dim."""
    rng = np.random.default_rng(5)
    nice = models.nice((8, 8, 1), hidden_units=16, num_hidden_layers=1,
                       actnorm=False)
    dist = tfd.TransformedDistribution(_uniform(0.0, 1.0, [64]), nice.bijector)
    bpd = tfp_flows.bits_per_dim(dist, rng.integers(0, 256, size=(16, 8, 8, 1)))
    np.testing.assert_allclose(bpd, 8.0, atol=1e-5)  # float32 sum rounding


@pytest.mark.parametrize("bins", [256, 17])
def test_uniform_through_real_nvp_logit_preprocessing(bins):
    """RealNVP's own logit preprocessing layer, taken from a built model, over
    the push-forward of U(alpha, 1 - alpha) through the logit: uniform over
    [0, bins)^D, so exactly log2(bins) bits/dim. This checks the logit's
    log-determinant, which is far from constant."""
    rng = np.random.default_rng(6)
    model = models.real_nvp((8, 8, 1), hidden_channels=8, num_blocks=1,
                            num_bins=bins)
    pre = model.bijector.bijectors[0]
    assert isinstance(pre, B.PixelLogit)
    a = pre.alpha
    logit_of_uniform = tfd.TransformedDistribution(
        tfd.Uniform(np.float32(a), np.float32(1 - a)), tfb.Invert(tfb.Sigmoid()))
    base = tfd.Sample(logit_of_uniform, sample_shape=(8, 8, 1))
    chain = B.FlowChain([pre], data_event_shape=(8, 8, 1))
    chain.description = model.bijector.description
    dist = tfd.TransformedDistribution(base, chain)
    bpd = tfp_flows.bits_per_dim(dist, rng.integers(0, bins, size=(16, 8, 8, 1)))
    # float32: per-pixel log terms of up to ~10 nats cancel to ~1e-6 each
    np.testing.assert_allclose(bpd, np.log2(bins), atol=1e-4)


def test_real_model_bits_are_minus_log_prob_over_d_log2():
    """bits_per_dim adds U[0, 1) noise and converts nats to bits per dim, with
    no hidden constant: reproduce it from log_prob with the same noise."""
    rng = np.random.default_rng(7)
    dist = ready(tiny("glow", (8, 8, 1), num_bins=17), rng, bins=17)
    images = rng.integers(0, 17, size=(5, 8, 8, 1))
    bpd = tfp_flows.bits_per_dim(dist, images, dequantize=False)
    expected = -dist.log_prob(images.astype(np.float32)) / (64 * np.log(2.0))
    np.testing.assert_allclose(bpd, expected, rtol=1e-6)
    noisy = tfp_flows.bits_per_dim(dist, images, seed=3)
    assert not np.allclose(noisy, bpd)  # the noise was added


# ---------------------------------------------------------------------------
# temperature
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_temperature_zero_is_decode_of_zero(name):
    rng = np.random.default_rng(8)
    dist = ready(tiny(name, (8, 8, 1)), rng)
    cold = tfp_flows.sample(dist, 3, temperature=0.0, seed=(5, 6))
    zero = tfp_flows.decode(dist, tf.zeros((3,) + tuple(dist.distribution.event_shape)))
    np.testing.assert_array_equal(cold, zero)
    # the perturbed priors make decode(0) a non-trivial image
    assert np.std(zero) > 0
    # T > 0 scales the base noise: sample(T) = decode(T * eps)
    eps = dist.distribution.sample(3, seed=(5, 6))
    warm = tfp_flows.sample(dist, 3, temperature=0.7, seed=(5, 6))
    np.testing.assert_allclose(warm, tfp_flows.decode(dist, 0.7 * eps),
                               rtol=1e-6, atol=1e-4)  # same ops, same noise


def test_glow_temperature_scales_learned_prior_sigma():
    """Glow's top prior N(mu, sigma^2) at temperature T is N(mu, (T sigma)^2)."""
    rng = np.random.default_rng(9)
    dist = tiny("glow", (8, 8, 1))
    prior = next(b for b in B.flow_bijectors(dist.bijector)
                 if isinstance(b, tfp_flows.priors.LearnedPrior))
    mu = rng.standard_normal(8).astype(np.float32)
    log_sigma = rng.standard_normal(8).astype(np.float32) * 0.3
    prior._vars["bias"].assign(np.concatenate([mu, log_sigma]))  # pylint: disable=protected-access
    eps = rng.standard_normal((4, 2, 2, 8)).astype(np.float32)
    for t in (0.0, 0.5, 1.0):
        z = prior.forward(t * eps)
        np.testing.assert_allclose(z, mu + t * np.exp(log_sigma) * eps,
                                   rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------
# class-conditional Glow
# ---------------------------------------------------------------------------
def _labels(y):
    return {"top_prior": {"labels": tf.constant(y, tf.int32)}}


def test_class_conditional_glow_learns_the_classes():
    """Two classes of 8x8 images, dark (levels 0-5) and bright (11-16): a few
    Adam steps make the true label more likely than the wrong one (so Bayes
    classification is perfect) and the class-conditional samples at
    temperature 0 have the class's brightness. The labels only reach the model
    through Glow's class-conditional top prior."""
    rng = np.random.default_rng(10)
    n = 16
    y = np.arange(n) % 2
    images = rng.integers(0, 6, size=(n, 8, 8, 1)) + 11 * y[:, None, None, None]
    dist = models.glow((8, 8, 1), num_levels=1, num_steps=1, hidden_channels=8,
                       num_bins=17, num_classes=2, seed=0)
    x = (images + rng.random(images.shape)).astype(np.float32)
    tfp_flows.initialize(dist, x, _labels(y))
    variables = dist.trainable_variables
    opt = keras.optimizers.Adam(3e-2)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(dist.log_prob(x, bijector_kwargs={
                "top_prior": {"labels": y}}))
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    for _ in range(25):
        x = (images + rng.random(images.shape)).astype(np.float32)
        step(tf.constant(x), tf.constant(y, tf.int32))
    right = dist.log_prob(x, bijector_kwargs=_labels(y))
    wrong = dist.log_prob(x, bijector_kwargs=_labels(1 - y))
    assert np.all(right > wrong)
    cold = tfp_flows.sample(dist, 2, temperature=0.0,
                            bijector_kwargs=_labels([0, 1])).numpy()
    assert cold[0].mean() < 8.5 < cold[1].mean()


def test_class_conditional_glow_needs_valid_labels():
    rng = np.random.default_rng(11)
    kw = _labels([0, 1, 2])
    dist = ready(tiny("glow", (8, 8, 1), num_classes=3), rng, bijector_kwargs=kw,
                 batch=3)
    x = pixels((8, 8, 1), rng, batch=3)
    lp = [dist.log_prob(x, bijector_kwargs=_labels([c] * 3)) for c in range(3)]
    assert not np.allclose(lp[0], lp[1]) and not np.allclose(lp[1], lp[2])
    z = tfp_flows.encode(dist, x, kw)
    np.testing.assert_allclose(tfp_flows.decode(dist, z, kw), x,
                               rtol=RTOL_ROUND_TRIP, atol=1e-3)
    with pytest.raises(ValueError, match="labels"):
        dist.log_prob(x)
    with pytest.raises(ValueError, match="integers"):
        dist.log_prob(x, bijector_kwargs={"top_prior": {"labels": [0.0, 1.0, 2.0]}})
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        dist.log_prob(x, bijector_kwargs=_labels([0, 1, 3]))


# ---------------------------------------------------------------------------
# builders: structure, configs, bad input
# ---------------------------------------------------------------------------
def test_glow_structure_and_options():
    for coupling in ("affine", "additive"):
        for lu in (True, False):
            dist = tiny("glow", (8, 8, 1), coupling=coupling, lu=lu)
            found = list(B.flow_bijectors(dist.bijector))
            cpl = [b for b in found if isinstance(
                b, B.AdditiveCoupling if coupling == "additive" else B.AffineCoupling)
                   and "step" in b.name]
            assert len(cpl) == 2 * 2  # L * K
            convs = [b for b in found if isinstance(b, B.InvertibleConv1x1)]
            assert len(convs) == 4 and all(c.lu == lu for c in convs)
            assert sum(isinstance(b, B.ActNorm) for b in found) == 4
    dist = tiny("glow", (8, 8, 1))
    names = {b.name for b in B.flow_bijectors(dist.bijector)}
    assert {"top_prior", "level1_split_prior"} <= names
    assert dist.bijector.description.levels == ((2, 2), (2, None))


@pytest.mark.parametrize("permutation", ["reverse", "shuffle"])
def test_glow_fixed_channel_permutations(permutation):
    """permutation='reverse' / 'shuffle' (the Glow paper's two baselines for
    the 1x1 convolution): one parameter-free tfb.Permute per step in place of
    the convolution; reverse reverses the channels, shuffle draws a
    permutation per step that the config's (recorded) seed reproduces; the
    model round-trips, and its reversible variant gives the same densities."""
    rng = np.random.default_rng(3)
    dist = ready(tiny("glow", (8, 8, 1), permutation=permutation), rng)
    conv = tiny("glow", (8, 8, 1))
    found = list(B.flow_bijectors(dist.bijector))
    assert not any(isinstance(b, B.InvertibleConv1x1) for b in found)
    perms = [b for b in found if isinstance(b, tfp.bijectors.Permute)]
    assert len(perms) == 2 * 2  # L * K
    orders = [tf.get_static_value(b.permutation) for b in perms]
    for order in orders:
        if permutation == "reverse":
            np.testing.assert_array_equal(order, np.arange(len(order))[::-1])
        else:
            np.testing.assert_array_equal(np.sort(order), np.arange(len(order)))
    conv_params = sum(int(tf.size(v)) for b in B.flow_bijectors(conv.bijector)
                      if isinstance(b, B.InvertibleConv1x1) for v in b.trainable_variables)
    assert conv_params > 0
    assert (sum(int(tf.size(v)) for v in dist.trainable_variables)
            == sum(int(tf.size(v)) for v in conv.trainable_variables) - conv_params)
    config = dist.bijector.description.config
    assert config["permutation"] == permutation
    if permutation == "shuffle":
        assert config["seed"] is not None  # drawn, then recorded
        assert any((a != np.arange(len(a))).any() for a in orders)
        rebuilt = [tf.get_static_value(b.permutation)
                   for b in B.flow_bijectors(models.from_config(config).bijector)
                   if isinstance(b, tfp.bijectors.Permute)]
        for a, b in zip(orders, rebuilt, strict=True):
            np.testing.assert_array_equal(a, b)
    x = pixels((8, 8, 1), rng)
    # a permutation is exact; the rest rounds as in the round-trip test above
    assert _rel_err(tfp_flows.decode(dist, tfp_flows.encode(dist, x)), x) < RTOL_ROUND_TRIP
    # the reversible chain runs the same ops in the same order on the way in
    np.testing.assert_array_equal(tfp_flows.memory_efficient(dist).log_prob(x).numpy(),
                                  dist.log_prob(x).numpy())


def test_glow_unknown_permutation_is_refused():
    with pytest.raises(ValueError, match="permutation must be one of 'conv1x1', 'reverse', "
                                         "'shuffle'; got 'identity'"):
        models.glow([8, 8, 1], 2, 1, 8, permutation="identity")


def test_real_nvp_structure():
    dist = models.real_nvp((8, 8, 1), num_scales=2, hidden_channels=8,
                           num_blocks=1)
    cpl = [b for b in B.flow_bijectors(dist.bijector)
           if isinstance(b, B.AffineCoupling)]
    # scale 1: 3 checkerboard + 3 channel; last scale: 4 checkerboard
    assert sorted(b.name for b in cpl) == sorted(
        [f"scale1_checker{i}_coupling" for i in range(3)]
        + [f"scale1_channel{i}_coupling" for i in range(3)]
        + [f"scale2_checker{i}_coupling" for i in range(4)])
    assert isinstance(dist.bijector.bijectors[0], B.PixelLogit)
    assert dist.bijector.bijectors[0].alpha == 0.05


def test_nice_vector_and_image_shapes():
    vec = models.nice([6], n_bits=None, hidden_units=8, num_hidden_layers=1)
    assert tuple(vec.event_shape) == (6,)
    x = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    assert np.all(np.isfinite(vec.log_prob(x)))
    img = models.nice((4, 4, 2), hidden_units=8, num_hidden_layers=1)
    cpl = [b for b in B.flow_bijectors(img.bijector)
           if isinstance(b, B.AdditiveCoupling)]
    assert len(cpl) == 4
    masks_ = [b.mask for b in sorted(cpl, key=lambda b: b.name)]
    for a, b in zip(masks_, masks_[1:]):
        np.testing.assert_array_equal(a, 1 - b)  # alternating partitions
    assert isinstance(img.distribution.distribution, tfd.Logistic)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_from_config_rebuilds_the_same_model(name):
    rng = np.random.default_rng(12)
    dist = ready(tiny(name, (8, 8, 1)), rng)
    clone = models.from_config(dist.bijector.description.config)
    assert [v.shape for v in clone.trainable_variables] == [
        v.shape for v in dist.trainable_variables]
    for src, dst in zip(dist.variables, clone.variables):
        dst.assign(src)
    x = pixels((8, 8, 1), rng)
    np.testing.assert_allclose(clone.log_prob(x), dist.log_prob(x), rtol=1e-6)


def test_sizes_not_divisible_raise_at_construction():
    with pytest.raises(ValueError, match=r"12x12.*divisible by 8"):
        models.glow((12, 12, 1), num_levels=3, num_steps=1, hidden_channels=4)
    with pytest.raises(ValueError, match=r"6x8.*divisible by 4"):
        models.real_nvp((6, 8, 1), num_scales=3, hidden_channels=4)
    with pytest.raises(ValueError, match="H, W, C"):
        models.glow((8, 8), num_levels=1)
    with pytest.raises(ValueError, match="coupling"):
        models.glow((8, 8, 1), coupling="cubic")
    with pytest.raises(ValueError, match="n_bits"):
        models.glow((8, 8, 1), n_bits=0)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_wrong_image_shape_raises(name):
    rng = np.random.default_rng(13)
    dist = tiny(name, (8, 8, 1))
    for bad in [(2, 8, 8, 3), (2, 4, 4, 1), (2, 64)]:
        x = rng.random(bad).astype(np.float32)
        with pytest.raises(ValueError, match="shape"):
            dist.log_prob(x)
        with pytest.raises(ValueError, match="shape"):
            tfp_flows.encode(dist, x)
        with pytest.raises(ValueError, match="shape"):
            tfp_flows.bits_per_dim(dist, np.floor(x * 10))
    # latents: the image shape (RealNVP, Glow) or [64] (NICE)
    for bad in [(2, 8, 8, 3), (2, 4, 4, 1), (2, 63)]:
        with pytest.raises(ValueError, match="shape"):
            tfp_flows.decode(dist, rng.standard_normal(bad).astype(np.float32))


def test_perturbed_glow_differs_from_fresh():
    """Guards the helpers: `ready` really moves the model off the identity."""
    rng = np.random.default_rng(14)
    x = pixels((8, 8, 1), rng)
    fresh = tiny("glow", (8, 8, 1))
    tfp_flows.initialize(fresh, x)
    lp_fresh = fresh.log_prob(x)
    perturb(fresh, rng)
    assert not np.allclose(fresh.log_prob(x), lp_fresh)


def test_nice_actnorm_standardises_the_first_batch():
    """NICE's data-initialised ActNorm (default): after `initialize`, a fresh
    model (couplings at zero, scaling at one) maps the first batch to latents
    with zero mean and unit variance in every dimension."""
    rng = np.random.default_rng(8)
    x = rng.integers(0, 17, size=(256, 8, 8, 1)) + rng.random((256, 8, 8, 1))
    nice = models.nice((8, 8, 1), hidden_units=16, num_hidden_layers=1,
                       num_bins=17)
    tfp_flows.initialize(nice, x.astype(np.float32))
    z = nice.bijector.inverse(x.astype(np.float32)).numpy()
    # float32 moments of 256 values: ~1e-6 relative rounding; 1e-3 is loose.
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-3)
    np.testing.assert_allclose(z.std(axis=0), 1.0, atol=1e-3)
