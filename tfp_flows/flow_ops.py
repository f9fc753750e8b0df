"""Functions on a flow distribution: bits/dim, sampling with temperature,
encoding to and decoding from the latent space, interpolation, and explicit
data-dependent initialisation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf
from tensorflow_probability import bijectors as tfb
from tensorflow_probability import distributions as tfd

from tfp_flows import evaluation
from tfp_flows.bijectors import ActNorm, flow_bijectors
from tfp_flows.bijectors.chain import forward_and_log_det, inverse_and_log_det
from tfp_flows.description import describe
from tfp_flows.typing import BijectorKwargs, Seed, TensorLike

__all__ = ["bits_per_dim", "sample", "encode", "decode", "interpolate",
           "initialize", "Latents", "validate_images", "num_bins"]


class Latents(NamedTuple):
    """Latent code of a batch of images.

    Attributes:
      flat: the standardised latent (N(0, I) under the model), with the base
        distribution's event shape: the image shape for RealNVP and Glow,
        ``[D]`` for NICE.
      levels: list of per-level latents, finest level first; the last entry is
        the top level. For single-scale models (NICE) a one-element list.
    """

    flat: tf.Tensor
    levels: list[tf.Tensor]


def _levels(dist):
    d = describe(dist)
    return d.levels if d is not None else ()


def num_bins(dist: tfd.Distribution) -> float | None:
    """Number of pixel intensity bins the model was built for (or None)."""
    d = describe(dist)
    return d.num_bins if d is not None else None


def _event_shape(dist):
    shape = dist.event_shape
    if not shape.is_fully_defined():
        raise ValueError("the distribution's event shape must be known.")
    return tuple(shape.as_list())


def _latent_shape(dist):
    """Event shape of the latent (the base distribution's event shape)."""
    shape = dist.distribution.event_shape
    if not shape.is_fully_defined():
        raise ValueError("the base distribution's event shape must be known.")
    return tuple(shape.as_list())


def _check_latent(dist, z):
    """Raises a ValueError unless `z` ends in the latent event shape."""
    expected = _latent_shape(dist)
    shape = tuple(z.shape) if z.shape.rank is not None else None
    if shape is None:
        return
    n = len(expected)
    if len(shape) < n or any(g is not None and g != e
                             for g, e in zip(shape[len(shape) - n:], expected)):
        raise ValueError(f"latents must have shape [batch..., "
                         f"{', '.join(map(str, expected))}]; got {shape}.")


def _check_finite(values, what):
    """Raises a ValueError if float array or eager tensor `values` has NaN or
    Inf values (graph tensors are not checked)."""
    if isinstance(values, tf.Tensor) and not tf.executing_eagerly():
        return
    arr = np.asarray(values)
    if tf.as_dtype(arr.dtype).is_floating:
        bad = int(arr.size - np.isfinite(arr).sum())
        if bad:
            raise ValueError(f"{what} contain {bad} NaN or Inf values.")


def validate_images(dist: tfd.Distribution, images: TensorLike, *, integer: bool = True,
                    bins: float | None = None) -> tf.Tensor:
    """Checks shape, dtype, finiteness and range; returns a float tensor.

    Raises:
      ValueError: naming the problem (shape, empty batch, NaN/Inf, range).
    """
    bins = num_bins(dist) if bins is None else bins
    event = _event_shape(dist)
    if isinstance(images, tf.Tensor) and not tf.executing_eagerly():
        arr = None
    else:
        arr = np.asarray(images)
    if arr is not None:
        if arr.dtype.kind not in "uif":
            raise ValueError(f"images must be numeric, got dtype {arr.dtype}.")
        if arr.ndim < len(event) or tuple(arr.shape[arr.ndim - len(event):]) != event:
            raise ValueError(f"images must have shape [batch..., "
                             f"{', '.join(map(str, event))}]; got {arr.shape}.")
        if arr.size == 0:
            raise ValueError(f"got an empty batch of shape {arr.shape}.")
        _check_finite(arr, "images")
        if bins is not None:
            lo, hi = float(arr.min()), float(arr.max())
            limit = bins - 1 if integer else bins
            if lo < 0 or hi > limit:
                raise ValueError(
                    f"pixel values must lie in [0, {limit:g}] for a model with "
                    f"{bins:g} bins; got min {lo:g}, max {hi:g}.")
        if integer and arr.dtype.kind == "f" and not np.all(arr == np.round(arr)):
            raise ValueError("images must be integer-valued (quantised pixels)"
                             "; pass dequantize=False for continuous data.")
        return tf.convert_to_tensor(arr, dtype=dist.dtype)
    return tf.cast(images, dist.dtype)


def bits_per_dim(dist: tfd.Distribution, images: TensorLike, *, dequantize: bool = True,
                 seed: Seed = None,
                 bijector_kwargs: BijectorKwargs | None = None) -> tf.Tensor:
    """Per-image bits per dimension, in the papers' convention.

    ``images`` are integer-valued in ``[0, num_bins)``; uniform noise
    ``u ~ U[0, 1)`` is added (dequantisation) and the result is
    ``-log p(x + u) / (D log 2)`` where ``p`` is the model density over pixel
    units. A model uniform over ``[0, 2^n)^D`` scores exactly ``n``.

    Args:
      dist: a tfp_flows model (or any distribution over pixel units).
      images: ``[batch..., *event_shape]`` integer-valued pixels.
      dequantize: add uniform noise (set False for already continuous data).
      seed: seed of the dequantisation noise.
      bijector_kwargs: conditioning, e.g. ``{'top_prior': {'labels': y}}``.

    Returns:
      float tensor of the batch shape.

    Raises:
      ValueError: wrong shape, NaN/Inf, or pixels out of range.
    """
    x = validate_images(dist, images, integer=dequantize)
    if dequantize:
        x = evaluation.dequantize(x, seed)
    log_p = dist.log_prob(x, bijector_kwargs=bijector_kwargs or {})
    return evaluation.bits_per_dim(log_p, np.prod(_event_shape(dist)))


def sample(dist: tfd.TransformedDistribution, n: int | tf.Tensor,
           temperature: float | tf.Tensor = 1.0, seed: Seed = None,
           bijector_kwargs: BijectorKwargs | None = None) -> tf.Tensor:
    """Draws ``n`` samples with the base noise scaled by ``temperature``.

    With Glow's learned priors written as bijectors, this scales every learned
    standard deviation by ``temperature``, as in the paper. ``temperature=0``
    decodes the zero latent.
    """
    z = evaluation.base_sample(dist, n, temperature, seed)
    return forward_and_log_det(dist.bijector, z, **(bijector_kwargs or {}))[0]


def _squeeze(z, factor):
    return tf.nn.space_to_depth(z, factor) if factor > 1 else z


def _unsqueeze(z, factor):
    return tf.nn.depth_to_space(z, factor) if factor > 1 else z


def _unpack(z, levels):
    if not levels:
        return [z]
    batch_shape = tf.shape(z)[:-3]
    z = tf.reshape(z, tf.concat([[-1], tf.shape(z)[-3:]], 0))
    out = []
    for factor, kept in levels:
        z = _squeeze(z, factor)
        if kept is None:
            out.append(z)
            break
        out.append(z[..., kept:])
        z = z[..., :kept]
    return [tf.reshape(t, tf.concat([batch_shape, tf.shape(t)[1:]], 0))
            for t in out]


def _pack(parts, levels):
    if not levels:
        (z,) = parts
        return z
    batch_shape = tf.shape(parts[0])[:-3]
    parts = [tf.reshape(t, tf.concat([[-1], tf.shape(t)[-3:]], 0))
             for t in parts]
    z = None
    for (factor, kept), part in reversed(list(zip(levels, parts))):
        z = part if kept is None else tf.concat([z, part], axis=-1)
        z = _unsqueeze(z, factor)
    return tf.reshape(z, tf.concat([batch_shape, tf.shape(z)[1:]], 0))


def encode(dist: tfd.TransformedDistribution, x: TensorLike,
           bijector_kwargs: BijectorKwargs | None = None) -> Latents:
    """Exact encoder: data (pixel units, continuous) -> latent.

    Returns:
      :class:`Latents` with the flat latent (data's shape) and the per-level
      latents.

    Raises:
      ValueError: `x` of the wrong shape, or (eagerly) containing NaN or Inf.
    """
    x = tf.convert_to_tensor(x, dtype=dist.dtype)
    _check_finite(x, "images")
    z, _ = inverse_and_log_det(dist.bijector, x, **(bijector_kwargs or {}))
    return Latents(z, _unpack(z, _levels(dist)))


def decode(dist: tfd.TransformedDistribution, z: Latents | TensorLike | Sequence[TensorLike],
           bijector_kwargs: BijectorKwargs | None = None) -> tf.Tensor:
    """Inverse of :func:`encode`: takes `Latents`, a flat latent, or a list of
    per-level latents, and returns data in pixel units.

    Raises:
      ValueError: latents of the wrong shape, or (eagerly) containing NaN or
        Inf.
    """
    if isinstance(z, Latents):
        z = z.flat
    elif isinstance(z, (list, tuple)):
        z = _pack([tf.convert_to_tensor(t, dist.dtype) for t in z],
                  _levels(dist))
    z = tf.convert_to_tensor(z, dtype=dist.dtype)
    _check_latent(dist, z)
    _check_finite(z, "latents")
    return forward_and_log_det(dist.bijector, z, **(bijector_kwargs or {}))[0]


def interpolate(dist: tfd.TransformedDistribution, x0: TensorLike, x1: TensorLike,
                steps: int = 8, method: str = "linear",
                bijector_kwargs: BijectorKwargs | None = None) -> tf.Tensor:
    """Decodes ``steps`` points between the latents of ``x0`` and ``x1``.

    ``z(t) = (1 - t) z0 + t z1`` (``'linear'``) or the spherical interpolation
    ``z(t) = sin((1 - t) w) / sin(w) z0 + sin(t w) / sin(w) z1`` with
    ``cos w = <z0, z1> / (|z0| |z1|)`` (``'slerp'``), for ``t`` in
    ``linspace(0, 1, steps)``, then decoded.

    Args:
      x0: a single image (event shape) or a batch, pixel units.
      x1: like `x0`, of the same shape.
      steps: number of points, endpoints included.
      method: ``'linear'`` or ``'slerp'`` (spherical, keeps the norm typical).
      bijector_kwargs: conditioning of both endpoints (e.g. class labels of
        shape = the batch shape); repeated for every step.

    Returns:
      tensor ``[steps, *x0.shape]``; its first and last entries reconstruct
      ``x0`` and ``x1``.
    """
    steps = int(steps)
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}.")
    if method not in ("linear", "slerp"):
        raise ValueError(f"method must be 'linear' or 'slerp', got {method!r}.")
    x0 = tf.convert_to_tensor(x0, dist.dtype)
    x1 = tf.convert_to_tensor(x1, dist.dtype)
    if x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must have the same shape; got "
                         f"{tuple(x0.shape)} and {tuple(x1.shape)}.")
    z0 = encode(dist, x0, bijector_kwargs).flat
    z1 = encode(dist, x1, bijector_kwargs).flat
    latent_rank = len(_latent_shape(dist))
    t = tf.reshape(tf.linspace(tf.constant(0.0, dist.dtype), 1.0, steps),
                   [steps] + [1] * z0.shape.rank)
    if method == "linear":
        z = (1.0 - t) * z0[None] + t * z1[None]
    else:
        axes = list(range(-latent_rank, 0))
        n0 = tf.sqrt(tf.reduce_sum(z0 ** 2, axes, keepdims=True))
        n1 = tf.sqrt(tf.reduce_sum(z1 ** 2, axes, keepdims=True))
        cos = tf.reduce_sum(z0 * z1, axes, keepdims=True) / (n0 * n1)
        omega = tf.acos(tf.clip_by_value(cos, -1.0 + 1e-7, 1.0 - 1e-7))
        so = tf.sin(omega)
        z = (tf.sin((1.0 - t) * omega) / so * z0[None]
             + tf.sin(t * omega) / so * z1[None])
    # [steps, batch..., latent event] -> [steps * batch, latent event]
    flat = tf.reshape(z, tf.concat([[-1], tf.shape(z)[z.shape.rank - latent_rank:]], 0))
    out = decode(dist, flat, _repeat_kwargs(bijector_kwargs, steps))
    return tf.reshape(out, tf.concat([[steps], tf.shape(x0)], 0))


