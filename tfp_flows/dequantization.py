"""Variational dequantisation (Ho et al., 2019, Flow++, Sec. 3.1) and the
estimates of the discrete likelihood that go with it.

A flow ``p`` is a density over continuous values; images are integers. For
quantised pixels ``x`` and noise ``u`` in ``[0, 1)^D`` drawn from any
``q(u | x)``, Jensen's inequality gives the *variational bound*::

    log P(x) >= E_q[ log p(x + u) - log q(u | x) ]

Uniform dequantisation is the special case ``q = U[0, 1)^D`` (``log q = 0``),
which is what every bits/dim figure of the papers, and `FlowModel` without a
dequantiser, reports. `VariationalDequantization` learns ``q(u | x)``, a
conditional flow, jointly with ``p``, so the bound can get tighter.

With ``k`` noise draws ``u_1..u_k ~ q(u | x)`` the *importance-weighted*
estimate (Burda et al., 2016)::

    log P(x) >= E[ log (1/k) sum_i p(x + u_i) / q(u_i | x) ]

is a bound too, never looser than the variational one, and tends to
``log P(x)`` as ``k`` grows. In bits/dim (``-log P / (D log 2)``) both are
*upper* bounds on the discrete model's code length; a smaller figure is
better. Compare like with like: a variational bound with another variational
bound, an importance-weighted figure with one that has the same ``k``.

Example:
  >>> import numpy as np
  >>> from tfp_flows import models
  >>> dist = models.glow([4, 4, 1], num_bins=4, num_levels=1, num_steps=1,
  ...                    hidden_channels=4)
  >>> deq = VariationalDequantization([4, 4, 1], num_bins=4, num_steps=2,
  ...                                 hidden_channels=4, context_channels=2)
  >>> x = np.zeros([3, 4, 4, 1], np.float32)
  >>> noisy, log_q = deq.dequantize(x, seed=(1, 2))
  >>> u = (noisy - x).numpy()
  >>> bool(((u >= 0) & (u < 1)).all()), tuple(log_q.shape)
  (True, (3,))
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tensorflow_probability import distributions as tfd

from tfp_flows import evaluation, masks
from tfp_flows import networks as networks_lib
from tfp_flows.bijectors.base import sum_event
from tfp_flows.bijectors.chain import forward_and_log_det, inverse_and_log_det
from tfp_flows.bijectors.coupling import AffineCoupling, Coupling, check_scale_fn
from tfp_flows.bijectors.spline import SplineCoupling
from tfp_flows.convolution import SameConv2D
from tfp_flows.flow_ops import validate_images
from tfp_flows.typing import DTypeLike, Seed, TensorLike

__all__ = ["VariationalDequantization", "variational_bits_per_dim",
           "importance_weighted_bits_per_dim"]

_COUPLINGS = ("affine", "spline")


def _positive_int(name, value, least=1):
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
            or value < least):
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}.")
    return int(value)


@keras.saving.register_keras_serializable(package="tfp_flows")
class VariationalDequantization(keras.layers.Layer):
    """A learned noise distribution ``q(u | x)`` on ``[0, 1)^D`` for
    quantised images ``x`` (Flow++'s variational dequantisation).

    The noise is a conditional flow of this package's own couplings::

        eps ~ N(0, I)                   (the event shape of x)
        h   = features(x / num_bins - 1/2)      a small CNN, context_channels
        z   = g_K(...g_1(eps; h)...; h)         couplings conditioned on h
        u   = sigmoid(z)
        log q(u | x) = log N(eps) - sum_k log|det dg_k| - sum log sigmoid'(z)

    Each ``g_k`` is an :class:`~tfp_flows.bijectors.AffineCoupling` (or a
    :class:`~tfp_flows.bijectors.SplineCoupling`), applied in its
    ``forward`` direction, whose network sees its
    conditioning half concatenated with ``h`` (``conditional_input=``);
    masks alternate checkerboard parities, and channel halves when the
    image has two or more channels. Every coupling's last layer starts at
    zero, so a fresh ``q`` is ``u = sigmoid(eps)``.

    Train it jointly with a flow ``p`` through
    ``FlowModel(dist, dequantization=VariationalDequantization(...))``:
    the loss is then the negative variational bound
    ``E_q[-log p(x + u) + log q(u | x)]``, logged as ``bits_per_dim``
    (see :mod:`tfp_flows.dequantization` for what that figure is).

    Args:
      event_shape: ``[H, W, C]`` of the images.
      num_bins: pixel levels ``2**n_bits``; the features see
        ``x / num_bins - 1/2``.
      num_steps: number of couplings in the noise flow (>= 1).
      hidden_channels: width of the coupling networks and the feature CNN.
      context_channels: channels of the feature map ``h``.
      coupling: ``'affine'`` or ``'spline'``.
      scale_fn: the affine couplings' scale function (a key of
        :data:`tfp_flows.bijectors.coupling.SCALE_FUNCTIONS`). The default
        ``'exp_tanh'`` bounds each layer's stretch to ``(1/e, e)`` both ways,
        so no draw of ``eps`` can overflow. Glow's ``'sigmoid'`` divides by
        ``s`` in the sampling direction, without bound: a trained q then
        drew non-finite noise for about one MNIST image in 10^4 (the
        variational runs of ``benchmarks/results/mnist/dequantization``
        before the default changed).
      num_spline_bins: bins of each spline (``coupling='spline'``).
      dtype: float dtype of the noise (the flow's dtype). For float32 the
        networks follow the global Keras policy, as the flow's do.
      name: Keras layer name.

    Raises:
      ValueError: an event shape that is not ``[H, W, C]`` with ``H * W > 1``,
        or non-positive sizes.
    """

    def __init__(self, event_shape: Sequence[int], num_bins: int = 256, num_steps: int = 4,
                 hidden_channels: int = 32, context_channels: int = 16,
                 coupling: str = "affine", num_spline_bins: int = 8,
                 scale_fn: str = "exp_tanh", dtype: DTypeLike = tf.float32,
                 name: str = "variational_dequantization", **kwargs: Any) -> None:
        float_dtype = tf.as_dtype(dtype)
        if not float_dtype.is_floating:
            raise ValueError(f"dtype must be a float dtype, got {float_dtype.name}.")
        policy = networks_lib.policy_for(float_dtype)
        super().__init__(name=name, dtype=policy, **kwargs)
        self.float_dtype = float_dtype
        shape = tuple(int(s) for s in event_shape)
        if len(shape) != 3 or min(shape) < 1 or shape[0] * shape[1] < 2:
            raise ValueError("VariationalDequantization needs an image event shape "
                             f"[H, W, C] with H * W >= 2, got {list(event_shape)}.")
        if coupling not in _COUPLINGS:
            raise ValueError(f"coupling must be one of {_COUPLINGS}, got {coupling!r}.")
        self.event_shape = shape
        self.num_bins = _positive_int("num_bins", num_bins, least=2)
        self.num_steps = _positive_int("num_steps", num_steps)
        self.hidden_channels = _positive_int("hidden_channels", hidden_channels)
        self.context_channels = _positive_int("context_channels", context_channels)
        check_scale_fn(scale_fn)  # also for spline couplings, which ignore it
        self.coupling = coupling
        self.scale_fn = scale_fn
        self.num_spline_bins = _positive_int("num_spline_bins", num_spline_bins, least=2)
        self.feature_layers = [
            SameConv2D(self.hidden_channels, 3, activation="relu", dtype=policy,
                       name="features_in"),
            SameConv2D(self.hidden_channels, 3, activation="relu", dtype=policy,
                       name="features_hidden"),
            SameConv2D(self.context_channels, 3, dtype=policy, name="features_out"),
        ]
        couplings = [self._make_coupling(i, mask) for i, mask in enumerate(self._masks())]
        self._couplings = couplings
        # Keras tracks the networks (their variables are trained and saved);
        # the couplings are TFP bijectors around them.
        self.coupling_networks = [c.network for c in couplings]
        # Create every variable now (the feature convolutions build on their
        # first call), so that an optimizer built before training sees them.
        self._features(tf.zeros((1,) + shape, float_dtype))
        self.built = True

    def _masks(self):
        channels = self.event_shape[-1]
        kinds = ["checkerboard", "channel"] if channels > 1 else ["checkerboard"]
        for i in range(self.num_steps):
            kind = kinds[(i // 2) % len(kinds)]
            make = masks.checkerboard if kind == "checkerboard" else masks.channel
            yield make(list(self.event_shape), parity=i % 2)

    def _make_coupling(self, i: int, mask: np.ndarray) -> Coupling:
        name = f"{self.name}_coupling_{i}"
        if self.coupling == "spline":
            return SplineCoupling(mask, num_bins=self.num_spline_bins, bound=4.0,
                                  hidden=self.hidden_channels,
                                  context_channels=self.context_channels,
                                  dtype=self.float_dtype, name=name)
        return AffineCoupling(mask, hidden=self.hidden_channels,
                              context_channels=self.context_channels,
                              scale_fn=self.scale_fn,
                              dtype=self.float_dtype, name=name)

    @property
    def couplings(self) -> tuple[Coupling, ...]:
        """The conditional couplings ``g_1 .. g_K`` of the noise flow."""
        return tuple(self._couplings)

    def _features(self, x: tf.Tensor) -> tf.Tensor:
        h = x / float(self.num_bins) - 0.5
        for layer in self.feature_layers:
            h = layer(h)
        return tf.cast(h, x.dtype)

    def _check(self, x: TensorLike) -> tf.Tensor:
        x = tf.cast(tf.convert_to_tensor(x), self.float_dtype)
        if x.shape.rank is not None and (
                x.shape.rank != 4 or not x.shape[1:].is_compatible_with(self.event_shape)):
            raise ValueError(f"{self.name}: images have shape {x.shape}; expected "
                             f"[batch, {', '.join(map(str, self.event_shape))}].")
        return x

    def sample_and_log_prob(self, x: TensorLike, seed: Seed = None,
                            ) -> tuple[tf.Tensor, tf.Tensor]:
        """One draw ``u ~ q(u | x)`` per image and ``log q(u | x)``.

        Args:
          x: ``[N, H, W, C]`` quantised images in pixel units (float or int).
          seed: None, an int, or a stateless seed pair (as
            :func:`tfp_flows.evaluation.dequantize`).

        Returns:
          ``(u, log_q)``: ``u`` of `x`'s shape in ``[0, 1)``, ``log_q`` ``[N]``.
        """
        x = self._check(x)
        if seed is None or isinstance(seed, numbers.Integral):
            eps = tf.random.normal(tf.shape(x), dtype=x.dtype, seed=seed)
        else:
            eps = tf.random.stateless_normal(tf.shape(x), seed=seed, dtype=x.dtype)
        return self.transform(eps, x)

    def transform(self, eps: TensorLike, x: TensorLike) -> tuple[tf.Tensor, tf.Tensor]:
        """The noise flow on given base noise: ``(u, log q(u | x))`` for
        ``eps`` (of `x`'s shape), where ``u = sigmoid(g(eps; h(x)))``.
        `sample_and_log_prob` is this with ``eps ~ N(0, I)``."""
        x = self._check(x)
        eps = tf.cast(tf.convert_to_tensor(eps), x.dtype)
        context = self._features(x)
        log_q = sum_event(-0.5 * tf.square(eps) - 0.5 * np.log(2 * np.pi), 3)
        z = eps
        for coupling in self._couplings:
            z, log_det = forward_and_log_det(coupling, z, conditional_input=context)
            log_q -= log_det
        u = tf.sigmoid(z)
        log_q -= sum_event(tf.math.log_sigmoid(z) + tf.math.log_sigmoid(-z), 3)
        return u, log_q

    def log_prob(self, u: TensorLike, x: TensorLike) -> tf.Tensor:
        """``log q(u | x)`` for noise ``u`` in ``(0, 1)`` (``[N]``)."""
        x = self._check(x)
        u = tf.cast(tf.convert_to_tensor(u), x.dtype)
        z = tf.math.log(u) - tf.math.log1p(-u)
        log_q = -sum_event(tf.math.log_sigmoid(z) + tf.math.log_sigmoid(-z), 3)
        context = self._features(x)
        for coupling in reversed(self._couplings):
            z, log_det = inverse_and_log_det(coupling, z, conditional_input=context)
            log_q += log_det
        return log_q + sum_event(-0.5 * tf.square(z) - 0.5 * np.log(2 * np.pi), 3)

    def dequantize(self, x: TensorLike, seed: Seed = None) -> tuple[tf.Tensor, tf.Tensor]:
        """``(x + u, log q(u | x))`` with ``u ~ q(u | x)``."""
        x = self._check(x)
        u, log_q = self.sample_and_log_prob(x, seed=seed)
        return x + u, log_q

    def call(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """``dequantize(x)`` with fresh noise."""
        return self.dequantize(x)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "dtype": self.float_dtype.name,
                "event_shape": list(self.event_shape),
                "num_bins": self.num_bins, "num_steps": self.num_steps,
                "hidden_channels": self.hidden_channels,
                "context_channels": self.context_channels,
                "coupling": self.coupling, "num_spline_bins": self.num_spline_bins,
                "scale_fn": self.scale_fn}


def _log_weight(distribution, x, dequantizer, seed, bijector_kwargs):
    """``log p(x + u) - log q(u | x)`` per image, for one noise draw."""
    if dequantizer is None:
        noisy, log_q = evaluation.dequantize(x, seed=seed), 0.0
    else:
        noisy, log_q = dequantizer.dequantize(x, seed=seed)
    return distribution.log_prob(noisy, bijector_kwargs=bijector_kwargs or {}) - log_q


def _prepare(distribution, x, dequantizer):
    # integer pixels in range, finite, of the flow's event shape (eager):
    # the checks and messages of tfp_flows.bits_per_dim
    x = validate_images(distribution, x, integer=True)
    x = tf.cast(x, distribution.dtype or tf.float32)
    num_dims = float(np.prod(distribution.event_shape.as_list()))
    if dequantizer is not None and tuple(distribution.event_shape.as_list()) != \
            tuple(dequantizer.event_shape):
        raise ValueError(f"the dequantiser's event shape {list(dequantizer.event_shape)}"
                         f" differs from the flow's {distribution.event_shape}.")
    return x, num_dims


def _seed_pair(seed, i):
    if seed is None:
        return None
    base = tf.cast(tf.convert_to_tensor(seed), tf.int32)
    if base.shape.rank == 0:
        base = tf.stack([base, 0])
    return base + tf.constant([0, 1], tf.int32) * i


def variational_bits_per_dim(distribution: tfd.TransformedDistribution, x: TensorLike,
                             dequantizer: VariationalDequantization | None = None,
                             seed: Seed = None,
                             bijector_kwargs: dict[str, Any] | None = None) -> tf.Tensor:
    """The variational bound in bits/dim, per image, from one noise draw.

    ``-(log p(x + u) - log q(u | x)) / (D log 2)`` with ``u ~ q(u | x)``, or
    ``u ~ U[0, 1)^D`` (``log q = 0``) when `dequantizer` is None: exactly the
    ``bits_per_dim`` that :class:`~tfp_flows.training.FlowModel` logs.

    Args:
      distribution: the flow ``p`` (pixel units).
      x: ``[N, *event_shape]`` quantised images.
      dequantizer: a trained :class:`VariationalDequantization`, or None.
      seed: None, an int or a stateless seed pair.
      bijector_kwargs: passed to ``log_prob`` (e.g. class labels).

    Returns:
      ``[N]`` bits/dim.

    Raises:
      ValueError: images of the wrong shape, out of range, not integer-valued
        or not finite (as :func:`tfp_flows.bits_per_dim`).
    """
    x, num_dims = _prepare(distribution, x, dequantizer)
    return evaluation.bits_per_dim(
        _log_weight(distribution, x, dequantizer, seed, bijector_kwargs), num_dims)


def importance_weighted_bits_per_dim(
        distribution: tfd.TransformedDistribution, x: TensorLike, num_samples: int,
        dequantizer: VariationalDequantization | None = None, seed: Seed = None,
        bijector_kwargs: dict[str, Any] | None = None) -> tf.Tensor:
    """The importance-weighted estimate in bits/dim, per image, with
    ``k = num_samples`` noise draws (Burda et al., 2016)::

        -log( (1/k) sum_i p(x + u_i) / q(u_i | x) ) / (D log 2),  u_i ~ q(u | x)

    With ``k = 1`` it is :func:`variational_bits_per_dim`; it never exceeds
    the mean of the ``k`` single-draw bounds it is computed from (Jensen),
    and decreases towards ``-log2 P(x) / D`` as ``k`` grows. The draws run
    one after another, so memory does not grow with ``k``.

    Args:
      distribution: the flow ``p`` (pixel units).
      x: ``[N, *event_shape]`` quantised images.
      num_samples: ``k >= 1``.
      dequantizer: a trained :class:`VariationalDequantization`, or None for
        uniform noise.
      seed: None, an int or a stateless seed pair; draw ``i`` uses a seed
        derived from it.
      bijector_kwargs: passed to ``log_prob`` (e.g. class labels).

    Returns:
      ``[N]`` bits/dim.

    Raises:
      ValueError: ``num_samples < 1``, or bad images (as
        :func:`variational_bits_per_dim`).
    """
    k = _positive_int("num_samples", num_samples)
    x, num_dims = _prepare(distribution, x, dequantizer)
    weights = [_log_weight(distribution, x, dequantizer, _seed_pair(seed, i),
                           bijector_kwargs) for i in range(k)]
    log_mean = tf.reduce_logsumexp(tf.stack(weights), axis=0) - np.log(float(k))
    return evaluation.bits_per_dim(log_mean, num_dims)
