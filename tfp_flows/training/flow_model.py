"""`FlowModel`: a Keras 3 model that trains a tfp_flows distribution with
`fit`, on one device or under `tf.distribute`.

Objective (Dinh et al., 2016, Sec. 3; Kingma & Dhariwal, 2018, Sec. 2): for
integer pixels ``x`` in ``[0, L)`` and uniform noise ``u ~ U[0, 1)^D``, the
loss is the negative log-likelihood of the dequantised data::

    loss = mean_batch( -log p(x + u) )          (nats per image)
    bits_per_dim = loss / (D * log 2)

which upper-bounds the discrete model's code length (Theis et al., 2016).
With a learned noise distribution q(u | x)
(:class:`tfp_flows.dequantization.VariationalDequantization`, Ho et al., 2019)
the loss is the negative variational bound::

    loss = mean_batch( -log p(x + u) + log q(u | x) ),   u ~ q(u | x)

of which the uniform case is ``q = 1``; ``p`` and ``q`` are trained jointly.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tensorflow_probability import distributions as tfd

from tfp_flows import evaluation
from tfp_flows import models as models_lib
from tfp_flows.bijectors import keras_layers
from tfp_flows.dequantization import VariationalDequantization
from tfp_flows.description import describe
from tfp_flows.flow_ops import validate_images
from tfp_flows.training import init as init_lib
from tfp_flows.training.actnorm_hooks import FreezeDataInit, InitializeActNorm
from tfp_flows.training.fused_adam import fuse_adam
from tfp_flows.training.inputs import check_input, check_variables_owned, unpack_batch

__all__ = ["FlowModel"]


def _check_dequantization(dequantization, dequantize, event_shape):
    """The learned dequantiser of a FlowModel (or None), checked."""
    if dequantization is None:
        return None
    if not isinstance(dequantization, VariationalDequantization):
        raise TypeError("dequantization must be a tfp_flows.dequantization."
                        "VariationalDequantization or None, got "
                        f"{type(dequantization).__name__}.")
    if not dequantize:
        raise ValueError("dequantization= needs dequantize=True: a learned "
                         "noise distribution dequantises integer pixels.")
    if tuple(dequantization.event_shape) != tuple(event_shape):
        raise ValueError(f"the dequantiser's event shape {list(dequantization.event_shape)}"
                         f" differs from the flow's {list(event_shape)}.")
    return dequantization


def _multi_worker(strategy):
    """True under a MultiWorkerMirroredStrategy spanning several workers."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    in_multi = getattr(strategy.extended, "_in_multi_worker_mode", None)
    return bool(in_multi()) if in_multi is not None else False


