"""Reversible (memory-efficient) gradients: same gradients as the normal path,
everywhere (eager, tf.function, XLA, Keras fit, MirroredStrategy)."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_flows
from tests.bijector_registry import ENTRIES, call_kwargs
from tests.model_helpers import pixels, ready
from tfp_flows import bijectors as B
from tfp_flows import masks, models
from tfp_flows.bijectors.base import FlowBijector
from tfp_flows.bijectors.reversible import blocks as _blocks

tfb, tfd = tfp.bijectors, tfp.distributions
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Reconstructing layer inputs through the inverses only adds float64 rounding:
# ~1e-16 per op, compounded through a few dozen layers (each inverse then
# forward, Glow's sigmoid scales and 1x1 convolutions) gives the ~1e-14
# observed here. 1e-10 leaves four orders of magnitude for other inputs and
# platforms while still catching any real error (a dropped or wrong term is
# O(1e-3) or more; float32 rounding alone would be ~1e-6).
RTOL_64 = 1e-10
# float32: rounding of the reconstruction compounds over a few dozen layers.
RTOL_32 = 2e-3


def _max_rel_diffs(ref, got):
    """Per-tensor max|got - ref| / max|ref| (relative to the tensor's scale,
    so near-zero entries of a gradient do not dominate)."""
    out = []
    for a, b in zip(ref, got):
        assert (a is None) == (b is None), "different gradient structure"
        if a is None:
            continue
        a = tf.convert_to_tensor(a).numpy()
        b = tf.convert_to_tensor(b).numpy()
        scale = max(float(np.abs(a).max()), 1e-300)
        out.append(float(np.abs(a - b).max()) / scale)
    return out


def _log_prob_grads(dist, x, kwargs=None, function=False, jit=False):
    variables = list(dist.trainable_variables)

    def run(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(dist.log_prob(x, bijector_kwargs=kwargs or {}))
        return loss, tape.gradient(loss, [x] + variables)

    if function:
        run = tf.function(run, jit_compile=jit)
    return run(tf.convert_to_tensor(x))


def _labels(n):
    return tf.constant(np.arange(n) % 3, tf.int32)


MODELS = {
    "glow": lambda: models.glow([8, 8, 3], 2, 2, 8, seed=1, dtype=tf.float64),
    "glow_class_conditional": lambda: models.glow(
        [4, 4, 2], 2, 1, 8, coupling="additive", num_classes=3, seed=2,
        dtype=tf.float64),
    "real_nvp": lambda: models.real_nvp([8, 8, 1], 2, hidden_channels=8,
                                        num_blocks=1, dtype=tf.float64),
    "nice": lambda: models.nice([4, 4, 1], hidden_units=16,
                                num_hidden_layers=2, dtype=tf.float64),
}


# In a graph, repeated blocks run as traced functions: test both Glows there.
@pytest.mark.parametrize("name,function", [(n, False) for n in MODELS]
                         + [("glow", True), ("glow_class_conditional", True)])
def test_model_gradients_match_normal_path_float64(name, function):
    rng = np.random.default_rng(3)
    dist = MODELS[name]()
    kwargs = ({"top_prior": {"labels": _labels(4)}}
              if name == "glow_class_conditional" else None)
    ready(dist, rng, bijector_kwargs=kwargs, scale=0.1, batch=4)
    lean = tfp_flows.memory_efficient(dist)
    x = pixels(dist.event_shape, rng, batch=4).astype(np.float64)
    loss_ref, g_ref = _log_prob_grads(dist, x, kwargs, function)
    loss, g = _log_prob_grads(lean, x, kwargs, function)
    np.testing.assert_allclose(loss.numpy(), loss_ref.numpy(), rtol=1e-12)
    diffs = _max_rel_diffs(g_ref, g)
    assert len(diffs) == 1 + len(dist.trainable_variables)  # input + every var
    assert max(diffs) < RTOL_64, max(diffs)


def _gradient_graph_ops(dist, x):
    variables = list(dist.trainable_variables)

    @tf.function
    def grads(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(dist.log_prob(x))
        return tape.gradient(loss, variables)

    graph = grads.get_concrete_function(x).graph
    ops = graph.get_operations()
    calls = sum(op.type in ("StatefulPartitionedCall", "PartitionedCall")
                for op in ops)
    return len(ops), calls


def test_gradient_graph_does_not_copy_repeated_blocks():
    """Glow's K steps per level are traced once and called K times, so each
    extra step adds a few graph ops (a call, captures, one read per
    variable) instead of a copy of the step and its gradient."""
    rng = np.random.default_rng(10)
    x = tf.constant(pixels([8, 8, 1], rng, batch=2))
    counts = {}
    for k in (2, 4):
        dist = ready(models.glow([8, 8, 1], 2, k, 4, seed=0), rng, batch=2)
        counts[k] = (_gradient_graph_ops(dist, x),
                     _gradient_graph_ops(tfp_flows.memory_efficient(dist), x))
    steps_added = 2 * 2  # 2 levels x 2 steps
    normal = (counts[4][0][0] - counts[2][0][0]) / steps_added
    lean = (counts[4][1][0] - counts[2][1][0]) / steps_added
    assert counts[4][1][1] - counts[2][1][1] == 2 * steps_added  # fwd + bwd
    # Measured: ~300 ops per step on the normal path (~550 before ActNorm
    # and the 1x1 convolution ran as one map), ~45 here.
    assert lean < 100 and normal > 4 * lean, (lean, normal)


def test_builders_flag_sets_every_chain():
    dist = models.glow([8, 8, 1], 3, 1, 4, memory_efficient=True)
    chains = [b for b in B.flow_bijectors(dist.bijector)
              if isinstance(b, B.FlowChain)]
    assert len(chains) == 3 and all(c.memory_efficient for c in chains)
    normal = tfp_flows.memory_efficient(dist, enabled=False)
    assert not any(c.memory_efficient for c in B.flow_bijectors(normal.bijector)
                   if isinstance(c, B.FlowChain))
    assert normal.bijector.description.config["memory_efficient"] is False
    assert dist.bijector.description.config["memory_efficient"] is True


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_every_registry_bijector_in_a_memory_efficient_chain(entry):
    rng = np.random.default_rng(4)
    b = entry.make(tf.float64)
    for v in b.variables:
        if v.dtype.is_floating and v.trainable:
            v.assign(v + tf.constant(0.1 * rng.standard_normal(v.shape), v.dtype))
        elif v.dtype == tf.bool:
            v.assign(True)
    x = tf.constant(entry.sample((3,) + entry.event_shape, tf.float64, rng))
    kwargs = call_kwargs(entry, (3,), rng, tf.float64)
    plain = B.FlowChain([b], name="plain")
    lean = B.ReversibleChain([b], name="lean")
    grads = []
    for chain in (plain, lean):
        with tf.GradientTape() as tape:
            tape.watch(x)
            z, ldj = B.inverse_and_log_det(chain, x, **{b.name: kwargs})
            loss = tf.reduce_sum(tf.sin(z)) + tf.reduce_sum(ldj * [1.0, 2.0, 3.0])
        grads.append(tape.gradient(loss, [x] + list(chain.trainable_variables)))
    assert max(_max_rel_diffs(*grads)) < RTOL_64


class _Conditioned(FlowBijector):
    """Test bijector with a float conditioning input: ``y = x * exp(c * w)``."""

    def __init__(self, name="conditioned", size=2):
        self._w = tf.Variable(np.linspace(0.3, -0.2, size), dtype=tf.float64,
                              name="w")
        super().__init__(event_ndims=1, parameters=dict(name=name, size=size),
                         name=name, dtype=tf.float64)

    def _scale(self, context):
        return context[..., None] * self._w

    def _forward_and_log_det(self, x, context=None, **kwargs):
        s = self._scale(context)
        return x * tf.exp(-s), -tf.reduce_sum(s, -1)

    def _inverse_and_log_det(self, y, context=None, **kwargs):
        s = self._scale(context)
        return y * tf.exp(s), tf.reduce_sum(s, -1)


def test_nested_chains_invert_tfp_bijectors_and_float_kwargs():
    rng = np.random.default_rng(5)
    d = tf.float64
    w = tf.Variable(rng.standard_normal((4, 4)) * 0.3, dtype=d, name="dense_w")

    def make(memory_efficient):
        chain_type = B.ReversibleChain if memory_efficient else B.FlowChain
        inner = chain_type([
            _Conditioned(),
            tfb.Chain([tfb.Invert(tfb.Exp(), name="exp"),  # inverse: log(2 e^y)
                       tfb.Scale(tf.Variable(np.float64(2.0)), name="scale"),
                       tfb.Exp(name="log")], name="tfp_chain"),
            B.AffineCoupling(masks.channel([2]), hidden=8, dtype=d,
                             scale_fn="exp_tanh", name="inner_cpl"),
        ], name="kept")
        return chain_type([
            B.ActNorm(4, event_ndims=1, dtype=d, name="an"),
            tfb.ScaleMatvecTriL(tf.Variable(
                np.eye(4) + 0.1 * np.tril(np.ones((4, 4)), -1), dtype=d),
                name="tfp_tril"),
            tfb.Invert(chain_type([
                B.AffineCoupling(masks.checkerboard([4]), hidden=8, dtype=d,
                                 name="inv_cpl"),
                tfb.Shift(tf.Variable(rng.standard_normal(4) * 0.1, dtype=d),
                          name="tfp_shift"),
            ], name="inverted")),
            B.FactorOut(inner, num_kept=2, name="split"),
            B.AdditiveCoupling(masks.checkerboard([4]), hidden=8, dtype=d,
                               name="add"),
        ], name="outer")

    plain = make(False)
    for v in plain.trainable_variables:
        v.assign(v + tf.constant(0.1 * rng.standard_normal(v.shape), d))
    plain.bijectors[0].initialized.assign(True)
    lean = tfp_flows.memory_efficient(plain)
    variables = list(plain.trainable_variables)
    assert {v.ref() for v in lean.trainable_variables} == {
        v.ref() for v in variables}
    x = tf.constant(rng.standard_normal((5, 4)), d)
    context = tf.constant(rng.standard_normal(5), d)
    results = []
    for chain in (plain, lean):
        with tf.GradientTape() as tape:
            tape.watch([x, context])
            z, ldj = B.inverse_and_log_det(chain, x,
                                           conditioned={"context": context})
            loss = tf.reduce_sum(tf.tanh(z @ w)) + tf.reduce_sum(ldj ** 2)
        results.append(tape.gradient(loss, [x, context] + variables))
    diffs = _max_rel_diffs(*results)
    assert results[1][1] is not None  # the conditioning input got a gradient
    assert max(diffs) < RTOL_64, diffs


@keras.saving.register_keras_serializable(package="tests")
class OffsetDense(keras.layers.Layer):
    """Dense layer that adds an eagerly created constant: a traced block
    captures a tensor that is not one of its variables."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.offset = tf.constant(0.25, tf.float64)

    def build(self, shape):
        self.kernel = self.add_weight(shape=(shape[-1], self.units),
                                      initializer="glorot_uniform")

    def call(self, x):
        return tf.matmul(x, self.kernel) * 0.1 + self.offset

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def test_blocks_fall_back_to_layers_when_unsafe_or_conditioned():
    """Repeated blocks whose trace captures a foreign tensor, or that receive
    conditioning kwargs, take the per-layer path: same gradients."""
    d = tf.float64

    def make(memory_efficient):
        layers = []
        for i in range(3):
            layers.append(B.AffineCoupling(
                masks.checkerboard([4]),
                OffsetDense(4, dtype="float64"), dtype=d, name=f"cpl{i}"))
        layers += [_Conditioned(name=f"cond{i}", size=4) for i in range(3)]
        chain_type = B.ReversibleChain if memory_efficient else B.FlowChain
        return chain_type(layers, name="c")

    plain = make(False)
    lean = tfp_flows.memory_efficient(plain)
    rng = np.random.default_rng(11)
    x = tf.constant(rng.standard_normal((5, 4)), d)
    kwargs = {f"cond{i}": {"context": tf.constant(rng.standard_normal(5), d)}
              for i in range(3)}
    variables = list(plain.trainable_variables)

    @tf.function
    def grads(chain, x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            z, ldj = B.inverse_and_log_det(chain, x, **kwargs)
            loss = tf.reduce_sum(tf.sin(z)) + tf.reduce_sum(ldj)
        return tape.gradient(loss, [x] + variables)

    assert max(_max_rel_diffs(grads(plain, x), grads(lean, x))) < RTOL_64
    runs = [item for item in _blocks.plan(lean, "inverse")
            if isinstance(item, _blocks.Run)]
    assert [len(r.units) for r in runs] == [3, 3]
    # the couplings' trace was refused (foreign capture); the conditioned
    # blocks were never traced (kwargs)
    assert runs[0]._traced and not any(runs[0]._traced.values())
    assert not runs[1]._traced


def test_forward_direction_gradients_match():
    """latent -> data (sampling path), e.g. for reverse-KL training."""
    rng = np.random.default_rng(6)
    dist = ready(models.glow([4, 4, 2], 2, 2, 8, seed=3, dtype=tf.float64),
                 rng, scale=0.1, batch=4)
    lean = tfp_flows.memory_efficient(dist)
    z = tf.constant(rng.standard_normal((3, 4, 4, 2)), tf.float64)
    grads = []
    for d in (dist, lean):
        with tf.GradientTape() as tape:
            tape.watch(z)
            x, fldj = B.forward_and_log_det(d.bijector, z)
            loss = tf.reduce_sum(tf.sin(x / 64.0)) + tf.reduce_sum(fldj)
        grads.append(tape.gradient(loss, [z] + list(d.trainable_variables)))
    assert max(_max_rel_diffs(*grads)) < RTOL_64


def test_float32_xla_gradients_match():
    """jit_compile=True: XLA compiles the reconstruction sweep too."""
    rng = np.random.default_rng(7)
    dist = ready(models.glow([4, 4, 2], 1, 2, 8, seed=4), rng, scale=0.05,
                 batch=4)
    lean = tfp_flows.memory_efficient(dist)
    x = pixels(dist.event_shape, rng, batch=4)
    _, g_ref = _log_prob_grads(dist, x)
    _, g = _log_prob_grads(lean, x, function=True, jit=True)
    assert max(_max_rel_diffs(g_ref, g)) < RTOL_32


def test_actnorm_is_initialised_before_the_custom_gradient():
    rng = np.random.default_rng(8)
    x = pixels([4, 4, 2], rng, batch=6).astype(np.float64)
    plain = models.glow([4, 4, 2], 2, 1, 8, seed=5, dtype=tf.float64)
    lean = tfp_flows.memory_efficient(
        models.glow([4, 4, 2], 2, 1, 8, seed=5, dtype=tf.float64))
    norms = [b for b in B.flow_bijectors(lean.bijector)
             if isinstance(b, B.ActNorm)]
    # In a traced function the init would land inside the custom gradient.
    with pytest.raises(ValueError, match="tfp_flows.initialize"):
        tf.function(lean.log_prob)(tf.constant(x))
    assert not any(bool(b.initialized.numpy()) for b in norms)
    # Eagerly it runs first, in a plain pass: same values as the normal path.
    with tf.GradientTape() as tape:
        lp = lean.log_prob(x)
    assert all(bool(b.initialized.numpy()) for b in norms)
    assert all(g is not None for g in tape.gradient(lp, lean.trainable_variables))
    plain.log_prob(x)
    ref = [b for b in B.flow_bijectors(plain.bijector) if isinstance(b, B.ActNorm)]
    for a, b in zip(sorted(ref, key=lambda b: b.name),
                    sorted(norms, key=lambda b: b.name)):
        np.testing.assert_allclose(b.loc.numpy(), a.loc.numpy(), rtol=1e-12)
        np.testing.assert_allclose(b.log_scale.numpy(), a.log_scale.numpy(),
                                   rtol=1e-12)


def test_memory_efficient_api():
    dist = models.glow([4, 4, 2], 2, 1, 4, seed=0)
    lean = tfp_flows.memory_efficient(dist)
    assert isinstance(lean, tfd.Distribution) and lean.name == dist.name
    assert lean.distribution is dist.distribution
    assert lean.bijector.memory_efficient and not dist.bijector.memory_efficient
    assert lean.bijector.description.levels == dist.bijector.description.levels
    assert [id(layer) for layer in tfp_flows.keras_layers(lean)] == [
        id(layer) for layer in tfp_flows.keras_layers(dist)]
    assert isinstance(lean.bijector, B.ReversibleChain)
    assert type(tfp_flows.memory_efficient(lean, enabled=False).bijector) is B.FlowChain
    # tfb.Chain becomes a FlowChain; a single bijector is wrapped.
    chain = tfp_flows.memory_efficient(tfb.Chain([
        B.ActNorm(2, event_ndims=1, name="a"), tfb.Shift([1.0, 2.0], name="s")]))
    assert isinstance(chain, B.FlowChain) and chain.memory_efficient
    single = tfp_flows.memory_efficient(B.DiagonalScaling([3]))
    assert isinstance(single, B.FlowChain) and len(single.bijectors) == 1
    with pytest.raises(TypeError, match="TransformedDistribution or a bijector"):
        tfp_flows.memory_efficient(tfd.Normal(0.0, 1.0))


def test_flow_model_fit_trains_like_the_normal_path():
    """Keras fit through `FlowModel`: the same updates as the normal path."""
    from tfp_flows.training import FlowModel

    rng = np.random.default_rng(9)
    x = pixels([4, 4, 2], rng, batch=8).astype(np.float64)
    weights = []
    for memory_efficient in (False, True):
        keras.utils.set_random_seed(0)
        dist = models.glow([4, 4, 2], 2, 2, 8, seed=6, dtype=tf.float64,
                           memory_efficient=memory_efficient)
        tfp_flows.initialize(dist, x)
        model = FlowModel(dist, dequantize=False)
        model.compile(optimizer=keras.optimizers.Adam(1e-2))
        hist = model.fit(x, batch_size=4, epochs=2, shuffle=False, verbose=0)
        assert np.all(np.isfinite(hist.history["loss"]))
        weights.append([v.numpy() for v in dist.trainable_variables])
    for a, b in zip(*weights):
        # 4 Adam steps; normalised updates amplify float64 rounding a little.
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-9)


