"""Graph-safe flow operations behind the serving signatures.

Label routing to a flow's class-conditional priors, and sampling and bits/dim
with stateless RNG ops driven by an integer seed. The exported signatures
(:mod:`tfp_flows.export`, :class:`tfp_flows.serving.ServingModule`) run these
same functions, so a seed gives the same result in memory and after loading
the SavedModel.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
from tensorflow_probability import bijectors as tfb
from tensorflow_probability import distributions as tfd

from tfp_flows import evaluation, flow_ops
from tfp_flows.bijectors import flow_bijectors
from tfp_flows.bijectors.chain import forward_and_log_det
from tfp_flows.dequantization import variational_bits_per_dim
from tfp_flows.typing import TensorLike

__all__ = ["class_conditional_priors", "conditioning_kwargs", "stateless_seed",
           "sample_with_seed", "bits_per_dim_with_seed", "variational_bits_per_dim_with_seed"]


def class_conditional_priors(dist: tfd.Distribution) -> list[tfb.Bijector]:
    """The class-conditional bijectors of a flow (those taking ``labels``)."""
    bijector = getattr(dist, "bijector", None)
    if bijector is None:
        return []
    return [b for b in flow_bijectors(bijector)
            if getattr(b, "num_classes", None) is not None]


def conditioning_kwargs(dist: tfd.Distribution,
                        labels: TensorLike | None) -> dict[str, Any]:
    """``bijector_kwargs`` routing ``labels`` to every class-conditional prior.

    Args:
      dist: a flow distribution.
      labels: int tensor of the batch shape, or None for an unconditional model.

    Raises:
      ValueError: labels missing for a conditional model, or given to an
        unconditional one.
    """
    priors = class_conditional_priors(dist)
    if not priors:
        if labels is not None:
            raise ValueError("this model is not class-conditional; labels were "
                             "given.")
        return {}
    if labels is None:
        raise ValueError(
            "this model is class-conditional (priors "
            f"{[b.name for b in priors]}): labels are required.")
    return {b.name: {"labels": labels} for b in priors}


def stateless_seed(seed: int | tf.Tensor) -> tf.Tensor:
    """An ``int32 [2]`` stateless-RNG seed from an integer ``seed`` (any int64).

    The low and high 31-bit parts of ``seed`` form the two words, so distinct
    seeds below ``2**62`` give distinct streams.
    """
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    base = tf.constant(2 ** 31, tf.int64)
    return tf.cast(tf.stack([tf.math.floormod(seed, base),
                             tf.math.floormod(tf.math.floordiv(seed, base), base)]),
                   tf.int32)


def sample_with_seed(dist: tfd.TransformedDistribution, num: int | tf.Tensor,
                     temperature: float | tf.Tensor, seed: int | tf.Tensor,
                     labels: TensorLike | None = None) -> tf.Tensor:
    """Seeded temperature sampling with stateless RNG ops (graph-safe).

    The same function runs inside the exported ``sample`` signature, so the
    same ``seed`` gives the same samples in memory and after loading.

    Args:
      dist: a tfp_flows distribution.
      num: int scalar, number of samples.
      temperature: float scalar >= 0; the base noise is scaled by it.
      seed: int scalar (see :func:`stateless_seed`).
      labels: ``int [num]`` for a class-conditional model.

    Returns:
      ``[num, *event_shape]`` samples.
    """
    kwargs = conditioning_kwargs(dist, labels)
    z = evaluation.base_sample(dist, num, temperature, stateless_seed(seed))
    return forward_and_log_det(dist.bijector, z, **kwargs)[0]


def variational_bits_per_dim_with_seed(
        dist: tfd.TransformedDistribution, dequantization: Any, images: TensorLike,
        seed: int | tf.Tensor, labels: TensorLike | None = None) -> tf.Tensor:
    """The variational bound in bits/dim with stateless noise ``u ~ q(u | x)``.

    ``-(log p(x + u) - log q(u | x)) / (D log 2)``, the noise drawn from the
    learned `dequantization` (a
    :class:`~tfp_flows.dequantization.VariationalDequantization`) with the
    stateless RNG from `seed`; the same function runs inside the
    ``variational_bits_per_dim`` signature.
    """
    return variational_bits_per_dim(dist, tf.cast(images, dist.dtype), dequantization,
                                    seed=stateless_seed(seed),
                                    bijector_kwargs=conditioning_kwargs(dist, labels))


def bits_per_dim_with_seed(dist: tfd.TransformedDistribution, images: TensorLike,
                           seed: int | tf.Tensor,
                           labels: TensorLike | None = None) -> tf.Tensor:
    """Bits/dim of integer pixels with stateless dequantisation noise.

    ``-log p(x + u) / (D log 2)`` with ``u = stateless_uniform(seed)`` in
    ``[0, 1)``; the same function runs inside the ``bits_per_dim`` signature.

    Args:
      dist: a tfp_flows distribution with pixel bins.
      images: ``[N, *event_shape]`` integer-valued pixels.
      seed: int scalar (see :func:`stateless_seed`).
      labels: ``int [N]`` for a class-conditional model.

    Returns:
      ``[N]`` bits/dim.
    """
    x = evaluation.dequantize(tf.cast(images, dist.dtype), stateless_seed(seed))
    return flow_ops.bits_per_dim(dist, x, dequantize=False,
                                 bijector_kwargs=conditioning_kwargs(dist, labels))
