"""The other ways to train (a tf.GradientTape loop, tf_keras) and mixed
precision."""

import contextlib

import keras
import numpy as np
import tensorflow as tf
import tf_keras

import tfp_flows
from tests.training import training_helpers as th
from tfp_flows.training import FlowModel


def test_gradient_tape_loop_over_dist_trainable_variables():
    dist = th.tiny_glow()
    data = th.pixels(16)
    tfp_flows.initialize(dist, data + 0.5)
    variables = dist.trainable_variables
    before = [v.numpy().copy() for v in variables]
    opt = tf.optimizers.SGD(1e-3)  # plain TF: no Keras model involved

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(dist.log_prob(x))
        grads = tape.gradient(loss, variables)
        opt.apply_gradients(zip(grads, variables))
        return loss

    losses = []
    for i in range(4):
        x = data + tf.random.uniform(data.shape, seed=i)
        losses.append(float(step(x)))
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(before, variables))
    assert losses[-1] < losses[0]


class _TFKerasFlow(tf_keras.Model):
    """A Keras 2 model holding a tfp_flows distribution as an attribute."""

    def __init__(self, dist):
        super().__init__()
        self.flow = dist

    def call(self, x):
        return -self.flow.log_prob(x)


def test_tf_keras_model_holding_the_bijectors_trains():
    dist = th.tiny_glow()
    data = th.pixels(16) + np.float32(0.5)
    tfp_flows.initialize(dist, data)
    model = _TFKerasFlow(dist)
    # tf_keras tracks the flow's variables through the tf.Module attribute.
    assert len(model.trainable_variables) == len(dist.trainable_variables)
    model.compile(optimizer=tf_keras.optimizers.Adam(1e-2),
                  loss=lambda _, nll: tf.reduce_mean(nll), run_eagerly=True)
    before = [v.numpy().copy() for v in dist.trainable_variables]
    hist = model.fit(data, np.zeros(16), batch_size=8, epochs=2, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert all(not np.array_equal(b, v.numpy())
               for b, v in zip(before, dist.trainable_variables))


@contextlib.contextmanager
def _policy(name):
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_mixed_bfloat16_networks_low_precision_log_dets_float32():
    data = th.pixels(16)
    with _policy("mixed_bfloat16"):
        low = th.tiny_glow()
    full = th.tiny_glow()
    m_low, m_full = FlowModel(low), FlowModel(full)
    nets = [layer for layer in m_low.flow_layers if layer.name.endswith("_net")]
    assert nets and all(n.compute_dtype == "bfloat16" for n in nets)
    assert nets[0](tf.zeros([1, 4, 4, 4])).dtype == tf.bfloat16
    # Parameters (master weights), log-dets and the prior stay float32.
    assert all(v.dtype == "float32" for v in m_low.trainable_variables)
    x = data + np.float32(0.5)
    assert low.bijector.inverse_log_det_jacobian(x, event_ndims=3).dtype == tf.float32
    m_low.compile(optimizer=keras.optimizers.Adam(1e-2), run_eagerly=True)
    hist = m_low.fit(data, batch_size=8, epochs=2, verbose=0).history
    assert np.all(np.isfinite(hist["loss"])) and hist["loss"][-1] < hist["loss"][0]
    lp_low = low.log_prob(x)
    assert lp_low.dtype == tf.float32
    # Same weights in float32: the low-precision networks give a different
    # but close log-density (bf16 has an 8-bit mantissa, ~3e-3 relative).
    m_full.set_weights(m_low.get_weights())
    lp_full = full.log_prob(x).numpy()
    diff = np.abs(lp_low.numpy() - lp_full)
    assert diff.max() > 0
    np.testing.assert_allclose(lp_low.numpy(), lp_full, rtol=1e-2)


def test_mixed_float16_wraps_loss_scale_optimizer_and_trains():
    with _policy("mixed_float16"):
        dist = tfp_flows.models.nice([8], num_couplings=2, hidden_units=8,
                                     num_hidden_layers=1, n_bits=None)
    model = FlowModel(dist, dequantize=False)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), run_eagerly=True)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    data = np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32)
    hist = model.fit(data, batch_size=8, epochs=2, verbose=0).history
    assert np.all(np.isfinite(hist["loss"]))
    assert model.distribution.log_prob(data).dtype == tf.float32
