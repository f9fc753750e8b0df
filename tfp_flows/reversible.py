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
"""

import contextlib
import threading

import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow.python.eager import record  # pylint: disable=no-name-in-module

from tfp_flows.bijectors.actnorm import ActNorm
from tfp_flows.bijectors.base import flow_bijectors, sum_event
from tfp_flows.bijectors.chain import FactorOut, FlowChain, _single_pass, route_kwargs
from tfp_flows.bijectors.coupling import _Coupling

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


def _flip(direction):
    return "forward" if direction == "inverse" else "inverse"


def _in_ndims(b, direction):
    """Minimal event rank of `b`'s input when applied in `direction`."""
    return (b.inverse_min_event_ndims if direction == "inverse"
            else b.forward_min_event_ndims)


def _out_ndims(b, direction, ndims):
    return (b.inverse_event_ndims(ndims) if direction == "inverse"
            else b.forward_event_ndims(ndims))


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


def _initialize_first(chain, y, kwargs):
    """ActNorm's data-dependent init must never run inside the custom
    gradient: eagerly, run it now in a plain pass; in a graph, refuse."""
    pending = [b for b in flow_bijectors(chain) if isinstance(b, ActNorm)
               and b._data_init and not b._is_initialized_now()]  # pylint: disable=protected-access
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
def _reversible(chain, x, direction, kwargs):
    flat_kw = tf.nest.flatten(kwargs)
    positions = [i for i, v in enumerate(flat_kw) if tf.is_tensor(v)]

    def rebuild(tensors):
        flat = list(flat_kw)
        for i, t in zip(positions, tensors):
            flat[i] = t
        return tf.nest.pack_sequence_as(kwargs, flat)

    walk = (chain._walk_inverse if direction == "inverse"  # pylint: disable=protected-access
            else chain._walk_forward)  # pylint: disable=protected-access

    @tf.custom_gradient
    def run(x, *kw_tensors):
        kw = rebuild(kw_tensors)
        with record.stop_recording(), _plain_walks():
            out, ldj = walk(x, **kw)

        def grad_fn(d_out, d_ldj, variables=None):
            acc = _Accumulator(kw_tensors)
            with _plain_walks():
                ndims = _in_ndims(chain, direction)
                _, dx = _backward(chain, direction, ndims, kw, out, d_out,
                                  d_ldj, acc)
            input_grads = [dx] + acc.kw_grads
            if variables is None:
                return input_grads
            return input_grads, [acc.var_grads.get(v.ref()) for v in variables]

        return (out, ldj), grad_fn

    return run(x, *(flat_kw[i] for i in positions))


class _Accumulator:
    """Sums gradients of variables and of float conditioning tensors."""

    def __init__(self, kw_tensors):
        self.var_grads = {}
        self.kw_sources = [t for t in kw_tensors if t.dtype.is_floating]
        self._kw_index = [i for i, t in enumerate(kw_tensors)
                          if t.dtype.is_floating]
        self.kw_grads = [None] * len(kw_tensors)

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


def _after(t, dep):
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


def _backward(b, direction, ndims, kwargs, y, dy, dldj, acc):
    """Given the output `y` of `b` applied in `direction` to an input of event
    rank `ndims`, and the cotangents `dy` and `dldj` (log-det, batch shape),
    returns ``(x, dx)``: the reconstructed input and its cotangent. Variable
    (and conditioning) gradients go to `acc`."""
    if dy is None:
        dy = tf.zeros_like(y)
    inner, inner_dir = b, direction
    if isinstance(b, tfb.Invert) and isinstance(b.bijector, (FlowChain, FactorOut)):
        inner, inner_dir = b.bijector, _flip(direction)
    if isinstance(inner, FlowChain) and ndims == _in_ndims(inner, inner_dir):
        children = inner.bijectors
        if inner_dir == "forward":
            children = children[::-1]
        plan, r = [], ndims
        for c in children:
            plan.append((c, r))
            r = _out_ndims(c, inner_dir, r)
        for c, r in reversed(plan):
            y, dy = _backward(c, inner_dir, r, route_kwargs(c, kwargs), y, dy,
                              dldj, acc)
        return y, dy
    if isinstance(inner, FactorOut) and ndims == inner.forward_min_event_ndims:
        k = inner.num_kept
        x_kept, dx_kept = _backward(
            inner.bijector, inner_dir, ndims,
            route_kwargs(inner.bijector, kwargs), y[..., :k], dy[..., :k],
            dldj, acc)
        return (tf.concat([x_kept, y[..., k:]], axis=-1),
                tf.concat([dx_kept, dy[..., k:]], axis=-1))
    if _has_fast_path(b):
        return _coupling_step(b, direction, ndims, y, dy, dldj, acc)
    return _leaf_step(b, direction, ndims, kwargs, y, dy, dldj, acc)


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
    out_ndims = _out_ndims(b, direction, ndims)
    # Fresh tensors: TFP's bijector cache would otherwise hand back the
    # forward pass's tensors instead of recomputing.
    y = tf.identity(_after(y, dy))
    x, _ = _single_pass(b, y, out_ndims, _flip(direction), kwargs)
    x = tf.identity(x)
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
    y = _after(y, dy)
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
