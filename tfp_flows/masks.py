"""Binary coupling masks.

A mask ``b`` has the event shape. Entries equal to 1 are the *conditioning*
part (passed through unchanged and fed to the coupling network), entries equal
to 0 are transformed: ``y = b*x + (1-b)*g(x; net(b*x))``.

>>> checkerboard((2, 2, 1))[..., 0]
array([[1., 0.],
       [0., 1.]], dtype=float32)
>>> channel((4,))
array([1., 1., 0., 0.], dtype=float32)
"""

from __future__ import annotations

import numpy as np

from tfp_flows.typing import Shape

__all__ = ["checkerboard", "channel"]


def _check(event_shape, parity):
    shape = tuple(int(d) for d in event_shape)
    if len(shape) not in (1, 3):
        raise ValueError(
            f"masks need a vector event [D] or an image event [H, W, C]; got "
            f"event shape {shape} (rank {len(shape)}).")
    if any(d <= 0 for d in shape):
        raise ValueError(f"event shape {shape} has a non-positive dimension.")
    if parity not in (0, 1):
        raise ValueError(f"parity must be 0 or 1, got {parity!r}.")
    return shape


def checkerboard(event_shape: Shape, parity: int = 0) -> np.ndarray:
    """Checkerboard mask (RealNVP).

    Args:
      event_shape: ``[H, W, C]`` for images (the pattern alternates over
        height and width and is the same for every channel), or ``[D]`` for
        vectors (alternating entries).
      parity: 0 puts a 1 at the first position, 1 flips the pattern.

    Returns:
      float32 numpy array of shape ``event_shape``.
    """
    shape = _check(event_shape, parity)
    if len(shape) == 1:
        if shape[0] < 2:
            raise ValueError(f"a vector mask needs D >= 2, got D={shape[0]}.")
        return ((np.arange(shape[0]) + parity) % 2 == 0).astype(np.float32)
    h, w, c = shape
    if h * w < 2:
        raise ValueError(f"a checkerboard needs at least 2 pixels, got {h}x{w}.")
    ij = np.add.outer(np.arange(h), np.arange(w))
    board = ((ij + parity) % 2 == 0).astype(np.float32)
    return np.repeat(board[:, :, None], c, axis=2)


def channel(event_shape: Shape, parity: int = 0) -> np.ndarray:
    """Channel-wise mask (RealNVP after squeezing, Glow).

    Args:
      event_shape: ``[H, W, C]`` (the first ``ceil(C/2)`` channels are 1 for
        parity 0) or ``[D]`` (the first half of the entries).
      parity: 1 swaps the halves.

    Returns:
      float32 numpy array of shape ``event_shape``.
    """
    shape = _check(event_shape, parity)
    n = shape[-1]
    if n < 2:
        raise ValueError(
            f"a channel mask needs at least 2 channels, got {n} "
            f"(event shape {shape}); squeeze first or use a checkerboard.")
    first = (n + 1) // 2
    last = np.zeros(n, np.float32)
    last[:first] = 1.0
    if parity:
        last = 1.0 - last
    return np.broadcast_to(last, shape).astype(np.float32).copy()
