"""Coupling networks: GlowCNN (its raw-op first convolution) against its own
Keras layers, on tiny and ordinary maps."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfp_flows import networks


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


def test_global_policy_is_set_inside_and_restored_after_an_error():
    before = keras.config.dtype_policy().name
    with pytest.raises(RuntimeError):
        with networks.global_policy("mixed_bfloat16"):
            assert networks.policy_for(tf.float32) == "mixed_bfloat16"
            net = networks.GlowCNN(4, 8)
            assert net.compute_dtype == "bfloat16"
            raise RuntimeError("building failed")
    assert keras.config.dtype_policy().name == before
