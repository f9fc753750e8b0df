"""Coupling networks: Keras 3 layers that map the conditioning half to the
coupling parameters.

Every default network ends in a zero-initialised layer, so a fresh coupling is
the identity map (Glow, Sec. 3.3). Any Keras layer or callable with the same
input/output contract can be passed to a coupling instead.
"""

import functools

import keras
import numpy as np
import tensorflow as tf

__all__ = ["MLP", "GlowCNN", "ResNet", "ZeroConv2D", "ZeroDense", "conv2d_same",
           "default_network", "policy_for"]

_register = keras.saving.register_keras_serializable(package="tfp_flows")


# Small-map convolutions. Glow's deepest levels run 3x3 convolutions on maps of
# 2x2 or 4x4 pixels, where TensorFlow's CPU convolution spends most of its time
# on per-call setup and zero padding. Below these sizes `conv2d_same` uses
# matrix products instead (same values up to float rounding; tested).
_DENSE_MAX_POSITIONS = 4      # H*W up to which the conv is one dense matmul
_COMBINE_MAX_POSITIONS = 16   # H*W up to which narrow convs use tap-combine


def conv2d_same(x, kernel):
    """``tf.nn.conv2d(x, kernel, 1, 'SAME')`` for an odd square kernel, faster
    on the shapes of Glow's coupling networks.

    * **Tiny maps** (static ``H*W <= 4``): the convolution is a linear map from
      ``H*W*c_in`` to ``H*W*c_out`` numbers; it runs as one matrix product with
      a matrix gathered from the kernel (:func:`_conv2d_dense`). On a 2x2 map
      this skips the 5 of 9 taps that only see padding.
    * **Narrowing convolutions on small maps** (static ``H*W <= 16`` and
      ``k*k*c_out <= c_in``, e.g. the last layer of a coupling network): one
      matrix product to ``k*k*c_out`` channels, then one product with a fixed
      0/1 matrix that adds each tap's output at its shifted position
      (:func:`_conv2d_tap_combine`).
    * **Other narrowing convolutions** keep TensorFlow's forward pass with a
      faster gradient: TensorFlow's CPU kernel for the filter gradient is slow
      when the output has few channels (its reduction runs over ``N*H*W``
      with a skinny ``c_in x c_out`` result). Here the filter gradient is one
      matrix product, ``x^T [c_in, NHW] @ patches(dy) [NHW, k*k*c_out]``, and
      the input gradient a forward convolution of ``dy`` with the flipped,
      transposed kernel (1.8-2.2x faster for the last layer of a Glow coupling
      on CPU).
    * Everything else is ``tf.nn.conv2d`` with TensorFlow's own gradient.

    All paths give TensorFlow's values and gradients up to float rounding
    (tests/test_networks.py, float64). Timings: docs/performance.md.
    """
    kernel = tf.convert_to_tensor(kernel)  # e.g. a Keras layer's (autocast) kernel
    k, c_in, c_out = int(kernel.shape[0]), int(kernel.shape[2]), int(kernel.shape[3])
    if k % 2 == 0 or k != int(kernel.shape[1]):
        return tf.nn.conv2d(x, kernel, strides=1, padding="SAME")
    h, w = (x.shape[1], x.shape[2]) if x.shape.rank == 4 else (None, None)
    # Matrix-product paths need a static map size; positions=inf disables them.
    positions = h * w if k > 1 and h is not None and w is not None else float("inf")
    if positions <= _DENSE_MAX_POSITIONS:
        return _conv2d_dense(x, kernel, h, w)
    if c_in <= c_out:
        return tf.nn.conv2d(x, kernel, strides=1, padding="SAME")
    if positions <= _COMBINE_MAX_POSITIONS and k * k * c_out <= c_in:
        return _conv2d_tap_combine(x, kernel, h, w)
    return _conv2d_narrowing(x, kernel)


