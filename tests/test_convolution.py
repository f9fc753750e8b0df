"""`conv2d_same` (tfp_flows/convolution.py): every path (1x1 matrix product,
tiny maps, tap-combine, narrowing gradient, TensorFlow's own) against `tf.nn.conv2d`, under XLA, and
with an empty batch whatever the CPU backend (oneDNN on or off)."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tfp_flows import convolution


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
    ((3, 4, 4, 6), 1, 8),      # 1x1: one matrix product
    ((2, 1, 3, 9), 1, 2),      # 1x1, narrowing, non-square map
])
def test_conv2d_same_matches_tensorflow_in_value_and_gradient(shape, k, c_out):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=shape), tf.float64)
    kernel = tf.constant(rng.normal(size=(k, k, shape[-1], c_out)), tf.float64)
    ours, theirs = _grads(convolution.conv2d_same, x, kernel), _grads(_native, x, kernel)
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
        fn = tf.function(lambda a, b: _grads(convolution.conv2d_same, a, b),
                         input_signature=spec, jit_compile=jit)
        for a, b in zip(fn(x, kernel), want):
            # float32 sums of ~100 products: ~1e-6 relative; 1e-4 is loose.
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape,c_out", [((2, 2, 2, 6), 5), ((2, 4, 4, 40), 4)])
def test_conv2d_same_small_map_paths_under_xla(shape, c_out):
    """The dense and tap-combine paths (static shapes) compile with XLA and
    give TensorFlow's values and gradients."""
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(size=shape), tf.float32)
    kernel = tf.constant(rng.normal(size=(3, 3, shape[-1], c_out)) * 0.1, tf.float32)
    want = _grads(_native, x, kernel)
    fn = tf.function(lambda a, b: _grads(convolution.conv2d_same, a, b),
                     jit_compile=True)
    for a, b in zip(fn(x, kernel), want):
        # float32 sums of <= 360 products: ~1e-6 relative; 1e-4 is loose.
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k", [1, 3])
def test_conv2d_same_bias_and_activation(k):
    """``conv2d_same(x, K, b, f) == f(conv(x, K) + b)``, traced with unknown
    batch and spatial sizes too (the 1x1 path then reshapes dynamically)."""
    rng = np.random.default_rng(4)
    x = tf.constant(rng.normal(size=(2, 5, 3, 6)), tf.float64)
    kernel = tf.constant(rng.normal(size=(k, k, 6, 4)), tf.float64)
    bias = tf.constant(rng.normal(size=4), tf.float64)
    want = tf.nn.relu(tf.nn.bias_add(_native(x, kernel), bias))
    fn = tf.function(lambda *a: convolution.conv2d_same(*a, tf.nn.relu), input_signature=[
        tf.TensorSpec([None, None, None, 6], tf.float64),
        tf.TensorSpec(kernel.shape, tf.float64), tf.TensorSpec([4], tf.float64)])
    for got in (convolution.conv2d_same(x, kernel, bias, tf.nn.relu), fn(x, kernel, bias)):
        # float64: only summation order differs.
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-10, atol=1e-10)


# One shape per path of conv2d_same: (input shape, kernel size, c_out).
_PATHS = [((0, 2, 2, 5), 3, 7),     # tiny map: dense matrix product
          ((0, 4, 4, 40), 3, 4),    # small map, narrowing: tap-combine
          ((0, 8, 8, 16), 3, 4),    # narrowing: custom gradient
          ((0, 4, 4, 2), 3, 8),     # widening: tf.nn.conv2d
          ((0, 4, 4, 8), 1, 16)]    # 1x1: matrix product


@pytest.mark.parametrize("shape,k,c_out", _PATHS)
def test_conv2d_same_of_an_empty_batch_has_the_output_channels(shape, k, c_out):
    """Eager, and traced with an unknown batch: ``[0, H, W, c_out]``."""
    x = tf.zeros(shape)
    kernel = tf.ones((k, k, shape[-1], c_out))
    assert convolution.conv2d_same(x, kernel).shape == shape[:3] + (c_out,)
    fn = tf.function(convolution.conv2d_same, input_signature=[
        tf.TensorSpec((None,) + shape[1:]), tf.TensorSpec(kernel.shape)])
    assert fn(x, kernel).shape == shape[:3] + (c_out,)


def test_same_conv2d_layer_of_an_empty_batch():
    layer = convolution.SameConv2D(8, 3, activation="relu")
    assert layer(tf.zeros((0, 4, 4, 2))).shape == (0, 4, 4, 8)
    assert layer(tf.ones((3, 4, 4, 2))).shape == (3, 4, 4, 8)


def test_same_conv2d_refuses_strides():
    with pytest.raises(ValueError, match="stride-1"):
        convolution.SameConv2D(8, 3, strides=2)


_SCRIPT = textwrap.dedent("""
    import numpy as np, tensorflow as tf, tfp_flows
    from tfp_flows import convolution
    paths = %r
    for shape, k, c_out in paths:
        y = convolution.conv2d_same(tf.zeros(shape), tf.ones((k, k, shape[-1], c_out)))
        assert y.shape == shape[:3] + (c_out,), (shape, k, c_out, y.shape)
    # the architecture issue's case: log_prob of an initialised Glow
    dist = tfp_flows.models.glow([8, 8, 1], num_levels=2, num_steps=2,
                                 hidden_channels=8, num_bins=17)
    x = np.random.default_rng(0).integers(0, 17, (16, 8, 8, 1)).astype("float32")
    tfp_flows.initialize(dist, x)
    assert dist.log_prob(tf.zeros((0, 8, 8, 1))).shape == (0,)
    print("ok")
""")


@pytest.mark.parametrize("onednn", ["0", "1"])
def test_empty_batch_shapes_with_onednn_on_and_off(onednn):
    """oneDNN (default on Intel CPUs with AVX-512) returns the input's shape
    from tf.nn.conv2d on an empty batch; conv2d_same must not. The setting is
    read when TensorFlow loads, hence a fresh process for each."""
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn, "TF_CPP_MIN_LOG_LEVEL": "3",
           "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, "-c", _SCRIPT % (_PATHS,)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]