_MIRRORED = textwrap.dedent("""
    import json, os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np, tfp_flows
    from tfp_flows.training import FlowModel

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    rng = np.random.default_rng(0)
    x = (rng.integers(0, 256, (8, 4, 4, 2)) + rng.random((8, 4, 4, 2)))
    with strategy.scope():
        dist = tfp_flows.models.glow([4, 4, 2], 1, 2, 8, seed=1)
        lean = tfp_flows.memory_efficient(dist)
    tfp_flows.initialize(dist, x)
    for v in dist.trainable_variables:
        v.assign(v + 0.05 * rng.standard_normal(v.shape).astype("float32"))
    variables = dist.trainable_variables

    def grads(d):
        @tf.function
        def step(x):
            def replica(x):
                with tf.GradientTape() as tape:
                    loss = -tf.reduce_sum(d.log_prob(x))
                return tape.gradient(loss, variables)
            per_replica = strategy.run(replica, (x,))
            return [strategy.reduce("SUM", g, axis=None) for g in per_replica]
        data = strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(np.split(x, 2)[ctx.replica_id_in_sync_group],
                                    tf.float32))
        return step(data)

    ref, got = grads(dist), grads(lean)
    diff = max(float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-30))
               for a, b in zip(ref, got))
    with strategy.scope():
        model = FlowModel(lean)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
    hist = model.fit(np.floor(x), batch_size=4, epochs=1, verbose=0)
    print(json.dumps({"max_rel_diff": diff, "loss": hist.history["loss"]}))
""")


