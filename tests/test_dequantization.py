"""Variational dequantisation: q(u | x) is a normalised density on [0, 1)^D,
trains jointly with the flow through FlowModel (plain, reversible and XLA
paths), survives save/load, and its bounds are ordered as theory says."""

import numpy as np
import pytest
import tensorflow as tf

import tfp_flows
from tfp_flows import models
from tfp_flows.dequantization import (
    VariationalDequantization,
    importance_weighted_bits_per_dim,
    variational_bits_per_dim,
)
from tfp_flows.training import FlowModel

SHAPE = [28, 28, 1]  # MNIST-shaped


def _perturb(layer, seed=0, scale=0.1):
    rng = np.random.default_rng(seed)
    for v in layer.trainable_variables:
        v.assign(v + scale * rng.standard_normal(v.shape).astype(np.float32))


def _images(n, shape=SHAPE, bins=256, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, bins, size=(1,) + tuple(shape))
    noise = rng.integers(-8, 9, size=(n,) + tuple(shape))
    return np.clip(base + noise, 0, bins - 1).astype(np.float32)


def _tiny_glow(**kw):
    return models.glow(SHAPE, num_bins=256, num_levels=2, num_steps=1,
                       hidden_channels=8, seed=0, **kw)


def _trained_model(x):
    """A tiny Glow with a dequantiser, after one epoch on `x` (one batch)."""
    model = FlowModel(_tiny_glow(), dequantization=_tiny_deq())
    model.compile(optimizer="adam")
    model.fit(x, batch_size=len(x), epochs=1, verbose=0)
    return model


def _tiny_deq(coupling="affine", shape=SHAPE, bins=256):
    return VariationalDequantization(shape, num_bins=bins, num_steps=2,
                                     hidden_channels=8, context_channels=4,
                                     coupling=coupling)


@pytest.mark.parametrize("coupling", ["affine", "spline"])
def test_noise_lies_in_unit_interval_and_log_prob_matches_sampling(coupling):
    deq = _tiny_deq(coupling, shape=[6, 6, 2], bins=16)
    _perturb(deq)
    x = _images(3, [6, 6, 2], bins=16)
    u, log_q = deq.sample_and_log_prob(x, seed=(3, 4))
    assert u.shape == x.shape and log_q.shape == (3,)
    assert np.all((u.numpy() >= 0) & (u.numpy() < 1))
    # float32 rounding through sigmoid/logit and two couplings and back
    np.testing.assert_allclose(deq.log_prob(u, x).numpy(), log_q.numpy(),
                               rtol=1e-4, atol=1e-3)
    # the noise depends on x: the features condition the couplings
    u_other, _ = deq.sample_and_log_prob(x[::-1].copy(), seed=(3, 4))
    assert not np.allclose(u_other.numpy()[0], u.numpy()[0])


@pytest.mark.parametrize("coupling", ["affine", "spline"])
def test_q_integrates_to_one(coupling):
    """q(u | x) over (0, 1)^2 for a 2-pixel image, on a midpoint grid."""
    deq = _tiny_deq(coupling, shape=[2, 1, 1], bins=4)
    _perturb(deq, scale=0.1)  # larger: peaks too sharp for the grid
    n = 300
    grid = (np.arange(n) + 0.5) / n
    u0, u1 = np.meshgrid(grid, grid, indexing="ij")
    u = np.stack([u0.ravel(), u1.ravel()], -1).reshape(-1, 2, 1, 1).astype(np.float32)
    x = np.broadcast_to(np.array([1.0, 3.0], np.float32).reshape(1, 2, 1, 1), u.shape)
    log_q = deq.log_prob(u, x).numpy()
    assert log_q.max() > 0.5  # far from uniform (log q = 0): the check has teeth
    mass = float(np.sum(np.exp(log_q)) / n ** 2)
    # smooth, vanishing at the edges: the midpoint rule is within 1e-5 here
    # (measured); 1e-3 leaves room for float32 sums
    assert abs(mass - 1.0) < 1e-3, mass


