"""How `FlowModel` ties ActNorm's data-dependent initialisation into Keras.

* :class:`InitializeActNorm`: the callback that ``fit`` appends, which
  initialises every ActNorm from the first training batch when training
  begins (after `BackupAndRestore` may have restored them).
* :class:`FreezeDataInit`: the context in which evaluation and prediction
  steps are traced, so that only training data ever initialises ActNorm.

The initialisation itself is :mod:`tfp_flows.training.init`.
"""

from __future__ import annotations

from typing import Any, Protocol

import keras
from tensorflow_probability import distributions as tfd

from tfp_flows.training import init as init_lib

__all__ = ["FreezeDataInit", "InitializeActNorm", "InitTarget"]


class FreezeDataInit:
    """While tracing evaluation/prediction: ActNorm does not data-initialise.

    An uninitialised ActNorm is then evaluated as the identity it currently
    is, and evaluation data never initialises it (only training data does).
    """

    def __init__(self, dist: tfd.Distribution) -> None:
        self._norms = init_lib.actnorms(dist)

    def __enter__(self) -> None:
        for b in self._norms:
            b.data_init = False

    def __exit__(self, *exc: object) -> None:
        # `actnorms` only listed layers whose data init was on: restore them.
        for b in self._norms:
            b.data_init = True


class InitTarget(Protocol):
    """What :class:`InitializeActNorm` reads from the model (a `FlowModel`)
    when training begins."""

    @property
    def distribution(self) -> tfd.TransformedDistribution:
        """The flow whose ActNorm layers are initialised."""

    @property
    def dequantize(self) -> bool:
        """Whether the batch gets uniform dequantisation noise."""

    @property
    def label_bijector(self) -> str | None:
        """The bijector that takes ``labels=``, or None."""

    @property
    def distribute_strategy(self) -> Any:
        """The model's `tf.distribute.Strategy`."""


class InitializeActNorm(keras.callbacks.Callback):
    """Runs last in `on_train_begin`, after `BackupAndRestore` has restored."""

    def __init__(self, flow_model: InitTarget, images: Any, labels: Any) -> None:
        super().__init__()
        self._flow_model = flow_model
        self._images, self._labels = images, labels

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        m = self._flow_model
        init_lib.initialize_from_batch(
            m.distribution, self._images, self._labels,
            dequantize=m.dequantize, label_bijector=m.label_bijector,
            strategy=m.distribute_strategy)
        self._images = self._labels = None  # do not keep the batch alive
