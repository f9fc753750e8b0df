"""One property suite, run on every entry of `bijector_registry.ENTRIES`."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tests.bijector_registry import ENTRIES, call_kwargs, flatten_kwargs
from tfp_flows import bijectors as B

tfb = tfp.bijectors
IDS = [e.name for e in ENTRIES]

# float64 round trips are exact up to accumulated rounding of a few ops.
RTOL_64 = 1e-9
# float32: ~1e-7 per op, amplified by scales up to e^1 and exp(0.3)-scaled nets.
RTOL_32 = 1e-4
# Brute-force Jacobian vs log-det in float64: both exact, rounding only.
LOGDET_ATOL = 1e-8


def _perturb(bijector, rng, scale=0.1):
    """Moves every variable off its identity initialisation (float only)."""
    for v in bijector.variables:
        if v.dtype.is_floating and v.trainable:
            v.assign(v + tf.constant(scale * rng.standard_normal(v.shape),
                                     v.dtype))
        elif v.dtype == tf.bool:
            v.assign(True)  # mark ActNorm as initialised: keep perturbed values


def _make(entry, dtype, rng, perturb=True):
    b = entry.make(dtype)
    if perturb:
        _perturb(b, rng)
    return b


def _uncached(b, direction, x, **kw):
    """Calls through the TFP API on a fresh tensor (defeats the cache)."""
    x = tf.identity(x)
    return getattr(b, direction)(x, **kw)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_round_trip(entry, dtype):
    rng = np.random.default_rng(1)
    b = _make(entry, dtype, rng)
    x = entry.sample((3,) + entry.event_shape, dtype, rng)
    kw = call_kwargs(entry, (3,), rng)
    z = _uncached(b, "inverse", x, **kw)
    x_back = _uncached(b, "forward", z, **kw)
    rtol = RTOL_64 if dtype == tf.float64 else RTOL_32
    np.testing.assert_allclose(x_back.numpy(), x.numpy(), rtol=rtol,
                               atol=rtol * float(np.abs(x.numpy()).max()))
    # and the other way round, from latent samples
    z = tf.constant(rng.standard_normal(z.shape) * 0.5, dtype)
    if entry.name.startswith("pixel"):
        z = _uncached(b, "inverse", x, **kw)  # stay inside the valid range
    z_back = _uncached(b, "inverse", _uncached(b, "forward", z, **kw), **kw)
    np.testing.assert_allclose(z_back.numpy(), z.numpy(), rtol=rtol,
                               atol=rtol * float(np.abs(z.numpy()).max()))


def _flat_jacobian(fn, x):
    shape = x.shape
    flat = tf.reshape(x, [shape[0], -1])
    with tf.GradientTape() as tape:
        tape.watch(flat)
        y = fn(tf.reshape(flat, shape))
        y_flat = tf.reshape(y, [shape[0], -1])
    jac = tape.batch_jacobian(y_flat, flat)
    return tf.linalg.slogdet(jac)[1]


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_log_det_matches_brute_force_jacobian(entry, record_property):
    rng = np.random.default_rng(2)
    dtype = tf.float64
    b = _make(entry, dtype, rng)
    x = entry.sample((2,) + entry.event_shape, dtype, rng)
    kw = call_kwargs(entry, (2,), rng)
    ndims = b.inverse_min_event_ndims
    ildj = b.inverse_log_det_jacobian(tf.identity(x), event_ndims=ndims, **kw)
    brute_inv = _flat_jacobian(lambda t: b.inverse(t, **kw), x)
    err_inv = float(np.max(np.abs(ildj.numpy() - brute_inv.numpy())))
    z = b.inverse(tf.identity(x), **kw)
    fldj = b.forward_log_det_jacobian(tf.identity(z),
                                      event_ndims=b.forward_min_event_ndims, **kw)
    brute_fwd = _flat_jacobian(lambda t: b.forward(t, **kw), z)
    err_fwd = float(np.max(np.abs(fldj.numpy() - brute_fwd.numpy())))
    record_property("max_logdet_error", max(err_inv, err_fwd))
    assert err_inv < LOGDET_ATOL and err_fwd < LOGDET_ATOL, (err_inv, err_fwd)
    # The Jacobian is not trivially the identity: the check has teeth.
    if entry.has_variables:
        assert np.max(np.abs(brute_inv.numpy())) > 1e-6 or "additive" in entry.name


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_fldj_is_minus_ildj_and_event_shapes(entry):
    rng = np.random.default_rng(3)
    b = _make(entry, tf.float64, rng)
    x = entry.sample((2,) + entry.event_shape, tf.float64, rng)
    kw = call_kwargs(entry, (2,), rng)
    z = _uncached(b, "inverse", x, **kw)
    ildj = b.inverse_log_det_jacobian(tf.identity(x),
                                      event_ndims=b.inverse_min_event_ndims, **kw)
    fldj = b.forward_log_det_jacobian(tf.identity(z),
                                      event_ndims=b.forward_min_event_ndims, **kw)
    np.testing.assert_allclose(fldj.numpy(), -ildj.numpy(), rtol=1e-9, atol=1e-9)
    assert ildj.shape == (2,)
    # event-shape methods agree with what the bijector really does
    assert tuple(b.inverse_event_shape(entry.event_shape)) == tuple(z.shape[1:])
    assert tuple(b.forward_event_shape(z.shape[1:])) == entry.event_shape
    assert tuple(b.inverse_event_shape_tensor(entry.event_shape).numpy()) == \
        tuple(z.shape[1:])
    assert tuple(b.forward_event_shape_tensor(z.shape[1:]).numpy()) == \
        entry.event_shape


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.has_variables],
                         ids=[e.name for e in ENTRIES if e.has_variables])
def test_gradients_reach_every_trainable_variable(entry):
    rng = np.random.default_rng(4)
    b = _make(entry, tf.float32, rng)
    x = entry.sample((4,) + entry.event_shape, tf.float32, rng)
    kw = call_kwargs(entry, (4,), rng)
    variables = b.trainable_variables
    assert variables, "bijector exposes no trainable variables"
    with tf.GradientTape() as tape:
        z, ildj = B.inverse_and_log_det(b, x, **kw)
        loss = tf.reduce_sum(z ** 2) - tf.reduce_sum(ildj)
    grads = tape.gradient(loss, variables)
    missing = [v.name for v, g in zip(variables, grads)
               if g is None or not np.any(tf.convert_to_tensor(g).numpy())]
    assert not missing, f"no gradient for {missing}"


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_eager_function_and_xla_agree(entry):
    rng = np.random.default_rng(5)
    b = _make(entry, tf.float32, rng)
    x = entry.sample((3,) + entry.event_shape, tf.float32, rng)
    kw = call_kwargs(entry, (3,), rng)

    def both(t):
        z, ildj = B.inverse_and_log_det(b, t, **kw)
        x_back, fldj = B.forward_and_log_det(b, z, **kw)
        return z, ildj, x_back, fldj

    eager = both(x)
    graph = tf.function(both)(x)
    xla = tf.function(both, jit_compile=True)(x)
    for e, g, j in zip(eager, graph, xla):
        np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-5, atol=1e-5)
        # XLA fuses and reorders float ops: allow float32 rounding differences
        np.testing.assert_allclose(j.numpy(), e.numpy(), rtol=1e-4, atol=1e-4)
    # the TFP API agrees with the single-pass one
    np.testing.assert_allclose(b.inverse(tf.identity(x), **kw).numpy(),
                               eager[0].numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("batch_shape", [(), (1,), (2, 3)],
                         ids=["scalar", "one", "2x3"])
@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_batch_shapes(entry, batch_shape):
    rng = np.random.default_rng(6)
    b = _make(entry, tf.float32, rng)
    x = entry.sample(batch_shape + entry.event_shape, tf.float32, rng)
    kw = call_kwargs(entry, batch_shape, rng)
    z, ildj = B.inverse_and_log_det(b, x, **kw)
    assert tuple(ildj.shape) == batch_shape
    assert tuple(z.shape[:len(batch_shape)]) == batch_shape
    # each batch member is transformed independently of the others
    flat_x = tf.reshape(x, (-1,) + entry.event_shape)
    flat_kw = flatten_kwargs(entry, kw)
    z_flat, ildj_flat = B.inverse_and_log_det(b, flat_x, **flat_kw)
    np.testing.assert_allclose(tf.reshape(z, z_flat.shape).numpy(),
                               z_flat.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.reshape(ildj.numpy(), [-1]),
                               ildj_flat.numpy(), rtol=1e-5, atol=1e-4)
    x_back = B.forward_and_log_det(b, z, **kw)[0]
    np.testing.assert_allclose(x_back.numpy(), x.numpy(), rtol=1e-4, atol=1e-4)