def test_flow_model_trains_p_and_q_and_the_bounds_are_ordered():
    tf.keras.utils.set_random_seed(0)
    x = _images(16)
    deq = _tiny_deq()
    model = FlowModel(_tiny_glow(), dequantization=deq)
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3))
    before = [v.numpy().copy() for v in deq.trainable_variables]
    history = model.fit(x, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["bits_per_dim"]))
    moved = [not np.array_equal(b, v.numpy())
             for b, v in zip(before, deq.trainable_variables)]
    assert all(moved), "q(u | x) was not trained"
    # trainable variables: the flow's and the dequantiser's, once each
    ids = [id(v) for v in model.trainable_variables]
    assert len(ids) == len(set(ids))
    assert {id(v) for v in deq.trainable_variables} <= set(ids)

    dist, seed = model.distribution, (5, 6)
    bound_1 = variational_bits_per_dim(dist, x, deq, seed=seed)
    iw_1 = importance_weighted_bits_per_dim(dist, x, 1, deq, seed=seed)
    np.testing.assert_allclose(iw_1.numpy(), bound_1.numpy(), rtol=1e-6)
    k = 8
    draws = np.stack([variational_bits_per_dim(
        dist, x, deq, seed=tf.constant(seed) + tf.constant([0, 1]) * i).numpy()
        for i in range(k)])
    iw = importance_weighted_bits_per_dim(dist, x, k, deq, seed=seed).numpy()
    # IW (k > 1) <= the mean of the k variational bounds it is built from
    assert np.all(iw <= draws.mean(0) + 1e-6)
    assert np.all(iw < draws.mean(0))  # strict: the draws differ
    # FlowModel's metric is the variational bound
    logged = model.evaluate(x, verbose=0, return_dict=True)["bits_per_dim"]
    assert abs(logged - draws.mean()) < 0.05  # noise of 16 images x 1 draw


def test_uniform_noise_is_the_special_case_q_equal_one():
    dist = _tiny_glow()
    x = _images(4)
    ours = variational_bits_per_dim(dist, x, None, seed=(1, 2))
    theirs = tfp_flows.bits_per_dim(dist, x, seed=(1, 2))
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)


def test_q_gets_the_exact_gradient_through_the_reversible_chain():
    """q's gradient needs d log p / dx, which the reversible chain's custom
    gradient computes without stored activations. float64 central
    differences against plain autodiff and the reversible chain."""
    tf.keras.utils.set_random_seed(1)
    dist = models.glow(SHAPE, num_bins=256, num_levels=2, num_steps=1,
                       hidden_channels=8, seed=0, dtype=tf.float64)
    lean = tfp_flows.memory_efficient(dist)  # same variables
    deq = VariationalDequantization(SHAPE, num_steps=2, hidden_channels=8,
                                    context_channels=4, dtype=tf.float64)
    _perturb(deq, seed=2)
    x = tf.constant(_images(4), tf.float64)

    def loss(flow):
        noisy, log_q = deq.dequantize(x, seed=(7, 8))
        return tf.reduce_mean(log_q - flow.log_prob(noisy))

    def grads(flow):
        with tf.GradientTape() as tape:
            value = loss(flow)
        return tape.gradient(value, deq.trainable_variables)

    plain, reversible = grads(dist), grads(lean)
    rng = np.random.default_rng(3)
    for i, v in enumerate(deq.trainable_variables):
        np.testing.assert_allclose(reversible[i].numpy(), plain[i].numpy(),
                                   rtol=1e-9, atol=1e-12)
        if i % 3:
            continue  # a third of the variables: central differences are slow
        d = tf.constant(rng.standard_normal(v.shape), tf.float64)
        eps = 1e-6  # 1e-5 steps cross ReLU kinks (errors ~3e-3 measured)
        v.assign_add(eps * d)
        up = float(loss(dist))
        v.assign_sub(2 * eps * d)
        down = float(loss(dist))
        v.assign_add(eps * d)
        # float64 rounding of a ~4e3 loss over 2e-6: ~1e-7 absolute
        np.testing.assert_allclose((up - down) / (2 * eps),
                                   float(tf.reduce_sum(plain[i] * d)),
                                   rtol=1e-5, atol=1e-5, err_msg=v.path)


