"""Hypothesis: random event shapes and batch shapes for every bijector that
has a shape-generic constructor in the registry."""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.bijector_registry import ENTRIES
from tfp_flows import bijectors as B

SHAPED = [e for e in ENTRIES if e.shaped is not None]


@st.composite
def event_shapes(draw, kind):
    if kind == "vector":
        return (draw(st.integers(2, 9)),)
    h, w = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    c = draw(st.integers(1, 5))
    if kind == "image_even":
        h, w = 2 * h, 2 * w
    if kind == "image_c4":
        c = 4 * draw(st.integers(1, 3))
    if kind == "image_c2":
        c = max(c, 2)
    if kind == "image" and h * w < 2:
        w = 2  # a checkerboard needs two pixels
    return (h, w, c)


batch_shapes = st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple)


@pytest.mark.parametrize("entry", SHAPED, ids=[e.name for e in SHAPED])
def test_random_shapes_round_trip_and_log_det_shape(entry):
    @settings(max_examples=8, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(shape=event_shapes(entry.shape_kind), batch=batch_shapes,
           seed=st.integers(0, 2**16))
    def check(shape, batch, seed):
        rng = np.random.default_rng(seed)
        b = entry.shaped(shape, tf.float64)
        for v in b.trainable_variables:  # move off the identity
            v.assign(v + 0.1 * rng.standard_normal(v.shape))
        for v in b.variables:
            if v.dtype == tf.bool:
                v.assign(True)
        x = tf.constant(rng.standard_normal(batch + shape))
        z, ildj = B.inverse_and_log_det(b, x)
        assert tuple(ildj.shape) == batch
        assert tuple(z.shape[:len(batch)]) == batch
        assert tuple(z.shape[len(batch):]) == tuple(b.inverse_event_shape(shape))
        x_back, fldj = B.forward_and_log_det(b, z)
        # float64: reconstruction is exact up to rounding
        np.testing.assert_allclose(x_back.numpy(), x.numpy(), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(fldj.numpy(), -ildj.numpy(), rtol=1e-9, atol=1e-9)
        assert np.all(np.isfinite(ildj.numpy()))

    check()
