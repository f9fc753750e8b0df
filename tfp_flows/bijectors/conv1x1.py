"""Invertible 1x1 convolution (Glow), plain or LU-decomposed."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg
import tensorflow as tf

from tfp_flows.bijectors.base import FlowBijector, ParameterLayer, per_position_log_det
from tfp_flows.typing import DTypeLike

__all__ = ["InvertibleConv1x1", "random_rotation"]


def random_rotation(num_channels: int, seed: int | None = None) -> np.ndarray:
    """A random orthogonal matrix with determinant +1 (numpy, float64)."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((num_channels, num_channels)))
    q = q * np.sign(np.diag(r))  # uniform (Haar) distribution
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


class InvertibleConv1x1(FlowBijector):
    """Invertible 1x1 convolution (Kingma & Dhariwal, 2018, Sec. 3.2).

    Data -> latent (``inverse``), at every spatial position::

        y = W x,    log|det| = P * log|det W|

    latent -> data (``forward``): ``x = W^-1 y``. ``P`` is the number of
    positions (1 for vector events, where this is a learned rotation).

    ``W`` starts as a random rotation. With ``lu=True``::

        W = P_perm @ L @ (U + diag(sign * exp(log_abs_s)))

    with ``P_perm`` and ``sign`` fixed, ``L`` unit lower-triangular and ``U``
    strictly upper-triangular: ``W`` is invertible for any parameter values and
    ``log|det W| = sum(log_abs_s)`` costs O(C). With ``lu=False`` ``W`` is a
    free matrix and the log-determinant costs a QR decomposition (O(C^3)).

    Args:
      num_channels: size of the last axis.
      lu: use the LU parameterisation.
      event_ndims: 3 for images, 1 for vectors.
      seed: seed of the random rotation.
      dtype: float dtype.
    """

    def __init__(self, num_channels: int, lu: bool = True, *, event_ndims: int = 3,
                 seed: int | None = None, dtype: DTypeLike = tf.float32,
                 validate_args: bool = False, name: str = "invertible_conv1x1") -> None:
        parameters = dict(locals())
        c = int(num_channels)
        if c <= 0:
            raise ValueError(f"num_channels must be positive, got {c}.")
        if event_ndims not in (1, 3):
            raise ValueError(f"event_ndims must be 1 or 3, got {event_ndims}.")
        dtype = tf.as_dtype(dtype)
        self._num_channels = c
        self._lu = bool(lu)
        w0 = random_rotation(c, seed)
        init = lambda value: (lambda shape, dtype=None: tf.constant(  # noqa: E731
            value, dtype=dtype))
        if self._lu:
            p, lower, upper = scipy.linalg.lu(w0)
            s = np.diag(upper)
            specs: dict[str, Any] = {
                "permutation": ((c, c), init(p), False),
                "lower": ((c, c), init(np.tril(lower, -1)), True),
                "upper": ((c, c), init(np.triu(upper, 1)), True),
                "log_abs_s": ((c,), init(np.log(np.abs(s))), True),
                "sign_s": ((c,), init(np.sign(s)), False),
            }
            self._lower_mask = np.tril(np.ones((c, c)), -1)
        else:
            specs = {"kernel": ((c, c), init(w0), True)}
        params = ParameterLayer(specs, dtype=dtype.name, name=f"{name}_params")
        super().__init__(event_ndims=event_ndims, parameters=parameters,
                         name=name, layers=[params], dtype=dtype,
                         validate_args=validate_args)
        self._vars = self._no_dependency(params.raw_dict())

    @property
    def num_channels(self) -> int:
        """Size of the last axis."""
        return self._num_channels

    @property
    def lu(self) -> bool:
        """Whether ``W`` is LU-parameterised."""
        return self._lu

    def weight(self) -> tf.Tensor:
        """The matrix ``W`` (data -> latent), shape ``[C, C]``."""
        v = self._vars
        if not self._lu:
            return tf.convert_to_tensor(v["kernel"])
        mask = tf.constant(self._lower_mask, self.dtype)
        lower = v["lower"] * mask + tf.eye(self._num_channels, dtype=self.dtype)
        upper = v["upper"] * tf.transpose(mask) + tf.linalg.diag(
            v["sign_s"] * tf.exp(v["log_abs_s"]))
        return tf.matmul(v["permutation"], tf.matmul(lower, upper))

    def _weight_and_inverse(self):
        """(W, W^-1); the LU form inverts with two triangular solves."""
        v = self._vars
        if not self._lu:
            w = tf.convert_to_tensor(v["kernel"])
            return w, tf.linalg.inv(w)
        c = self._num_channels
        eye = tf.eye(c, dtype=self.dtype)
        mask = tf.constant(self._lower_mask, self.dtype)
        lower = v["lower"] * mask + eye
        upper = v["upper"] * tf.transpose(mask) + tf.linalg.diag(
            v["sign_s"] * tf.exp(v["log_abs_s"]))
        w = tf.matmul(v["permutation"], tf.matmul(lower, upper))
        # W^-1 = U^-1 L^-1 P^T
        l_inv_pt = tf.linalg.triangular_solve(
            lower, tf.transpose(v["permutation"]), lower=True)
        w_inv = tf.linalg.triangular_solve(upper, l_inv_pt, lower=False)
        return w, w_inv

    def _log_abs_det(self):
        if self._lu:
            return tf.reduce_sum(self._vars["log_abs_s"])
        # log|det W| = sum(log|diag R|) for W = QR; unlike slogdet, QR (and
        # its gradient) compiles with XLA on every device.
        r = tf.linalg.qr(self._vars["kernel"])[1]
        return tf.reduce_sum(tf.math.log(tf.abs(tf.linalg.diag_part(r))))

    def _check(self, x):
        c = x.shape[-1] if x.shape.rank else None
        if c is not None and c != self._num_channels:
            raise ValueError(
                f"InvertibleConv1x1 '{self.name}': input has {c} channels "
                f"(shape {tuple(x.shape)}), expected {self._num_channels}.")
        if x.shape.rank is not None and x.shape.rank < self.forward_min_event_ndims:
            raise ValueError(
                f"InvertibleConv1x1 '{self.name}': input of shape "
                f"{tuple(x.shape)} has rank < {self.forward_min_event_ndims}.")

    def _apply(self, x, matrix):
        """``x @ matrix^T`` on the last axis, for any leading shape."""
        shape = tf.shape(x)
        flat = tf.reshape(x, [-1, self._num_channels])
        out = tf.matmul(flat, matrix, transpose_b=True)
        return tf.reshape(out, shape)

    def _log_det(self, x, sign):
        return per_position_log_det(x, self.forward_min_event_ndims,
                                    sign * self._log_abs_det())

    def _forward_and_log_det(self, x, **kwargs):
        self._check(x)
        _, w_inv = self._weight_and_inverse()
        return self._apply(x, w_inv), self._log_det(x, -1.0)

    def _inverse_and_log_det(self, y, **kwargs):
        self._check(y)
        return self._apply(y, self.weight()), self._log_det(y, 1.0)

    def _forward_event_shape(self, s):
        return s

    def _inverse_event_shape(self, s):
        return s
