"""Base distributions and learned priors.

The factorial priors are plain TFP distributions. The *learned* priors of Glow
(a learned top prior and a conditional Gaussian for each factored-out half)
are written as bijectors onto a standard base: a Gaussian ``N(mu, sigma^2)``
is exactly ``mu + sigma * eps`` with ``eps ~ N(0, 1)``. This keeps every model a
single `tfd.TransformedDistribution` over a standard factorial base, and makes
temperature sampling (``eps ~ N(0, T^2)``) scale each learned ``sigma`` by
``T``, as in Glow.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow_probability import distributions as tfd

from tfp_flows import masks, networks
from tfp_flows.bijectors.base import FlowBijector, ParameterLayer
from tfp_flows.bijectors.coupling import AffineCoupling
from tfp_flows.typing import DTypeLike, Shape

__all__ = ["gaussian", "logistic", "LearnedPrior", "split_prior"]


def _event_shape(event_shape):
    shape = tuple(int(d) for d in np.atleast_1d(event_shape))
    if any(d <= 0 for d in shape):
        raise ValueError(f"event_shape must be positive, got {event_shape!r}.")
    return shape


def gaussian(event_shape: int | Shape, dtype: DTypeLike = tf.float32) -> tfd.Distribution:
    """Factorial standard Gaussian over `event_shape`."""
    zero = tf.zeros([], dtype)
    return tfd.Sample(tfd.Normal(zero, 1.0), sample_shape=_event_shape(event_shape),
                      name="gaussian_prior")


def logistic(event_shape: int | Shape, dtype: DTypeLike = tf.float32) -> tfd.Distribution:
    """Factorial standard logistic over `event_shape` (NICE's prior)."""
    zero = tf.zeros([], dtype)
    return tfd.Sample(tfd.Logistic(zero, 1.0), sample_shape=_event_shape(event_shape),
                      name="logistic_prior")


class LearnedPrior(FlowBijector):
    """Glow's learned (optionally class-conditional) top prior, as a bijector.

    The prior on ``z`` is ``N(mu, sigma^2)`` per channel, with
    ``(mu, log sigma) = b + onehot(labels) @ W`` (``W`` only when
    ``num_classes`` is set). Both start at zero, i.e. a standard normal.

    Data -> latent (``inverse``): ``eps = (z - mu) * exp(-log sigma)``,
    ``log|det| = -P * sum(log sigma)``; ``forward``: ``z = mu + sigma * eps``.

    Args:
      num_channels: size of the last axis.
      num_classes: if set, the prior is class-conditional and every call needs
        ``labels`` (int, shape = batch shape), routed by this bijector's name:
        ``dist.log_prob(x, bijector_kwargs={name: {"labels": y}})``.
      event_ndims: 3 for images, 1 for vectors.
    """

    def __init__(self, num_channels: int, num_classes: int | None = None, *,
                 event_ndims: int = 3, dtype: DTypeLike = tf.float32,
                 validate_args: bool = False, name: str = "learned_prior") -> None:
        parameters = dict(locals())
        c = int(num_channels)
        dtype = tf.as_dtype(dtype)
        specs: dict[str, tuple[Any, ...]] = {"bias": ((2 * c,), "zeros", True)}
        if num_classes is not None:
            if int(num_classes) < 2:
                raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
            specs["class_weights"] = ((int(num_classes), 2 * c), "zeros", True)
        self._num_channels = c
        self._num_classes = None if num_classes is None else int(num_classes)
        params = ParameterLayer(specs, dtype=dtype.name, name=f"{name}_params")
        super().__init__(event_ndims=event_ndims, parameters=parameters,
                         name=name, layers=[params], dtype=dtype,
                         validate_args=validate_args)
        self._vars = self._no_dependency(params.raw_dict())

    @property
    def num_classes(self) -> int | None:
        """Number of classes of a class-conditional prior, else None."""
        return self._num_classes

    def _mu_log_sigma(self, x, labels):
        ndims = self.forward_min_event_ndims
        h = tf.convert_to_tensor(self._vars["bias"])
        if self._num_classes is not None:
            if labels is None:
                raise ValueError(
                    f"LearnedPrior '{self.name}' is class-conditional: pass "
                    f"labels, e.g. bijector_kwargs={{'{self.name}': "
                    "{'labels': y}}.")
            labels = tf.convert_to_tensor(labels)
            if labels.dtype.is_floating:
                raise ValueError("labels must be integers, got "
                                 f"{labels.dtype.name}.")
            known = tf.get_static_value(labels)  # eager or constant labels
            if known is not None and np.size(known) and (
                    np.min(known) < 0 or np.max(known) >= self._num_classes):
                raise ValueError(
                    f"LearnedPrior '{self.name}': labels must lie in "
                    f"[0, {self._num_classes}); got min {np.min(known)}, "
                    f"max {np.max(known)}.")
            h = h + tf.gather(self._vars["class_weights"], labels)
            h = tf.reshape(h, tf.concat([tf.shape(h)[:-1],
                                         tf.ones([ndims - 1], tf.int32),
                                         [2 * self._num_channels]], 0))
        mu, log_sigma = tf.split(h, 2, axis=-1)
        return mu, log_sigma

    def _log_det(self, x, log_sigma, sign):
        ndims = self.forward_min_event_ndims
        shape = tf.shape(x)
        rank = tf.rank(x)
        positions = tf.cast(tf.reduce_prod(shape[rank - ndims:rank - 1]), x.dtype)
        per_event = tf.reduce_sum(log_sigma, axis=-1)
        if self._num_classes is not None and ndims > 1:
            # drop the singleton spatial axes added for broadcasting
            per_event = tf.reshape(per_event, tf.shape(per_event)[
                :tf.rank(per_event) - (ndims - 1)])
        return tf.broadcast_to(sign * positions * per_event, shape[:rank - ndims])

    def _check(self, x):
        c = x.shape[-1] if x.shape.rank else None
        if c is not None and c != self._num_channels:
            raise ValueError(f"LearnedPrior '{self.name}': input has {c} "
                             f"channels, expected {self._num_channels}.")

    def _forward_and_log_det(self, x, labels=None, **kwargs):
        self._check(x)
        mu, log_sigma = self._mu_log_sigma(x, labels)
        return mu + x * tf.exp(log_sigma), self._log_det(x, log_sigma, 1.0)

    def _inverse_and_log_det(self, y, labels=None, **kwargs):
        self._check(y)
        mu, log_sigma = self._mu_log_sigma(y, labels)
        return (y - mu) * tf.exp(-log_sigma), self._log_det(y, log_sigma, -1.0)

    def _forward_event_shape(self, s):
        return s

    def _inverse_event_shape(self, s):
        return s


def split_prior(event_shape: Shape, *, dtype: DTypeLike = tf.float32,
                name: str = "split_prior") -> AffineCoupling:
    """Glow's learned prior for a factored-out half, as an affine coupling.

    For an event ``[H, W, C]`` split into kept channels ``z1 = [..., :C/2]``
    and factored-out ``z2 = [..., C/2:]``, the prior is
    ``p(z2 | z1) = N(mu(z1), sigma(z1)^2)`` with ``(mu, log sigma)`` from a
    zero-initialised 3x3 convolution of ``z1``. As a bijector this is an
    `AffineCoupling` with a channel mask and an unbounded exponential scale;
    at initialisation it is the identity (a standard normal prior).
    """
    shape = _event_shape(event_shape)
    mask = masks.channel(shape)
    n_trans = int(shape[-1] - int(mask[..., :].reshape(-1, shape[-1])[0].sum()))
    policy = networks.policy_for(dtype)
    if len(shape) == 3:
        net = networks.ZeroConv2D(2 * n_trans, 3, dtype=policy, name=f"{name}_net")
    else:
        net = networks.ZeroDense(2 * n_trans, dtype=policy, name=f"{name}_net")
    return AffineCoupling(mask, network=net, scale_fn="exp", dtype=dtype,
                          name=name)
