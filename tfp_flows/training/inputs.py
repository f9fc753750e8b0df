"""What `FlowModel` accepts, checked with clear errors.

* The distribution: every trainable variable owned by a Keras layer, and all
  variables created under the active `tf.distribute` strategy.
* The data given to ``fit``, ``evaluate``, ``predict`` and
  ``train_on_batch``: arrays of the right shape, range and finiteness, and
  datasets whose elements are batches of the flow's event shape.
* One batch inside a step: its ``(images, labels)`` parts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tensorflow_probability import distributions as tfd

from tfp_flows.bijectors.base import raw_variable
from tfp_flows.flow_ops import validate_images

__all__ = ["check_variables_owned", "check_input", "unpack_batch"]


def check_variables_owned(distribution: tfd.Distribution,
                          flow_layers: Sequence[keras.layers.Layer]) -> None:
    """Refuses variables that Keras would neither train nor save.

    Args:
      distribution: the flow a `FlowModel` wraps.
      flow_layers: the Keras layers that hold its parameters
        (:func:`tfp_flows.keras_layers`).

    Raises:
      ValueError: a trainable `tf.Variable` of `distribution` is owned by no
        layer of `flow_layers`, or, under a strategy with several replicas,
        some variable was created outside it.
    """
    owned = {id(raw_variable(w)) for layer in flow_layers
             for w in layer.weights}
    stray = [v for v in distribution.trainable_variables
             if id(v) not in owned]
    if stray:
        names = ", ".join(sorted({v.name for v in stray})[:5])
        raise ValueError(
            f"{len(stray)} trainable tf.Variable(s) of the distribution are "
            f"not owned by a Keras layer ({names}); Keras would neither "
            "train nor save them. Write coupling networks as keras.layers."
            "Layer (or keras.Model), not as a bare tf.Module.")
    strategy = tf.distribute.get_strategy()
    if tf.distribute.has_strategy() and strategy.num_replicas_in_sync > 1:
        local = [v for v in distribution.variables
                 if not isinstance(v, tf.distribute.DistributedValues)]
        if local:
            raise ValueError(
                "FlowModel is created under a tf.distribute strategy but "
                f"{len(local)} variables of the distribution were created "
                "outside it; build the distribution inside "
                "strategy.scope() too.")


def check_input(x: Any, distribution: tfd.Distribution,
                event_shape: tuple[int, ...], integer: bool) -> None:
    """Clear ValueErrors for bad arrays, and dataset element shapes.

    Args:
      x: what was passed as ``x`` to a Keras entry point: an array or tensor,
        an ``(images, labels)`` tuple, a `tf.data.Dataset`, or anything else
        (not checked here; Keras reads it).
      distribution: the flow.
      event_shape: its (fully known) event shape.
      integer: the pixels must be integer-valued (the model dequantises).

    Raises:
      ValueError: a dataset whose elements are not ``[batch, *event_shape]``
        batches, or (eager) array input of the wrong shape, out of range, or
        containing NaN/Inf.
    """
    if isinstance(x, (tuple, list)) and x:  # (images, labels)
        x = x[0]
    if isinstance(x, tf.data.Dataset):
        spec = x.element_spec
        spec = spec[0] if isinstance(spec, (tuple, list)) else spec
        shape = getattr(spec, "shape", None)
        n = len(event_shape)
        if shape is not None and shape.rank is not None and (
                shape.rank != n + 1 or
                not shape[1:].is_compatible_with(event_shape)):
            raise ValueError(
                f"dataset elements have shape {shape}; this flow needs "
                f"batches of shape [batch, "
                f"{', '.join(map(str, event_shape))}] (did you "
                "forget .batch()?).")
        return
    if isinstance(x, (np.ndarray, tf.Tensor)) or hasattr(x, "__array__"):
        if tf.is_tensor(x) and not tf.executing_eagerly():
            return
        validate_images(distribution, x, integer=integer)


def unpack_batch(data: Any, dtype: Any,
                 label_bijector: str | None) -> tuple[tf.Tensor, Any]:
    """``(images, labels)`` of one batch as a Keras step receives it.

    Args:
      data: ``images``, ``(images,)``, ``(images, labels)`` or
        ``(images, labels, sample_weight)``, or ``((images, labels),)`` as
        ``predict`` passes a tuple input.
      dtype: the flow's dtype; images are cast to it.
      label_bijector: the bijector that takes ``labels=``, or None when the
        model ignores labels.

    Returns:
      ``(images, labels)``; labels are None when `label_bijector` is None.

    Raises:
      ValueError: a class-conditional model got no labels.
    """
    x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
    if isinstance(x, (tuple, list)):  # predict((images, labels))
        images, labels = x[0], (x[1] if len(x) > 1 else y)
    else:
        images, labels = x, y
    images = tf.cast(images, dtype)
    if label_bijector is None:
        labels = None
    elif labels is None:
        raise ValueError(f"this model is class-conditional "
                         f"('{label_bijector}'): pass (images, labels).")
    return images, labels
