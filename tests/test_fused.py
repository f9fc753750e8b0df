"""ActNorm + InvertibleConv1x1 evaluated as one affine map inside a chain
(`tfp_flows.bijectors.fused`): the same values, log-determinants and
gradients as the two layers applied in turn, and the same initialisation."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import bijectors as B
from tfp_flows.bijectors import fused
from tfp_flows.bijectors.chain import single_pass

tfb = tfp.bijectors

# float64 throughout: the fused map (M x + b) and the two layers in turn
# ((x - loc) * e, then W) differ by rounding only, ~1e-15 relative here;
# 1e-10 catches any wrong term (O(1e-3) and more) with room to spare.
RTOL = 1e-10


def _pair(c, lu, event_ndims, rng, name="s"):
    actnorm = B.ActNorm(c, event_ndims=event_ndims, dtype=tf.float64,
                        name=f"{name}_actnorm")
    conv = B.InvertibleConv1x1(c, lu=lu, event_ndims=event_ndims, seed=3,
                               dtype=tf.float64, name=f"{name}_conv")
    # away from the identity, so every term matters
    actnorm.loc.assign(rng.normal(size=c))
    actnorm.log_scale.assign(0.3 * rng.normal(size=c))
    actnorm.initialized.assign(True)
    for v in conv.trainable_variables:
        v.assign(v + 0.1 * rng.normal(size=v.shape))
    return actnorm, conv


def _in_turn(bijectors, x, ndims, direction):
    order = bijectors if direction == "inverse" else bijectors[::-1]
    total = 0.0
    for b in order:
        x, ldj = single_pass(b, x, ndims, direction)
        total = total + ldj
    return x, total


@pytest.mark.parametrize("lu", [True, False])
@pytest.mark.parametrize("event_ndims,shape", [(3, (3, 4, 5, 6)), (1, (7, 6))])
@pytest.mark.parametrize("direction", ["inverse", "forward"])
def test_fused_pair_matches_layers_in_turn(lu, event_ndims, shape, direction):
    rng = np.random.default_rng(0)
    actnorm, conv = _pair(shape[-1], lu, event_ndims, rng)
    x = tf.constant(rng.normal(size=shape))
    chain = B.FlowChain([actnorm, conv])
    variables = list(actnorm.trainable_variables + conv.trainable_variables)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        walk = chain.walk_inverse if direction == "inverse" else chain.walk_forward
        y, ldj = walk(x)
        y_ref, ldj_ref = _in_turn([actnorm, conv], x, event_ndims, direction)
        # a loss that weights every output and the log-det differently
        w = tf.constant(rng.normal(size=shape))
        loss = tf.reduce_sum(w * y) + tf.reduce_sum(ldj)
        loss_ref = tf.reduce_sum(w * y_ref) + tf.reduce_sum(ldj_ref)
    np.testing.assert_allclose(y, y_ref, rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(ldj, ldj_ref, rtol=RTOL)
    assert ldj.shape == shape[:-event_ndims]
    grads = tape.gradient(loss, [x] + variables)
    grads_ref = tape.gradient(loss_ref, [x] + variables)
    for g, r in zip(grads, grads_ref):
        np.testing.assert_allclose(g, r, rtol=RTOL, atol=1e-12)


def _count_fused(monkeypatch):
    calls = []
    original = fused.actnorm_conv1x1

    def spy(*args):
        calls.append(args[-1])
        return original(*args)

    monkeypatch.setattr(fused, "actnorm_conv1x1", spy)
    return calls


def test_chain_fuses_in_both_directions_and_round_trips(monkeypatch):
    rng = np.random.default_rng(1)
    actnorm, conv = _pair(4, True, 3, rng)
    chain = B.FlowChain([actnorm, conv, B.Squeeze(2, dtype=tf.float64, name="sq")])
    calls = _count_fused(monkeypatch)
    x = tf.constant(rng.normal(size=(2, 4, 4, 4)))
    z, ildj = chain.walk_inverse(x)
    back, fldj = chain.walk_forward(z)
    assert calls == ["inverse", "forward"]
    np.testing.assert_allclose(back, x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ildj, -fldj, rtol=1e-12)


def test_fused_inverse_still_initialises_actnorm():
    """A fresh ActNorm initialises from the pair's input: the conv's input
    (the ActNorm output) has zero mean and unit variance per channel."""
    rng = np.random.default_rng(2)
    actnorm = B.ActNorm(3, dtype=tf.float64, name="a")
    conv = B.InvertibleConv1x1(3, dtype=tf.float64, seed=0, name="c")
    x = tf.constant(5.0 + 2.0 * rng.normal(size=(16, 4, 4, 3)))
    z, _ = B.FlowChain([actnorm, conv]).walk_inverse(x)
    assert bool(actnorm.initialized.numpy())
    h = tf.reshape(z, [-1, 3]) @ tf.transpose(tf.linalg.inv(conv.weight()))
    np.testing.assert_allclose(tf.reduce_mean(h, 0), 0.0, atol=1e-10)
    np.testing.assert_allclose(tf.math.reduce_std(h, 0), 1.0, rtol=1e-10)


def test_pairs_that_must_not_fuse(monkeypatch):
    rng = np.random.default_rng(3)
    calls = _count_fused(monkeypatch)
    x = tf.constant(rng.normal(size=(2, 4, 4, 4)))
    # the conv first (data side): not ActNorm -> conv
    actnorm, conv = _pair(4, True, 3, rng, name="p")
    B.FlowChain([conv, actnorm]).walk_inverse(x)
    # an inverted ActNorm is a different map
    actnorm, conv = _pair(4, True, 3, rng, name="q")
    B.FlowChain([tfb.Invert(actnorm), conv]).walk_inverse(x)
    # vector layers in a chain over image events: the log-det has axes left
    # to sum, which the pair leaves to the layers
    # (a Squeeze makes the chain's event rank 3)
    actnorm, conv = _pair(4, True, 1, rng, name="r")
    squeeze = B.Squeeze(2, dtype=tf.float64, name="sq")
    chain = B.FlowChain([actnorm, conv, squeeze])
    y, ldj = chain.walk_inverse(x)
    assert calls == []
    # ... and it gives the layers' values, log-det summed over the event
    y_ref, ldj_ref = _in_turn([actnorm, conv, squeeze], x, 3, "inverse")
    np.testing.assert_allclose(y, y_ref, rtol=RTOL)
    np.testing.assert_allclose(ldj, ldj_ref, rtol=RTOL)
    assert ldj.shape == (2,)


def test_fusable_rules_out_routed_kwargs_and_mismatches():
    rng = np.random.default_rng(4)
    actnorm, conv = _pair(4, True, 3, rng)
    assert fused.fusable(actnorm, conv, 3, ({}, {}))
    assert not fused.fusable(actnorm, conv, 3, ({"foo": 1}, {}))
    assert not fused.fusable(actnorm, conv, 4, ({}, {}))
    other = B.InvertibleConv1x1(6, dtype=tf.float64, name="six")
    assert not fused.fusable(actnorm, other, 3, ({}, {}))
    f32 = B.InvertibleConv1x1(4, name="f32")
    assert not fused.fusable(actnorm, f32, 3, ({}, {}))