def _tap_targets(k, h, w):
    """``(tap, input position, output position)`` for every kernel tap that
    reads inside an ``h x w`` map under SAME padding (taps index ``i*k+j``)."""
    p = k // 2
    out = []
    for i in range(k):
        for j in range(k):
            for y in range(h):
                for x in range(w):
                    yy, xx = y + i - p, x + j - p
                    if 0 <= yy < h and 0 <= xx < w:
                        out.append((i * k + j, yy * w + xx, y * w + x))
    return out


@functools.lru_cache(maxsize=64)
def _pair_taps(k, h, w):
    """For every (input position, output position) pair of an ``h x w`` map,
    the kernel tap connecting them under SAME padding, or ``k*k`` (a zero tap)
    where none does. Returns (int32 array ``[h*w*h*w]``, whether a zero tap
    is needed)."""
    taps = np.full((h * w, h * w), k * k, np.int32)
    for t, src, dst in _tap_targets(k, h, w):
        taps[src, dst] = t
    taps.setflags(write=False)
    return taps.reshape(-1), bool((taps == k * k).any())


def _conv2d_dense(x, kernel, h, w):
    """SAME convolution on a tiny ``h x w`` map as one dense matrix product.

    The ``[h*w*c_in, h*w*c_out]`` matrix is gathered tap by tap (whole
    ``c_in x c_out`` blocks, much faster than an element-wise gather)."""
    k, c_in, c_out = (int(d) for d in kernel.shape[1:])
    pair_taps, needs_zero = _pair_taps(k, h, w)
    taps = tf.reshape(kernel, [k * k, c_in, c_out])
    if needs_zero:
        taps = tf.concat([taps, tf.zeros([1, c_in, c_out], kernel.dtype)], 0)
    blocks = tf.reshape(tf.gather(taps, pair_taps), [h * w, h * w, c_in, c_out])
    matrix = tf.reshape(tf.transpose(blocks, [0, 2, 1, 3]),
                        [h * w * c_in, h * w * c_out])
    y = tf.matmul(tf.reshape(x, [-1, h * w * c_in]), matrix)
    return tf.reshape(y, [-1, h, w, c_out])


@functools.lru_cache(maxsize=64)
def _combine_matrix(k, h, w):
    """0/1 matrix ``[h*w, h*w*k*k]``: output position ``q`` sums the rows
    ``(input position, tap)`` that land on it."""
    m = np.zeros((h * w, h * w, k * k), np.float64)
    for t, src, dst in _tap_targets(k, h, w):
        m[dst, src, t] = 1.0
    m.setflags(write=False)
    return m.reshape(h * w, h * w * k * k)


def _conv2d_tap_combine(x, kernel, h, w):
    """Narrowing SAME convolution on a small map: every tap at once as a
    ``c_in -> k*k*c_out`` matrix product, then the taps' shifted outputs
    summed by a (batch-broadcast) product with a fixed 0/1 matrix."""
    k, c_in, c_out = (int(d) for d in kernel.shape[1:])
    taps = tf.reshape(tf.transpose(kernel, [2, 0, 1, 3]), [c_in, k * k * c_out])
    z = tf.matmul(tf.reshape(x, [-1, c_in]), taps)        # [N*HW, k*k*c_out]
    z = tf.reshape(z, [-1, h * w * k * k, c_out])         # [N, HW*k*k, c_out]
    combine = tf.constant(_combine_matrix(k, h, w), dtype=x.dtype)
    y = tf.matmul(combine, z)                             # [N, HW, c_out]
    return tf.reshape(y, [-1, h, w, c_out])


