"""Neural spline couplings: the spline against an independent NumPy version,
the identity at initialisation, the builders' ``coupling='spline'``,
reversible gradients, SavedModel export and Keras training.

The generic bijector properties (round trips, log-det against the brute-force
Jacobian, gradients, tf.function / XLA, batch shapes) run on the two
`SplineCoupling` entries of `tests/bijector_registry.py`.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfp_flows
from tests.model_helpers import pixels, ready
from tests.training import training_helpers as th
from tfp_flows import bijectors as B
from tfp_flows import masks, models
from tfp_flows.bijectors.spline import rational_quadratic_spline, spline_knots
from tfp_flows.training import FlowModel

K, BOUND = 5, 2.5
MIN = 1e-3  # the default minimum bin size and derivative


# ---------------------------------------------------------------------------
# an independent NumPy spline: one point at a time, inverse by bisection
# ---------------------------------------------------------------------------
def _np_knots(raw, bound=BOUND, m=MIN):
    """Knots and derivatives of one spline from its 3K - 1 raw values."""
    k = (raw.shape[-1] + 1) // 3

    def positions(r):
        e = np.exp(r - r.max())
        sizes = m + (1 - m * k) * e / e.sum()
        return np.concatenate([[-bound], -bound + 2 * bound * np.cumsum(sizes)[:-1], [bound]])

    inner = m + np.log1p(np.exp(raw[2 * k:] + np.log(np.expm1(1 - m))))
    return positions(raw[:k]), positions(raw[k:2 * k]), np.concatenate([[1.0], inner, [1.0]])


def _np_spline(x, kx, ky, d):
    """``(g(x), log g'(x))`` of the rational-quadratic spline, identity tails."""
    if x < kx[0] or x > kx[-1]:
        return x, 0.0
    j = min(int(np.searchsorted(kx, x, side="right")) - 1, len(kx) - 2)
    w, h = kx[j + 1] - kx[j], ky[j + 1] - ky[j]
    s, xi = h / w, (x - kx[j]) / w
    den = s + (d[j + 1] + d[j] - 2 * s) * xi * (1 - xi)
    y = ky[j] + h * (s * xi ** 2 + d[j] * xi * (1 - xi)) / den
    deriv = s ** 2 * (d[j + 1] * xi ** 2 + 2 * s * xi * (1 - xi) + d[j] * (1 - xi) ** 2) / den ** 2
    return y, np.log(deriv)


def _np_inverse(y, kx, ky, d):
    """g^-1(y) by bisection on `_np_spline` (not the quadratic formula)."""
    if y < ky[0] or y > ky[-1]:
        return y
    lo, hi = kx[0], kx[-1]
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _np_spline(mid, kx, ky, d)[0] < y:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _random_splines(rng, n, scale=1.0):
    raw = rng.standard_normal((n, 3 * K - 1)) * scale
    knots = spline_knots(tf.constant(raw[:, :K]), tf.constant(raw[:, K:2 * K]),
                         tf.constant(raw[:, 2 * K:]), BOUND)
    return raw, [t.numpy() for t in knots]


def test_knots_from_raw_values_match_numpy_and_zero_is_the_identity():
    rng = np.random.default_rng(0)
    raw, (kx, ky, d) = _random_splines(rng, 4)
    for i in range(4):
        for got, want in zip((kx[i], ky[i], d[i]), _np_knots(raw[i])):
            np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)
    assert np.all(np.diff(kx) > 0) and np.all(np.diff(ky) > 0) and np.all(d > 0)
    # the ends are exact, so the tails join the spline continuously
    assert np.all(kx[:, 0] == -BOUND) and np.all(kx[:, -1] == BOUND)
    assert np.all(d[:, 0] == 1.0) and np.all(d[:, -1] == 1.0)
    # zero raw values: equal bins and derivatives 1
    kx0, ky0, d0 = (t.numpy() for t in spline_knots(
        tf.zeros([K], tf.float64), tf.zeros([K], tf.float64),
        tf.zeros([K - 1], tf.float64), BOUND))
    np.testing.assert_allclose(kx0, np.linspace(-BOUND, BOUND, K + 1), atol=1e-15)
    np.testing.assert_array_equal(kx0, ky0)
    np.testing.assert_allclose(d0, 1.0, atol=1e-15)
    # the minimum bin size and derivative hold for extreme raw values
    big = tf.constant([[-60.0, 60.0, 0.0, 0.0, 0.0]], tf.float64)
    kx1, _, d1 = spline_knots(big, big, tf.constant([[-60.0, 0.0, 0.0, 60.0]],
                                                    tf.float64), BOUND)
    assert np.min(np.diff(kx1.numpy())) >= 2 * BOUND * MIN * (1 - 1e-9)
    assert np.min(d1.numpy()) >= MIN


