"""Adjacent layers that a chain evaluates as one map: `ActNorm` next to an
`InvertibleConv1x1`, the first two layers of every Glow step.

Both are per-position linear maps of the channels, so their composition is
one affine map. Data -> latent (``inverse``)::

    z = W ((x - loc) * exp(-log_scale)) = M x + b,
    M = W diag(exp(-log_scale)),   b = -M loc

and latent -> data (``forward``)::

    x = W^-1 z * exp(log_scale) + loc = M' z + loc,
    M' = diag(exp(log_scale)) W^-1

`FlowChain` applies ``M`` (C x C, formed once per call) with one matrix
product and one bias add over the activations, instead of a subtraction, a
multiplication and a product; the gradient saves as many passes again. The
log-determinant is the sum of the two layers' (``P`` positions)::

    inverse: P * (log|det W| - sum(log_scale))

Values equal the two layers applied in turn up to float rounding
(tests/test_fused.py). ActNorm's data-dependent initialisation
still runs first, from the pair's input.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
from tensorflow_probability import bijectors as tfb

from tfp_flows.bijectors.actnorm import ActNorm
from tfp_flows.bijectors.base import per_position_log_det
from tfp_flows.bijectors.conv1x1 import InvertibleConv1x1

__all__ = ["fusable", "actnorm_conv1x1"]


def fusable(actnorm: tfb.Bijector, conv: tfb.Bijector, event_ndims: int,
            kwargs: tuple[dict[str, Any], dict[str, Any]]) -> bool:
    """Whether a chain may evaluate `actnorm` and `conv` as one map: exactly
    these two classes (not inverted), the same channels and dtype, event
    rank equal to their own (nothing left to sum), and no keyword arguments
    routed to either."""
    return (type(actnorm) is ActNorm and type(conv) is InvertibleConv1x1
            and actnorm.num_channels == conv.num_channels
            and actnorm.dtype == conv.dtype
            and event_ndims == actnorm.forward_min_event_ndims
            == conv.forward_min_event_ndims
            and not any(kwargs))


def actnorm_conv1x1(actnorm: ActNorm, conv: InvertibleConv1x1, x: tf.Tensor,
                    direction: str) -> tuple[tf.Tensor, tf.Tensor]:
    """``(y, log_det)`` of the pair in `direction`.

    ``"inverse"`` (data -> latent) is ``conv.inverse(actnorm.inverse(x))``,
    initialising `actnorm` from `x` if it needs it; ``"forward"`` (latent ->
    data) is ``actnorm.forward(conv.forward(x))``.
    """
    actnorm._check_channels(x)  # pylint: disable=protected-access
    conv._check(x)  # pylint: disable=protected-access
    log_scale = actnorm.log_scale
    if direction == "inverse":
        actnorm._maybe_initialize(x)  # pylint: disable=protected-access
        # W diag(e): scales column j of W by e_j
        matrix = conv.weight() * tf.exp(-log_scale)
        bias = -tf.linalg.matvec(matrix, actnorm.loc)
        sign = 1.0
    else:
        _, w_inv = conv._weight_and_inverse()  # pylint: disable=protected-access
        matrix = tf.exp(log_scale)[:, None] * w_inv  # diag(e) W^-1
        bias = tf.convert_to_tensor(actnorm.loc)
        sign = -1.0
    c = conv.num_channels
    flat = tf.reshape(x, [-1, c])
    y = tf.nn.bias_add(tf.matmul(flat, matrix, transpose_b=True), bias)
    y = tf.reshape(y, tf.shape(x))
    value = sign * (conv._log_abs_det()  # pylint: disable=protected-access
                    - tf.reduce_sum(log_scale))
    return y, per_position_log_det(x, conv.forward_min_event_ndims, value)
