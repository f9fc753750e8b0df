"""The base class every tfp_flows bijector derives from.

Two design decisions live here.

**Single-pass log-determinants.** A coupling layer computes its network once and
gets both the transformed value and the log-determinant from it. Subclasses
implement ``_forward_and_log_det`` and ``_inverse_and_log_det``; TFP's
``BijectorCacheWithGreedyAttrs`` stores the log-determinant next to the value,
so ``TransformedDistribution.log_prob`` never runs a network twice.

**Parameters visible to both Keras 3 and ``tf.Module``.** Every parameter is a
``keras.Variable`` owned by a Keras layer (a coupling network, or a
:class:`ParameterLayer`). Keras 3 models see them through the layers
(:func:`keras_layers` collects them), and ``tf.Module`` (hence
``dist.trainable_variables``) sees the very same ``tf.Variable`` storage through
an untracked tuple on the bijector. Nothing is duplicated in checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NoReturn

import keras
import numpy as np
import tensorflow as tf
from tensorflow_probability import bijectors as tfb
from tensorflow_probability import distributions as tfd
from tensorflow_probability.python.internal import cache_util

from tfp_flows.typing import DTypeLike, TensorLike

__all__ = ["FlowBijector", "ParameterLayer", "keras_layers", "flow_bijectors", "raw_variable"]


@keras.saving.register_keras_serializable(package="tfp_flows")
class ParameterLayer(keras.layers.Layer):
    """A Keras layer that only owns named variables (no computation).

    Bijectors whose parameters are not a network (ActNorm, the 1x1 convolution,
    diagonal scaling) keep them here, so that Keras tracks and saves them.
    Variables are never autocast: they are always read at their own dtype.

    Args:
      specs: dict name -> (shape, initializer, trainable[, dtype]).
    """

    def __init__(self, specs: Mapping[str, Sequence[Any]],
                 dtype: DTypeLike | None = None, **kwargs: Any) -> None:
        super().__init__(dtype=dtype, **kwargs)
        self._specs = {k: tuple(v) for k, v in specs.items()}
        for key, spec in self._specs.items():
            shape, init, trainable = spec[:3]
            var_dtype = spec[3] if len(spec) > 3 else self.variable_dtype
            var = self.add_weight(
                shape=tuple(shape), initializer=init, trainable=trainable,
                dtype=var_dtype, autocast=False, name=key)
            setattr(self, key, var)
        self.built = True

    def raw(self, key: str) -> tf.Variable:
        """The `tf.Variable` behind variable `key` (never autocast)."""
        return raw_variable(getattr(self, key))

    def raw_dict(self) -> dict[str, tf.Variable]:
        """``{name: tf.Variable}`` for every spec, in spec order."""
        return {key: self.raw(key) for key in self._specs}

    def call(self, inputs: Any = None) -> NoReturn:  # pragma: no cover - never called
        raise TypeError("ParameterLayer only holds variables.")


def raw_variable(var: Any) -> tf.Variable:
    """The `tf.Variable` behind a `keras.Variable` (or the variable itself)."""
    if isinstance(var, tf.Variable):
        return var
    raw = var.value  # outside an autocast scope this is the tf.Variable
    if not isinstance(raw, tf.Variable):
        raise TypeError(f"Could not find the tf.Variable behind {var!r}.")
    return raw


class FlowBijector(tfb.Bijector):
    """Base class: single-pass value + log-det, variables seen by Keras and TF.

    Subclasses implement::

        _forward_and_log_det(x, **kwargs) -> (y, fldj)
        _inverse_and_log_det(y, **kwargs) -> (x, ildj)

    where the log-determinants have the batch shape of the input (they are
    already summed over this bijector's `event_ndims` dimensions).

    Convention: for every tfp_flows bijector but `Squeeze`, ``inverse`` walks
    from data to latent (the papers' f), ``forward`` from latent to data
    (sampling), exactly as in `tfd.TransformedDistribution`.
    """

    _cache = cache_util.BijectorCacheWithGreedyAttrs(
        forward_name="_augmented_forward", inverse_name="_augmented_inverse")

    def __init__(self, *, event_ndims: int, parameters: dict[str, Any], name: str,
                 layers: Iterable[keras.layers.Layer] = (),
                 inverse_event_ndims: int | None = None,
                 is_constant_jacobian: bool = False, validate_args: bool = False,
                 dtype: DTypeLike = tf.float32) -> None:
        super().__init__(
            forward_min_event_ndims=event_ndims,
            inverse_min_event_ndims=(event_ndims if inverse_event_ndims is None
                                     else inverse_event_ndims),
            is_constant_jacobian=is_constant_jacobian,
            validate_args=validate_args, dtype=dtype,
            parameters=parameters, name=name)
        self._set_layers(layers)

    # -- parameter bookkeeping -------------------------------------------
    def _set_layers(self, layers):
        """Registers the Keras layers that own this bijector's parameters."""
        layers = tuple(layers)
        self._param_layers = layers  # tracked: checkpoints see the layers
        raw = tuple(raw_variable(v) for layer in layers for v in layer.weights)
        # Untracked: `tf.Module` finds these for `trainable_variables` while
        # checkpoints do not save them a second time.
        self._raw_variables = self._no_dependency(raw)

    @property
    def parameter_layers(self) -> tuple[keras.layers.Layer, ...]:
        """The Keras layers that own this bijector's own parameters."""
        return self._param_layers

    @classmethod
    def _parameter_properties(cls, dtype=None, num_classes=None):
        # Parameters are shared by the whole batch: the batch shape is [].
        return {}

    # -- the TFP protocol, derived from the single-pass methods ----------
    def _augmented_forward(self, x, **kwargs):
        y, fldj = self._forward_and_log_det(x, **kwargs)
        return y, {"fldj": fldj, "ildj": -fldj}

    def _augmented_inverse(self, y, **kwargs):
        x, ildj = self._inverse_and_log_det(y, **kwargs)
        return x, {"ildj": ildj, "fldj": -ildj}

    def _forward(self, x, **kwargs):
        return self._forward_and_log_det(x, **kwargs)[0]

    def _inverse(self, y, **kwargs):
        return self._inverse_and_log_det(y, **kwargs)[0]

    def _forward_log_det_jacobian(self, x, **kwargs):
        return self._forward_and_log_det(x, **kwargs)[1]

    def _inverse_log_det_jacobian(self, y, **kwargs):
        return self._inverse_and_log_det(y, **kwargs)[1]

    def _forward_and_log_det(self, x, **kwargs):
        raise NotImplementedError

    def _inverse_and_log_det(self, y, **kwargs):
        raise NotImplementedError

    # -- optional: a fused step for reversible gradients -------------------
    @property
    def supports_reversible_step(self) -> bool:
        """Whether `reversible_step` is implemented (False by default).

        `ReversibleChain` reconstructs a layer's input with the layer's own
        inverse and recomputes the layer under a tape. A layer that can do
        both at a lower cost (a coupling evaluates its network once) says so
        here and implements `reversible_step`.
        """
        return False

    def reversible_step(
            self, y: tf.Tensor, dy: tf.Tensor, dldj: tf.Tensor | None = None, *,
            inverse: bool = True, event_ndims: int | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor, list[tf.Variable], list[tf.Tensor | None]]:
        """Reconstructs this layer's input and back-propagates through it.

        Args:
          y: the layer's output, the layer applied to an input ``x`` in the
            direction given by `inverse` (True: ``y = inverse(x)``).
          dy: cotangent of `y` (same shape).
          dldj: cotangent of the layer's log-det (batch shape), or None.
          inverse: direction in which the layer produced `y`.
          event_ndims: event rank of `x` in the chain (the log-det sums
            over it); None for the layer's own minimum.

        Returns:
          ``(x, dx, variables, variable_grads)``: the reconstructed input, its
          cotangent, the variables the step read, and their gradients (None
          for a variable the output does not depend on).
        """
        raise NotImplementedError(
            f"{type(self).__name__} has no fused reversible step.")

    # -- helpers for subclasses -------------------------------------------
    def _check_event_shape(self, x, expected, what="input"):
        """Raises a ValueError naming the shapes when `x` does not fit."""
        expected = tuple(expected)
        shape = tuple(x.shape)
        n = len(expected)
        if x.shape.rank is not None and len(shape) < n:
            raise ValueError(
                f"{type(self).__name__} '{self.name}': {what} of shape {shape} "
                f"has rank {len(shape)}, but the event shape {expected} needs "
                f"rank >= {n}.")
        if x.shape.rank is None:
            return
        got = shape[len(shape) - n:]
        for g, e in zip(got, expected):
            if g is not None and e is not None and g != e:
                raise ValueError(
                    f"{type(self).__name__} '{self.name}': {what} has event "
                    f"shape {got}, expected {expected}.")

    def _zeros_batch(self, x):
        """A zero log-det with the batch shape of `x`."""
        ndims = self.forward_min_event_ndims
        return tf.zeros(tf.shape(x)[:tf.rank(x) - ndims], dtype=x.dtype)


def flow_bijectors(bijector: tfb.Bijector) -> Iterator[tfb.Bijector]:
    """Yields `bijector` and every bijector nested in it (chains, Invert, ...)."""
    seen = set()
    stack = [bijector]
    while stack:
        b = stack.pop()
        if id(b) in seen:
            continue
        seen.add(id(b))
        if isinstance(b, tfb.Bijector):
            yield b
        if isinstance(b, tf.Module):
            stack.extend(m for m in b._flatten(  # pylint: disable=protected-access
                recursive=False, predicate=lambda m: isinstance(m, tfb.Bijector)))


def keras_layers(
        dist_or_bijector: tfd.Distribution | tfb.Bijector) -> list[keras.layers.Layer]:
    """All Keras layers owning parameters of a distribution or bijector.

    Walks every nested bijector (including ones inside `tfb.Chain`,
    `tfb.Invert` and `TransformedDistribution`) and returns each Keras layer
    once, in a deterministic order. A `keras.Model` that assigns this list to
    an attribute tracks every parameter of the flow.
    """
    root = getattr(dist_or_bijector, "bijector", dist_or_bijector)
    layers: list[keras.layers.Layer] = []
    seen: set[int] = set()
    for b in flow_bijectors(root):
        for layer in getattr(b, "_param_layers", ()):
            if id(layer) not in seen:
                seen.add(id(layer))
                layers.append(layer)
    return layers


def flatten_batch(
        x: tf.Tensor, event_ndims: int) -> tuple[tf.Tensor, Callable[[tf.Tensor], tf.Tensor]]:
    """Reshapes `x` to `[N, *event_shape]`; returns it and an `unflatten` fn."""
    rank = x.shape.rank
    if rank == event_ndims + 1:
        return x, lambda t: t
    batch_shape = tf.shape(x)[:tf.rank(x) - event_ndims]
    event_shape = x.shape[rank - event_ndims:] if rank is not None else None
    flat_shape = tf.concat([[-1], tf.shape(x)[tf.rank(x) - event_ndims:]], 0)
    x_flat = tf.reshape(x, flat_shape)
    if event_shape is not None and event_shape.is_fully_defined():
        x_flat = tf.ensure_shape(x_flat, [None] + event_shape.as_list())

    def unflatten(t):
        out_event = tf.shape(t)[1:]
        return tf.reshape(t, tf.concat([batch_shape, out_event], 0))

    return x_flat, unflatten


def per_position_log_det(x: tf.Tensor, event_ndims: int, value: TensorLike) -> tf.Tensor:
    """``P * value`` with the batch shape of `x`, for a layer that applies the
    same map at each of the ``P`` positions of its ``[..., C]`` events (``P``
    = the product of the event axes but the last; 1 for vectors)."""
    shape = tf.shape(x)
    rank = tf.rank(x)
    positions = tf.cast(tf.reduce_prod(shape[rank - event_ndims:rank - 1]), x.dtype)
    return tf.broadcast_to(positions * value, shape[:rank - event_ndims])


def sum_event(t: tf.Tensor, event_ndims: int) -> tf.Tensor:
    """Sums the last `event_ndims` axes of `t`."""
    if event_ndims == 0:
        return t
    return tf.reduce_sum(t, axis=list(range(-event_ndims, 0)))


def as_mask(mask: TensorLike, name: str = "mask") -> np.ndarray:
    """Validates a 0/1 mask and returns it as a float numpy array."""
    arr = np.asarray(mask)
    if arr.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension, got a scalar.")
    if not np.all((arr == 0) | (arr == 1)):
        raise ValueError(f"{name} must contain only 0 and 1.")
    if arr.all() or not arr.any():
        raise ValueError(
            f"{name} must contain both 0s (transformed) and 1s (conditioning); "
            f"got all {int(arr.flat[0])}.")
    return arr.astype(np.float32)
