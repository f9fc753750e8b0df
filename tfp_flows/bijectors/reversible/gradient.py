"""The custom gradient of `ReversibleChain`: one sweep that reconstructs
every layer's input from its output (see :mod:`tfp_flows.bijectors.reversible`
for the method).

The pass records nothing; the gradient is recorded on the active tapes as one
operation whose backward function walks the chain from its output side,
descending into nested chains, `FactorOut` and `tfb.Invert` of those, and
running repeated blocks as traced functions in a graph
(:mod:`tfp_flows.bijectors.reversible.blocks`).
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Any

import tensorflow as tf
from tensorflow.python.eager import record  # pylint: disable=no-name-in-module
from tensorflow_probability import bijectors as tfb

from tfp_flows.bijectors.actnorm import ActNorm
from tfp_flows.bijectors.base import flow_bijectors
from tfp_flows.bijectors.chain import FactorOut, FlowChain, route_kwargs, single_pass
from tfp_flows.bijectors.reversible import blocks
from tfp_flows.bijectors.reversible.layers import Accumulator, flip, in_ndims, leaf_backward
from tfp_flows.typing import TensorLike

__all__ = ["inverse_and_log_det", "forward_and_log_det"]

_STATE = threading.local()


@contextlib.contextmanager
def _plain_walks():
    """Inside: memory-efficient chains walk plainly (the outer pass owns the
    gradient of every nested layer). Thread-local, so replicas of
    `tf.distribute` do not see each other."""
    _STATE.depth = getattr(_STATE, "depth", 0) + 1
    try:
        yield
    finally:
        _STATE.depth -= 1


def _nested():
    return getattr(_STATE, "depth", 0) > 0


# -- public entry points ------------------------------------------------------
def inverse_and_log_det(chain: FlowChain, y: TensorLike, /,
                        **kwargs: Any) -> tuple[tf.Tensor, tf.Tensor]:
    """``chain.inverse(y)`` and its log-det, with reversible gradients.

    The pass of `ReversibleChain` (data -> latent).

    Args:
      chain: a `FlowChain`.
      y: ``[batch..., *data_event_shape]`` input on the data side.
      **kwargs: conditioning, routed by bijector name.

    Returns:
      ``(z, ildj)``: the latent (``[batch..., *latent_event_shape]``) and the
      log-determinant (batch shape).
    """
    if _nested():
        return chain.walk_inverse(y, **kwargs)
    _initialize_first(chain, y, kwargs)
    return _reversible(chain, y, "inverse", kwargs)


def forward_and_log_det(chain: FlowChain, x: TensorLike, /,
                        **kwargs: Any) -> tuple[tf.Tensor, tf.Tensor]:
    """``chain.forward(x)`` (latent -> data) and its log-det, with reversible
    gradients (e.g. for gradients through samples)."""
    if _nested():
        return chain.walk_forward(x, **kwargs)
    return _reversible(chain, x, "forward", kwargs)


_ACTNORMS: weakref.WeakKeyDictionary[FlowChain, tuple[ActNorm, ...]] = (
    weakref.WeakKeyDictionary())


def _initialize_first(chain, y, kwargs):
    """ActNorm's data-dependent init must never run inside the custom
    gradient: eagerly, run it now in a plain pass; in a graph, refuse."""
    if chain not in _ACTNORMS:
        _ACTNORMS[chain] = tuple(b for b in flow_bijectors(chain)
                                 if isinstance(b, ActNorm))
    pending = [b for b in _ACTNORMS[chain] if b.needs_initialization()]
    if not pending:
        return
    if not tf.executing_eagerly():
        names = ", ".join(f"'{b.name}'" for b in pending[:3])
        raise ValueError(
            f"memory-efficient flow '{chain.name}': ActNorm {names}"
            f"{' ...' if len(pending) > 3 else ''} is not initialised, and its "
            "data-dependent initialisation cannot run inside the reversible "
            "gradient of a traced function. Call tfp_flows.initialize(dist, "
            "batch) eagerly before tracing (or before Keras fit).")
    with record.stop_recording(), _plain_walks():
        chain.walk_inverse(tf.stop_gradient(y), **kwargs)


# -- the custom gradient ------------------------------------------------------
_VARIABLES: weakref.WeakKeyDictionary[FlowChain, tuple[tf.Variable, ...]] = (
    weakref.WeakKeyDictionary())


def _chain_variables(chain):
    """The chain's trainable variables (cached: models do not grow)."""
    if chain not in _VARIABLES:
        _VARIABLES[chain] = tuple(chain.trainable_variables)
    return _VARIABLES[chain]


