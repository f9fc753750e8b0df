"""The fused Adam update of FlowModel: the same updates as Keras 3's Adam,
a smaller train-step graph, and Keras' path wherever the kernel does not
apply."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfp_flows import models
from tfp_flows.training import FlowModel
from tfp_flows.training.fused_adam import fuse_adam, is_fused


def _images(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 16, size=(n, 4, 4, 2)).astype(np.float32)


def _model(fused, optimizer=None, jit=False):
    keras.utils.set_random_seed(0)
    dist = models.glow([4, 4, 2], num_bins=16, num_levels=1, num_steps=2,
                       hidden_channels=8, seed=0)
    # continuous data, no noise: XLA's random ops do not repeat across runs
    model = FlowModel(dist, dequantize=False)
    model.compile(optimizer=optimizer or keras.optimizers.Adam(1e-2),
                  fused_adam=fused, jit_compile=jit)
    return model


def _trained(fused, optimizer=None, jit=False, steps=3):
    model = _model(fused, optimizer, jit)
    model.fit(_images() + 0.5, batch_size=16 // steps, epochs=1,
              verbose=0, shuffle=False)
    return model


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_fused_updates_equal_keras_adam(jit):
    plain, fused = _trained(False, jit=jit), _trained(True, jit=jit)
    assert is_fused(fused.optimizer) and not is_fused(plain.optimizer)
    assert int(fused.optimizer.iterations) == int(plain.optimizer.iterations) > 1
    # float32: the kernel and Keras' ops round differently (~1e-7 per step)
    for a, b in zip(plain.trainable_variables, fused.trainable_variables):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-5)
    # the moments: the weights' rounding differences feed the next gradients
    # (measured up to 5e-4 relative on entries of ~1e-2 after 3 steps)
    for a, b in zip(plain.optimizer.variables, fused.optimizer.variables):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=2e-3, atol=1e-6)


def test_fused_step_graph_is_smaller():
    def graph_ops(fused):
        model = _model(fused)
        step = tf.function(model.train_step).get_concrete_function(
            tf.TensorSpec([16, 4, 4, 2], tf.float32))
        ops = step.graph.get_operations()
        pows = sum(op.type == "Pow" for op in ops)
        return len(ops), pows, len(model.trainable_variables)

    plain, _, n = graph_ops(False)
    fused, pows, _ = graph_ops(True)
    # Keras' Adam writes ~15 ops per variable; the kernel is one (plus a cast)
    assert plain - fused >= 12 * n, (plain, fused, n)
    # beta_1^t and beta_2^t once for all (float32) variables, not per variable
    assert pows == 2, pows


def test_eager_updates_of_mixed_dtypes():
    # outside tf.function, with float32 and float64 variables in one update:
    # the shared scalars are made once per dtype, in each variable's dtype
    def run(fused, steps=3):
        opt = keras.optimizers.Adam(0.05)
        if fused:
            assert fuse_adam(opt)
        a = keras.Variable(np.ones(3, np.float32))
        b = keras.Variable(np.arange(2.0), dtype="float64")
        for _ in range(steps):
            with tf.GradientTape() as tape:
                loss = (tf.reduce_sum(a.value ** 3)
                        + tf.cast(tf.reduce_sum(tf.sin(b.value)), tf.float32))
            opt.apply_gradients(zip(tape.gradient(loss, [a.value, b.value]), [a, b]))
        assert "_fused_scalars" not in opt.__dict__  # the cache lives for one update
        return a.numpy(), b.numpy()

    def reference_adam(b, lr, steps):  # Adam's formula in float64
        m = v = np.zeros_like(b)
        for t in range(1, steps + 1):
            g = np.cos(b)
            m, v = m + (g - m) * 0.1, v + (g * g - v) * 0.001
            b = b - lr * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t) * m / (np.sqrt(v) + 1e-7)
        return b

    (a0, _), (a1, b1) = run(False), run(True)
    # float32: the kernel and Keras' ops round differently (1.2e-6 relative
    # measured after 3 steps)
    np.testing.assert_allclose(a1, a0, rtol=1e-5)
    # float64: Adam's formula (Keras' own float64 update is off by 6.7e-6 of
    # the learning rate per step, so the reference is NumPy's), to float64
    # rounding through three steps (1.5e-10 relative measured; Keras' float32
    # learning-rate variable is the rate)
    assert b1.dtype == np.float64
    np.testing.assert_allclose(b1, reference_adam(np.arange(2.0), float(np.float32(0.05)), 3),
                               rtol=1e-9)


def test_where_the_kernel_does_not_apply_keras_updates():
    # amsgrad: Keras' own update (the kernel has no v_hat), same result
    a = _trained(False, keras.optimizers.Adam(1e-2, amsgrad=True))
    b = _trained(True, keras.optimizers.Adam(1e-2, amsgrad=True))
    for x, y in zip(a.trainable_variables, b.trainable_variables):
        np.testing.assert_allclose(y.numpy(), x.numpy(), rtol=1e-6, atol=1e-7)
    # only plain Adam instances are changed; a loss-scale wrapper is looked through
    assert not fuse_adam(keras.optimizers.SGD(0.1))

    class MyAdam(keras.optimizers.Adam):
        pass
    assert not fuse_adam(MyAdam())
    wrapped = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam())
    assert fuse_adam(wrapped) and is_fused(wrapped)


def test_schedules_and_clipping_still_apply():
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-2, 1, 0.5)
    a = _trained(False, keras.optimizers.Adam(schedule, global_clipnorm=0.1))
    b = _trained(True, keras.optimizers.Adam(schedule, global_clipnorm=0.1))
    for x, y in zip(a.trainable_variables, b.trainable_variables):
        np.testing.assert_allclose(y.numpy(), x.numpy(), rtol=1e-4, atol=1e-5)