@tf.custom_gradient
def _conv2d_narrowing(x, kernel):
    y = tf.nn.conv2d(x, kernel, strides=1, padding="SAME")

    def grad(dy):
        k, c_in, c_out = kernel.shape[0], kernel.shape[2], kernel.shape[3]
        p = k // 2
        flipped = tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2])
        dx = tf.nn.conv2d(dy, flipped, strides=1, padding="SAME")
        size = tf.shape(x)
        h = x.shape[1] if x.shape[1] is not None else size[1]
        w = x.shape[2] if x.shape[2] is not None else size[2]
        padded = tf.pad(dy, [[0, 0], [p, p], [p, p], [0, 0]])
        # dW[i, j, c, o] = sum_{n,h,w} x[n, h, w, c] * dy[n, h - i + p, w - j + p, o]
        patches = tf.concat(
            [padded[:, 2 * p - i:2 * p - i + h, 2 * p - j:2 * p - j + w, :]
             for i in range(k) for j in range(k)], axis=-1)
        dw = tf.matmul(tf.reshape(x, [-1, c_in]),
                       tf.reshape(patches, [-1, k * k * c_out]), transpose_a=True)
        dw = tf.transpose(tf.reshape(dw, [c_in, k, k, c_out]), [1, 2, 0, 3])
        return dx, dw

    return y, grad


@_register
class ZeroConv2D(keras.layers.Layer):
    """Convolution initialised at zero with a learned per-channel log-scale.

    ``y = (conv(x) + b) * exp(logscale_factor * s)`` with kernel, ``b`` and
    ``s`` all zero at initialisation (Glow's ``conv2d_zeros``).
    """

    def __init__(self, filters, kernel_size=3, logscale_factor=3.0, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.logscale_factor = float(logscale_factor)

    def build(self, input_shape):
        c_in = int(input_shape[-1])
        k = self.kernel_size
        self.kernel = self.add_weight(
            shape=(k, k, c_in, self.filters), initializer="zeros", name="kernel")
        self.bias = self.add_weight(
            shape=(self.filters,), initializer="zeros", name="bias")
        self.logs = self.add_weight(
            shape=(self.filters,), initializer="zeros", name="logs")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def call(self, x):
        # (conv(x, K) + b) * e == conv(x, K * e) + b * e: scaling the kernel
        # (k*k*c_in*c_out numbers) instead of the output saves a pass over
        # the activations, and conv + bias_add fuse into one kernel.
        e = tf.exp(self.logs * self.logscale_factor)
        y = conv2d_same(x, self.kernel * e)
        return tf.nn.bias_add(y, self.bias * e)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": self.kernel_size,
                "logscale_factor": self.logscale_factor}


@_register
class ZeroDense(keras.layers.Layer):
    """Dense layer initialised at zero with a learned per-unit log-scale."""

    def __init__(self, units, logscale_factor=3.0, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.logscale_factor = float(logscale_factor)

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(int(input_shape[-1]), self.units), initializer="zeros",
            name="kernel")
        self.bias = self.add_weight(
            shape=(self.units,), initializer="zeros", name="bias")
        self.logs = self.add_weight(
            shape=(self.units,), initializer="zeros", name="logs")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def call(self, x):
        e = tf.exp(self.logs * self.logscale_factor)  # as in ZeroConv2D
        return tf.nn.bias_add(tf.matmul(x, self.kernel * e), self.bias * e)

    def get_config(self):
        return {**super().get_config(), "units": self.units,
                "logscale_factor": self.logscale_factor}