def test_mirrored_strategy_two_replicas():
    env = dict(os.environ, PYTHONPATH=REPO, KERAS_BACKEND="tensorflow",
               TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", _MIRRORED], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # float32, 2 replicas summed in a different order: rounding only.
    assert result["max_rel_diff"] < RTOL_32
    assert len(result["loss"]) == 1 and np.all(np.isfinite(result["loss"]))


@pytest.mark.parametrize("mask", ["channel", "checkerboard"])
@pytest.mark.parametrize("inverse", [True, False])
def test_coupling_reversible_step_matches_autodiff(mask, inverse):
    """The coupling's fused step reconstructs the input and gives the same
    VJP as differentiating the layer directly."""
    rng = np.random.default_rng(12)
    d = tf.float64
    m = masks.channel([4, 4, 2]) if mask == "channel" else masks.checkerboard([4, 4, 2])
    layer = B.AffineCoupling(m, hidden=8, dtype=d, scale_fn="exp_tanh")
    for v in layer.trainable_variables:
        v.assign(v + tf.constant(0.1 * rng.standard_normal(v.shape), d))
    x = tf.constant(rng.standard_normal((3, 4, 4, 2)), d)
    dy = tf.constant(rng.standard_normal((3, 4, 4, 2)), d)
    dldj = tf.constant([1.0, -2.0, 0.5], d)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y, ldj = (B.inverse_and_log_det if inverse else B.forward_and_log_det)(layer, x)
    variables = list(layer.trainable_variables)
    ref = tape.gradient([y, ldj], [x] + variables, output_gradients=[dy, dldj])
    assert layer.supports_reversible_step
    x_rec, dx, seen, grads = layer.reversible_step(y, dy, dldj, inverse=inverse)
    np.testing.assert_allclose(x_rec.numpy(), x.numpy(), rtol=1e-12, atol=1e-12)
    by_ref = {v.ref(): g for v, g in zip(seen, grads)}
    got = [dx] + [by_ref.get(v.ref()) for v in variables]
    assert max(_max_rel_diffs(ref, got)) < RTOL_64


def test_reversible_step_protocol():
    """Only layers that implement it take the fused step; a coupling whose
    transform a subclass replaced falls back to reconstruct + recompute."""

    class Custom(B.AdditiveCoupling):
        def _transform(self, x, inverse, kwargs):
            return super()._transform(x, inverse, kwargs)

    assert B.AdditiveCoupling(masks.checkerboard([4])).supports_reversible_step
    assert not Custom(masks.checkerboard([4])).supports_reversible_step
    scaling = B.DiagonalScaling([4])
    assert not scaling.supports_reversible_step
    with pytest.raises(NotImplementedError):
        scaling.reversible_step(tf.zeros([1, 4]), tf.zeros([1, 4]))


def test_actnorm_initialisation_api():
    norm = B.ActNorm(2, event_ndims=1, dtype=tf.float64)
    assert norm.data_init and norm.is_initialized() is False
    assert norm.needs_initialization()
    norm.data_init = False  # evaluated as it is, never initialised by data
    assert not norm.needs_initialization()
    norm.inverse(tf.constant([[1.0, 2.0], [3.0, 5.0]], tf.float64))
    assert norm.is_initialized() is False
    norm.data_init = True
    norm.inverse(tf.constant([[1.0, 2.0], [3.0, 5.0]], tf.float64))
    assert norm.is_initialized() and not norm.needs_initialization()
    np.testing.assert_allclose(norm.loc.numpy(), [2.0, 3.5])
    # readable while tracing, too
    seen = []
    tf.function(lambda: seen.append(norm.is_initialized()) or tf.constant(0))()
    assert seen == [True]
