"""SAME convolutions with stride 1, as Glow's and RealNVP's coupling networks
use them: fast paths for small maps and narrowing layers, and the right output
shape on every backend.

:func:`conv2d_same` is the one entry point; :class:`SameConv2D` is a Keras
``Conv2D`` that routes its convolution through it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfp_flows.typing import TensorLike

__all__ = ["SameConv2D", "conv2d_same"]


def _native_conv2d(x, kernel):
    """``tf.nn.conv2d(x, kernel, 1, 'SAME')`` with the output shape fixed.

    With oneDNN (on by default on Intel CPUs with AVX-512), TensorFlow's CPU
    convolution returns the *input's* shape for an empty batch:
    ``[0, 4, 4, 2]`` in gives ``[0, 4, 4, 2]`` out for a kernel with 8 output
    channels. An empty batch therefore gets zeros of ``[0, H, W, c_out]``
    through a ``tf.cond`` on the batch size (a reshape to the right shape
    would be dropped by Grappler as redundant with the static shape).
    """
    if x.shape[0] is not None and x.shape[0] > 0:
        # a static, non-empty batch: nothing to fix
        return tf.nn.conv2d(x, kernel, strides=1, padding="SAME")
    c_out = int(kernel.shape[-1])
    y = tf.cond(
        tf.shape(x)[0] > 0,
        lambda: tf.nn.conv2d(x, kernel, strides=1, padding="SAME"),
        lambda: tf.zeros(tf.concat([tf.shape(x)[:-1], [c_out]], 0), x.dtype))
    y.set_shape(x.shape[:-1].concatenate([c_out]))
    return y


# Small-map convolutions. Glow's deepest levels run 3x3 convolutions on maps of
# 2x2 or 4x4 pixels, where TensorFlow's CPU convolution spends most of its time
# on per-call setup and zero padding. Below these sizes `conv2d_same` uses
# matrix products instead (same values up to float rounding; tested).
_DENSE_MAX_POSITIONS = 4      # H*W up to which the conv is one dense matmul
_COMBINE_MAX_POSITIONS = 16   # H*W up to which narrow convs use tap-combine


def conv2d_same(x: tf.Tensor, kernel: TensorLike, bias: TensorLike | None = None,
                activation: Callable[[tf.Tensor], tf.Tensor] | None = None) -> tf.Tensor:
    """``activation(tf.nn.conv2d(x, kernel, 1, 'SAME') + bias)`` for an odd
    square kernel, faster on the shapes of Glow's coupling networks.

    ``bias`` (``[c_out]``) and an element-wise ``activation`` are optional;
    given here rather than applied to the result, TensorFlow fuses them into
    the convolution or matrix product (``_FusedConv2D``, ``_FusedMatMul``).

    * **1x1 kernels**: one matrix product over the channel axis,
      ``[N*H*W, c_in] @ [c_in, c_out]`` (:func:`_conv2d_1x1`); with its
      gradients faster than ``tf.nn.conv2d`` on every shape of Glow's hidden
      layer that we timed on CPU (``benchmarks/layers.py``).
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
    (tests/test_convolution.py, float64). Timings: docs/performance.md.
    """
    kernel = tf.convert_to_tensor(kernel)  # e.g. a Keras layer's (autocast) kernel
    if int(kernel.shape[0]) == int(kernel.shape[1]) == 1:
        return _conv2d_1x1(x, kernel, bias, activation)
    return _bias_activation(_conv2d(x, kernel), bias, activation)


def _bias_activation(y, bias, activation):
    if bias is not None:
        y = tf.nn.bias_add(y, tf.convert_to_tensor(bias))
    return y if activation is None else activation(y)


def _conv2d_1x1(x, kernel, bias, activation):
    """A 1x1 convolution (with bias and activation) as one matrix product."""
    c_in, c_out = int(kernel.shape[2]), int(kernel.shape[3])
    y = tf.matmul(tf.reshape(x, [-1, c_in]), tf.reshape(kernel, [c_in, c_out]))
    y = _bias_activation(y, bias, activation)
    if x.shape.rank == 4 and x.shape[1:3].is_fully_defined():
        return tf.reshape(y, [-1, x.shape[1], x.shape[2], c_out])
    return tf.reshape(y, tf.concat([tf.shape(x)[:-1], [c_out]], 0))


def _conv2d(x, kernel):
    """The SAME convolution of an odd square kernel larger than 1x1."""
    k, c_in, c_out = int(kernel.shape[0]), int(kernel.shape[2]), int(kernel.shape[3])
    if k % 2 == 0 or k != int(kernel.shape[1]):
        return _native_conv2d(x, kernel)
    h, w = (x.shape[1], x.shape[2]) if x.shape.rank == 4 else (None, None)
    # Matrix-product paths need a static map size; positions=inf disables them.
    positions = h * w if h is not None and w is not None else float("inf")
    if positions <= _DENSE_MAX_POSITIONS:
        return _conv2d_dense(x, kernel, h, w)
    if c_in <= c_out:
        return _native_conv2d(x, kernel)
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
    y = _native_conv2d(x, kernel)

    def grad(dy):
        k, c_in, c_out = kernel.shape[0], kernel.shape[2], kernel.shape[3]
        p = k // 2
        flipped = tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2])
        dx = _native_conv2d(dy, flipped)
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


@keras.saving.register_keras_serializable(package="tfp_flows")
class SameConv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` (stride 1, ``padding='same'``) whose convolution
    is :func:`conv2d_same`: the small-map paths, and the right shape for an
    empty batch on every backend. Same variables and config as ``Conv2D``."""

    def __init__(self, filters: int, kernel_size: int | tuple[int, int],
                 **kwargs: Any) -> None:
        kwargs.setdefault("padding", "same")
        super().__init__(filters, kernel_size, **kwargs)
        if (self.padding != "same" or tuple(self.strides) != (1, 1)
                or tuple(self.dilation_rate) != (1, 1) or self.groups != 1
                or self.data_format != "channels_last"):
            raise ValueError(
                "SameConv2D is a stride-1, undilated, ungrouped, channels-last "
                "'same' convolution; use keras.layers.Conv2D for other settings.")

    def convolution_op(self, inputs: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        return conv2d_same(inputs, kernel)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        # bias and activation inside conv2d_same, so TensorFlow fuses them
        return conv2d_same(inputs, self.kernel, self.bias if self.use_bias else None,
                           self.activation)
