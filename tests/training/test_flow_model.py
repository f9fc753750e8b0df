"""FlowModel on one device: fit/evaluate/predict, ActNorm init, XLA, saving,
bad input."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_flows
from tests.training import training_helpers as th
from tfp_flows import bijectors as B
from tfp_flows import masks
from tfp_flows.training import FlowModel
from tfp_flows.training.init import actnorms

tfd = tfp.distributions
LN2 = np.log(2.0)


def _actnorm_values(dist):
    return [(b.loc.numpy().copy(), b.log_scale.numpy().copy()) for b in actnorms(dist)]


class _RecordBeforeFirstUpdate(keras.callbacks.Callback):
    """Copies the ActNorm parameters right before the first optimizer step."""

    def __init__(self, dist):
        super().__init__()
        self.dist, self.values = dist, None

    def on_train_batch_begin(self, batch, logs=None):
        if self.values is None:
            self.values = _actnorm_values(self.dist)


def test_fit_changes_every_trainable_variable_and_logs_bits_per_dim():
    model = FlowModel(th.tiny_glow())
    model.compile(optimizer=keras.optimizers.Adam(1e-2), run_eagerly=True)
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    # Every parameter of the flow is a Keras trainable variable.
    assert len(before) == len(model.distribution.trainable_variables) > 20
    hist = model.fit(th.pixels(16), batch_size=8, epochs=2, verbose=0).history
    unchanged = [v.path for v in model.trainable_variables
                 if np.array_equal(v.numpy(), before[v.path])]
    assert not unchanged
    assert set(hist) == {"loss", "bits_per_dim"}
    # loss is the NLL in nats per image: bits/dim * D * ln 2 (float32 means).
    np.testing.assert_allclose(hist["loss"], np.array(hist["bits_per_dim"]) *
                               64 * LN2, rtol=1e-5)
    assert hist["loss"][-1] < hist["loss"][0]
    assert all(bool(b.initialized.numpy()) for b in actnorms(model.distribution))


def test_actnorm_initialised_from_first_training_batch_before_first_update():
    data = th.pixels(16, seed=1) + np.float32(0.5)  # continuous: no noise
    model = FlowModel(th.tiny_glow(), dequantize=False)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), run_eagerly=True)
    # Evaluating first (on other data) neither initialises nor uses that data.
    model.evaluate(th.pixels(8, seed=2) + np.float32(0.5), verbose=0)
    assert not any(bool(b.initialized.numpy()) for b in actnorms(model.distribution))

    probe = _RecordBeforeFirstUpdate(model.distribution)
    model.fit(data, batch_size=8, epochs=1, shuffle=False, verbose=0,
              callbacks=[probe])
    reference = th.tiny_glow()  # same seeds, same initial parameters
    tfp_flows.initialize(reference, data[:8])
    other = th.tiny_glow()
    tfp_flows.initialize(other, data[8:])
    for (loc, log_scale), (ref_loc, ref_ls), (o_loc, _) in zip(
            probe.values, _actnorm_values(reference), _actnorm_values(other)):
        # identical computation on identical inputs
        np.testing.assert_array_equal(loc, ref_loc)
        np.testing.assert_array_equal(log_scale, ref_ls)
        assert not np.allclose(loc, o_loc)  # the first batch, not the second


def test_restored_or_initialised_model_is_not_reinitialised():
    model = FlowModel(th.tiny_glow())
    model.compile(optimizer=keras.optimizers.SGD(0.0), run_eagerly=True)
    model.fit(th.pixels(8), batch_size=8, verbose=0)
    first = _actnorm_values(model.distribution)
    model.fit(th.pixels(8, seed=3) * 0 + 5, batch_size=8, verbose=0)
    for (a, b), (c, d) in zip(first, _actnorm_values(model.distribution)):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


def test_predict_call_and_evaluate_agree():
    data = th.pixels(16)
    model = FlowModel(th.tiny_glow())
    model.compile(run_eagerly=True)
    tfp_flows.initialize(model.distribution, data + 0.5)
    # call(): per-image bits/dim of the input as given
    x = data + np.float32(0.5)
    expected = -model.distribution.log_prob(x).numpy() / (64 * LN2)
    np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-6)
    # predict(): per-image bits/dim after fresh dequantisation noise; the
    # noise moves each value by much less than 0.5 bits/dim on this model.
    pred = model.predict(data, batch_size=8, verbose=0)
    assert pred.shape == (16,)
    np.testing.assert_allclose(pred, expected, atol=0.5)
    assert not np.allclose(pred, expected, atol=1e-6)  # noise was added
    bpd = model.evaluate(data, batch_size=8, verbose=0, return_dict=True)
    np.testing.assert_allclose(bpd["bits_per_dim"], pred.mean(), atol=0.1)
    # Without dequantisation predict is exactly call().
    exact = FlowModel(model.distribution, dequantize=False)
    exact.compile(run_eagerly=True)
    np.testing.assert_allclose(exact.predict(x, verbose=0), expected, rtol=1e-6)


def test_dataset_input_and_class_conditional_labels():
    model = FlowModel(th.tiny_glow(num_classes=3))
    assert model.label_bijector == "top_prior"
    model.compile(optimizer=keras.optimizers.Adam(1e-2), run_eagerly=True)
    labels = np.arange(16) % 3
    ds = tf.data.Dataset.from_tensor_slices((th.pixels(16), labels)).batch(8)
    weights = [v for v in model.trainable_variables if "class_weights" in v.path]
    before = weights[0].numpy().copy()
    model.fit(ds, epochs=1, verbose=0)
    changed = np.abs(weights[0].numpy() - before).sum(axis=1)
    assert np.all(changed > 0)  # every class row was trained
    with pytest.raises(ValueError, match="class-conditional"):
        model.evaluate(th.pixels(8), verbose=0)
    # An unconditional model ignores labels (e.g. tfds as_supervised).
    plain = FlowModel(th.tiny_glow())
    plain.compile(run_eagerly=True)
    out = plain.evaluate(ds, verbose=0, return_dict=True)
    assert np.isfinite(out["bits_per_dim"])


def test_class_conditional_vector_flow_fits_with_labels():
    """The model's description names the bijector that takes labels
    ('class_prior' for vector_flow, not Glow's 'top_prior'), and FlowModel
    routes labels there: each class's prior moves towards its own data."""
    dist = tfp_flows.models.vector_flow([2], num_couplings=2, hidden_units=8,
                                        num_classes=3)
    model = FlowModel(dist, dequantize=False)
    assert model.label_bijector == "class_prior"
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    labels = np.arange(96) % 3
    centres = np.array([[-4.0, 0.0], [0.0, 4.0], [4.0, 0.0]], np.float32)
    x = centres[labels] + 0.3 * np.random.default_rng(0).normal(size=(96, 2)).astype(np.float32)
    before = model.evaluate(x, labels, verbose=0, return_dict=True)["loss"]
    model.fit(x, labels, batch_size=32, epochs=20, verbose=0)
    after = model.evaluate(x, labels, verbose=0, return_dict=True)["loss"]
    assert np.isfinite(after) and after < before - 1.0  # nats per example
    with pytest.raises(ValueError, match="class-conditional"):
        model.evaluate(x, verbose=0)


def test_jit_compile_true_matches_eager_step_and_auto_is_off_on_cpu():
    data = th.pixels(8) + np.float32(0.5)
    results = []
    for jit in (False, True):  # the reference step runs eagerly
        model = FlowModel(th.tiny_glow(), dequantize=False)
        model.compile(optimizer=keras.optimizers.SGD(1e-3), jit_compile=jit,
                      run_eagerly=not jit)
        assert model.jit_compile is jit
        model.fit(data, batch_size=8, epochs=1, verbose=0)
        results.append([v.numpy() for v in model.trainable_variables])
    for a, b in zip(*results):
        # XLA fuses and reorders float32 ops: agreement to rounding only.
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # The default path (uniform dequantisation noise drawn inside the step)
    # compiles with XLA too, as it must on TPU.
    model.dequantize = True
    model.compile(optimizer=keras.optimizers.SGD(1e-3), jit_compile=True)
    loss = model.fit(th.pixels(8), batch_size=8, verbose=0).history["loss"]
    assert model.jit_compile is True and np.isfinite(loss[0])
    auto = FlowModel(th.tiny_glow())
    auto.compile()
    # Keras "auto": XLA only with a GPU/TPU and no tf.distribute strategy.
    assert auto.jit_compile is False and not tf.config.list_physical_devices("GPU")


def test_keras_file_round_trip(tmp_path):
    data = th.pixels(16)
    model = FlowModel(th.tiny_glow())
    model.compile(optimizer=keras.optimizers.Adam(1e-2), run_eagerly=True)
    model.fit(data, batch_size=8, verbose=0)
    path = str(tmp_path / "flow.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, FlowModel)
    assert loaded.distribution.bijector.description.config == \
        model.distribution.bijector.description.config
    for a, b in zip(model.variables + model.optimizer.variables,
                    loaded.variables + loaded.optimizer.variables):
        assert a.path == b.path
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert all(bool(b.initialized.numpy()) for b in actnorms(loaded.distribution))
    x = data + np.float32(0.5)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    # It keeps training, without re-initialising ActNorm.
    loaded.run_eagerly = True
    an = _actnorm_values(loaded.distribution)
    probe = _RecordBeforeFirstUpdate(loaded.distribution)
    loaded.fit(data, batch_size=8, verbose=0, callbacks=[probe])
    for (a, _), (b, _) in zip(an, probe.values):
        np.testing.assert_array_equal(a, b)


def _vector_flow(network=None):
    keras.utils.set_random_seed(0)
    chain = B.FlowChain([
        B.ActNorm(4, event_ndims=1, name="an"),
        B.AffineCoupling(masks.channel([4]), network=network or keras.Sequential(
            [keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(4)]),
            name="cpl"),
    ], name="user_chain")
    return tfd.TransformedDistribution(
        tfd.Sample(tfd.Normal(0.0, 1.0), [4]), chain)


def test_weights_only_save_for_user_built_distribution(tmp_path):
    data = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    model = FlowModel(_vector_flow(), dequantize=False)
    model.compile(optimizer="adam", run_eagerly=True)
    model.fit(data, batch_size=8, verbose=0)
    with pytest.raises(NotImplementedError, match="save_weights"):
        model.get_config()
    path = str(tmp_path / "user.weights.h5")
    model.save_weights(path)
    other = FlowModel(_vector_flow(), dequantize=False)
    other.load_weights(path)
    for a, b in zip(model.variables, other.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(model(data).numpy(), other(data).numpy())


class _BareModuleNet(tf.Module):
    """A coupling network with raw tf.Variables and no Keras layer."""

    def __init__(self):
        super().__init__()
        self.w = tf.Variable(tf.zeros([2, 4]))

    def __call__(self, h):
        return tf.matmul(h, self.w)


def test_variables_not_owned_by_keras_raise():
    with pytest.raises(ValueError, match="not owned by a Keras layer"):
        FlowModel(_vector_flow(network=_BareModuleNet()))


@pytest.mark.parametrize("bad, match", [
    (np.zeros((4, 8, 8, 3), np.float32), "shape"),
    (np.full((4, 8, 8, 1), np.nan, np.float32), "NaN"),
    (np.full((4, 8, 8, 1), 17.0, np.float32), "must lie in"),
    (np.full((4, 8, 8, 1), 1.5, np.float32), "integer-valued"),
])
def test_bad_images_raise_value_error(bad, match):
    model = FlowModel(th.tiny_glow())
    model.compile()
    with pytest.raises(ValueError, match=match):
        model.fit(bad, verbose=0)
    with pytest.raises(ValueError, match=match):
        model.evaluate(bad, verbose=0)


def test_unbatched_dataset_and_compile_loss_raise():
    model = FlowModel(th.tiny_glow())
    with pytest.raises(ValueError, match="loss"):
        model.compile(loss="mse")
    model.compile()
    ds = tf.data.Dataset.from_tensor_slices(th.pixels(4))
    with pytest.raises(ValueError, match=r"batch\(\)"):
        model.fit(ds, verbose=0)
    with pytest.raises(TypeError, match="TransformedDistribution"):
        FlowModel(tfd.Normal(0.0, 1.0))