@pytest.mark.parametrize("dtype, rtol", [(tf.float64, 1e-12), (tf.float32, 2e-5)],
                         ids=["f64", "f32"])
def test_spline_matches_numpy_inside_in_the_tails_and_on_knots(dtype, rtol):
    rng = np.random.default_rng(1)
    raw, (kx, ky, d) = _random_splines(rng, 3)
    # Per spline: random interior points, every knot exactly (including
    # +-B), points just inside and outside the interval, far tails.
    points = np.stack([np.concatenate([
        rng.uniform(-BOUND, BOUND, 6), kx[i],
        [-BOUND - 1e-9, BOUND + 1e-9, -BOUND - 2.0, BOUND + 0.5, 40.0, -1e3]])
        for i in range(3)])
    knots = [np.repeat(t[:, None, :], points.shape[1], axis=1) for t in (kx, ky, d)]
    tf_knots = [tf.constant(t, dtype) for t in knots]
    y, ld = rational_quadratic_spline(tf.constant(points, dtype), *tf_knots, BOUND)
    y, ld = y.numpy(), ld.numpy()
    ref = np.array([[_np_spline(p, *_np_knots(raw[i])) for p in points[i]]
                    for i in range(3)])
    np.testing.assert_allclose(y, ref[..., 0], rtol=rtol, atol=rtol * BOUND)
    np.testing.assert_allclose(ld, ref[..., 1], rtol=rtol, atol=10 * rtol)
    # on the knots: y = y_k and g' = d_k exactly as designed
    on = slice(6, 6 + K + 1)
    np.testing.assert_allclose(y[:, on], ky, rtol=rtol, atol=rtol * BOUND)
    np.testing.assert_allclose(np.exp(ld[:, on]), d, rtol=10 * rtol)
    # tails: the identity, bit for bit, with log-det exactly 0 (in float32,
    # +-(B + 1e-9) rounds to +-B: the spline's end, with slope 1)
    cast = points.astype(y.dtype)
    tails = np.abs(cast) > BOUND
    assert tails.sum() >= 3 * 4
    np.testing.assert_array_equal(y[tails], cast[tails])
    np.testing.assert_array_equal(ld[tails], 0.0)
    np.testing.assert_allclose(y[~tails & (np.abs(cast) == BOUND)],
                               cast[~tails & (np.abs(cast) == BOUND)], rtol=rtol)

    # inverse: against bisection (the quadratic root is not used there)
    ys = np.stack([np.concatenate([rng.uniform(-BOUND, BOUND, 6), ky[i],
                                   [BOUND + 1.0, -7.0]]) for i in range(3)])
    knots = [np.repeat(t[:, None, :], ys.shape[1], axis=1) for t in (kx, ky, d)]
    x, ild = rational_quadratic_spline(tf.constant(ys, dtype),
                                       *[tf.constant(t, dtype) for t in knots],
                                       BOUND, inverse=True)
    x_ref = np.array([[_np_inverse(v, *_np_knots(raw[i])) for v in ys[i]]
                      for i in range(3)])
    np.testing.assert_allclose(x.numpy(), x_ref, rtol=rtol, atol=rtol * BOUND)
    fwd_ld = np.array([[_np_spline(v, *_np_knots(raw[i]))[1] for v in x_ref[i]]
                       for i in range(3)])
    np.testing.assert_allclose(ild.numpy(), -fwd_ld, rtol=rtol, atol=10 * rtol)