def _reversible(chain, x, direction, kwargs):
    """The chain's pass with a reversible gradient.

    The gradient is recorded on the active tapes as one operation from
    ``(x, float conditioning tensors, one read of each trainable variable)``
    to ``(out, log-det)``, like `tf.custom_gradient` does eagerly. Unlike
    `tf.custom_gradient` in a graph it adds no identity, second read and
    zero-filled gradient per variable, which for a deep flow would be
    thousands of graph ops. (So `tf.gradients`, the TF1 symbolic gradient,
    does not see it; `tf.GradientTape` and Keras do.)
    """
    ndims = in_ndims(chain, direction)
    x = tf.convert_to_tensor(x, dtype_hint=chain.dtype)
    with record.stop_recording(), _plain_walks():
        out, ldj = _walk(chain, direction, ndims, kwargs, x)
        out, ldj = tf.identity(out), tf.identity(ldj)  # fresh tape outputs
    if not record.could_possibly_record():
        return out, ldj
    kw_tensors = [t for t in tf.nest.flatten(kwargs)
                  if tf.is_tensor(t) and t.dtype.is_floating]
    variables = _chain_variables(chain)
    reads = [v.value() for v in variables]  # recorded: connect the variables

    def backward(d_out, d_ldj):
        acc = Accumulator(kw_tensors)
        d_out = tf.zeros_like(out) if d_out is None else d_out
        d_ldj = tf.zeros_like(ldj) if d_ldj is None else d_ldj
        with _plain_walks():
            _, dx = _backward(chain, direction, ndims, kwargs, out, d_out,
                              d_ldj, acc)
        return [dx] + acc.kw_grads + [acc.get(v) for v in variables]

    record.record_operation_backprop_only(
        "ReversibleFlowChain", [out, ldj], [x] + kw_tensors + reads, backward)
    return out, ldj


def _container(b, direction, ndims):
    """``(container, its direction)`` when the sweep descends into `b`
    (a FlowChain or FactorOut at its own event rank, possibly inverted),
    else ``(None, None)``."""
    inner, inner_dir = b, direction
    if isinstance(b, tfb.Invert) and isinstance(b.bijector, (FlowChain, FactorOut)):
        inner, inner_dir = b.bijector, flip(direction)
    if isinstance(inner, FlowChain) and ndims == in_ndims(inner, inner_dir):
        return inner, inner_dir
    if isinstance(inner, FactorOut) and ndims == inner.forward_min_event_ndims:
        return inner, inner_dir
    return None, None


def _walk(b, direction, ndims, kwargs, x):
    """``(b(x), log-det)`` in `direction`: the plain pass, descending into
    containers so that repeated blocks run as traced functions."""
    inner, d = _container(b, direction, ndims)
    if isinstance(inner, FlowChain):
        def walk_items(items, x):
            total = None
            for c, r in items:
                x, ldj = _walk(c, d, r, route_kwargs(c, kwargs), x)
                total = ldj if total is None else total + ldj
            return x, total

        total = None
        for item in blocks.plan(inner, d):
            if isinstance(item, blocks.Run):
                if item.usable(lambda c: route_kwargs(c, kwargs)):
                    x, ldj = item.forward(x, walk_items)
                else:
                    x, ldj = walk_items(item.items, x)
            else:
                x, ldj = walk_items([item], x)
            total = ldj if total is None else total + ldj
        return x, total
    if isinstance(inner, FactorOut):
        k = inner.num_kept
        new, ldj = _walk(inner.bijector, d, ndims,
                         route_kwargs(inner.bijector, kwargs), x[..., :k])
        return tf.concat([new, x[..., k:]], axis=-1), ldj
    return single_pass(b, x, ndims, direction, kwargs)


def _backward(b, direction, ndims, kwargs, y, dy, dldj, acc):
    """Given the output `y` of `b` applied in `direction` to an input of event
    rank `ndims`, and the cotangents `dy` and `dldj` (log-det, batch shape),
    returns ``(x, dx)``: the reconstructed input and its cotangent. Variable
    (and conditioning) gradients go to `acc`."""
    inner, d = _container(b, direction, ndims)
    if isinstance(inner, FlowChain):
        def back_items(items, y, dy):
            for c, r in reversed(items):
                y, dy = _backward(c, d, r, route_kwargs(c, kwargs), y, dy,
                                  dldj, acc)
            return y, dy

        for item in reversed(blocks.plan(inner, d)):
            if isinstance(item, blocks.Run):
                if item.usable(lambda c: route_kwargs(c, kwargs)):
                    y, dy = item.backward(y, dy, dldj, acc, back_items)
                else:
                    y, dy = back_items(item.items, y, dy)
            else:
                y, dy = back_items([item], y, dy)
        return y, dy
    if isinstance(inner, FactorOut):
        k = inner.num_kept
        x_kept, dx_kept = _backward(
            inner.bijector, d, ndims, route_kwargs(inner.bijector, kwargs),
            y[..., :k], dy[..., :k], dldj, acc)
        return (tf.concat([x_kept, y[..., k:]], axis=-1),
                tf.concat([dx_kept, dy[..., k:]], axis=-1))
    return leaf_backward(b, direction, ndims, kwargs, y, dy, dldj, acc)
