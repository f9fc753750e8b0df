"""Coupling-network building blocks: `conv2d_same`'s fast paths (tiny maps,
narrowing convolutions) against `tf.nn.conv2d`, and GlowCNN on tiny maps."""

import numpy as np
import pytest
import tensorflow as tf

from tfp_flows import networks


def _grads(conv, x, kernel):
    with tf.GradientTape() as tape:
        tape.watch([x, kernel])
        y = conv(x, kernel)
        # a non-uniform cotangent, so every output position matters
        loss = tf.reduce_sum(y * tf.sin(y))
    return (y, *tape.gradient(loss, [x, kernel]))


def _native(x, kernel):
    return tf.nn.conv2d(x, kernel, strides=1, padding="SAME")


@pytest.mark.parametrize("shape,k,c_out", [
    ((3, 8, 8, 16), 3, 4),     # narrowing: custom gradient
    ((2, 5, 7, 9), 3, 2),      # odd, non-square spatial size
    ((2, 6, 6, 10), 5, 3),     # 5x5 kernel
    ((2, 4, 4, 3), 3, 8),      # widening: TensorFlow's own gradient
    ((3, 2, 2, 5), 3, 7),      # tiny map: one dense matrix product
    ((2, 1, 3, 4), 3, 2),      # tiny non-square map
    ((2, 2, 2, 6), 5, 3),      # tiny map, kernel larger than the map
    ((3, 4, 4, 40), 3, 4),     # small map, narrowing: tap-combine
    ((2, 3, 5, 20), 3, 2),     # tap-combine on a non-square map
    ((2, 4, 4, 12), 3, 4),     # small map, 9*c_out > c_in: custom gradient
])
def test_conv2d_same_matches_tensorflow_in_value_and_gradient(shape, k, c_out):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=shape), tf.float64)
    kernel = tf.constant(rng.normal(size=(k, k, shape[-1], c_out)), tf.float64)
    ours, theirs = _grads(networks.conv2d_same, x, kernel), _grads(_native, x, kernel)
    for a, b in zip(ours, theirs):
        # float64: only summation order differs (~1e-15 relative).
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-10)


def test_conv2d_same_gradient_with_unknown_spatial_size_and_xla():
    """Traced with unknown batch and spatial dimensions, and under XLA."""
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(2, 6, 6, 12)), tf.float32)
    kernel = tf.constant(rng.normal(size=(3, 3, 12, 4)) * 0.1, tf.float32)
    spec = [tf.TensorSpec([None, None, None, 12], tf.float32),
            tf.TensorSpec([3, 3, 12, 4], tf.float32)]
    want = _grads(_native, x, kernel)
    for jit in (False, True):
        fn = tf.function(lambda a, b: _grads(networks.conv2d_same, a, b),
                         input_signature=spec, jit_compile=jit)
        for a, b in zip(fn(x, kernel), want):
            # float32 sums of ~100 products: ~1e-6 relative; 1e-4 is loose.
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("spatial", [(2, 2), (1, 4), (4, 4), (8, 8)])
def test_glow_cnn_matches_its_keras_layers(spatial):
    """GlowCNN (its first convolution through `conv2d_same`) gives the values
    of its own Keras layers, with non-zero weights in every layer."""
    net = networks.GlowCNN(6, hidden_channels=16)
    x = tf.random.stateless_normal((5,) + spatial + (3,), seed=[0, 1])
    net(x)
    rng = np.random.default_rng(2)
    for v in net.weights:
        v.assign(rng.normal(size=v.shape) * 0.3)
    want = x
    for layer in net._stack:
        want = layer(want)
    # float32 sums of <= 150 products: ~1e-6 relative.
    np.testing.assert_allclose(net(x).numpy(), want.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,c_out", [((2, 2, 2, 6), 5), ((2, 4, 4, 40), 4)])
def test_conv2d_same_small_map_paths_under_xla(shape, c_out):
    """The dense and tap-combine paths (static shapes) compile with XLA and
    give TensorFlow's values and gradients."""
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(size=shape), tf.float32)
    kernel = tf.constant(rng.normal(size=(3, 3, shape[-1], c_out)) * 0.1, tf.float32)
    want = _grads(_native, x, kernel)
    fn = tf.function(lambda a, b: _grads(networks.conv2d_same, a, b),
                     jit_compile=True)
    for a, b in zip(fn(x, kernel), want):
        # float32 sums of <= 360 products: ~1e-6 relative; 1e-4 is loose.
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4)