def test_spline_is_monotone_and_continuous_with_continuous_derivative():
    rng = np.random.default_rng(2)
    _, (kx, ky, d) = _random_splines(rng, 1, scale=2.0)

    def spline(xs):
        knots = [tf.constant(np.repeat(t, xs.size, axis=0)) for t in (kx, ky, d)]
        return [t.numpy() for t in rational_quadratic_spline(tf.constant(xs), *knots,
                                                             BOUND)]

    y, _ = spline(np.linspace(-BOUND - 1, BOUND + 1, 4001))
    assert np.all(np.diff(y) > 0)
    # across every knot (and the two ends), value and slope have no jump
    eps = 1e-10
    y_lo, ld_lo = spline(kx[0] - eps)
    y_hi, ld_hi = spline(kx[0] + eps)
    assert np.max(np.abs(y_hi - y_lo)) < 1e-7
    assert np.max(np.abs(ld_hi - ld_lo)) < 1e-5


# ---------------------------------------------------------------------------
# the coupling layer
# ---------------------------------------------------------------------------
def test_coupling_uses_the_documented_parameter_layout():
    """A fixed linear network: the coupling equals the NumPy spline applied
    to the transformed entries, raw parameter j of entry i being output
    channel ``j * k + i``."""
    rng = np.random.default_rng(3)
    mask = np.array([0, 1, 0, 0, 1], np.float32)  # transformed: 0, 2, 3
    n_cond, n_trans, p = 2, 3, 3 * K - 1
    w = rng.standard_normal((n_cond, p * n_trans))
    b = rng.standard_normal(p * n_trans)
    layer = B.SplineCoupling(mask, network=lambda h: tf.matmul(h, w) + b,
                             num_bins=K, bound=BOUND, dtype=tf.float64)
    x = rng.standard_normal((4, 5)) * 1.5
    z, ildj = B.inverse_and_log_det(layer, tf.constant(x))
    z_ref, ildj_ref = x.copy(), np.zeros(4)
    for n in range(4):
        raw = x[n, [1, 4]] @ w + b
        for i, col in enumerate([0, 2, 3]):
            params = raw[np.arange(p) * n_trans + i]
            z_ref[n, col], ld = _np_spline(x[n, col], *_np_knots(params))
            ildj_ref[n] += ld
    np.testing.assert_allclose(z.numpy(), z_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ildj.numpy(), ildj_ref, rtol=1e-12, atol=1e-12)
    x_back, fldj = B.forward_and_log_det(layer, z)
    np.testing.assert_allclose(x_back.numpy(), x, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(fldj.numpy(), -ildj_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mask", [masks.checkerboard([4, 4, 3]), masks.channel([4, 4, 3]),
                                  masks.checkerboard([7])],
                         ids=["checkerboard", "channel", "vector"])
def test_fresh_coupling_is_the_identity(mask):
    """Zero-initialised last layer: equal bins, derivatives 1."""
    layer = B.SplineCoupling(mask, hidden=8, bound=3.0)
    x = tf.constant(np.random.default_rng(4).standard_normal((3,) + mask.shape) * 2,
                    tf.float32)
    for fn in (B.inverse_and_log_det, B.forward_and_log_det):
        y, ldj = fn(layer, x)
        np.testing.assert_allclose(y.numpy(), x.numpy(), rtol=0, atol=1e-6)
        np.testing.assert_allclose(ldj.numpy(), 0.0, atol=1e-5)


