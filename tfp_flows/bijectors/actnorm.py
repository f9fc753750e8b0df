"""ActNorm: per-channel affine with data-dependent initialisation (Glow)."""

from __future__ import annotations

import tensorflow as tf

from tfp_flows.bijectors.base import FlowBijector, ParameterLayer, per_position_log_det
from tfp_flows.typing import DTypeLike, TensorLike

__all__ = ["ActNorm"]

# A channel whose standard deviation is below this is treated as constant:
# its scale is left at 1 instead of dividing by ~0 (which would give Inf).
_CONSTANT_CHANNEL_STD = 1e-6


class ActNorm(FlowBijector):
    """Activation normalisation (Kingma & Dhariwal, 2018, Sec. 3.1).

    Data -> latent (``inverse``)::

        y = (x - loc) * exp(-log_scale)
        log|det dy/dx| = -P * sum(log_scale)

    latent -> data (``forward``)::

        x = y * exp(log_scale) + loc

    where ``P`` is the number of spatial positions (1 for vector events).

    **Data-dependent initialisation.** The first time ``inverse`` sees data
    (eagerly, or inside a `tf.function` traced before initialisation) it sets
    ``loc`` and ``log_scale`` so that this batch comes out with zero mean and
    unit variance per channel. A channel that is constant in the batch keeps
    scale 1. The flag ``initialized`` is a saved (non-trainable) variable, so
    a restored model never re-initialises. ``forward`` (sampling) never
    initialises: statistics come from data, not from prior samples. Use
    :func:`tfp_flows.initialize` to initialise a whole flow explicitly.

    Args:
      num_channels: size of the last axis.
      event_ndims: 3 for image events ``[H, W, C]``, 1 for vectors ``[C]``.
      data_init: if False, the layer starts as the identity and is never
        data-initialised.
      dtype: float dtype.
    """

    def __init__(self, num_channels: int, *, event_ndims: int = 3,
                 data_init: bool = True, dtype: DTypeLike = tf.float32,
                 validate_args: bool = False, name: str = "actnorm") -> None:
        parameters = dict(locals())
        num_channels = int(num_channels)
        if num_channels <= 0:
            raise ValueError(f"num_channels must be positive, got {num_channels}.")
        if event_ndims not in (1, 3):
            raise ValueError(f"event_ndims must be 1 or 3, got {event_ndims}.")
        dtype = tf.as_dtype(dtype)
        self._num_channels = num_channels
        self._data_init = bool(data_init)
        params = ParameterLayer({
            "loc": ((num_channels,), "zeros", True),
            "log_scale": ((num_channels,), "zeros", True),
            "initialized": ((), "zeros", False, "bool"),
        }, dtype=dtype.name, name=f"{name}_params")
        super().__init__(event_ndims=event_ndims, parameters=parameters,
                         name=name, layers=[params], dtype=dtype,
                         validate_args=validate_args)
        # Raw variables, untracked: the ParameterLayer is what checkpoints save.
        raw = params.raw_dict()
        self._loc = self._no_dependency(raw["loc"])
        self._log_scale_var = self._no_dependency(raw["log_scale"])
        self._initialized = self._no_dependency(raw["initialized"])

    @property
    def num_channels(self) -> int:
        """Size of the last axis."""
        return self._num_channels

    @property
    def loc(self) -> tf.Variable:
        """Per-channel location ``[C]`` (a variable)."""
        return self._loc

    @property
    def log_scale(self) -> tf.Variable:
        """Per-channel log-scale ``[C]`` (a variable)."""
        return self._log_scale_var

    @property
    def initialized(self) -> tf.Variable:
        """Saved bool variable: whether the data-dependent init has run."""
        return self._initialized

    # -- initialisation -----------------------------------------------------
    @property
    def data_init(self) -> bool:
        """Whether ``inverse`` initialises the layer from its first data.

        Settable: while False, an uninitialised layer is evaluated as it
        currently is (the identity when fresh) and data never initialises it
        (`FlowModel` turns it off while tracing evaluation). Read when a
        function is traced, not when it runs.
        """
        return self._data_init

    @data_init.setter
    def data_init(self, value: bool) -> None:
        self._data_init = bool(value)

    def is_initialized(self) -> bool | None:
        """The ``initialized`` flag as a Python bool, read now.

        Works eagerly and while tracing a `tf.function` (the flag is read
        outside the graph). Returns None when it cannot be read (e.g. a
        TF1-style graph).
        """
        try:
            with tf.init_scope():
                return bool(self._initialized.numpy())
        except Exception:  # pylint: disable=broad-except
            return None

    def needs_initialization(self) -> bool:
        """True if data initialisation is on and has not run (or the flag
        cannot be read): the next data ``inverse`` would initialise."""
        return self._data_init and not self.is_initialized()

    def initialize(self, x: TensorLike) -> tf.Operation | None:
        """Sets loc/log_scale from data `x` (data space of this layer).

        Returns:
          The three assignments as one op (None when executing eagerly).

        Raises:
          ValueError: if `x` is empty or not finite (checked eagerly).
        """
        x = tf.convert_to_tensor(x, dtype=self.dtype)
        self._check_channels(x)
        if tf.executing_eagerly():
            if int(tf.size(x)) == 0:
                raise ValueError(f"ActNorm '{self.name}': cannot initialise from "
                                 "an empty batch.")
            if not bool(tf.reduce_all(tf.math.is_finite(x))):
                raise ValueError(f"ActNorm '{self.name}': the initialisation "
                                 "batch contains NaN or Inf.")
        axes = list(range(x.shape.rank - 1))
        # Statistics of x minus its first row (shifted data): a constant
        # channel then gives exactly zero spread. Without the shift, float32
        # rounding of its mean leaves a spurious std (~1e-4 relative on a
        # 64x64 batch) that the scale would blow up to unit variance.
        shift = tf.reshape(x, [-1, self._num_channels])[0]
        centred = x - shift
        offset = tf.reduce_mean(centred, axis=axes)
        mean = shift + offset
        std = tf.sqrt(tf.reduce_mean(tf.square(centred - offset), axis=axes))
        log_scale = tf.where(std > _CONSTANT_CHANNEL_STD,
                             tf.math.log(tf.maximum(std, _CONSTANT_CHANNEL_STD)),
                             tf.zeros_like(std))
        return tf.group(self._loc.assign(mean),
                        self._log_scale_var.assign(log_scale),
                        self._initialized.assign(True))

    def _maybe_initialize(self, x):
        if not self._data_init:
            return
        if tf.executing_eagerly():
            if not bool(self._initialized.numpy()):
                self.initialize(x)
            return
        if self.is_initialized():
            return  # traced after initialisation: no conditional in the graph
        if not tf.distribute.in_cross_replica_context() and \
                tf.distribute.has_strategy():
            raise ValueError(
                f"ActNorm '{self.name}' is not initialised and is being called "
                "per replica; replicas would initialise from different data. "
                "Call tfp_flows.initialize(dist, global_batch) first (FlowModel"
                ".fit does this for you).")
        tf.cond(self._initialized, tf.no_op, lambda: self.initialize(x))

    # -- transform -----------------------------------------------------------
    def _check_channels(self, x):
        if x.shape.rank is not None and x.shape.rank < self.forward_min_event_ndims:
            raise ValueError(
                f"ActNorm '{self.name}': input of shape {tuple(x.shape)} has "
                f"rank {x.shape.rank} < event rank {self.forward_min_event_ndims}.")
        c = x.shape[-1] if x.shape.rank else None
        if c is not None and c != self._num_channels:
            raise ValueError(
                f"ActNorm '{self.name}': input has {c} channels (shape "
                f"{tuple(x.shape)}), expected {self._num_channels}.")

    def _log_det(self, x, sign):
        return per_position_log_det(x, self.forward_min_event_ndims,
                                    sign * tf.reduce_sum(self._log_scale_var))

    def _forward_and_log_det(self, x, **kwargs):
        self._check_channels(x)
        y = x * tf.exp(self._log_scale_var) + self._loc
        return y, self._log_det(x, 1.0)

    def _inverse_and_log_det(self, y, **kwargs):
        self._check_channels(y)
        self._maybe_initialize(y)
        x = (y - self._loc) * tf.exp(-self._log_scale_var)
        return x, self._log_det(y, -1.0)

    def _forward_event_shape(self, s):
        return s

    def _inverse_event_shape(self, s):
        return s