class _Stack(keras.layers.Layer):
    """Applies its sublayers in order; subclasses call `_set_stack`.

    Sublayers are stored as attributes (``layer_0``, ...) rather than only in
    a list: Keras 3 lists are not `tf.train.Checkpoint` dependencies, and the
    flows must checkpoint with plain TF as well as with Keras.
    """

    def _set_stack(self, layers):
        for i, layer in enumerate(layers):
            setattr(self, f"layer_{i}", layer)
        self._num_stack = len(layers)

    @property
    def _stack(self):
        return [getattr(self, f"layer_{i}") for i in range(self._num_stack)]

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self._stack:
            layer.build(shape)
            shape = tuple(layer.compute_output_shape(shape))

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        for layer in self._stack:
            shape = tuple(layer.compute_output_shape(shape))
        return shape

    def call(self, x):
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

    def __init__(self, out_units, hidden_units=256, num_hidden_layers=2,
                 **kwargs):
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

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.out_units,)

    def get_config(self):
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

    def __init__(self, out_channels, hidden_channels=512, **kwargs):
        super().__init__(**kwargs)
        self.out_channels = int(out_channels)
        self.hidden_channels = int(hidden_channels)
        policy = self.dtype_policy
        self._set_stack([
            keras.layers.Conv2D(self.hidden_channels, 3, padding="same",
                                activation="relu", dtype=policy, name="conv_in"),
            keras.layers.Conv2D(self.hidden_channels, 1, padding="same",
                                activation="relu", dtype=policy,
                                name="conv_hidden"),
            ZeroConv2D(self.out_channels, 3, dtype=policy, name="conv_out"),
        ])

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.out_channels,)

    def call(self, x):
        conv_in, conv_hidden, conv_out = self._stack
        # The first convolution goes through `conv2d_same` (Keras' Conv2D
        # would always call tf.nn.conv2d), so it gets the small-map paths.
        h = conv2d_same(x, conv_in.kernel)
        h = tf.nn.relu(tf.nn.bias_add(h, conv_in.bias))
        return conv_out(conv_hidden(h))

    def get_config(self):
        return {**super().get_config(), "out_channels": self.out_channels,
                "hidden_channels": self.hidden_channels}


@_register
class ResidualBlock(keras.layers.Layer):
    """``x + conv3x3(relu(conv3x3(relu(x))))``."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        policy = self.dtype_policy
        self.conv1 = keras.layers.Conv2D(self.channels, 3, padding="same",
                                         dtype=policy, name="conv1")
        self.conv2 = keras.layers.Conv2D(self.channels, 3, padding="same",
                                         dtype=policy, name="conv2")

    def build(self, input_shape):
        self.conv1.build(input_shape)
        self.conv2.build(tuple(input_shape[:-1]) + (self.channels,))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def call(self, x):
        h = self.conv1(tf.nn.relu(x))
        return x + self.conv2(tf.nn.relu(h))

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


@_register
class ResNet(_Stack):
    """RealNVP's residual s/t network (without batch normalisation).

    conv3x3 -> ``num_blocks`` residual blocks -> ReLU -> zero conv3x3.
    """

    def __init__(self, out_channels, hidden_channels=64, num_blocks=2,
                 **kwargs):
        super().__init__(**kwargs)
        self.out_channels = int(out_channels)
        self.hidden_channels = int(hidden_channels)
        self.num_blocks = int(num_blocks)
        policy = self.dtype_policy
        stack = [keras.layers.Conv2D(self.hidden_channels, 3, padding="same",
                                     dtype=policy, name="conv_in")]
        stack += [ResidualBlock(self.hidden_channels, dtype=policy,
                                name=f"block_{i}")
                  for i in range(self.num_blocks)]
        stack.append(keras.layers.Activation("relu", dtype=policy, name="relu"))
        stack.append(ZeroConv2D(self.out_channels, 3, dtype=policy,
                                name="conv_out"))
        self._set_stack(stack)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.out_channels,)

    def get_config(self):
        return {**super().get_config(), "out_channels": self.out_channels,
                "hidden_channels": self.hidden_channels,
                "num_blocks": self.num_blocks}


def policy_for(dtype):
    """Keras dtype policy for a network of a bijector with float `dtype`.

    float32 bijectors use the global policy, so ``mixed_bfloat16`` /
    ``mixed_float16`` make the networks compute in low precision while the
    bijector (log-dets, prior) stays float32. Other dtypes are used as is.
    """
    dtype = tf.as_dtype(dtype)
    if dtype == tf.float32:
        return keras.config.dtype_policy().name
    return dtype.name


def default_network(event_ndims, out_channels, hidden=None, dtype=None,
                    name=None):
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