def test_properties_and_parameter_count():
    layer = B.SplineCoupling(masks.channel([4, 4, 6]), num_bins=6, bound=2.0,
                             hidden=8)
    assert (layer.num_bins, layer.bound) == (6, 2.0)
    assert layer.network.out_channels == 3 * (3 * 6 - 1)  # 3 transformed
    assert layer.supports_reversible_step
    assert isinstance(layer, tfp_flows.bijectors.FlowBijector)


# ---------------------------------------------------------------------------
# the builders
# ---------------------------------------------------------------------------
def _tiny_spline_glow(dtype=tf.float32, **kw):
    kw = {"num_levels": 2, "num_steps": 1, "hidden_channels": 8, "seed": 0,
          "coupling": "spline", "num_spline_bins": 4, "num_bins": 17, **kw}
    return models.glow([8, 8, 1], dtype=dtype, **kw)


def _splines(dist):
    return [b for b in B.flow_bijectors(dist.bijector) if isinstance(b, B.SplineCoupling)]


def _rebuilds_with_the_same_log_prob(dist, x):
    clone = models.from_config(dist.bijector.description.config)
    assert [v.shape for v in clone.variables] == [v.shape for v in dist.variables]
    for src, dst in zip(dist.variables, clone.variables):
        dst.assign(src)
    np.testing.assert_allclose(clone.log_prob(x), dist.log_prob(x), rtol=1e-6)


def test_glow_builder_spline_coupling():
    rng = np.random.default_rng(5)
    dist = _tiny_spline_glow(num_steps=2, spline_bound=4.0)
    cpl = _splines(dist)
    assert len(cpl) == 2 * 2  # L * K; the split priors stay affine
    assert all(c.num_bins == 4 and c.bound == 4.0 for c in cpl)
    config = dist.bijector.description.config
    assert (config["coupling"], config["num_spline_bins"], config["spline_bound"]) == (
        "spline", 4, 4.0)
    ready(dist, rng, bins=17)
    x = pixels((8, 8, 1), rng, batch=3, bins=17)
    assert np.all(np.isfinite(dist.log_prob(x)))
    z = tfp_flows.encode(dist, x)
    np.testing.assert_allclose(tfp_flows.decode(dist, z), x, rtol=1e-4, atol=1e-3)
    _rebuilds_with_the_same_log_prob(dist, x)


def test_fresh_spline_glow_scores_like_fresh_affine_glow():
    """Both couplings start as the identity: same ActNorm init, same 1x1
    rotations (seed), so the same log-likelihood."""
    x = pixels((8, 8, 1), np.random.default_rng(6), batch=4, bins=17)
    lps = []
    for coupling in ("affine", "spline"):
        dist = _tiny_spline_glow(coupling=coupling)
        tfp_flows.initialize(dist, x)
        lps.append(dist.log_prob(x).numpy())
    np.testing.assert_allclose(lps[1], lps[0], rtol=1e-5)


def test_real_nvp_builder_spline_coupling():
    rng = np.random.default_rng(7)
    dist = models.real_nvp((8, 8, 1), num_scales=2, hidden_channels=8, num_blocks=1,
                           coupling="spline", num_spline_bins=5)
    cpl = _splines(dist)
    assert len(cpl) == 10 and not any(isinstance(b, B.AffineCoupling)
                                      for b in B.flow_bijectors(dist.bijector))
    # checkerboards (masked mode) and channel masks (split mode) both present
    assert {c.name for c in cpl} >= {"scale1_checker0_coupling", "scale1_channel0_coupling"}
    assert dist.bijector.description.config["coupling"] == "spline"
    ready(dist, rng)
    x = pixels((8, 8, 1), rng, batch=3)
    assert np.all(np.isfinite(dist.log_prob(x)))
    np.testing.assert_allclose(tfp_flows.decode(dist, tfp_flows.encode(dist, x)), x,
                               rtol=1e-4, atol=1e-2)
    _rebuilds_with_the_same_log_prob(dist, x)
    # the default stays the paper's affine coupling
    assert models.real_nvp((8, 8, 1), hidden_channels=4, num_blocks=1).bijector \
        .description.config["coupling"] == "affine"


