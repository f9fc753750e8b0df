"""Composition: `FlowChain` (a single-pass `tfb.Chain`) and `FactorOut`
(the multi-scale split of RealNVP and Glow)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import tensorflow as tf
from tensorflow_probability import bijectors as tfb

from tfp_flows.bijectors import fused
from tfp_flows.bijectors.base import FlowBijector, sum_event
from tfp_flows.bijectors.scaling import after_checks, pixel_checks
from tfp_flows.description import FlowDescription
from tfp_flows.typing import BijectorKwargs, Shape, TensorLike

__all__ = ["FlowChain", "FactorOut", "forward_and_log_det",
           "inverse_and_log_det", "route_kwargs", "single_pass"]


def _is_container(b):
    if isinstance(b, tfb.Invert):
        return _is_container(b.bijector)
    return isinstance(b, (FlowChain, FactorOut, tfb.Composition))


def route_kwargs(b: tfb.Bijector, kwargs: BijectorKwargs | None) -> dict[str, Any]:
    """Keyword arguments for child `b`.

    Leaves get ``kwargs[b.name]`` (as `tfb.Chain` does). Containers get the
    whole dict, so a name is found at any depth, plus their own entry.
    """
    if not kwargs:
        return {}
    own = kwargs.get(b.name, {})
    if _is_container(b):
        merged = {k: v for k, v in kwargs.items() if k != b.name}
        merged.update(own if isinstance(own, dict) else {})
        return merged
    return dict(own) if isinstance(own, dict) else {}


def single_pass(b: tfb.Bijector, x: tf.Tensor, event_ndims: int, direction: str,
                kwargs: BijectorKwargs | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """``(output, log-det)`` of bijector `b` applied to `x` in `direction`.

    The building block of every chain walk (and of the reversible gradient's
    recomputation): a tfp_flows bijector (or `tfb.Invert` of one) computes
    its value and log-determinant together, without TFP's cache; any other
    TFP bijector goes through its usual methods.

    Args:
      b: a bijector.
      x: its input in `direction`.
      event_ndims: event rank of `x`; the log-det is summed over it.
      direction: ``"forward"`` (latent -> data) or ``"inverse"``.
      kwargs: `b`'s own keyword arguments (a dict, or None).

    Returns:
      ``(y, log_det)``, the log-det with the batch shape of `x`.
    """
    kwargs = kwargs or {}
    inner, flip = b, False
    if isinstance(b, tfb.Invert) and isinstance(b.bijector, FlowBijector):
        inner, flip = b.bijector, True
    if isinstance(inner, FlowBijector):
        go_forward = (direction == "forward") != flip
        if go_forward:
            y, ldj = inner._forward_and_log_det(x, **kwargs)  # pylint: disable=protected-access
            min_ndims = inner.forward_min_event_ndims
        else:
            y, ldj = inner._inverse_and_log_det(x, **kwargs)  # pylint: disable=protected-access
            min_ndims = inner.inverse_min_event_ndims
        extra = event_ndims - min_ndims
        if extra < 0:
            raise ValueError(
                f"bijector '{b.name}' needs events of rank >= {min_ndims}, "
                f"but the chain gives it rank {event_ndims}.")
        return y, sum_event(ldj, extra)
    if direction == "forward":
        return (b.forward(x, **kwargs),
                b.forward_log_det_jacobian(x, event_ndims=event_ndims, **kwargs))
    return (b.inverse(x, **kwargs),
            b.inverse_log_det_jacobian(x, event_ndims=event_ndims, **kwargs))


def forward_and_log_det(bijector: tfb.Bijector, x: TensorLike,
                        event_ndims: int | None = None,
                        **kwargs: Any) -> tuple[tf.Tensor, tf.Tensor]:
    """``(bijector.forward(x), fldj)`` in one pass, without TFP's cache."""
    if event_ndims is None:
        event_ndims = bijector.forward_min_event_ndims
    return single_pass(bijector, x, event_ndims, "forward", kwargs)


def inverse_and_log_det(bijector: tfb.Bijector, y: TensorLike,
                        event_ndims: int | None = None,
                        **kwargs: Any) -> tuple[tf.Tensor, tf.Tensor]:
    """``(bijector.inverse(y), ildj)`` in one pass, without TFP's cache."""
    if event_ndims is None:
        event_ndims = bijector.inverse_min_event_ndims
    return single_pass(bijector, y, event_ndims, "inverse", kwargs)


def _infer_ndims(bijectors):
    """(data-side rank, latent-side rank) of a chain (data side first)."""
    for r0 in range(0, 9):
        r, ok = r0, True
        for b in bijectors:
            if r < b.inverse_min_event_ndims:
                ok = False
                break
            r = b.inverse_event_ndims(r)
        if ok:
            return r0, int(r)
    raise ValueError("could not infer the event rank of the chain.")


