"""Stopping a run cleanly when training diverges.

A flow's loss turns NaN or Inf when a step overflows (an exploding ActNorm
scale, a 1x1 convolution near singular, a poisoned batch). One such step
writes NaN into every parameter through the optimizer, and every later step
and checkpoint is garbage. :class:`NaNGuard` stops `fit` at the first
non-finite loss and records where it happened; :func:`all_finite` lets a
checkpoint writer refuse to save weights that are no longer finite, so the
last good checkpoint is never overwritten by a broken one.

Example:
  >>> guard = NaNGuard()
  >>> model.fit(ds, epochs=10, callbacks=[guard])      # doctest: +SKIP
  >>> if guard.failure is not None:                    # doctest: +SKIP
  ...     raise TrainingDivergedError(guard.failure.describe())
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

__all__ = ["NaNGuard", "Divergence", "TrainingDivergedError", "all_finite"]


class TrainingDivergedError(RuntimeError):
    """Training produced a NaN or Inf loss (or non-finite weights)."""


@dataclasses.dataclass(frozen=True)
class Divergence:
    """Where training diverged.

    Attributes:
      epoch: 1-based epoch in which the non-finite value appeared.
      batch: 1-based batch within that epoch (None if it was found at the
        end of the epoch, in the weights).
      what: the logged metric (e.g. ``'loss'``) or ``'weights'``.
      value: the offending value (NaN or +-Inf), or None for weights.
    """

    epoch: int
    batch: int | None
    what: str
    value: float | None

    def describe(self) -> str:
        """One sentence, e.g. ``'loss became nan at epoch 3, batch 12'``."""
        where = f"epoch {self.epoch}" + (
            f", batch {self.batch}" if self.batch is not None else "")
        if self.what == "weights":
            return f"the weights became NaN or Inf during {where}"
        return f"{self.what} became {self.value} at {where}"


def all_finite(model: keras.Model) -> bool:
    """True when every variable of a Keras model (and its optimizer) is finite.

    Args:
      model: a built `keras.Model`.
    """
    variables = list(model.variables)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        variables += list(optimizer.variables)
    for v in variables:
        value = np.asarray(keras.ops.convert_to_numpy(v))
        if value.dtype.kind in "fc" and not np.all(np.isfinite(value)):
            return False
    return True


class NaNGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss and records where.

    After every batch the logged ``monitor`` values (Keras' running means over
    the epoch, so one NaN step makes them NaN) are checked; at the end of
    every epoch the weights are checked too. On a failure the guard sets
    ``model.stop_training`` and stores a :class:`Divergence` in ``failure``;
    it never raises inside `fit`, so the other callbacks end normally. A
    checkpoint writer should skip saving when ``failure`` is set.

    Unlike `keras.callbacks.TerminateOnNaN` the guard keeps the location of
    the failure (for the message) and also catches weights that went
    non-finite while the loss still looked fine.

    Args:
      monitor: names of the logged values to check (default ``('loss',)``).
    """

    def __init__(self, monitor: Sequence[str] = ("loss",)) -> None:
        super().__init__()
        self.monitor = tuple(monitor)
        self.failure: Divergence | None = None
        self._epoch = 0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.failure = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch + 1

    def _stop(self, failure):
        if self.failure is None:
            self.failure = failure
        self.model.stop_training = True

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.failure is not None or not logs:
            return
        for key in self.monitor:
            if key not in logs:
                continue
            value = float(np.asarray(keras.ops.convert_to_numpy(logs[key])).mean())
            if not math.isfinite(value):
                self._stop(Divergence(self._epoch, batch + 1, key, value))
                return

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.failure is None and not all_finite(self.model):
            self._stop(Divergence(epoch + 1, None, "weights", None))