def test_vector_flow_builder_spline_coupling():
    rng = np.random.default_rng(8)
    dist = models.vector_flow(4, num_couplings=3, hidden_units=8, coupling="spline",
                              num_spline_bins=6, spline_bound=5.0)
    assert len(_splines(dist)) == 3
    x = rng.standard_normal((5, 4)).astype(np.float32) * 2
    # fresh: the identity, so the standard normal
    np.testing.assert_allclose(dist.log_prob(x),
                               -0.5 * (x ** 2).sum(-1) - 2 * np.log(2 * np.pi),
                               rtol=1e-5)
    for v in dist.trainable_variables:
        v.assign(v + 0.1 * rng.standard_normal(v.shape))
    z = dist.bijector.inverse(x)
    assert not np.allclose(z, x, atol=1e-3)
    np.testing.assert_allclose(dist.bijector.forward(z), x, rtol=1e-4, atol=1e-4)
    _rebuilds_with_the_same_log_prob(dist, x)
    # backwards compatible: affine couplings by default, old configs rebuild
    old = models.vector_flow(4, num_couplings=2, hidden_units=8)
    config = dict(old.bijector.description.config)
    assert config["coupling"] == "affine"
    for key in ("coupling", "num_spline_bins", "spline_bound"):
        config.pop(key)
    assert not _splines(models.from_config(config))


