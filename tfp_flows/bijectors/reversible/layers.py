"""One layer of the reversible gradient: reconstruct its input from its
output, recompute it under a tape, and take its vector-Jacobian product.

Used by :mod:`tfp_flows.bijectors.reversible.gradient` (the sweep over a
chain) and :mod:`tfp_flows.bijectors.reversible.blocks` (repeated blocks
traced once). See :mod:`tfp_flows.bijectors.reversible` for the method.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import tensorflow as tf
from tensorflow_probability import bijectors as tfb

from tfp_flows.bijectors.base import FlowBijector
from tfp_flows.bijectors.chain import FactorOut, FlowChain, single_pass
from tfp_flows.typing import BijectorKwargs

__all__ = ["Accumulator", "after", "flip", "in_ndims", "out_ndims",
           "leaf_backward"]


def flip(direction: str) -> str:
    """The opposite direction."""
    return "forward" if direction == "inverse" else "inverse"


def in_ndims(b: tfb.Bijector, direction: str) -> int:
    """Minimal event rank of `b`'s input when applied in `direction`."""
    return (b.inverse_min_event_ndims if direction == "inverse"
            else b.forward_min_event_ndims)


def out_ndims(b: tfb.Bijector, direction: str, ndims: int) -> int:
    """Event rank of `b`'s output in `direction` for an input of rank `ndims`."""
    return (b.inverse_event_ndims(ndims) if direction == "inverse"
            else b.forward_event_ndims(ndims))


def leaf_backward(b: tfb.Bijector, direction: str, ndims: int,
                  kwargs: BijectorKwargs | None, y: tf.Tensor, dy: tf.Tensor,
                  dldj: tf.Tensor | None, acc: Accumulator) -> tuple[tf.Tensor, tf.Tensor]:
    """Given the output `y` of leaf `b` applied in `direction` to an input of
    event rank `ndims`, and the cotangents `dy` and `dldj` (of the log-det,
    batch shape; may be None), returns ``(x, dx)``: the reconstructed input
    and its cotangent. Variable (and float kwarg) gradients go to `acc`.

    A layer with a fused step (`FlowBijector.supports_reversible_step`, e.g.
    a coupling) takes it; any other layer is reconstructed with its own
    inverse and recomputed."""
    if isinstance(b, FlowBijector) and b.supports_reversible_step:
        x, dx, variables, grads = b.reversible_step(
            after(y, dy), dy, dldj, inverse=direction == "inverse",
            event_ndims=ndims)
        acc.add(variables, grads, ())
        return x, dx
    return _leaf_step(b, direction, ndims, kwargs, y, dy, dldj, acc)


class Accumulator:
    """Sums gradients of variables and of float conditioning tensors."""

    def __init__(self, kw_tensors: Sequence[tf.Tensor]) -> None:
        self.var_grads: dict[Any, tf.Tensor] = {}
        self.kw_sources = [t for t in kw_tensors if t.dtype.is_floating]
        self._kw_index = [i for i, t in enumerate(kw_tensors)
                          if t.dtype.is_floating]
        self.kw_grads: list[tf.Tensor | None] = [None] * len(kw_tensors)

    def get(self, v: tf.Variable) -> tf.Tensor | None:
        """Summed gradient of variable `v` (or of its replica-local part)."""
        g = self.var_grads.get(v.ref())
        if g is None:
            get_local = getattr(v, "_get_on_device_or_primary", None)
            if callable(get_local):
                g = self.var_grads.get(get_local().ref())
        return g

    def add(self, variables: Iterable[tf.Variable],
            var_grads: Iterable[tf.Tensor | None],
            kw_grads: Iterable[tf.Tensor | None]) -> None:
        """Adds gradients of `variables` and of the float kwargs (in order)."""
        for v, g in zip(variables, var_grads):
            if g is None:
                continue
            g = tf.convert_to_tensor(g)  # IndexedSlices (gathers) -> dense
            key = v.ref()
            self.var_grads[key] = (g if key not in self.var_grads
                                   else self.var_grads[key] + g)
        for i, g in zip(self._kw_index, kw_grads):
            if g is not None:
                g = tf.convert_to_tensor(g)
                old = self.kw_grads[i]
                self.kw_grads[i] = g if old is None else old + g


def after(t: tf.Tensor, dep: tf.Tensor | None) -> tf.Tensor:
    """`t` with a data dependency on `dep` (exactly `t` unless `dep` is NaN).

    Keeps a graph executor (or XLA, which ignores control dependencies) from
    reconstructing layer inputs ahead of the gradient sweep.
    """
    if dep is None or tf.executing_eagerly():
        return t
    first = tf.reduce_max(tf.reshape(dep, [-1])[:1])
    zero = tf.where(tf.equal(first, first), tf.zeros([], t.dtype),
                    tf.constant(float("nan"), t.dtype))
    return t + tf.cast(zero, t.dtype)


def _leaf_step(b, direction, ndims, kwargs, y, dy, dldj, acc):
    """Reconstruct the input with the layer's own inverse, recompute, VJP."""
    y_ndims = out_ndims(b, direction, ndims)
    y = after(y, dy)
    # `single_pass` calls tfp_flows leaves directly; other bijectors (also
    # inside chains) go through TFP's cache, which would hand back the forward
    # pass's tensors instead of recomputing: give them fresh ones.
    inner = b.bijector if isinstance(b, tfb.Invert) else b
    cached = (not isinstance(inner, FlowBijector) or
              isinstance(inner, (FlowChain, FactorOut)))
    y = tf.identity(y) if cached else y
    x, _ = single_pass(b, y, y_ndims, flip(direction), kwargs)
    x = tf.identity(x) if cached else x
    with tf.GradientTape() as tape:
        tape.watch(x)
        tape.watch(acc.kw_sources)
        y_rec, ldj = single_pass(b, x, ndims, direction, kwargs)
        targets, cotangents = [y_rec], [dy]
        if ldj is not None and dldj is not None:
            targets.append(tf.broadcast_to(ldj, tf.shape(dldj)))
            cotangents.append(dldj)
    variables = list(tape.watched_variables())
    grads = tape.gradient(targets, [x] + variables + acc.kw_sources,
                          output_gradients=cotangents)
    acc.add(variables, grads[1:1 + len(variables)], grads[1 + len(variables):])
    dx = grads[0]
    return x, (tf.zeros_like(x) if dx is None else dx)
