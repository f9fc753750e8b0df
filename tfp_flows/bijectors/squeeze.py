"""Squeeze: space-to-depth reshaping of image events."""

from __future__ import annotations

import tensorflow as tf

from tfp_flows.bijectors.base import FlowBijector, flatten_batch
from tfp_flows.typing import DTypeLike

__all__ = ["Squeeze"]


class Squeeze(FlowBijector):
    """Space-to-depth (Dinh et al., 2016, Sec. 3.6).

    ``forward``: ``[H, W, C] -> [H/f, W/f, C*f*f]`` (`tf.nn.space_to_depth`
    layout); ``inverse``: depth-to-space. A permutation: log-det 0.

    Unlike the other tfp_flows bijectors, the name states the forward
    direction: in a model, squeezing data on its way to the latent space is
    ``tfb.Invert(Squeeze())``.

    Args:
      factor: spatial block size ``f``.
    """

    def __init__(self, factor: int = 2, *, dtype: DTypeLike = tf.float32,
                 validate_args: bool = False, name: str = "squeeze") -> None:
        parameters = dict(locals())
        factor = int(factor)
        if factor < 2:
            raise ValueError(f"factor must be >= 2, got {factor}.")
        self._factor = factor
        super().__init__(event_ndims=3, parameters=parameters, name=name,
                         dtype=tf.as_dtype(dtype), is_constant_jacobian=True,
                         validate_args=validate_args)

    @property
    def factor(self) -> int:
        """The spatial block size ``f``."""
        return self._factor

    def _check_spatial(self, shape, what):
        shape = tf.TensorShape(shape)
        if shape.rank is not None and shape.rank < 3:
            raise ValueError(f"Squeeze '{self.name}': {what} of shape "
                             f"{tuple(shape)} is not an image [..., H, W, C].")
        if shape.rank is None:
            return
        h, w = shape[-3], shape[-2]
        f = self._factor
        if (h is not None and h % f) or (w is not None and w % f):
            raise ValueError(
                f"Squeeze '{self.name}': spatial size {h}x{w} is not divisible "
                f"by the squeeze factor {f}.")

    def _check_depth(self, shape):
        shape = tf.TensorShape(shape)
        if shape.rank is not None and shape.rank < 3:
            raise ValueError(f"Squeeze '{self.name}': input of shape "
                             f"{tuple(shape)} is not an image [..., H, W, C].")
        c = shape[-1] if shape.rank else None
        if c is not None and c % (self._factor ** 2):
            raise ValueError(
                f"Squeeze '{self.name}': {c} channels are not divisible by "
                f"factor^2 = {self._factor ** 2}; cannot unsqueeze.")

    def _forward_and_log_det(self, x, **kwargs):
        self._check_spatial(x.shape, "input")
        flat, unflatten = flatten_batch(x, 3)
        y = unflatten(tf.nn.space_to_depth(flat, self._factor))
        return y, self._zeros_batch(x)

    def _inverse_and_log_det(self, y, **kwargs):
        self._check_depth(y.shape)
        flat, unflatten = flatten_batch(y, 3)
        x = unflatten(tf.nn.depth_to_space(flat, self._factor))
        return x, self._zeros_batch(y)

    def _forward_event_shape(self, s):
        self._check_spatial(s, "event shape")
        f = self._factor
        return _rescaled(s, (1, f), (f * f, 1))

    def _inverse_event_shape(self, s):
        self._check_depth(s)
        f = self._factor
        return _rescaled(s, (f, 1), (1, f * f))

    def _forward_event_shape_tensor(self, s):
        f = self._factor
        return tf.concat([s[:-3], s[-3:-1] // f, s[-1:] * f * f], 0)

    def _inverse_event_shape_tensor(self, s):
        f = self._factor
        return tf.concat([s[:-3], s[-3:-1] * f, s[-1:] // (f * f)], 0)


def _rescaled(s, spatial, channels):
    """Static shape `s` with height and width scaled by the fraction
    `spatial` = (numerator, denominator), channels by `channels` (exact: the
    callers checked divisibility); unknown dimensions stay unknown."""
    if s.rank is None:
        return s

    def scale(d, fraction):
        return None if d is None else d * fraction[0] // fraction[1]
    h, w, c = s[-3], s[-2], s[-1]
    return s[:-3].concatenate([scale(h, spatial), scale(w, spatial), scale(c, channels)])
