"""The evaluation conventions, each written once: dequantisation, bits/dim,
and temperature.

Everything that scores or samples a flow — `tfp_flows.bits_per_dim`,
`tfp_flows.sample`, `FlowModel`, ActNorm's data initialisation, the exported
SavedModel, the data pipelines' optional noise and the command line — calls
these functions, so the conventions cannot drift apart:

* **Dequantisation** (Theis et al., 2016): quantised pixels ``x`` in
  ``[0, num_bins)`` become ``x + u`` with ``u ~ U[0, 1)^D``, so that a
  continuous density over ``[0, num_bins)^D`` bounds the discrete code length.
* **Bits/dim**: ``-log p(x + u) / (D log 2)`` with ``p`` the density over
  pixel units. A model uniform over ``[0, 2^n)^D`` scores exactly ``n``.
* **Temperature** (Kingma & Dhariwal, 2018): the base noise is multiplied by
  ``T >= 0``; with Glow's learned priors written as bijectors this scales
  every learned standard deviation by ``T``.

Example:
  >>> import numpy as np
  >>> from tfp_flows import evaluation
  >>> x = evaluation.dequantize(np.zeros((2, 3), np.float32), seed=(1, 2))
  >>> bool(((x >= 0) & (x < 1)).numpy().all())
  True
  >>> float(evaluation.bits_per_dim(-3 * np.log(2.0) * 4, 4))
  3.0
"""

from __future__ import annotations

import numbers

import numpy as np
import tensorflow as tf
from tensorflow_probability import distributions as tfd

from tfp_flows.typing import Seed, TensorLike

__all__ = ["dequantize", "bits_per_dim", "nats", "check_temperature",
           "base_sample"]


def dequantize(x: TensorLike, seed: Seed = None) -> tf.Tensor:
    """Adds uniform noise ``u ~ U[0, 1)`` to every value of ``x``.

    Args:
      x: float tensor of quantised values (any shape).
      seed: None (fresh noise from TensorFlow's global generator), an int
        (an op-level seed, as ``tf.random.uniform``), or a pair of ints /
        an int tensor of shape ``[2]`` (stateless noise: the same pair gives
        the same noise, in any graph, after export too).

    Returns:
      ``x + u``, same shape and dtype.
    """
    x = tf.convert_to_tensor(x)
    if seed is None or isinstance(seed, numbers.Integral):
        return x + tf.random.uniform(tf.shape(x), dtype=x.dtype, seed=seed)
    return x + tf.random.stateless_uniform(tf.shape(x), seed=seed, dtype=x.dtype)


def bits_per_dim(log_prob: TensorLike, num_dims: float) -> tf.Tensor:
    """``-log_prob / (num_dims log 2)``: nats per example to bits per dimension.

    Args:
      log_prob: log-densities (nats) of examples, any shape.
      num_dims: dimensions per example ``D`` (e.g. ``H * W * C``).
    """
    log_prob = tf.convert_to_tensor(log_prob)
    return -log_prob / tf.cast(float(num_dims) * np.log(2.0), log_prob.dtype)


def nats(bits: TensorLike, num_dims: float) -> tf.Tensor:
    """Bits/dim back to the negative log-likelihood in nats per example."""
    bits = tf.convert_to_tensor(bits)
    return bits * tf.cast(float(num_dims) * np.log(2.0), bits.dtype)


def check_temperature(temperature: float) -> float:
    """Returns ``temperature`` as a float, or raises a ValueError when it is
    not a finite number ``>= 0``."""
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        raise ValueError(f"temperature must be a number >= 0, got {temperature!r}.") from None
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}.")
    return value


def base_sample(dist: tfd.TransformedDistribution, n: int | tf.Tensor,
                temperature: float | tf.Tensor, seed: Seed = None) -> tf.Tensor:
    """``n`` draws of the flow's base distribution, scaled by ``temperature``.

    Args:
      dist: a `tfd.TransformedDistribution`.
      n: number of draws (int or int scalar tensor).
      temperature: a number ``>= 0`` (checked), or a float scalar tensor
        (inside a graph; check it there).
      seed: as ``dist.distribution.sample``: None, an int, or a stateless
        seed pair.

    Returns:
      ``[n, *latent_event_shape]`` latents, to be mapped through
      ``dist.bijector.forward``.
    """
    if not isinstance(temperature, tf.Tensor):
        temperature = check_temperature(temperature)
    z = dist.distribution.sample(n, seed=seed)
    return z * tf.cast(temperature, z.dtype)
