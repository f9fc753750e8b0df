"""Both Keras 3 and tf.Module see every parameter of every bijector."""

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_flows
from tests.bijector_registry import ENTRIES
from tfp_flows import bijectors as B
from tfp_flows import masks

tfb, tfd = tfp.bijectors, tfp.distributions


def _ids(variables):
    """Identity of the storage: Keras variables resolve to their tf.Variable."""
    return {id(v.value) if isinstance(v, keras.Variable) else id(v) for v in variables}


class Holder(keras.Model):
    """The minimal Keras 3 model holding a distribution."""

    def __init__(self, dist):
        super().__init__()
        self.dist = dist
        self.flow_layers = tfp_flows.keras_layers(dist)

    def call(self, x):
        return self.dist.log_prob(x)


def _all_entries_distribution():
    """One distribution per registry entry that owns variables."""
    out = []
    for e in ENTRIES:
        if not e.has_variables or e.kwargs:
            continue
        b = e.make(tf.float32)
        base_shape = b.inverse_event_shape(e.event_shape)
        base = tfd.Sample(tfd.Normal(0.0, 1.0), sample_shape=base_shape)
        out.append((e, tfd.TransformedDistribution(base, b)))
    return out


def test_keras_model_and_tf_module_see_the_same_variables_for_every_bijector():
    for entry, dist in _all_entries_distribution():
        model = Holder(dist)
        tf_side = _ids(dist.trainable_variables)
        keras_side = _ids(model.trainable_variables)
        assert tf_side, entry.name
        assert tf_side == keras_side, entry.name
        assert _ids(dist.variables) == _ids(model.variables), entry.name


def test_nested_chains_and_invert_are_walked():
    inner = B.FlowChain([B.ActNorm(2, name="a"),
                         B.AffineCoupling(masks.channel([4, 4, 2]), hidden=4, name="c")],
                        name="inner")
    outer = tfb.Chain([tfb.Invert(B.FactorOut(inner, 2, name="fo")),
                       B.InvertibleConv1x1(4, name="conv")])
    dist = tfd.TransformedDistribution(tfd.Sample(tfd.Normal(0.0, 1.0), [4, 4, 4]), outer)
    model = Holder(dist)
    # ActNorm params, the coupling network, the 1x1 conv params
    assert len(tfp_flows.keras_layers(dist)) == 3
    assert _ids(dist.trainable_variables) == _ids(model.trainable_variables)


def test_keras_optimizer_step_moves_the_variables_tf_module_sees():
    dist = tfp_flows.models.glow([4, 4, 1], num_levels=1, num_steps=2, hidden_channels=8)
    x = tf.random.uniform([8, 4, 4, 1], 0, 256)
    tfp_flows.initialize(dist, x)
    model = Holder(dist)
    opt = keras.optimizers.Adam(1e-2)
    before = [v.numpy().copy() for v in dist.trainable_variables]

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(model(x))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    for _ in range(3):
        step(x)
    changed = [not np.allclose(b, v.numpy()) for b, v in zip(before, dist.trainable_variables)]
    assert all(changed), [v.name for v, c in zip(dist.trainable_variables, changed) if not c]


def test_gradient_tape_on_dist_trainable_variables_reaches_everything():
    dist = tfp_flows.models.nice([6], hidden_units=8, num_hidden_layers=1, n_bits=None)
    x = tf.random.normal([16, 6])
    # move the zero-initialised output layers so every gradient is non-zero
    for v in dist.trainable_variables:
        v.assign(v + 0.1 * tf.random.normal(v.shape))
    with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(dist.log_prob(x))
    grads = tape.gradient(loss, dist.trainable_variables)
    assert all(g is not None and np.any(g.numpy()) for g in grads)


def test_checkpoint_saves_each_parameter_once():
    dist = tfp_flows.models.glow([4, 4, 1], num_levels=1, num_steps=1, hidden_channels=4)
    n_vars = len(dist.variables)
    path = tf.train.Checkpoint(dist=dist).write("/tmp/tfp_flows_ckpt_once/ckpt")
    saved = [name for name, _ in tf.train.list_variables(path)
             if name != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    assert len(saved) == n_vars


def test_parameters_are_float32_under_keras_autocast():
    """Bijector math reads raw variables: never autocast by a mixed policy."""
    act = B.ActNorm(3)
    assert act.loc.dtype == tf.float32
    layer = act.parameter_layers[0]
    assert all(not v._autocast for v in layer.weights)  # pylint: disable=protected-access