@keras.saving.register_keras_serializable(package="tfp_flows")
class FlowModel(keras.Model):
    """Keras 3 model whose loss is the negative log-likelihood of a flow.

    ``compile(optimizer=...)`` then ``fit``, ``evaluate``, ``predict`` work on
    arrays or a `tf.data.Dataset` of integer-valued images in pixel units
    ``[0, num_bins)`` (or ``(images, labels)`` tuples for a class-conditional
    Glow; labels are ignored by unconditional models). Logged metrics:
    ``loss`` (mean NLL, nats per image) and ``bits_per_dim``.

    * **Dequantisation.** With ``dequantize=True`` each batch gets fresh
      uniform noise ``U[0, 1)``; use ``dequantize=False`` for data that is
      already continuous. With ``dequantization=VariationalDequantization(
      ...)`` the noise is drawn from that learned ``q(u | x)``, trained with
      the flow, and ``loss`` / ``bits_per_dim`` are the variational bound
      (the uniform figure is that bound with ``q = 1``); see
      :mod:`tfp_flows.dequantization` for the tighter importance-weighted
      estimate. ActNorm's data initialisation still uses uniform noise.
    * **ActNorm initialisation.** ``fit`` reads the first real training batch
      (the first ``batch_size`` rows of an array, or the first element of a
      dataset, i.e. the *global* batch under `tf.distribute`), dequantises it
      and initialises every ActNorm eagerly, in the cross-replica context,
      before the first update, unless all are already initialised (e.g.
      restored by `BackupAndRestore`, which runs first). Evaluating or
      predicting never initialises: an uninitialised ActNorm is the identity.
    * **Outputs.** ``model(x)`` returns per-image bits/dim of ``x`` as given;
      ``predict(x)`` returns per-image bits/dim ``[N]`` after dequantisation
      (fresh noise when ``dequantize=True``), so ``mean(predict(x))`` matches
      the ``bits_per_dim`` of ``evaluate(x)`` up to that noise.
    * **Variables.** All parameters live in Keras layers
      (:func:`tfp_flows.keras_layers`), held in ``self.flow_layers``; a
      trainable `tf.Variable` that no Keras layer owns (e.g. a coupling
      network written as a bare `tf.Module`) raises a ValueError, since Keras
      would neither train nor save it.
    * **Mixed precision.** Under a ``mixed_*`` global policy (set before
      building the flow) the coupling networks compute in low precision; the
      model itself, the log-determinants and the prior stay in the flow's
      dtype. With ``mixed_float16``, ``compile`` wraps the optimizer in a
      `keras.optimizers.LossScaleOptimizer`.
    * **Distribution.** Build the flow, the model and compile under
      ``strategy.scope()``; Keras splits each global batch across replicas.
    * **XLA.** ``compile(jit_compile=True)`` compiles the train step with XLA.
      Keras' default ``"auto"`` means XLA on a GPU/TPU machine without a
      distribution strategy, and no XLA on CPU-only machines or under
      `tf.distribute`.

    Saving: ``model.save('m.keras')`` stores the builder config of models made
    by :mod:`tfp_flows.models` (rebuilt by ``from_config``) and the weights,
    including ActNorm's ``initialized`` flag. For a hand-built distribution
    use ``save_weights`` and ``load_weights`` on a model built the same way.

    Args:
      distribution: a tfp_flows `tfd.TransformedDistribution` (event space in
        pixel units for image models).
      dequantize: add uniform noise to every batch (training, evaluation and
        prediction).
      dequantization: a :class:`~tfp_flows.dequantization.
        VariationalDequantization` for the flow's event shape, trained
        jointly; None for uniform noise. Needs ``dequantize=True``.
      label_bijector: name of the bijector that receives ``labels=`` (the
        class-conditional prior). Default: the model description's
        ``label_bijector`` (``'top_prior'`` for a class-conditional Glow,
        ``'class_prior'`` for `vector_flow`), else None (labels ignored).
      name: Keras model name.
    """

    optimizer: Any  # set by keras.Model.compile (a Keras optimizer)

    def __init__(self, distribution: tfd.TransformedDistribution, dequantize: bool = True,
                 label_bijector: str | None = None, name: str = "flow_model",
                 dequantization: VariationalDequantization | None = None,
                 **kwargs: Any) -> None:
        bijector = getattr(distribution, "bijector", None)
        if bijector is None or not hasattr(distribution, "log_prob"):
            raise TypeError("FlowModel needs a tfd.TransformedDistribution, "
                            f"got {type(distribution).__name__}.")
        dtype = tf.as_dtype(distribution.dtype or tf.float32)
        kwargs.pop("dtype", None)
        super().__init__(name=name, dtype=dtype.name, **kwargs)
        self._distribution = distribution
        self.dequantize = bool(dequantize)
        description = describe(distribution)
        if label_bijector is None and description is not None:
            label_bijector = description.label_bijector
        self.label_bijector = label_bijector
        event = distribution.event_shape
        if not event.is_fully_defined():
            raise ValueError("the distribution's event shape must be known, "
                             f"got {event}.")
        self._event_shape = tuple(event.as_list())
        self._num_dims = float(np.prod(self._event_shape))
        self.flow_layers = keras_layers(distribution)
        check_variables_owned(distribution, self.flow_layers)
        self.dequantization = _check_dequantization(dequantization, self.dequantize,
                                                    self._event_shape)
        self._nll_metric = keras.metrics.Mean(name="loss")
        self._bpd_metric = keras.metrics.Mean(name="bits_per_dim")
        self.built = True

    @property
    def distribution(self) -> tfd.TransformedDistribution:
        """The trained `tfd.TransformedDistribution`."""
        return self._distribution

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        """The logged metrics: the mean loss and bits/dim."""
        return [self._nll_metric, self._bpd_metric]

    # -- compile ----------------------------------------------------------------
    def compile(self, optimizer: str | keras.optimizers.Optimizer = "adam",
                loss: Any = None, metrics: Any = None, fused_adam: bool = True,
                **kwargs: Any) -> None:
        """Standard Keras `compile`; the loss is fixed (the NLL).

        Args:
          optimizer: as Keras' `compile`.
          loss: must be None (the loss is the NLL).
          metrics: must be None.
          fused_adam: give a `keras.optimizers.Adam` TensorFlow's fused
            update kernel (:func:`tfp_flows.training.fused_adam.fuse_adam`):
            the same update with one graph op per variable instead of about
            fifteen, which keeps a deep flow's train step small. Other
            optimizers are left as they are.
          **kwargs: Keras' `compile` arguments (``jit_compile``, ...).

        Raises:
          ValueError: if `loss` or `metrics` are passed.
        """
        if loss is not None or metrics:
            raise ValueError("FlowModel's loss is the negative log-likelihood "
                             "and its metric bits_per_dim; do not pass loss= "
                             "or metrics=.")
        super().compile(optimizer=optimizer, **kwargs)
        mixed16 = any(getattr(layer, "dtype_policy", None) is not None and
                      layer.dtype_policy.name == "mixed_float16"
                      for layer in self.flow_layers)
        if mixed16 and not isinstance(self.optimizer,
                                      keras.optimizers.LossScaleOptimizer):
            self.optimizer = keras.optimizers.LossScaleOptimizer(
                self.optimizer, name="loss_scale_optimizer")
        if fused_adam and self.optimizer is not None:
            fuse_adam(self.optimizer)
        # Slots now, not in the first traced step (which would then be traced
        # twice, once to create them).
        if self.optimizer is not None and not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)

    def compile_from_config(self, config: dict[str, Any]) -> None:
        """Recompiles after `keras.saving.load_model` (optimizer state too)."""
        self.compile(**keras.saving.deserialize_keras_object(config))

    # -- the objective -----------------------------------------------------------
    def _unpack(self, data):
        return unpack_batch(data, self._distribution.dtype, self.label_bijector)

    def _dequantize(self, x):
        """``(x + u, log q(u | x))``; ``log q`` is None for uniform or no noise."""
        if self.dequantization is not None:
            return self.dequantization.dequantize(x)
        if not self.dequantize:
            return x, None
        return evaluation.dequantize(x), None

    def _bits_per_dim(self, x, labels, log_q=None):
        kwargs = {}
        if labels is not None:
            kwargs = {self.label_bijector: {"labels": labels}}
        log_p = self._distribution.log_prob(x, bijector_kwargs=kwargs)
        if log_q is not None:
            log_p = log_p - log_q
        return evaluation.bits_per_dim(log_p, self._num_dims)

    def call(self, images: tf.Tensor, labels: tf.Tensor | None = None) -> tf.Tensor:
        """Per-image bits/dim ``[B]`` of `images` as given (no noise added)."""
        return self._bits_per_dim(tf.cast(images, self._distribution.dtype),
                                  labels)

    def _update_metrics(self, bpd):
        batch = tf.shape(bpd)[0]
        self._nll_metric.update_state(evaluation.nats(bpd, self._num_dims),
                                      sample_weight=batch)
        self._bpd_metric.update_state(bpd, sample_weight=batch)
        logs = {m.name: m.result() for m in self.metrics}
        if _multi_worker(tf.distribute.get_strategy()):
            # Keras 3 reduces step logs over workers with
            # strategy.reduce("MEAN", v, axis=0), which rejects scalars
            # (tensorflow/tensorflow#72388); a [1] vector reduces to a scalar.
            logs = {k: tf.reshape(v, [1]) for k, v in logs.items()}
        return logs

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        x, labels = self._unpack(data)
        strategy = tf.distribute.get_strategy()
        with tf.GradientTape() as tape:
            # inside the tape: a learned q(u | x) gets its gradient
            noisy, log_q = self._dequantize(x)
            bpd = self._bits_per_dim(noisy, labels, log_q)
            nll = evaluation.nats(tf.reduce_mean(bpd), self._num_dims)
            # Gradients are summed over replicas: divide by their number.
            loss = nll / tf.cast(strategy.num_replicas_in_sync, nll.dtype)
            loss = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        grads = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        return self._update_metrics(bpd)

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        x, labels = self._unpack(data)
        with FreezeDataInit(self._distribution):
            noisy, log_q = self._dequantize(x)
            bpd = self._bits_per_dim(noisy, labels, log_q)
        return self._update_metrics(bpd)

    def predict_step(self, data: Any) -> tf.Tensor:
        x, labels = self._unpack(data)
        with FreezeDataInit(self._distribution):
            noisy, log_q = self._dequantize(x)
            return self._bits_per_dim(noisy, labels, log_q)

    # -- entry points -------------------------------------------------------------
    def _check_input(self, x):
        """Clear ValueErrors for bad arrays, and dataset element shapes."""
        check_input(x, self._distribution, self._event_shape,
                    integer=self.dequantize)

    def fit(self, x: Any = None, y: Any = None, batch_size: int | None = None,
            epochs: int = 1, callbacks: list[keras.callbacks.Callback] | None = None,
            **kwargs: Any) -> keras.callbacks.History:
        """Keras `fit`, plus ActNorm initialisation from the first batch.

        See the class docstring. Raises ValueError for images of the wrong
        shape, out of range, or containing NaN.
        """
        self._check_input(x)
        callbacks = list(callbacks or [])
        # With several replicas the initialisation callback always runs: it
        # decides collectively, so that no worker skips a collective.
        if (init_lib.needs_initialization(self._distribution) or
                self.distribute_strategy.num_replicas_in_sync > 1):
            images, labels = init_lib.first_batch(x, y, batch_size)
            if not isinstance(x, (np.ndarray, tf.Tensor)):
                validate_images(self._distribution, images,
                                integer=self.dequantize)
            callbacks.append(InitializeActNorm(self, images, labels))
        elif (isinstance(x, tf.data.Dataset) and
              int(x.cardinality()) == 0):  # known empty: Keras would train nothing
            raise ValueError("the training dataset is empty.")
        return super().fit(x, y, batch_size=batch_size, epochs=epochs,
                           callbacks=callbacks, **kwargs)

    def evaluate(self, x: Any = None, y: Any = None, **kwargs: Any) -> Any:
        """Keras `evaluate` (evaluation never initialises ActNorm)."""
        self._check_input(x)
        return super().evaluate(x, y, **kwargs)

    def predict(self, x: Any, **kwargs: Any) -> np.ndarray:
        """Keras `predict`: per-image bits/dim ``[N]`` after dequantisation."""
        self._check_input(x)
        return super().predict(x, **kwargs)

    def train_on_batch(self, x: Any, y: Any = None, **kwargs: Any) -> Any:
        """Keras `train_on_batch`; initialises ActNorm from `x` if needed."""
        self._check_input(x)
        init_lib.initialize_from_batch(
            self._distribution, x, y if self.label_bijector else None,
            dequantize=self.dequantize, label_bijector=self.label_bijector,
            strategy=self.distribute_strategy)
        return super().train_on_batch(x, y, **kwargs)

    # -- serialisation -------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        description = describe(self._distribution)
        if description is None:
            raise NotImplementedError(
                "this distribution was not built by tfp_flows.models, so it "
                "cannot be rebuilt from a config; save it with "
                "model.save_weights('x.weights.h5') and restore with "
                "load_weights on a FlowModel built the same way.")
        config = {"flow_config": dict(description.config),
                  "dequantize": self.dequantize,
                  "label_bijector": self.label_bijector, "name": self.name}
        if self.dequantization is not None:
            config["dequantization"] = keras.saving.serialize_keras_object(
                self.dequantization)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FlowModel:
        config = dict(config)
        dist = models_lib.from_config(config.pop("flow_config"))
        if config.get("dequantization") is not None:
            config["dequantization"] = keras.saving.deserialize_keras_object(
                config["dequantization"])
        return cls(dist, **config)
