"""Every tfp_flows bijector, listed once with a named constructor.

The property suite (`test_bijector_properties.py`) runs the same checks on each
entry. Adding a bijector to the library means adding one `Entry` here.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import bijectors as B
from tfp_flows import masks, networks, priors

tfb = tfp.bijectors


def _normal(shape, dtype, rng):
    return tf.constant(rng.standard_normal(shape), dtype)


def _pixels(levels):
    def sample(shape, dtype, rng):
        return tf.constant(rng.uniform(0.5, levels - 0.5, size=shape), dtype)
    return sample


@dataclasses.dataclass
class Entry:
    name: str
    make: Callable[[tf.DType], tfb.Bijector]
    event_shape: tuple[int, ...]          # data-side event shape
    sample: Callable = _normal            # data-side inputs
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    has_variables: bool = True
    # Optional shape-generic constructor, used by the hypothesis suite:
    # `shaped(event_shape, dtype)` for event shapes of kind `shape_kind`
    # ('vector', 'image', 'image_c2' = C >= 2, 'image_even' = H, W even, or
    # 'image_c4' = C % 4 == 0).
    shaped: Callable = None
    shape_kind: str = None


def _chain(dtype):
    return B.FlowChain([
        B.ActNorm(2, dtype=dtype, name="an"),
        B.InvertibleConv1x1(2, dtype=dtype, seed=1, name="conv"),
        B.AffineCoupling(masks.checkerboard([4, 4, 2]), hidden=8, dtype=dtype,
                         name="cpl"),
        tfb.Invert(B.Squeeze(dtype=dtype, name="sq")),
        B.AdditiveCoupling(masks.channel([2, 2, 8]), hidden=8, dtype=dtype,
                           name="add"),
        B.Squeeze(dtype=dtype, name="unsq"),
    ], name="chain")


def _factor_out(dtype):
    inner = B.FlowChain([
        B.ActNorm(2, dtype=dtype, name="inner_an"),
        B.AffineCoupling(masks.channel([4, 4, 2]), hidden=8, dtype=dtype,
                         scale_fn="exp_tanh", name="inner_cpl"),
    ], name="inner")
    return B.FactorOut(inner, num_kept=2, name="factor_out")


def _user_network(dtype):
    """A user-written Keras model as the coupling network."""
    import keras
    policy = networks.policy_for(dtype)
    net = keras.Sequential([keras.layers.Dense(16, activation="tanh", dtype=policy),
                            keras.layers.Dense(4, dtype=policy)])
    return B.AffineCoupling(masks.channel([4]), network=net, dtype=dtype,
                            name="user_net_coupling")


def _callable_network(dtype):
    """A plain function (no variables) as the coupling network."""
    return B.AdditiveCoupling(masks.checkerboard([4]),
                              network=lambda h: tf.sin(h) * 0.5, dtype=dtype,
                              name="fn_coupling")


ENTRIES = [
    Entry("additive_vector", lambda d: B.AdditiveCoupling(
        masks.checkerboard([6]), hidden=16, dtype=d), (6,),
        shaped=lambda s, d: B.AdditiveCoupling(masks.checkerboard(s), hidden=4,
                                               dtype=d), shape_kind="vector"),
    Entry("additive_image_checkerboard", lambda d: B.AdditiveCoupling(
        masks.checkerboard([4, 4, 2]), hidden=8, dtype=d), (4, 4, 2),
        shaped=lambda s, d: B.AdditiveCoupling(masks.checkerboard(s), hidden=4,
                                               dtype=d), shape_kind="image"),
    Entry("additive_image_channel", lambda d: B.AdditiveCoupling(
        masks.channel([4, 4, 4], parity=1), hidden=8, dtype=d), (4, 4, 4)),
    Entry("affine_sigmoid_image_channel", lambda d: B.AffineCoupling(
        masks.channel([4, 4, 4]), hidden=8, dtype=d), (4, 4, 4),
        shaped=lambda s, d: B.AffineCoupling(masks.channel(s), hidden=4, dtype=d),
        shape_kind="image_c2"),
    Entry("affine_exp_tanh_image_checkerboard", lambda d: B.AffineCoupling(
        masks.checkerboard([4, 4, 2], parity=1), hidden=8, scale_fn="exp_tanh",
        dtype=d), (4, 4, 2)),
    Entry("affine_exp_vector_half", lambda d: B.AffineCoupling(
        masks.channel([5]), hidden=16, scale_fn="exp", dtype=d), (5,),
        shaped=lambda s, d: B.AffineCoupling(masks.channel(s), hidden=4,
                                             scale_fn="exp", dtype=d),
        shape_kind="vector"),
    Entry("affine_sigmoid_interleaved_channels", lambda d: B.AffineCoupling(
        np.broadcast_to(np.array([1, 0, 1, 0, 0], np.float32), (2, 2, 5)),
        hidden=8, dtype=d), (2, 2, 5)),
    # Neural spline couplings: B = 2 puts some N(0, 1) inputs in the linear
    # tails; the property suite moves the zero-initialised last layer off the
    # identity, so the splines have unequal bins and derivatives.
    Entry("spline_image_checkerboard_conv", lambda d: B.SplineCoupling(
        masks.checkerboard([4, 4, 2]), num_bins=5, bound=2.0, hidden=8,
        dtype=d), (4, 4, 2),
        shaped=lambda s, d: B.SplineCoupling(masks.checkerboard(s), num_bins=4,
                                             bound=2.0, hidden=4, dtype=d),
        shape_kind="image"),
    Entry("spline_vector_mlp", lambda d: B.SplineCoupling(
        masks.checkerboard([5], parity=1), num_bins=8, bound=2.0, hidden=16,
        dtype=d), (5,),
        shaped=lambda s, d: B.SplineCoupling(masks.channel(s), num_bins=3,
                                             bound=2.0, hidden=4, dtype=d),
        shape_kind="vector"),
    # Conditional couplings (conditional_input=, as in variational
    # dequantisation): a context of the batch shape, drawn per test.
    Entry("affine_conditional_image_checkerboard", lambda d: B.AffineCoupling(
        masks.checkerboard([4, 4, 1]), hidden=8, context_channels=3, dtype=d),
        (4, 4, 1), kwargs={"conditional_input": ("batch_context", (4, 4, 3))}),
    Entry("spline_conditional_vector", lambda d: B.SplineCoupling(
        masks.channel([4]), num_bins=4, bound=2.0, hidden=8, context_channels=2,
        dtype=d), (4,), kwargs={"conditional_input": ("batch_context", (2,))}),
    # A spline after a per-entry affine map (log-scale clamped to +-2).
    Entry("spline_affine_vector", lambda d: B.SplineCoupling(
        masks.checkerboard([5]), num_bins=4, bound=2.0, max_log_scale=2.0,
        hidden=8, dtype=d), (5,)),
    Entry("affine_user_keras_network", _user_network, (4,)),
    Entry("additive_function_network", _callable_network, (4,),
          has_variables=False),
    Entry("diagonal_scaling_vector", lambda d: B.DiagonalScaling([6], dtype=d),
          (6,)),
    Entry("diagonal_scaling_image", lambda d: B.DiagonalScaling(
        [3, 3, 2], dtype=d), (3, 3, 2),
        shaped=lambda s, d: B.DiagonalScaling(s, dtype=d), shape_kind="image"),
    Entry("actnorm_image", lambda d: B.ActNorm(3, dtype=d), (4, 4, 3),
          shaped=lambda s, d: B.ActNorm(s[-1], dtype=d), shape_kind="image"),
    Entry("actnorm_vector", lambda d: B.ActNorm(5, event_ndims=1, dtype=d), (5,),
          shaped=lambda s, d: B.ActNorm(s[-1], event_ndims=1, dtype=d),
          shape_kind="vector"),
    Entry("conv1x1_lu_image", lambda d: B.InvertibleConv1x1(
        4, lu=True, seed=0, dtype=d), (3, 3, 4),
        shaped=lambda s, d: B.InvertibleConv1x1(s[-1], seed=0, dtype=d),
        shape_kind="image"),
    Entry("conv1x1_plain_image", lambda d: B.InvertibleConv1x1(
        4, lu=False, seed=0, dtype=d), (3, 3, 4),
        shaped=lambda s, d: B.InvertibleConv1x1(s[-1], lu=False, seed=0, dtype=d),
        shape_kind="image"),
    Entry("conv1x1_lu_vector", lambda d: B.InvertibleConv1x1(
        5, event_ndims=1, seed=0, dtype=d), (5,)),
    # event_shape is the data side, i.e. the input of `inverse`
    Entry("squeeze", lambda d: B.Squeeze(dtype=d), (2, 2, 8),
          has_variables=False, shaped=lambda s, d: B.Squeeze(dtype=d),
          shape_kind="image_c4"),
    Entry("unsqueeze", lambda d: tfb.Invert(B.Squeeze(dtype=d)), (4, 4, 2),
          has_variables=False, shaped=lambda s, d: tfb.Invert(B.Squeeze(dtype=d)),
          shape_kind="image_even"),
    Entry("squeeze_factor_3", lambda d: B.Squeeze(3, dtype=d), (1, 2, 9),
          has_variables=False),
    Entry("pixel_rescale", lambda d: B.PixelRescale(256, dtype=d), (2, 2, 3),
          sample=_pixels(256), has_variables=False),
    Entry("pixel_logit", lambda d: B.PixelLogit(32, alpha=0.05, dtype=d),
          (2, 2, 3), sample=_pixels(32), has_variables=False),
    Entry("learned_prior", lambda d: priors.LearnedPrior(3, dtype=d), (2, 2, 3),
          shaped=lambda s, d: priors.LearnedPrior(s[-1], dtype=d),
          shape_kind="image"),
    Entry("learned_prior_class_conditional", lambda d: priors.LearnedPrior(
        3, num_classes=4, dtype=d), (2, 2, 3),
        kwargs={"labels": "batch_labels"}),
    Entry("split_prior", lambda d: priors.split_prior([3, 3, 4], dtype=d),
          (3, 3, 4), shaped=lambda s, d: priors.split_prior(s, dtype=d),
          shape_kind="image_c2"),
    Entry("flow_chain", _chain, (4, 4, 2)),
    Entry("factor_out", _factor_out, (4, 4, 4)),
]

BY_NAME = {e.name: e for e in ENTRIES}


def call_kwargs(entry, batch_shape, rng, dtype=tf.float32):
    """An entry's call kwargs: class labels or a context of the batch shape."""
    out = {}
    for k, v in entry.kwargs.items():
        if v == "batch_labels":
            out[k] = tf.constant(rng.integers(0, 4, size=batch_shape), tf.int32)
        elif isinstance(v, tuple) and v[0] == "batch_context":
            out[k] = tf.constant(rng.standard_normal(tuple(batch_shape) + v[1]), dtype)
        else:
            out[k] = v
    return out


def flatten_kwargs(entry, kw):
    """`kw` for the batch flattened to one axis."""
    out = {}
    for k, v in kw.items():
        spec = entry.kwargs[k]
        event = spec[1] if isinstance(spec, tuple) else ()
        out[k] = tf.reshape(v, (-1,) + tuple(event))
    return out
