"""Reversible gradients: memory that does not grow with the depth of a flow.

Every layer of a normalizing flow is invertible, so the activations that
backpropagation normally stores can be *recomputed* from the layer outputs
instead (Gomez et al., 2017, "The Reversible Residual Network"; Kingma &
Dhariwal, 2018, Sec. 3, name it as an advantage of flows). For a chain
``z = f_n(... f_1(x))`` with log-determinant ``L = sum_i L_i(h_{i-1})``, the
gradient is computed by a custom gradient that keeps only ``z``:

* forward pass: walk the chain without recording anything; keep ``(z, L)``;
* backward pass, for ``i = n .. 1``, given ``h_i`` and the cotangents
  ``dh_i = dLoss/dh_i`` and ``dL = dLoss/dL``:

  1. reconstruct the layer input ``h_{i-1} = f_i^{-1}(h_i)``;
  2. recompute ``f_i(h_{i-1})`` under a `tf.GradientTape` and take its
     vector-Jacobian product ``(dh_{i-1}, dtheta_i) = VJP(dh_i, dL)``.

At any time only one layer's activations are alive, so peak memory is
constant in depth (plus the parameters and their gradients).

**Couplings** get a cheaper step: the conditioning half is the same on both
sides, so the network is evaluated once on the tape, its output serves both
the reconstruction and the VJP (about 1.33x the cost of the normal gradient
instead of 1.67x for reconstruct + recompute).

**Structure.** The backward walk descends into nested `FlowChain`,
`FactorOut` and `tfb.Invert` of those, so every leaf layer is reconstructed
and recomputed exactly once, whatever the nesting. Any other TFP bijector is
a leaf: its input is reconstructed with its own inverse and its value and
log-determinant recomputed through the usual TFP methods.

**Ordering.** In a graph (`tf.function`, XLA) the reconstruction of layer i
only depends on ``h_i``, so an executor could run every reconstruction ahead of
the gradient sweep and store them all. Each reconstruction therefore gets a
data dependency on the incoming cotangent ``dh_i`` (as in `tf.recompute_grad`;
XLA ignores control dependencies).

**Graph size.** In a graph, runs of identical blocks (Glow's ``K`` steps per
level) are traced once and called per block with that block's variables
(:mod:`tfp_flows._reversible_blocks`), so the graph, and the memory
TensorFlow spends on it, does not grow with ``K`` either.

**Limits.** First-order gradients only. The reconstruction is exact up to
rounding, which compounds over depth in float32 (see ``docs/memory.md``).
Uses TensorFlow internals (``record.stop_recording``, the same one
`tf.recompute_grad` uses, and ``ConcreteFunction._call_flat``).
"""

import contextlib
import threading
import weakref

import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow.python.eager import record  # pylint: disable=no-name-in-module

from tfp_flows import _reversible_blocks as blocks
from tfp_flows._reversible_layers import Accumulator, flip, in_ndims, leaf_backward
from tfp_flows.bijectors.actnorm import ActNorm
from tfp_flows.bijectors.base import flow_bijectors
from tfp_flows.bijectors.chain import FactorOut, FlowChain, _single_pass, route_kwargs

tfb = tfp.bijectors
tfd = tfp.distributions

__all__ = ["inverse_and_log_det", "forward_and_log_det", "memory_efficient"]

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
def inverse_and_log_det(chain, y, /, **kwargs):
    """``chain.inverse(y)`` and its log-det, with reversible gradients.

    Called by `FlowChain._inverse_and_log_det` when ``memory_efficient=True``.

    Args:
      chain: a `FlowChain`.
      y: ``[batch..., *data_event_shape]`` input on the data side.
      **kwargs: conditioning, routed by bijector name.

    Returns:
      ``(z, ildj)``: the latent (``[batch..., *latent_event_shape]``) and the
      log-determinant (batch shape).
    """
    if _nested():
        return chain._walk_inverse(y, **kwargs)  # pylint: disable=protected-access
    _initialize_first(chain, y, kwargs)
    return _reversible(chain, y, "inverse", kwargs)


def forward_and_log_det(chain, x, /, **kwargs):
    """``chain.forward(x)`` (latent -> data) and its log-det, with reversible
    gradients (e.g. for gradients through samples)."""
    if _nested():
        return chain._walk_forward(x, **kwargs)  # pylint: disable=protected-access
    return _reversible(chain, x, "forward", kwargs)


