"""One layer of the reversible gradient: reconstruct its input from its
output, recompute it under a tape, and take its vector-Jacobian product.

Used by :mod:`tfp_flows.reversible` (the sweep over a chain) and
:mod:`tfp_flows._reversible_blocks` (repeated blocks traced once). See
:mod:`tfp_flows.reversible` for the method.
"""

import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows.bijectors.base import FlowBijector, sum_event
from tfp_flows.bijectors.chain import FactorOut, FlowChain, _single_pass
from tfp_flows.bijectors.coupling import _Coupling

tfb = tfp.bijectors

__all__ = ["Accumulator", "after", "flip", "in_ndims", "out_ndims",
           "leaf_backward"]


def flip(direction):
    return "forward" if direction == "inverse" else "inverse"


def in_ndims(b, direction):
    """Minimal event rank of `b`'s input when applied in `direction`."""
    return (b.inverse_min_event_ndims if direction == "inverse"
            else b.forward_min_event_ndims)


def out_ndims(b, direction, ndims):
    return (b.inverse_event_ndims(ndims) if direction == "inverse"
            else b.forward_event_ndims(ndims))


def leaf_backward(b, direction, ndims, kwargs, y, dy, dldj, acc):
    """Given the output `y` of leaf `b` applied in `direction` to an input of
    event rank `ndims`, and the cotangents `dy` and `dldj` (of the log-det,
    batch shape; may be None), returns ``(x, dx)``: the reconstructed input
    and its cotangent. Variable (and float kwarg) gradients go to `acc`."""
    if _has_fast_path(b):
        return _coupling_step(b, direction, ndims, y, dy, dldj, acc)
    return _leaf_step(b, direction, ndims, kwargs, y, dy, dldj, acc)


class Accumulator:
    """Sums gradients of variables and of float conditioning tensors."""

    def __init__(self, kw_tensors):
        self.var_grads = {}
        self.kw_sources = [t for t in kw_tensors if t.dtype.is_floating]
        self._kw_index = [i for i, t in enumerate(kw_tensors)
                          if t.dtype.is_floating]
        self.kw_grads = [None] * len(kw_tensors)

    def get(self, v):
        """Summed gradient of variable `v` (or of its replica-local part)."""
        g = self.var_grads.get(v.ref())
        if g is None:
            get_local = getattr(v, "_get_on_device_or_primary", None)
            if callable(get_local):
                g = self.var_grads.get(get_local().ref())
        return g

    def add(self, variables, var_grads, kw_grads):
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


def after(t, dep):
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


def _vjp(tape, targets, cotangents, sources, acc):
    """Gradients of `targets` (with `cotangents`) w.r.t. `sources`, then the
    watched variables and float conditioning tensors (into `acc`)."""
    variables = list(tape.watched_variables())
    grads = tape.gradient(targets, list(sources) + variables + acc.kw_sources,
                          output_gradients=cotangents)
    n, m = len(sources), len(variables)
    acc.add(variables, grads[n:n + m], grads[n + m:])
    return grads[:n]


def _with_log_det(targets, cotangents, ldj, dldj):
    if ldj is not None and dldj is not None:
        targets.append(tf.broadcast_to(ldj, tf.shape(dldj)))
        cotangents.append(dldj)


def _leaf_step(b, direction, ndims, kwargs, y, dy, dldj, acc):
    """Reconstruct the input with the layer's own inverse, recompute, VJP."""
    y_ndims = out_ndims(b, direction, ndims)
    y = after(y, dy)
    # `_single_pass` calls tfp_flows leaves directly; other bijectors (also
    # inside chains) go through TFP's cache, which would hand back the forward
    # pass's tensors instead of recomputing: give them fresh ones.
    inner = b.bijector if isinstance(b, tfb.Invert) else b
    cached = (not isinstance(inner, FlowBijector) or
              isinstance(inner, (FlowChain, FactorOut)))
    y = tf.identity(y) if cached else y
    x, _ = _single_pass(b, y, y_ndims, flip(direction), kwargs)
    x = tf.identity(x) if cached else x
    with tf.GradientTape() as tape:
        tape.watch(x)
        tape.watch(acc.kw_sources)
        y_rec, ldj = _single_pass(b, x, ndims, direction, kwargs)
        targets, cotangents = [y_rec], [dy]
        _with_log_det(targets, cotangents, ldj, dldj)
    (dx,) = _vjp(tape, targets, cotangents, [x], acc)
    return x, (tf.zeros_like(x) if dx is None else dx)


def _has_fast_path(b):
    """A coupling whose transform is the library's own (not overridden)."""
    if not isinstance(b, _Coupling):
        return False
    cls = type(b)
    return all(getattr(cls, m) is getattr(_Coupling, m) for m in
               ("_transform", "_forward_and_log_det", "_inverse_and_log_det",
                "_params"))


def _coupling_step(layer, direction, ndims, y, dy, dldj, acc):
    """Coupling fast path: one network evaluation serves the reconstruction
    and the VJP, because the conditioning part of `y` equals that of `x`.

    With ``c`` the conditioning part and ``g`` the coupling (``y_t = g(x_t;
    theta(c))``): ``x_t = g^-1(y_t; theta(c))`` (not recorded), then the VJP
    of ``(g(x_t; theta(c)), log-det(theta(c)))`` w.r.t. ``c``, ``x_t`` and the
    network's variables.
    """
    # pylint: disable=protected-access
    inverse = direction == "inverse"
    layer._check_event_shape(y, layer._event_shape_np)
    y = after(y, dy)
    with tf.GradientTape() as tape:
        if layer._split:
            cond, trans_out = layer._split_parts(y)
            tape.watch(cond)
            params = layer._params(cond)
            with tape.stop_recording():
                trans_in, _ = layer._couple(trans_out, params, not inverse)
            tape.watch(trans_in)
            new, log_det = layer._couple(trans_in, params, inverse)
            dy_cond, dy_trans = layer._split_parts(dy)
            targets, cotangents = [new], [dy_trans]
            sources = [cond, trans_in]
        else:
            b = tf.constant(layer._mask_np, dtype=y.dtype)
            cond = y * b  # equals b * x exactly: b is 0/1
            tape.watch(cond)
            params = layer._params(cond)
            with tape.stop_recording():
                back, _ = layer._couple(y, params, not inverse)
                x = b * y + (1.0 - b) * back
            tape.watch(x)
            new, log_det = layer._couple(x, params, inverse)
            if log_det is not None:
                log_det = log_det * (1.0 - b)
            targets, cotangents = [new], [(1.0 - b) * dy]
            sources = [cond, x]
        ldj = None if log_det is None else sum_event(log_det, ndims)
        _with_log_det(targets, cotangents, ldj, dldj)
    d_cond, d_second = _vjp(tape, targets, cotangents, sources, acc)
    d_cond = tf.zeros_like(cond) if d_cond is None else d_cond
    d_second = tf.zeros_like(sources[1]) if d_second is None else d_second
    if layer._split:
        return (layer._merge_parts(cond, trans_in),
                layer._merge_parts(dy_cond + d_cond, d_second))
    return x, b * dy + d_second + b * d_cond
