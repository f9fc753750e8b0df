"""Coupling networks: Keras 3 layers that map the conditioning half to the
coupling parameters.

Every default network ends in a zero-initialised layer, so a fresh coupling is
the identity map (Glow, Sec. 3.3). Any Keras layer or callable with the same
input/output contract can be passed to a coupling instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import keras
import tensorflow as tf

from tfp_flows.convolution import SameConv2D, conv2d_same
from tfp_flows.typing import DTypeLike

__all__ = ["MLP", "GlowCNN", "ResNet", "ZeroConv2D", "ZeroDense", "conv2d_same",
           "default_network", "global_policy", "policy_for"]

_register = keras.saving.register_keras_serializable(package="tfp_flows")


@_register
class ZeroConv2D(keras.layers.Layer):
    """Convolution initialised at zero with a learned per-channel log-scale.

    ``y = (conv(x) + b) * exp(logscale_factor * s)`` with kernel, ``b`` and
    ``s`` all zero at initialisation (Glow's ``conv2d_zeros``).
    """

    def __init__(self, filters: int, kernel_size: int = 3, logscale_factor: float = 3.0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.logscale_factor = float(logscale_factor)

    def build(self, input_shape: Sequence[int | None]) -> None:
        c_in = input_shape[-1]
        if c_in is None:
            raise ValueError(f"{self.name} needs a known number of input channels.")
        k = self.kernel_size
        self.kernel = self.add_weight(
            shape=(k, k, int(c_in), self.filters), initializer="zeros", name="kernel")
        self.bias = self.add_weight(
            shape=(self.filters,), initializer="zeros", name="bias")
        self.logs = self.add_weight(
            shape=(self.filters,), initializer="zeros", name="logs")

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        return tuple(input_shape[:-1]) + (self.filters,)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        # (conv(x, K) + b) * e == conv(x, K * e) + b * e: scaling the kernel
        # (k*k*c_in*c_out numbers) instead of the output saves a pass over
        # the activations, and conv + bias_add fuse into one kernel.
        e = tf.exp(self.logs * self.logscale_factor)
        y = conv2d_same(x, self.kernel * e)
        return tf.nn.bias_add(y, self.bias * e)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": self.kernel_size,
                "logscale_factor": self.logscale_factor}


@_register
class ZeroDense(keras.layers.Layer):
    """Dense layer initialised at zero with a learned per-unit log-scale."""

    def __init__(self, units: int, logscale_factor: float = 3.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = int(units)
        self.logscale_factor = float(logscale_factor)

    def build(self, input_shape: Sequence[int | None]) -> None:
        width = input_shape[-1]
        if width is None:
            raise ValueError(f"{self.name} needs a known input width.")
        self.kernel = self.add_weight(
            shape=(int(width), self.units), initializer="zeros", name="kernel")
        self.bias = self.add_weight(
            shape=(self.units,), initializer="zeros", name="bias")
        self.logs = self.add_weight(
            shape=(self.units,), initializer="zeros", name="logs")

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        return tuple(input_shape[:-1]) + (self.units,)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        e = tf.exp(self.logs * self.logscale_factor)  # as in ZeroConv2D
        return tf.nn.bias_add(tf.matmul(x, self.kernel * e), self.bias * e)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units,
                "logscale_factor": self.logscale_factor}


class _Stack(keras.layers.Layer):
    """Applies its sublayers in order; subclasses call `_set_stack`.

    Sublayers are stored as attributes (``layer_0``, ...) rather than only in
    a list: Keras 3 lists are not `tf.train.Checkpoint` dependencies, and the
    flows must checkpoint with plain TF as well as with Keras.
    """

    def _set_stack(self, layers: Sequence[keras.layers.Layer]) -> None:
        for i, layer in enumerate(layers):
            setattr(self, f"layer_{i}", layer)
        self._num_stack = len(layers)

    @property
    def _stack(self) -> list[keras.layers.Layer]:
        return [getattr(self, f"layer_{i}") for i in range(self._num_stack)]

    def build(self, input_shape: Sequence[int | None]) -> None:
        shape = tuple(input_shape)
        for layer in self._stack:
            layer.build(shape)
            shape = tuple(layer.compute_output_shape(shape))

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        shape = tuple(input_shape)
        for layer in self._stack:
            shape = tuple(layer.compute_output_shape(shape))
        return shape

    def call(self, x: tf.Tensor) -> tf.Tensor:
        for layer in self._stack:
            x = layer(x)
        return x


@_register
class MLP(_Stack):
    """Multi-layer perceptron for vector events (NICE's coupling function).

    Args:
      out_units: width of the output.
      hidden_units: width of each hidden layer.
      num_hidden_layers: number of ReLU hidden layers (NICE used 5 x 1000).
    """

    def __init__(self, out_units: int, hidden_units: int = 256, num_hidden_layers: int = 2,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.out_units = int(out_units)
        self.hidden_units = int(hidden_units)
        self.num_hidden_layers = int(num_hidden_layers)
        policy = self.dtype_policy
        stack = [keras.layers.Dense(self.hidden_units, activation="relu",
                                    dtype=policy, name=f"dense_{i}")
                 for i in range(self.num_hidden_layers)]
        stack.append(ZeroDense(self.out_units, dtype=policy, name="out"))
        self._set_stack(stack)

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        return tuple(input_shape[:-1]) + (self.out_units,)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "out_units": self.out_units,
                "hidden_units": self.hidden_units,
                "num_hidden_layers": self.num_hidden_layers}


@_register
class GlowCNN(_Stack):
    """Glow's coupling network: conv3x3 -> ReLU -> conv1x1 -> ReLU -> zero conv3x3.

    Args:
      out_channels: channels of the output (2x the transformed channels for an
        affine coupling).
      hidden_channels: width of the two hidden convolutions (512 in Glow).
    """

    def __init__(self, out_channels: int, hidden_channels: int = 512, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.out_channels = int(out_channels)
        self.hidden_channels = int(hidden_channels)
        policy = self.dtype_policy
        self._set_stack([
            SameConv2D(self.hidden_channels, 3, padding="same",
                                activation="relu", dtype=policy, name="conv_in"),
            SameConv2D(self.hidden_channels, 1, padding="same",
                                activation="relu", dtype=policy,
                                name="conv_hidden"),
            ZeroConv2D(self.out_channels, 3, dtype=policy, name="conv_out"),
        ])

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        return tuple(input_shape[:-1]) + (self.out_channels,)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        conv_in, conv_hidden, conv_out = self._stack
        # conv + bias_add + relu as raw ops (TensorFlow fuses them), without
        # a Keras call on the hot path; the 1x1 layer is one matrix product.
        h = conv2d_same(x, conv_in.kernel, conv_in.bias, tf.nn.relu)
        h = conv2d_same(h, conv_hidden.kernel, conv_hidden.bias, tf.nn.relu)
        return conv_out(h)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "out_channels": self.out_channels,
                "hidden_channels": self.hidden_channels}


@_register
class ResidualBlock(keras.layers.Layer):
    """``x + conv3x3(relu(conv3x3(relu(x))))``."""

    def __init__(self, channels: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.channels = int(channels)
        policy = self.dtype_policy
        self.conv1 = SameConv2D(self.channels, 3, padding="same",
                                         dtype=policy, name="conv1")
        self.conv2 = SameConv2D(self.channels, 3, padding="same",
                                         dtype=policy, name="conv2")

    def build(self, input_shape: Sequence[int | None]) -> None:
        self.conv1.build(input_shape)
        self.conv2.build(tuple(input_shape[:-1]) + (self.channels,))

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        return tuple(input_shape)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        h = self.conv1(tf.nn.relu(x))
        return x + self.conv2(tf.nn.relu(h))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "channels": self.channels}


@_register
class ResNet(_Stack):
    """RealNVP's residual s/t network (without batch normalisation).

    conv3x3 -> ``num_blocks`` residual blocks -> ReLU -> zero conv3x3.
    """

    def __init__(self, out_channels: int, hidden_channels: int = 64, num_blocks: int = 2,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.out_channels = int(out_channels)
        self.hidden_channels = int(hidden_channels)
        self.num_blocks = int(num_blocks)
        policy = self.dtype_policy
        stack: list[keras.layers.Layer] = [
            SameConv2D(self.hidden_channels, 3, padding="same", dtype=policy,
                       name="conv_in")]
        stack += [ResidualBlock(self.hidden_channels, dtype=policy,
                                name=f"block_{i}")
                  for i in range(self.num_blocks)]
        stack.append(keras.layers.Activation("relu", dtype=policy, name="relu"))
        stack.append(ZeroConv2D(self.out_channels, 3, dtype=policy,
                                name="conv_out"))
        self._set_stack(stack)

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        return tuple(input_shape[:-1]) + (self.out_channels,)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "out_channels": self.out_channels,
                "hidden_channels": self.hidden_channels,
                "num_blocks": self.num_blocks}


def policy_for(dtype: DTypeLike) -> str:
    """Keras dtype policy for a network of a bijector with float `dtype`.

    float32 bijectors use the global policy, so ``mixed_bfloat16`` /
    ``mixed_float16`` make the networks compute in low precision while the
    bijector (log-dets, prior) stays float32. Other dtypes are used as is.
    """
    dtype = tf.as_dtype(dtype)
    if dtype == tf.float32:
        return keras.config.dtype_policy().name
    return dtype.name


@contextlib.contextmanager
def global_policy(policy: str) -> Iterator[None]:
    """Keras' global dtype policy set to `policy` inside the block and restored
    after it: a flow built inside (see `policy_for`) keeps the policy in its
    networks, e.g. ``with global_policy("mixed_bfloat16"): dist = glow(...)``.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def default_network(event_ndims: int, out_channels: int, hidden: int | None = None,
                    dtype: DTypeLike | None = None,
                    name: str | None = None) -> keras.layers.Layer:
    """The default coupling network for an event rank.

    An :class:`MLP` for vectors (``event_ndims == 1``), a :class:`GlowCNN` for
    images (``event_ndims == 3``).
    """
    if event_ndims == 1:
        return MLP(out_channels, hidden_units=hidden or 256, dtype=dtype,
                   name=name)
    if event_ndims == 3:
        return GlowCNN(out_channels, hidden_channels=hidden or 512,
                       dtype=dtype, name=name)
    raise ValueError(f"no default network for event rank {event_ndims}; "
                     "pass `network=`.")
