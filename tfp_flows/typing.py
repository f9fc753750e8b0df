"""Type aliases of the public API, defined once and used in its annotations.

TensorFlow, TensorFlow Probability and Keras ship no type information, so a
type checker sees their classes (``tf.Tensor``, ``tfd.Distribution``,
``keras.layers.Layer``, ...) as ``Any``; the aliases mainly tell a reader what
an argument accepts. Shapes of tensors are given in the docstrings.

Example:
  >>> import numpy as np
  >>> from tfp_flows.typing import TensorLike
  >>> x: TensorLike = np.zeros((2, 3), np.float32)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np
import tensorflow as tf

__all__ = ["TensorLike", "Shape", "Seed", "DTypeLike", "BijectorKwargs",
           "PathLike"]

TensorLike: TypeAlias = (tf.Tensor | tf.Variable | np.ndarray | np.generic | int | float
                         | Sequence[Any])
"""Anything TensorFlow converts to a tensor: a tensor or variable, a numpy
array or scalar, a Python number, or a (nested) list of them."""

Shape: TypeAlias = Sequence[int] | tf.TensorShape
"""A shape: a sequence of ints, e.g. ``[28, 28, 1]``, or a `tf.TensorShape`."""

Seed: TypeAlias = int | tuple[int, int] | tf.Tensor | None
"""A random seed: None (fresh randomness), an int, or a stateless seed (a
pair of ints, or an int tensor of shape ``[2]``)."""

DTypeLike: TypeAlias = tf.DType | str | np.dtype | type
"""A dtype: a `tf.DType`, its name (``'float32'``), or a numpy dtype or type."""

BijectorKwargs: TypeAlias = Mapping[str, Any]
"""Conditioning keyword arguments of a flow, routed by bijector name, e.g.
``{'top_prior': {'labels': y}}``."""

PathLike: TypeAlias = str | os.PathLike
"""A file or folder path: a string or an `os.PathLike`."""