class FlowChain(FlowBijector):
    """A chain of bijectors evaluated in a single pass.

    Same semantics as ``tfb.Chain(bijectors)``: ``forward`` applies the last
    bijector first, so ``inverse`` (data -> latent) walks the list from the
    first entry, which is the data side. Each tfp_flows bijector computes its
    value and log-determinant together; any other TFP bijector is called
    through the usual TFP methods.

    Conditioning keyword arguments are routed by bijector name, at any depth:
    ``chain.inverse(y, top_prior={"labels": labels})``.

    Gradients go through the stored activations, as for any TensorFlow
    computation. Its subclass `tfp_flows.bijectors.ReversibleChain` computes
    the same values with gradients whose memory does not grow with depth.

    Args:
      bijectors: list of bijectors, data side first.
      data_event_shape: event shape expected on the data side (checked by
        ``inverse``), or None.
      validate_args: also check at run time that the data given to
        ``inverse`` and the latents given to ``forward`` are finite and,
        when a builder's description gives ``num_bins``, that the data lie
        in ``[0, num_bins]`` (an ``InvalidArgumentError`` naming the chain
        otherwise).
    """

    def __init__(self, bijectors: Iterable[tfb.Bijector], *,
                 data_event_shape: Shape | None = None, validate_args: bool = False,
                 name: str = "flow_chain") -> None:
        parameters = dict(locals())
        bijectors = list(bijectors)
        if not bijectors:
            raise ValueError("FlowChain needs at least one bijector.")
        for b in bijectors:
            if not isinstance(b, tfb.Bijector):
                raise TypeError(f"not a bijector: {b!r}")
        names = [b.name for b in bijectors]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"bijector names in a chain must be unique (they "
                             f"route keyword arguments); repeated: {dup}.")
        data_ndims, latent_ndims = _infer_ndims(bijectors)
        self._bijectors = bijectors
        self._data_event_shape = (None if data_event_shape is None else
                                  tuple(int(d) for d in data_event_shape))
        self._description: FlowDescription | None = None
        dtype = next((b.dtype for b in bijectors if b.dtype is not None),
                     tf.float32)
        super().__init__(event_ndims=latent_ndims,
                         inverse_event_ndims=data_ndims,
                         parameters=parameters, name=name, dtype=dtype,
                         is_constant_jacobian=all(
                             b.is_constant_jacobian for b in bijectors),
                         validate_args=validate_args)

    @property
    def bijectors(self) -> list[tfb.Bijector]:
        """The bijectors, data side first (as in `tfb.Chain`)."""
        return list(self._bijectors)

    @property
    def memory_efficient(self) -> bool:
        """Whether gradients are reversible: False here, True for
        `ReversibleChain`."""
        return False

    @property
    def data_event_shape(self) -> tuple[int, ...] | None:
        """Event shape expected on the data side, if declared (else None)."""
        return self._data_event_shape

    @property
    def description(self) -> FlowDescription | None:
        """The :class:`tfp_flows.description.FlowDescription` a model builder
        attached (None for a hand-built chain)."""
        return self._description

    @description.setter
    def description(self, value: FlowDescription | None) -> None:
        self._description = self._no_dependency(value)

    def _check_data(self, y):
        """``y`` (data for ``inverse``) after the shape check and, with
        ``validate_args``, run-time checks that it is finite and, for a
        model of pixels (its description has ``num_bins``), in
        ``[0, num_bins]``. The checks sit here, on what the caller passed,
        rather than in the chain's pixel map: a `ReversibleChain`
        re-runs its children on reconstructed inputs, which may round to
        just outside the range."""
        self._check_data_shape(y)
        num_bins = self._description.num_bins if self._description else None
        if not self.validate_args or num_bins is None:
            return self._finite(y, "data")
        return after_checks(y, pixel_checks(y, num_bins, self.name))

    def _finite(self, x, what):
        if not self.validate_args:
            return x
        return after_checks(x, [tf.debugging.assert_all_finite(
            x, f"'{self.name}': the {what} contain NaN or Inf.")])

    def _check_data_shape(self, y):
        if self._data_event_shape is None:
            return
        expected = self._data_event_shape
        shape = tuple(y.shape) if y.shape.rank is not None else None
        if shape is None:
            return
        got = shape[len(shape) - len(expected):] if len(shape) >= len(expected) else shape
        if len(shape) < len(expected) or any(
                g is not None and g != e for g, e in zip(got, expected)):
            raise ValueError(
                f"'{self.name}' expects data of event shape {expected}; got an "
                f"input of shape {shape}.")

    # -- the plain walks ---------------------------------------------------
    def walk_inverse(self, y: tf.Tensor, /, **kwargs: Any) -> tuple[tf.Tensor, tf.Tensor]:
        """``(z, ildj)``: the chain's inverse (data -> latent), one child at a
        time, with conditioning routed by name. This is the ordinary pass
        whose activations backpropagation stores; subclasses that change how
        gradients are computed (`ReversibleChain`) use it as their plain
        pass. An `ActNorm` followed by an `InvertibleConv1x1` runs as one
        affine map (`tfp_flows.bijectors.fused`)."""
        return self._walk(list(self._bijectors), y, self.inverse_min_event_ndims,
                          "inverse", kwargs)

    def walk_forward(self, x: tf.Tensor, /, **kwargs: Any) -> tuple[tf.Tensor, tf.Tensor]:
        """``(x, fldj)``: the chain's forward (latent -> data) pass, one child
        at a time; see `walk_inverse`."""
        return self._walk(list(reversed(self._bijectors)), x,
                          self.forward_min_event_ndims, "forward", kwargs)

    @staticmethod
    def _walk(order, x, ndims, direction, kwargs):
        total = None
        i = 0
        while i < len(order):
            b = order[i]
            # the pair as (actnorm, conv): data side first
            pair = order[i:i + 2] if direction == "inverse" else order[i:i + 2][::-1]
            if len(pair) == 2 and fused.fusable(
                    pair[0], pair[1], ndims,
                    (route_kwargs(pair[0], kwargs), route_kwargs(pair[1], kwargs))):
                x, ldj = fused.actnorm_conv1x1(pair[0], pair[1], x, direction)
                i += 2
            else:
                x, ldj = single_pass(b, x, ndims, direction, route_kwargs(b, kwargs))
                ndims = (b.inverse_event_ndims(ndims) if direction == "inverse"
                         else b.forward_event_ndims(ndims))
                i += 1
            total = ldj if total is None else total + ldj
        return x, total

    def _inverse_and_log_det(self, y, **kwargs):
        return self.walk_inverse(self._check_data(y), **kwargs)

    def _forward_and_log_det(self, x, **kwargs):
        return self.walk_forward(self._finite(x, "latents"), **kwargs)

    def _forward_event_shape(self, s):
        for b in reversed(self._bijectors):
            s = b.forward_event_shape(s)
        return s

    def _inverse_event_shape(self, s):
        for b in self._bijectors:
            s = b.inverse_event_shape(s)
        return s

    def _forward_event_shape_tensor(self, s):
        for b in reversed(self._bijectors):
            s = b.forward_event_shape_tensor(s)
        return s

    def _inverse_event_shape_tensor(self, s):
        for b in self._bijectors:
            s = b.inverse_event_shape_tensor(s)
        return s