def test_xla_noise_flow_matches_eager():
    deq = _tiny_deq()
    _perturb(deq, seed=4)
    x = tf.constant(_images(3))
    eps = tf.random.stateless_normal(x.shape, seed=(1, 2))
    eager = deq.transform(eps, x)
    xla = tf.function(deq.transform, jit_compile=True)(eps, x)
    for a, b in zip(eager, xla):
        # XLA fuses and reorders float32 ops
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("scale_fn", ["exp_tanh", "sigmoid"])
def test_a_badly_trained_noise_flow_still_draws_finite_noise(scale_fn):
    """Networks with large weights (what a q that learned to stretch hard
    looks like) and tail draws of eps: the default scale keeps u in [0, 1]
    and log q finite. Glow's sigmoid scale, divided by in the sampling
    direction, overflows (the MNIST run whose validation read 2.5e17)."""
    deq = VariationalDequantization([8, 8, 1], num_bins=256, num_steps=4,
                                    hidden_channels=8, context_channels=4,
                                    scale_fn=scale_fn)
    _perturb(deq, seed=1, scale=3.0)
    x = _images(4, [8, 8, 1])
    eps = 5.0 * np.sign(np.random.default_rng(2).standard_normal(x.shape)).astype(np.float32)
    u, log_q = deq.transform(eps, x)
    finite = bool(np.isfinite(u.numpy()).all() and np.isfinite(log_q.numpy()).all())
    assert finite == (scale_fn == "exp_tanh")


def test_save_and_load_keep_the_dequantiser(tmp_path):
    x = _images(8)
    model = _trained_model(x)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = tf.keras.models.load_model(path)
    assert isinstance(loaded.dequantization, VariationalDequantization)
    a = variational_bits_per_dim(model.distribution, x, model.dequantization, seed=(1, 1))
    b = variational_bits_per_dim(loaded.distribution, x, loaded.dequantization,
                                 seed=(1, 1))
    np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5)


def test_bad_input_gets_clear_errors():
    dist = _tiny_glow()
    deq = _tiny_deq()
    with pytest.raises(ValueError, match="needs dequantize=True"):
        FlowModel(dist, dequantize=False, dequantization=deq)
    with pytest.raises(ValueError, match="event shape"):
        FlowModel(dist, dequantization=_tiny_deq(shape=[8, 8, 1]))
    with pytest.raises(TypeError, match="VariationalDequantization"):
        FlowModel(dist, dequantization="variational")
    with pytest.raises(ValueError, match=r"image event shape \[H, W, C\]"):
        VariationalDequantization([10])
    with pytest.raises(ValueError, match="num_steps"):
        VariationalDequantization(SHAPE, num_steps=0)
    with pytest.raises(ValueError, match="scale_fn must be one of"):
        VariationalDequantization(SHAPE, scale_fn="softplus")
    with pytest.raises(ValueError, match="num_samples"):
        importance_weighted_bits_per_dim(dist, _images(2), 0, deq)
    # non-integer pixels: the error tfp_flows.bits_per_dim gives
    half = np.minimum(_images(2) + 0.5, 200.5)
    with pytest.raises(ValueError, match="integer-valued") as ours:
        variational_bits_per_dim(dist, half, deq)
    with pytest.raises(ValueError, match="integer-valued") as theirs:
        tfp_flows.bits_per_dim(dist, half)
    assert str(ours.value) == str(theirs.value)
    model = FlowModel(dist, dequantization=deq)
    model.compile(optimizer="adam")
    with pytest.raises(ValueError, match="integer-valued"):
        model.fit(half, batch_size=2, verbose=0)


def test_export_serves_the_variational_bound(tmp_path):
    x = _images(4)
    model = _trained_model(x)
    path = str(tmp_path / "saved")
    tfp_flows.export(model, path)
    loaded = tf.saved_model.load(path)
    served = loaded.signatures["variational_bits_per_dim"](
        images=tf.constant(x, tf.int32), seed=tf.constant(11, tf.int64))["bits_per_dim"]
    seed = tfp_flows.serving_ops.stateless_seed(11)
    expected = variational_bits_per_dim(model.distribution, x, model.dequantization,
                                        seed=seed)
    np.testing.assert_allclose(served.numpy(), expected.numpy(), rtol=1e-5)
    # the uniform figure is served as before, and is a different quantity
    uniform = loaded.signatures["bits_per_dim"](
        images=tf.constant(x, tf.int32), seed=tf.constant(11, tf.int64))["bits_per_dim"]
    assert not np.allclose(uniform.numpy(), served.numpy())
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_bins"):
        loaded.signatures["variational_bits_per_dim"](
            images=tf.fill([1] + SHAPE, 256), seed=tf.constant(1, tf.int64))
