"""Data-dependent initialisation for training: take the first real training
batch, dequantise it, and initialise every ActNorm from it before the first
update (Kingma & Dhariwal, 2018, Sec. 3.1).

Under `tf.distribute` the initialisation runs eagerly in the cross-replica
context on the *global* batch, so every replica receives the same values.
With several workers, replica 0's values are then broadcast with one
all-reduce, so the workers agree even if their input pipelines do not.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow_probability import bijectors as tfb
from tensorflow_probability import distributions as tfd

from tfp_flows import evaluation
from tfp_flows.bijectors import ActNorm, flow_bijectors
from tfp_flows.flow_ops import initialize
from tfp_flows.typing import TensorLike

__all__ = ["actnorms", "needs_initialization", "first_batch",
           "initialize_from_batch", "sync_from_replica_zero"]

# Seed of the dequantisation noise added to the initialisation batch: fixed so
# that every worker computes the same statistics from the same global batch.
_INIT_NOISE_SEED = 20180709


def actnorms(dist: tfd.Distribution | tfb.Bijector) -> list[ActNorm]:
    """Every data-initialised ActNorm of a distribution, data side first."""
    bijector = getattr(dist, "bijector", dist)
    return [b for b in flow_bijectors(bijector)
            if isinstance(b, ActNorm) and b.data_init]


def needs_initialization(dist: tfd.Distribution | tfb.Bijector) -> bool:
    """True when some ActNorm of `dist` has not been initialised yet."""
    return any(b.needs_initialization() for b in actnorms(dist))


def _split(element):
    """(images, labels) from a batch element: a tensor, (x,), (x, y), (x, y, w)."""
    if isinstance(element, dict):
        raise ValueError("FlowModel takes images, or (images, labels) tuples; "
                         f"got a dict with keys {sorted(element)}.")
    if isinstance(element, (tuple, list)):
        if not element:
            raise ValueError("got an empty tuple as a batch.")
        labels = element[1] if len(element) > 1 else None
        return element[0], labels
    return element, None


def first_batch(x: Any, y: Any = None, batch_size: int | None = None) -> tuple[Any, Any]:
    """The first batch `fit` will see, as ``(images, labels)``.

    Args:
      x: numpy array / tensor ``[N, *event_shape]``, a batched
        `tf.data.Dataset`, or a `keras.utils.PyDataset`.
      y: labels for array input (or None).
      batch_size: batch size for array input (Keras' default, 32, if None).

    Returns:
      ``(images, labels)``; labels may be None.

    Raises:
      ValueError: for inputs whose first batch cannot be read without
        consuming them (Python generators).
    """
    if isinstance(x, tf.data.Dataset):
        for element in x.take(1):
            return _split(element)
        raise ValueError("the training dataset is empty.")
    if hasattr(x, "__getitem__") and hasattr(x, "num_batches"):  # PyDataset
        return _split(x[0])
    if isinstance(x, (np.ndarray, tf.Tensor)) or hasattr(x, "__array__"):
        n = int(batch_size or 32)
        labels = None if y is None else y[:n]
        return x[:n], labels
    raise ValueError(
        f"cannot read the first batch of a {type(x).__name__} without "
        "consuming it; call tfp_flows.initialize(dist, batch) before fit, or "
        "pass an array or a tf.data.Dataset.")


def sync_from_replica_zero(strategy: tf.distribute.Strategy,
                           variables: Iterable[tf.Variable]) -> None:
    """Sets `variables` on every replica (all workers) to replica 0's values.

    One all-reduce: each replica contributes its value if it is replica 0 in
    the sync group, zeros otherwise. A collective: every worker must call it.
    """
    variables = list(variables)
    sizes = [int(np.prod(v.shape)) for v in variables]

    def contribution():
        ctx = tf.distribute.get_replica_context()
        flat = tf.concat([tf.reshape(v, [-1]) for v in variables], 0)
        first = tf.equal(ctx.replica_id_in_sync_group, 0)
        return tf.where(first, flat, tf.zeros_like(flat))

    @tf.function
    def broadcast():
        return strategy.reduce(tf.distribute.ReduceOp.SUM,
                               strategy.run(contribution), axis=None)

    for v, value in zip(variables, tf.split(broadcast(), sizes)):
        v.assign(tf.reshape(value, v.shape))


def _any_replica(strategy, flag):
    """Logical OR of a Python bool over every replica of every worker."""
    @tf.function
    def count():
        value = strategy.run(lambda: tf.constant(1.0 if flag else 0.0))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)

    return bool(count() > 0)


def initialize_from_batch(dist: tfd.Distribution, images: TensorLike,
                          labels: TensorLike | None = None, *, dequantize: bool = True,
                          label_bijector: str | None = None,
                          strategy: tf.distribute.Strategy | None = None) -> bool:
    """Initialises every ActNorm of `dist` from one batch, unless already done.

    A no-op when every ActNorm is initialised (e.g. after restoring a
    checkpoint): a restored model is never re-initialised.

    Args:
      dist: the flow distribution.
      images: ``[B, *event_shape]`` pixels (integer-valued if `dequantize`).
      labels: ``[B]`` int labels for a class-conditional prior, or None.
      dequantize: add uniform noise ``U[0, 1)`` (fixed seed) first.
      label_bijector: name of the bijector that takes ``labels=``.
      strategy: the `tf.distribute.Strategy` the variables live in.

    Returns:
      True if the ActNorms were initialised by this call.
    """
    strategy = strategy or tf.distribute.get_strategy()
    multi = strategy.num_replicas_in_sync > 1
    with strategy.scope():
        need = needs_initialization(dist)
        if multi:
            # Every worker must take the same branch: the collectives below
            # would hang otherwise.
            need = _any_replica(strategy, need)
        if not need:
            return False
        x = tf.convert_to_tensor(np.asarray(images), dist.dtype or tf.float32)
        if dequantize:
            x = evaluation.dequantize(x, seed=(_INIT_NOISE_SEED, 0))
        kwargs: dict[str, Any] = {}
        if labels is not None and label_bijector is not None:
            kwargs = {label_bijector: {"labels": tf.convert_to_tensor(labels)}}
        initialize(dist, x, bijector_kwargs=kwargs)
        if multi:
            norms = actnorms(dist)
            sync_from_replica_zero(
                strategy, [v for b in norms for v in (b.loc, b.log_scale)])
        return True