class FactorOut(FlowBijector):
    """Applies `bijector` to the first `num_kept` channels only.

    This is the multi-scale split of RealNVP and Glow: the remaining channels
    are "factored out" (they go to the prior as they are) while the kept ones
    continue through deeper layers. ``bijector`` must preserve the shape of
    the kept part, so the whole latent keeps the shape of the input::

        inverse(x) = concat([bijector.inverse(x[..., :k]), x[..., k:]])

    Args:
      bijector: acts on ``[..., num_kept]``; typically the next levels.
      num_kept: number of channels (last axis) passed to `bijector`.
    """

    def __init__(self, bijector: tfb.Bijector, num_kept: int, *,
                 validate_args: bool = False, name: str = "factor_out") -> None:
        parameters = dict(locals())
        if bijector.forward_min_event_ndims != bijector.inverse_min_event_ndims:
            raise ValueError("FactorOut needs a rank-preserving bijector.")
        self._inner = bijector
        self._num_kept = int(num_kept)
        if self._num_kept <= 0:
            raise ValueError(f"num_kept must be positive, got {num_kept}.")
        super().__init__(event_ndims=bijector.forward_min_event_ndims,
                         parameters=parameters, name=name,
                         dtype=bijector.dtype, validate_args=validate_args)

    @property
    def bijector(self) -> tfb.Bijector:
        """The bijector applied to the kept channels."""
        return self._inner

    @property
    def num_kept(self) -> int:
        """Number of channels (last axis) passed to `bijector`."""
        return self._num_kept

    def _split(self, x):
        c = x.shape[-1] if x.shape.rank else None
        if c is not None and c <= self._num_kept:
            raise ValueError(
                f"FactorOut '{self.name}': input has {c} channels (shape "
                f"{tuple(x.shape)}); it must have more than num_kept="
                f"{self._num_kept}.")
        return x[..., :self._num_kept], x[..., self._num_kept:]

    def _apply(self, x, direction, kwargs):
        kept, out = self._split(x)
        ndims = self.forward_min_event_ndims
        new, ldj = single_pass(self._inner, kept, ndims, direction,
                                route_kwargs(self._inner, kwargs))
        if new.shape.rank is not None and kept.shape.rank is not None and \
                new.shape[-ndims:] != kept.shape[-ndims:] and \
                new.shape[-ndims:].is_fully_defined() and \
                kept.shape[-ndims:].is_fully_defined():
            raise ValueError(
                f"FactorOut '{self.name}': the inner bijector changed the kept "
                f"part's shape from {kept.shape[-ndims:]} to "
                f"{new.shape[-ndims:]}.")
        return tf.concat([new, out], axis=-1), ldj

    def _forward_and_log_det(self, x, **kwargs):
        return self._apply(x, "forward", kwargs)

    def _inverse_and_log_det(self, y, **kwargs):
        return self._apply(y, "inverse", kwargs)

    def _forward_event_shape(self, s):
        return s

    def _inverse_event_shape(self, s):
        return s