def _repeat_kwargs(kwargs, steps):
    """Tiles every non-scalar conditioning value ``steps`` times on axis 0
    (step-major, matching the flattened ``[steps, batch]`` latents)."""
    if not kwargs:
        return kwargs
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if isinstance(value, dict):
            out[key] = _repeat_kwargs(value, steps)
            continue
        v = tf.convert_to_tensor(value)
        if v.shape.rank == 0:
            out[key] = v
        else:
            out[key] = tf.tile(v, tf.concat([[steps], tf.ones(
                [tf.rank(v) - 1], tf.int32)], 0))
    return out


def initialize(dist_or_bijector: tfd.Distribution | tfb.Bijector, x: TensorLike,
               bijector_kwargs: BijectorKwargs | None = None) -> int:
    """Data-dependent initialisation of every ActNorm, in data->latent order.

    Runs eagerly (call it outside `tf.function`; under `tf.distribute` call it
    in the cross-replica context with the *global* batch so that every replica
    gets the same values). Existing initialisations are redone.

    Args:
      dist_or_bijector: a flow distribution or bijector.
      x: a batch of data (continuous, pixel units for image models).
      bijector_kwargs: conditioning, e.g. ``{'top_prior': {'labels': y}}``.

    Returns:
      The number of ActNorm layers initialised.
    """
    if not tf.executing_eagerly():
        raise RuntimeError("initialize() must run eagerly, outside tf.function.")
    bijector = getattr(dist_or_bijector, "bijector", dist_or_bijector)
    norms = [b for b in flow_bijectors(bijector) if isinstance(b, ActNorm)]
    for b in norms:
        b.initialized.assign(False)
    dtype = bijector.dtype or tf.float32
    inverse_and_log_det(bijector, tf.convert_to_tensor(x, dtype),
                        **(bijector_kwargs or {}))
    return len(norms)
