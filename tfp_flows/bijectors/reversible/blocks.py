"""Repeated blocks of a chain, traced once: a graph that does not grow with depth.

Reversible gradients make the *activation* memory of a flow constant in depth,
but in a `tf.function` the graph itself grows with depth: every one of Glow's
``K`` steps per level adds its forward, reconstruction, recomputation and VJP
ops, and TensorFlow keeps several kilobytes per op (Python graph, then the
runtime's kernels) -- about 30 MB per Glow step at 32x32x3, more than its
activations.

Flows repeat one block (Glow: ActNorm -> 1x1 conv -> coupling) ``K`` times
with different parameters. This module finds such runs in a `FlowChain`
(same bijector types, configurations and variable shapes, period up to
:data:`MAX_PERIOD`), traces the block's forward pass and its reversible
backward step **once**, on the first block, as functions marked ``_noinline``,
and calls them for every block with that block's variables bound in place of
the first block's captured ones. The graph then holds ``K`` call ops instead
of ``K`` copies of the block, and the runtime instantiates each function once.

Used only while building graphs (in eager mode the per-layer path runs) and
only for blocks that receive no conditioning kwargs; anything it cannot map
safely (a capture that is not one of the block's variables) falls back to
the per-layer path.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.ops import resource_variable_ops  # pylint: disable=no-name-in-module

from tfp_flows.bijectors.base import FlowBijector
from tfp_flows.bijectors.chain import FactorOut, FlowChain, single_pass
from tfp_flows.bijectors.reversible.layers import Accumulator, leaf_backward, out_ndims

__all__ = ["MAX_PERIOD", "MIN_BLOCKS", "Run", "plan"]

#: ``(bijector, event rank of its input)``: an entry of a chain walk.
Item = tuple[Any, int]

#: Longest block (in bijectors) looked for.
MAX_PERIOD = 4
#: Fewest repetitions worth a traced function.
MIN_BLOCKS = 2

_PLANS: weakref.WeakKeyDictionary[FlowChain, dict[str, list[Item | Run]]] = (
    weakref.WeakKeyDictionary())
_NOINLINE = {"_noinline": True}


def plan(chain: FlowChain, direction: str) -> list[Item | Run]:
    """The children of `chain` in `direction` order, as a list of
    ``(child, ndims)`` and `Run` entries (cached per chain)."""
    plans = _PLANS.setdefault(chain, {})
    if direction not in plans:
        children = chain.bijectors
        if direction == "forward":
            children = children[::-1]
        items, r = [], (chain.inverse_min_event_ndims if direction == "inverse"
                        else chain.forward_min_event_ndims)
        for c in children:
            items.append((c, r))
            r = out_ndims(c, direction, r)
        plans[direction] = _find_runs(items, direction)
    return plans[direction]


def _find_runs(items, direction):
    sigs = [_signature(c, r) for c, r in items]
    out, i, n = [], 0, len(items)
    while i < n:
        best = None
        for p in range(1, MAX_PERIOD + 1):
            unit = sigs[i:i + p]
            if len(unit) < p or any(s is None for s in unit):
                break
            count = 1
            while sigs[i + count * p:i + (count + 1) * p] == unit:
                count += 1
            if count >= MIN_BLOCKS and (best is None or count * p > best[0] * best[1]):
                best = (p, count)
        if best is None:
            out.append(items[i])
            i += 1
            continue
        p, count = best
        out.append(Run([items[i + k * p:i + (k + 1) * p] for k in range(count)],
                       direction))
        i += p * count
    return out


def _freeze(value):
    """A hashable, comparable form of a constructor argument (or raises)."""
    if isinstance(value, np.ndarray):
        return ("array", value.shape, value.dtype.str, value.tobytes())
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, tf.DType):
        return value.name
    if value is None or isinstance(value, (bool, int, float, str, np.generic)):
        return value
    raise TypeError(type(value).__name__)


def _signature(b, ndims):
    """Equal for two bijectors that compute the same function of their
    variables; None for bijectors a block may not contain."""
    if not isinstance(b, FlowBijector) or isinstance(b, (FlowChain, FactorOut)):
        return None
    try:
        params = {k: _freeze(v) for k, v in b.parameters.items()
                  if k not in ("name", "seed", "network", "validate_args")}
        net = None
        if "network" in b.parameters:  # e.g. a coupling: compare its network
            network = getattr(b, "network", None)
            if not isinstance(network, keras.layers.Layer):
                return None
            config = dict(network.get_config())
            config.pop("name", None)
            net = (type(network), json.dumps(config, sort_keys=True, default=str))
    except TypeError:
        return None
    variables = tuple((tuple(v.shape), v.dtype.name, v.trainable)
                      for v in b.variables)
    return (type(b), ndims, tuple(sorted(params.items())), net, variables)


class Run:
    """``len(units)`` consecutive copies of one block, in walking order."""

    def __init__(self, units: Sequence[Sequence[Item]], direction: str) -> None:
        self.units = [tuple(c for c, _ in unit) for unit in units]
        self.ndims = [r for _, r in units[0]]
        self.direction = direction
        self._traced: dict[tuple[Any, ...], Any] = {}
        self._present: list[bool] = []
        self._lock = threading.Lock()

    @property
    def items(self) -> list[Item]:
        """The run as plain ``(child, ndims)`` entries."""
        return [(c, r) for unit in self.units for c, r in zip(unit, self.ndims)]

    def usable(self, kwargs_for: Callable[[Any], Any]) -> bool:
        """Blocks need graph mode and no conditioning for any member."""
        return (not tf.executing_eagerly() and
                not any(kwargs_for(c) for unit in self.units for c in unit))

    # -- traced bodies (on the first block) ---------------------------------
    def _forward_body(self, x):
        total = None
        for b, r in zip(self.units[0], self.ndims):
            x, ldj = single_pass(b, x, r, self.direction, {})
            total = ldj if total is None else total + ldj
        return x, total

    def _backward_body(self, y, dy, dldj):
        acc = Accumulator(())
        for b, r in reversed(list(zip(self.units[0], self.ndims))):
            y, dy = leaf_backward(b, self.direction, r, {}, y, dy, dldj, acc)
        grads = [acc.var_grads.get(v.ref()) for v in _trainable(self.units[0])]
        # Which variables get a gradient is static: recorded at trace time.
        self._present = [g is not None for g in grads]
        return y, dy, [g for g in grads if g is not None]

    def _function(self, kind, inputs):
        key = (kind,) + tuple((tuple(t.shape), t.dtype.name) for t in inputs)
        with self._lock:  # tf.distribute traces replicas in threads
            return self._function_locked(kind, inputs, key)

    def _function_locked(self, kind, inputs, key):
        if key not in self._traced:
            body = self._forward_body if kind == "forward" else self._backward_body
            fn = tf.function(body, autograph=False,
                             experimental_attributes=_NOINLINE)
            cf = fn.get_concrete_function(
                *[tf.TensorSpec(t.shape, t.dtype) for t in inputs])
            self._traced[key] = self._bind(cf)
        return self._traced[key]

    def _bind(self, cf):
        """(concrete function, capture -> variable index) or None."""
        index = {id(_local(v).handle): i
                 for i, v in enumerate(_all_variables(self.units[0]))}
        positions = [index.get(id(c)) for c in cf.captured_inputs]
        if any(p is None for p in positions):
            return None  # a capture that is not a block variable: unsafe
        return cf, positions

    def _call(self, kind, unit, inputs):
        traced = self._function(kind, inputs)
        if traced is None:
            return None
        cf, positions = traced
        variables = [_local(v) for v in _all_variables(unit)]
        for p in set(positions):
            # No ReadVariableOp in this graph: tell tf.custom_gradient's and
            # tf.function's variable watchers (and tapes) what the call reads.
            resource_variable_ops.variable_accessed(variables[p])
        return cf._call_flat(  # pylint: disable=protected-access
            list(inputs), [variables[p].handle for p in positions])

    # -- the sweeps -----------------------------------------------------------
    def forward(
            self, x: tf.Tensor, fallback: Callable[[list[Item], tf.Tensor], Any],
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """``(x, ldj)`` through every block; ``fallback(items, x)`` computes
        blocks that cannot be called as a traced function."""
        total = None
        for unit in self.units:
            out = self._call("forward", unit, [x])
            if out is None:
                out = fallback(list(zip(unit, self.ndims)), x)
            x, ldj = out
            total = ldj if total is None else total + ldj
        return x, total

    def backward(
            self, y: tf.Tensor, dy: tf.Tensor, dldj: tf.Tensor | None, acc: Accumulator,
            fallback: Callable[[list[Item], tf.Tensor, tf.Tensor], Any],
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Reversible backward step of every block, last block first, into
        ``(x, dx)``; ``fallback(items, y, dy)`` for blocks that cannot be
        called as a traced function."""
        for unit in reversed(self.units):
            out = self._call("backward", unit, [y, dy, dldj])
            if out is None:
                y, dy = fallback(list(zip(unit, self.ndims)), y, dy)
                continue
            y, dy, grads = out
            variables = [v for v, present in zip(_trainable(unit), self._present)
                         if present]
            acc.add(variables, grads, ())
        return y, dy


def _local(v):
    """The replica-local component of a distributed variable (else `v`)."""
    get = getattr(v, "_get_on_device_or_primary", None)
    return get() if callable(get) else v


def _all_variables(unit):
    return [v for b in unit for v in b.variables]


def _trainable(unit):
    return [v for b in unit for v in b.trainable_variables]
