"""Shared pieces of the model builders."""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow_probability import bijectors as tfb
from tensorflow_probability import distributions as tfd

from tfp_flows import priors
from tfp_flows.bijectors import FlowChain, ReversibleChain
from tfp_flows.description import FlowDescription
from tfp_flows.typing import DTypeLike, Shape


def image_shape(shape: Shape, what: str = "image_shape") -> tuple[int, int, int]:
    """Validates an ``[H, W, C]`` shape and returns it as a tuple of ints."""
    try:
        dims = tuple(int(d) for d in shape)
    except TypeError as e:
        raise ValueError(f"{what} must be a sequence of ints, got {shape!r}.") from e
    if len(dims) != 3 or any(d <= 0 for d in dims):
        raise ValueError(f"{what} must be [H, W, C] with positive sizes, got "
                         f"{dims}.")
    return dims[0], dims[1], dims[2]


def float_dtype(dtype: DTypeLike) -> tf.DType:
    """`dtype` as a `tf.DType`; a clear ValueError unless it is a float."""
    try:
        dtype = tf.as_dtype(dtype)
    except TypeError as e:
        raise ValueError(f"dtype must be a float dtype, got {dtype!r}.") from e
    if not dtype.is_floating:
        raise ValueError(f"dtype must be a float dtype (float32, float64, ...), "
                         f"got {dtype.name}.")
    return dtype


def check_divisible(shape: Sequence[int], factor: int, what: str) -> None:
    h, w, _ = shape
    if h % factor or w % factor:
        raise ValueError(
            f"image size {h}x{w} is not divisible by {factor}, which {what} "
            f"needs; use a size that is a multiple of {factor} or fewer levels.")


def num_bins_from(n_bits: int | None, num_bins: float | None) -> float | None:
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


def seed_stream(seed: int | None) -> Iterator[int | None]:
    """Yields per-layer seeds (None forever when `seed` is None)."""
    if seed is None:
        return itertools.repeat(None)
    rng = np.random.default_rng(seed)
    return iter(lambda: int(rng.integers(2**31 - 1)), None)


def base_distribution(kind: str, event_shape: Shape, dtype: DTypeLike) -> tfd.Distribution:
    if kind == "gaussian":
        return priors.gaussian(event_shape, dtype)
    if kind == "logistic":
        return priors.logistic(event_shape, dtype)
    raise ValueError(f"prior must be 'gaussian' or 'logistic', got {kind!r}.")


def chain(bijectors: Sequence[tfb.Bijector], *, memory_efficient: bool = False,
          **kwargs: Any) -> FlowChain:
    """A `ReversibleChain` if `memory_efficient`, else a `FlowChain`."""
    chain_type = ReversibleChain if memory_efficient else FlowChain
    return chain_type(bijectors, **kwargs)


def make_flow(bijectors: Sequence[tfb.Bijector], *, base: tfd.Distribution,
              data_shape: Sequence[int], name: str, config: Mapping[str, Any],
              num_bins: float | None = None,
              levels: Sequence[tuple[int, int | None]] = (),
              num_classes: int | None = None, label_bijector: str | None = None,
              memory_efficient: bool = False,
              validate_args: bool = False) -> tfd.TransformedDistribution:
    """Wraps a data-side-first list of bijectors into a distribution whose
    chain carries the builder's :class:`FlowDescription`."""
    flow = chain(bijectors, memory_efficient=memory_efficient,
                 data_event_shape=data_shape, validate_args=validate_args,
                 name=f"{name}_chain")
    flow.description = FlowDescription(
        model=config["model"], config=config, event_shape=tuple(data_shape),
        num_bins=num_bins, levels=tuple(levels), num_classes=num_classes,
        label_bijector=label_bijector if num_classes is not None else None)
    return tfd.TransformedDistribution(base, flow, validate_args=validate_args,
                                       name=name)


def check_choice(what: str, value: str, allowed: Sequence[str]) -> str:
    """`value` of the option `what` if it is one of `allowed`, else a
    ValueError naming them."""
    if value not in allowed:
        names = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{what} must be one of {names}; got {value!r}.")
    return value


def spline_options(num_spline_bins: int, spline_bound: float) -> tuple[int, float]:
    """Validates the builders' spline options; returns them as (int, float)."""
    if (isinstance(num_spline_bins, bool)
            or not isinstance(num_spline_bins, numbers.Integral) or num_spline_bins < 2):
        raise ValueError(f"num_spline_bins must be an integer >= 2, got "
                         f"{num_spline_bins!r}.")
    if (isinstance(spline_bound, bool) or not isinstance(spline_bound, numbers.Real)
            or not (math.isfinite(spline_bound) and spline_bound > 0)):
        raise ValueError(f"spline_bound must be a positive finite number, got "
                         f"{spline_bound!r}.")
    return int(num_spline_bins), float(spline_bound)