@pytest.mark.parametrize("build, kwargs, match", [
    (models.glow, dict(coupling="splines"), "coupling must be one of"),
    (models.glow, dict(coupling="spline", num_spline_bins=1), "num_spline_bins"),
    (models.glow, dict(coupling="spline", spline_bound=0.0), "spline_bound"),
    (models.real_nvp, dict(coupling="additive"), "coupling must be one of"),
    (models.real_nvp, dict(coupling="spline", spline_bound=-1.0), "spline_bound"),
])
def test_image_builders_reject_bad_spline_options(build, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build((8, 8, 1), **kwargs)


def test_vector_flow_rejects_bad_spline_options():
    with pytest.raises(ValueError, match="coupling must be one of"):
        models.vector_flow(4, coupling="additive")
    with pytest.raises(ValueError, match="num_spline_bins"):
        models.vector_flow(4, coupling="spline", num_spline_bins=2.5)
    with pytest.raises(ValueError, match="max_log_scale must be None or a positive"):
        models.vector_flow(4, coupling="spline", max_log_scale=-1.0)


# ---------------------------------------------------------------------------
# reversible gradients, export, training
# ---------------------------------------------------------------------------
def _loss_and_grads(dist, x):
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(dist.log_prob(x))
    return loss, tape.gradient(loss, [x] + list(dist.trainable_variables))


def _max_rel_diff(ref, got):
    return max(float(np.abs(a.numpy() - b.numpy()).max() / np.abs(a.numpy()).max())
               for a, b in zip(ref, got))


def test_memory_efficient_spline_glow_has_the_same_gradients_float64():
    rng = np.random.default_rng(9)
    dist = ready(_tiny_spline_glow(tf.float64, num_steps=2), rng, bins=17, scale=0.1,
                 batch=4)
    x = tf.constant(pixels((8, 8, 1), rng, batch=4, bins=17).astype(np.float64))
    loss_ref, g_ref = _loss_and_grads(dist, x)
    # the conversion, and the builder flag with the same parameters
    flagged = _tiny_spline_glow(tf.float64, num_steps=2, memory_efficient=True)
    for src, dst in zip(dist.variables, flagged.variables):
        dst.assign(src)
    for lean in (tfp_flows.memory_efficient(dist), flagged):
        loss, g = _loss_and_grads(lean, x)
        np.testing.assert_allclose(loss.numpy(), loss_ref.numpy(), rtol=1e-12)
        assert len(g) == 1 + len(dist.trainable_variables)
        assert all(t is not None for t in g)
        # measured 3e-15: reconstruction through the inverses only rounds
        assert _max_rel_diff(g_ref, g) < 1e-10


def test_spline_glow_savedmodel_export(tmp_path):
    rng = np.random.default_rng(10)
    dist = ready(_tiny_spline_glow(), rng, bins=17, scale=0.05)
    x = pixels((8, 8, 1), rng, batch=5, bins=17)
    tfp_flows.export(dist, tmp_path / "spline_glow")
    loaded = tf.saved_model.load(str(tmp_path / "spline_glow"))
    got = loaded.signatures["log_prob"](x=tf.constant(x))["log_prob"].numpy()
    np.testing.assert_allclose(got, dist.log_prob(x).numpy(), rtol=1e-5)
    z = loaded.signatures["encode"](x=tf.constant(x))["latent"]
    back = loaded.signatures["decode"](latent=z)["x"].numpy()
    np.testing.assert_allclose(back, x, atol=1e-3)


def test_flow_model_trains_a_spline_glow():
    keras.utils.set_random_seed(0)
    model = FlowModel(_tiny_spline_glow())
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    hist = model.fit(th.pixels(32), batch_size=8, epochs=4, verbose=0).history
    losses = hist["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    # and the trained splines are no longer the identity
    cpl = _splines(model.distribution)[0]
    assert any(np.any(w.numpy() != 0) for w in cpl.network.layer_2.weights)


def test_spline_vector_flow_in_vi_and_neutra():
    """The VI recipe of docs/models.md (4 bins on [-5, 5], affine map first)
    fits a correlated 2-D Gaussian with tfp.vi, then preconditions HMC."""
    import tensorflow_probability as tfp
    import tf_keras
    tfd = tfp.distributions
    target = tfd.MultivariateNormalTriL(
        loc=[1.0, -2.0], scale_tril=[[2.0, 0.0], [1.2, 0.5]])
    keras.utils.set_random_seed(0)
    q = models.vector_flow(2, num_couplings=4, hidden_units=16, coupling="spline",
                           num_spline_bins=4, spline_bound=5.0, max_log_scale=3.0)

    def neg_elbo():
        z = q.sample(4096, seed=(5, 6))
        return float(tf.reduce_mean(q.log_prob(z) - target.log_prob(z)))

    before = neg_elbo()
    tfp.vi.fit_surrogate_posterior(target.log_prob, q, tf_keras.optimizers.Adam(1e-2),
                                   250, sample_size=32, seed=(1, 2))
    after = neg_elbo()
    # KL(q || p) from the fresh flow (the standard normal) is ~15 nats; a
    # fitted flow gets within 0.1 (4096 draws: standard error ~0.01)
    assert before > 1.0 and after < 0.1, (before, after)
    kernel = tfp.mcmc.TransformedTransitionKernel(
        tfp.mcmc.HamiltonianMonteCarlo(target.log_prob, step_size=0.5,
                                       num_leapfrog_steps=3),
        bijector=q.bijector)
    samples, accepted = tf.function(lambda: tfp.mcmc.sample_chain(
        150, current_state=tf.zeros([8, 2]), kernel=kernel, num_burnin_steps=50,
        trace_fn=lambda _, r: r.inner_results.is_accepted, seed=(3, 4)))()
    samples = samples.numpy().reshape(-1, 2)
    assert np.isfinite(samples).all()
    # in the flow's latent space the target is near N(0, I): most proposals
    # of step 0.5 are accepted
    assert float(tf.reduce_mean(tf.cast(accepted, tf.float32))) > 0.6
    # 1200 correlated draws (ESS well above 100): means within 0.6 of the
    # target's (standard deviations 2 and 1.3)
    np.testing.assert_allclose(samples.mean(0), [1.0, -2.0], atol=0.6)
