"""Shared pieces of the model builders."""

import itertools

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import priors
from tfp_flows.bijectors import FlowChain, ReversibleChain
from tfp_flows.description import FlowDescription

tfd = tfp.distributions


def image_shape(shape, what="image_shape"):
    """Validates an ``[H, W, C]`` shape and returns it as a tuple of ints."""
    try:
        shape = tuple(int(d) for d in shape)
    except TypeError as e:
        raise ValueError(f"{what} must be a sequence of ints, got {shape!r}.") from e
    if len(shape) != 3 or any(d <= 0 for d in shape):
        raise ValueError(f"{what} must be [H, W, C] with positive sizes, got "
                         f"{shape}.")
    return shape


def float_dtype(dtype):
    """`dtype` as a `tf.DType`; a clear ValueError unless it is a float."""
    try:
        dtype = tf.as_dtype(dtype)
    except TypeError as e:
        raise ValueError(f"dtype must be a float dtype, got {dtype!r}.") from e
    if not dtype.is_floating:
        raise ValueError(f"dtype must be a float dtype (float32, float64, ...), "
                         f"got {dtype.name}.")
    return dtype


def check_divisible(shape, factor, what):
    h, w, _ = shape
    if h % factor or w % factor:
        raise ValueError(
            f"image size {h}x{w} is not divisible by {factor}, which {what} "
            f"needs; use a size that is a multiple of {factor} or fewer levels.")


def num_bins_from(n_bits, num_bins):
    if num_bins is not None:
        if n_bits is not None and n_bits != 8:
            raise ValueError("pass either n_bits or num_bins, not both.")
        nb = float(num_bins)
        if nb < 2:
            raise ValueError(f"num_bins must be >= 2, got {num_bins}.")
        return nb
    if n_bits is None:
        return None
    n_bits = int(n_bits)
    if not 1 <= n_bits <= 16:
        raise ValueError(f"n_bits must be in [1, 16], got {n_bits}.")
    return float(2 ** n_bits)


def seed_stream(seed):
    """Yields per-layer seeds (None forever when `seed` is None)."""
    if seed is None:
        return itertools.repeat(None)
    rng = np.random.default_rng(seed)
    return iter(lambda: int(rng.integers(2**31 - 1)), None)


def base_distribution(kind, event_shape, dtype):
    if kind == "gaussian":
        return priors.gaussian(event_shape, dtype)
    if kind == "logistic":
        return priors.logistic(event_shape, dtype)
    raise ValueError(f"prior must be 'gaussian' or 'logistic', got {kind!r}.")


def chain(bijectors, *, memory_efficient=False, **kwargs):
    """A `ReversibleChain` if `memory_efficient`, else a `FlowChain`."""
    chain_type = ReversibleChain if memory_efficient else FlowChain
    return chain_type(bijectors, **kwargs)


def make_flow(bijectors, *, base, data_shape, name, config, num_bins=None,
              levels=(), num_classes=None, label_bijector=None,
              memory_efficient=False):
    """Wraps a data-side-first list of bijectors into a distribution whose
    chain carries the builder's :class:`FlowDescription`."""
    flow = chain(bijectors, memory_efficient=memory_efficient,
                 data_event_shape=data_shape, name=f"{name}_chain")
    flow.description = FlowDescription(
        model=config["model"], config=config, event_shape=data_shape,
        num_bins=num_bins, levels=levels, num_classes=num_classes,
        label_bijector=label_bijector if num_classes is not None else None)
    return tfd.TransformedDistribution(base, flow, name=name)