_ACTNORMS = weakref.WeakKeyDictionary()


def _initialize_first(chain, y, kwargs):
    """ActNorm's data-dependent init must never run inside the custom
    gradient: eagerly, run it now in a plain pass; in a graph, refuse."""
    if chain not in _ACTNORMS:
        _ACTNORMS[chain] = tuple(b for b in flow_bijectors(chain)
                                 if isinstance(b, ActNorm))
    pending = [b for b in _ACTNORMS[chain]
               if b._data_init and not b._is_initialized_now()]  # pylint: disable=protected-access
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
        chain._walk_inverse(tf.stop_gradient(y), **kwargs)  # pylint: disable=protected-access


# -- the custom gradient ------------------------------------------------------
_VARIABLES = weakref.WeakKeyDictionary()


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
    return _single_pass(b, x, ndims, direction, kwargs)


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


# -- switching it on ----------------------------------------------------------
def memory_efficient(dist_or_bijector, enabled=True):
    """An equivalent flow whose gradients are reversible (or not).

    Rebuilds the containers (`FlowChain`, `FactorOut`, `tfb.Invert` of those,
    and `tfb.Chain`, which becomes a `FlowChain`) with ``memory_efficient=
    enabled`` and reuses every leaf bijector, so the result shares all
    variables (and Keras layers) with the original: training one trains the
    other. A leaf bijector given on its own is wrapped in a one-element
    `FlowChain`; its conditioning kwargs are then routed by its name.

    Args:
      dist_or_bijector: a `tfd.TransformedDistribution` over a tfp_flows chain
        (e.g. from `tfp_flows.models`), or a bijector.
      enabled: True for reversible gradients, False for the normal path.

    Returns:
      A distribution (same base distribution and name) or a `FlowChain`.

    Raises:
      TypeError: if the argument is neither a bijector nor a transformed
        distribution.

    Example:
      >>> dist = tfp_flows.models.glow([8, 8, 3], 2, 2, 16)
      >>> lean = tfp_flows.memory_efficient(dist)
      >>> lean.trainable_variables == dist.trainable_variables
      True
    """
    if isinstance(dist_or_bijector, tfd.Distribution) and isinstance(
            getattr(dist_or_bijector, "bijector", None), tfb.Bijector):
        # (tfd.TransformedDistribution may build a non-composite subclass.)
        bijector = memory_efficient(dist_or_bijector.bijector, enabled)
        return tfd.TransformedDistribution(dist_or_bijector.distribution,
                                           bijector, name=dist_or_bijector.name)
    if not isinstance(dist_or_bijector, tfb.Bijector):
        raise TypeError(
            "memory_efficient() takes a tfd.TransformedDistribution or a "
            f"bijector, got {type(dist_or_bijector).__name__}.")
    rebuilt = _rebuild(dist_or_bijector, bool(enabled))
    if isinstance(rebuilt, FlowChain):
        return rebuilt
    return FlowChain([rebuilt], memory_efficient=bool(enabled),
                     name=f"{rebuilt.name}_chain")


def _rebuild(b, enabled):
    if isinstance(b, FlowChain):
        new = FlowChain([_rebuild(c, enabled) for c in b.bijectors],
                        memory_efficient=enabled,
                        data_event_shape=b.data_event_shape,
                        validate_args=b.validate_args, name=b.name)
        new.metadata.update(b.metadata)
        if "config" in new.metadata:
            new.metadata["config"] = dict(new.metadata["config"],
                                          memory_efficient=enabled)
        return new
    if isinstance(b, FactorOut):
        return FactorOut(_rebuild(b.bijector, enabled), b.num_kept,
                         validate_args=b.validate_args, name=b.name)
    if isinstance(b, tfb.Invert) and isinstance(
            b.bijector, (FlowChain, FactorOut, tfb.Chain)):
        return tfb.Invert(_rebuild(b.bijector, enabled),
                          validate_args=b.validate_args, name=b.name)
    if type(b) is tfb.Chain:  # pylint: disable=unidiomatic-typecheck
        names = [c.name for c in b.bijectors]
        if len(set(names)) == len(names):
            return FlowChain([_rebuild(c, enabled) for c in b.bijectors],
                             memory_efficient=enabled,
                             validate_args=b.validate_args, name=b.name)
    return b
