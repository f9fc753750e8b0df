"""NICE's diagonal scaling layer and fixed pixel preprocessing."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from tfp_flows.bijectors.base import FlowBijector, ParameterLayer
from tfp_flows.typing import DTypeLike, Shape

__all__ = ["DiagonalScaling", "PixelRescale", "PixelLogit"]


def _event_size(x, ndims, dtype):
    shape = tf.shape(x)
    rank = tf.rank(x)
    return tf.cast(tf.reduce_prod(shape[rank - ndims:]), dtype)


def _batch_shape(x, ndims):
    return tf.shape(x)[:tf.rank(x) - ndims]


def after_checks(x: tf.Tensor, checks: list[Any]) -> tf.Tensor:
    """``x``, evaluated only once the run-time ``checks`` have passed."""
    with tf.control_dependencies(checks):
        return tf.identity(x)


def pixel_checks(x: tf.Tensor, num_bins: float, name: str) -> list[Any]:
    """Run-time assertions that the pixels ``x`` are finite and lie in
    ``[0, num_bins]``, each with a message that names ``name`` and the
    problem. (Dequantised pixels lie below ``num_bins``; the bound is closed
    so that rounding at the top bin passes.)"""
    return [
        tf.debugging.assert_all_finite(
            x, f"'{name}': the pixels contain NaN or Inf."),
        tf.debugging.assert_greater_equal(
            x, tf.zeros([], x.dtype), message=f"'{name}': pixels must be >= 0."),
        tf.debugging.assert_less_equal(
            x, tf.constant(num_bins, x.dtype),
            message=f"'{name}': pixels must be <= num_bins = {num_bins:g}."),
    ]


class DiagonalScaling(FlowBijector):
    """NICE's diagonal scaling layer S (Dinh et al., 2014, Sec. 3.3).

    Data -> latent (``inverse``): ``y = x * exp(s)``, ``log|det| = sum(s)``.
    latent -> data (``forward``): ``x = y * exp(-s)``.

    ``s`` has the event shape and starts at 0 (the identity). It lets the
    otherwise volume-preserving NICE weight each latent dimension.

    Args:
      event_shape: shape of one event, e.g. ``[784]`` or ``[28, 28, 1]``.
    """

    def __init__(self, event_shape: int | Shape, *, dtype: DTypeLike = tf.float32,
                 validate_args: bool = False, name: str = "diagonal_scaling") -> None:
        parameters = dict(locals())
        shape = tuple(int(d) for d in np.atleast_1d(event_shape))
        if not shape or any(d <= 0 for d in shape):
            raise ValueError(f"event_shape must be non-empty and positive, "
                             f"got {event_shape!r}.")
        dtype = tf.as_dtype(dtype)
        self._event_shape_tuple = shape
        params = ParameterLayer({"log_scale": (shape, "zeros", True)},
                                dtype=dtype.name, name=f"{name}_params")
        super().__init__(event_ndims=len(shape), parameters=parameters,
                         name=name, layers=[params], dtype=dtype,
                         validate_args=validate_args)
        self._log_scale = self._no_dependency(params.raw("log_scale"))

    @property
    def log_scale(self) -> tf.Variable:
        """``s``, of the event shape (a variable)."""
        return self._log_scale

    def _log_det(self, x, sign):
        ndims = len(self._event_shape_tuple)
        return tf.broadcast_to(sign * tf.reduce_sum(self._log_scale),
                               _batch_shape(x, ndims))

    def _forward_and_log_det(self, x, **kwargs):
        self._check_event_shape(x, self._event_shape_tuple)
        return x * tf.exp(-self._log_scale), self._log_det(x, -1.0)

    def _inverse_and_log_det(self, y, **kwargs):
        self._check_event_shape(y, self._event_shape_tuple)
        return y * tf.exp(self._log_scale), self._log_det(y, 1.0)

    def _forward_event_shape(self, s):
        return s

    def _inverse_event_shape(self, s):
        return s


class _FixedPixelMap(FlowBijector):
    def __init__(self, num_bins, event_ndims, parameters, name, dtype,
                 validate_args):
        levels = float(num_bins)
        if not levels >= 2:
            raise ValueError(f"num_bins must be >= 2, got {num_bins!r}.")
        self._num_bins = levels
        super().__init__(event_ndims=event_ndims, parameters=parameters,
                         name=name, dtype=tf.as_dtype(dtype),
                         validate_args=validate_args)

    @property
    def num_bins(self) -> float:
        """Pixel values live in ``[0, num_bins)``."""
        return self._num_bins

    def _validated_pixels(self, y):
        """With ``validate_args``, ``y`` after run-time checks that every
        pixel is finite and lies in ``[0, num_bins]``; else ``y`` unchanged."""
        if not self.validate_args:
            return y
        return after_checks(y, pixel_checks(y, self._num_bins, self.name))

    def _forward_event_shape(self, s):
        return s

    def _inverse_event_shape(self, s):
        return s


class PixelRescale(_FixedPixelMap):
    """Maps pixels in ``[0, L)`` to ``[shift, 1 + shift)`` (Glow uses shift -0.5).

    Data -> latent (``inverse``): ``y = x / L + shift``,
    ``log|det| = -D log L`` for ``D`` event entries.

    Args:
      num_bins: ``L = 2**n_bits`` (or the number of intensity levels).
      shift: added after dividing by ``L``.
      event_ndims: rank of one event.
      validate_args: check at run time that the pixels given to
        ``inverse`` are finite and in ``[0, num_bins]`` (an
        ``InvalidArgumentError`` naming the problem otherwise).
    """

    def __init__(self, num_bins: float, shift: float = -0.5, *, event_ndims: int = 3,
                 dtype: DTypeLike = tf.float32, validate_args: bool = False,
                 name: str = "pixel_rescale") -> None:
        parameters = dict(locals())
        self._shift = float(shift)
        super().__init__(num_bins, event_ndims, parameters, name, dtype,
                         validate_args)

    def _log_det(self, x, sign):
        ndims = self.forward_min_event_ndims
        d = _event_size(x, ndims, x.dtype)
        return tf.broadcast_to(sign * d * np.log(self._num_bins),
                               _batch_shape(x, ndims))

    def _forward_and_log_det(self, x, **kwargs):
        return (x - self._shift) * self._num_bins, self._log_det(x, 1.0)

    def _inverse_and_log_det(self, y, **kwargs):
        y = self._validated_pixels(y)
        return y / self._num_bins + self._shift, self._log_det(y, -1.0)


class PixelLogit(_FixedPixelMap):
    """RealNVP's logit preprocessing (Dinh et al., 2016, Sec. 4.1).

    Data -> latent (``inverse``)::

        p = alpha + (1 - 2 alpha) * x / L,    y = log p - log(1 - p)
        log|det| = sum(log(1 - 2 alpha) - log L - log p - log(1 - p))

    latent -> data (``forward``): ``x = (sigmoid(y) - alpha) * L / (1 - 2 alpha)``.

    Args:
      num_bins: ``L``; pixels live in ``[0, L)``.
      alpha: keeps ``p`` away from 0 and 1 (the paper used 0.05).
      event_ndims: rank of one event.
      validate_args: check at run time that the pixels given to
        ``inverse`` are finite and in ``[0, num_bins]`` (an
        ``InvalidArgumentError`` naming the problem otherwise).
    """

    def __init__(self, num_bins: float, alpha: float = 0.05, *, event_ndims: int = 3,
                 dtype: DTypeLike = tf.float32, validate_args: bool = False,
                 name: str = "pixel_logit") -> None:
        parameters = dict(locals())
        alpha = float(alpha)
        if not 0.0 <= alpha < 0.5:
            raise ValueError(f"alpha must be in [0, 0.5), got {alpha}.")
        self._alpha = alpha
        super().__init__(num_bins, event_ndims, parameters, name, dtype,
                         validate_args)

    @property
    def alpha(self) -> float:
        """The margin ``alpha``."""
        return self._alpha

    # (TFP's names: ``inverse(y)`` takes the pixels, ``forward(x)`` the logits.)
    def _inverse_and_log_det(self, y, **kwargs):
        y = self._validated_pixels(y)
        ndims = self.forward_min_event_ndims
        scale = (1.0 - 2.0 * self._alpha) / self._num_bins
        p = self._alpha + scale * y
        log_p, log_1mp = tf.math.log(p), tf.math.log1p(-p)
        logits = log_p - log_1mp
        ldj = np.log(scale) - log_p - log_1mp
        return logits, tf.reduce_sum(ldj, axis=list(range(-ndims, 0)))

    def _forward_and_log_det(self, x, **kwargs):
        ndims = self.forward_min_event_ndims
        scale = (1.0 - 2.0 * self._alpha) / self._num_bins
        pixels = (tf.sigmoid(x) - self._alpha) / scale
        ldj = (tf.math.log_sigmoid(x) + tf.math.log_sigmoid(-x)) - np.log(scale)
        return pixels, tf.reduce_sum(ldj, axis=list(range(-ndims, 0)))
