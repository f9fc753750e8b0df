"""Two-dimensional toy densities for vector flows (continuous float32 data).

Each sampler takes ``(n, seed)`` with a stateless seed (an int or a shape-[2]
int tensor) and returns ``[n, 2]`` float32 samples; the same seed gives the
same samples. The densities, all roughly within ``[-3, 3]^2``:

* ``two_moons``: two interleaved half circles (as scikit-learn's
  ``make_moons``), upper ``(cos t, sin t)``, lower ``(1 - cos t, 1/2 - sin t)``
  with ``t ~ U[0, pi]``, Gaussian noise of std ``MOONS_NOISE``, then centred
  and scaled: ``x = 2 * (moon(t) + noise - (1/2, 1/4))``.
* ``eight_gaussians``: equal mixture of ``N(c_k, 0.2^2 I)``, centres
  ``c_k = 2 (cos(k pi/4), sin(k pi/4))``, ``k = 0..7``.
* ``checkerboard``: uniform over the 8 unit squares of ``[-2, 2]^2`` whose
  integer corner ``(i, j)`` has ``i + j`` even.
* ``spirals``: two interleaved Archimedean spirals, arm ``a in {0, 1}``:
  ``(t / pi) (cos(t + a pi), sin(t + a pi)) + N(0, 0.1^2 I)``, with
  ``t = 3 pi sqrt(u)``, ``u ~ U[0, 1)`` (uniform along the arc length, up to
  the small-radius end); consecutive windings of the two arms are 1 apart.

These are the standard toy targets of the flow literature (e.g. Grathwohl et
al., 2019, FFJORD; Durkan et al., 2019), written with our own constants.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import tensorflow as tf

from tfp_flows.data import common
from tfp_flows.typing import TensorLike

__all__ = ["two_moons", "eight_gaussians", "checkerboard", "spirals", "SAMPLERS",
           "DATASETS", "MOONS_NOISE", "GAUSSIANS_RADIUS", "GAUSSIANS_STD",
           "SPIRALS_NOISE", "SPIRALS_TURNS", "NUM_EXAMPLES", "sample", "info", "load"]

MOONS_NOISE = 0.1
GAUSSIANS_RADIUS = 2.0
GAUSSIANS_STD = 0.2
SPIRALS_NOISE = 0.1
SPIRALS_TURNS = 1.5  # t in [0, 2 pi * 1.5]
# Default number of examples of a sized split.
NUM_EXAMPLES = {"train": 20_000, "validation": 5_000, "test": 5_000}


def _seeds(seed, num):
    seed = tf.convert_to_tensor(seed, tf.int64)
    if seed.shape.rank == 0:
        seed = tf.stack([seed, tf.constant(0, tf.int64)])
    return tf.unstack(tf.random.experimental.stateless_split(seed, num))


def _bernoulli(n, seed):
    return tf.cast(tf.random.stateless_uniform([n], seed) < 0.5, tf.float32)


def two_moons(n: int | tf.Tensor, seed: TensorLike) -> tf.Tensor:
    """Two interleaved moons: ``[n, 2]`` float32 (see module docstring)."""
    s_t, s_moon, s_noise = _seeds(seed, 3)
    t = tf.random.stateless_uniform([n], s_t, maxval=math.pi)
    lower = _bernoulli(n, s_moon)
    x = tf.cos(t) + lower * (1.0 - 2.0 * tf.cos(t))     # cos t | 1 - cos t
    y = tf.sin(t) + lower * (0.5 - 2.0 * tf.sin(t))     # sin t | 1/2 - sin t
    noise = MOONS_NOISE * tf.random.stateless_normal([n, 2], s_noise)
    return 2.0 * (tf.stack([x, y], axis=-1) + noise - tf.constant([0.5, 0.25]))


def eight_gaussians(n: int | tf.Tensor, seed: TensorLike) -> tf.Tensor:
    """Mixture of 8 Gaussians on a circle: ``[n, 2]`` float32."""
    s_k, s_noise = _seeds(seed, 2)
    k = tf.random.stateless_uniform([n], s_k, maxval=8, dtype=tf.int32)
    angle = tf.cast(k, tf.float32) * (math.pi / 4)
    centres = GAUSSIANS_RADIUS * tf.stack([tf.cos(angle), tf.sin(angle)], axis=-1)
    return centres + GAUSSIANS_STD * tf.random.stateless_normal([n, 2], s_noise)


def checkerboard(n: int | tf.Tensor, seed: TensorLike) -> tf.Tensor:
    """Uniform on the dark squares of a 4x4 board on ``[-2, 2]^2``."""
    s_x, s_y, s_row = _seeds(seed, 3)
    x = tf.random.stateless_uniform([n], s_x, minval=-2.0, maxval=2.0)
    column = tf.floor(x)  # -2..1
    # Rows j in -2..1 with column + j even: j = -2 + 2 * r + (column mod 2).
    r = _bernoulli(n, s_row)
    y = -2.0 + 2.0 * r + tf.math.floormod(column, 2.0) + tf.random.stateless_uniform([n], s_y)
    return tf.stack([x, y], axis=-1)


def spirals(n: int | tf.Tensor, seed: TensorLike) -> tf.Tensor:
    """Two interleaved spirals: ``[n, 2]`` float32."""
    s_u, s_arm, s_noise = _seeds(seed, 3)
    t = 2 * math.pi * SPIRALS_TURNS * tf.sqrt(tf.random.stateless_uniform([n], s_u))
    phase = math.pi * _bernoulli(n, s_arm)
    radius = t / math.pi
    points = tf.stack([radius * tf.cos(t + phase), radius * tf.sin(t + phase)], axis=-1)
    return points + SPIRALS_NOISE * tf.random.stateless_normal([n, 2], s_noise)


SAMPLERS: dict[str, Callable[[int, TensorLike], tf.Tensor]] = {
    "two_moons": two_moons, "eight_gaussians": eight_gaussians,
            "checkerboard": checkerboard, "spirals": spirals}
DATASETS = tuple(SAMPLERS)
# Fixed data seeds of the sized splits, so that 'train', 'validation' and
# 'test' are independent draws, the same in every run whatever the shuffle
# `seed`.
_SPLIT_SEEDS = {"train": 2024, "validation": 2026, "test": 2025}


def sample(name: str, n: int, seed: TensorLike) -> tf.Tensor:
    """``n`` samples of the toy density ``name``: ``[n, 2]`` float32."""
    return SAMPLERS[name](common.check_positive_int(n, "n"), seed)


def info(name: str) -> common.DatasetInfo:
    """`DatasetInfo` of a toy density (continuous: ``num_bins=None``)."""
    return common.DatasetInfo(
        name=name, kind="vector", shape=(2,), num_bins=None, n_bits=None,
        num_classes=None, splits=tuple(_SPLIT_SEEDS), source="tfp_flows.data.toy2d")


def load(name: str, split: str, *, batch_size: int, num_examples: int | None = None,
         infinite: bool = False, shuffle: bool | None = None,
         shuffle_buffer: int | None = None, seed: int | None = None,
         drop_remainder: bool | None = None) -> tf.data.Dataset:
    """Pipeline over a toy density; see `tfp_flows.data.load`.

    A sized split holds ``num_examples`` fixed samples (default
    `NUM_EXAMPLES`); ``infinite=True`` (``'train'`` only) instead streams
    fresh batches forever (pass ``steps_per_epoch`` to Keras).
    """
    if split not in _SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r} for dataset '{name}'; valid "
                         f"splits: {', '.join(_SPLIT_SEEDS)}.")
    if infinite:
        if split != "train" or num_examples is not None:
            raise ValueError("infinite=True streams the 'train' split and takes no "
                             f"num_examples; got split={split!r}, "
                             f"num_examples={num_examples!r}.")
        sampler = SAMPLERS[name]
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = seeds.map(lambda pair: tf.ensure_shape(sampler(batch_size, pair),
                                                    [batch_size, 2]))
        return ds.prefetch(tf.data.AUTOTUNE)
    n = NUM_EXAMPLES[split] if num_examples is None else common.check_positive_int(
        num_examples, "num_examples")
    data = SAMPLERS[name](n, [_SPLIT_SEEDS[split], 0])
    shuffle = split == "train" if shuffle is None else bool(shuffle)
    drop_remainder = shuffle if drop_remainder is None else bool(drop_remainder)
    return common.finish(
        tf.data.Dataset.from_tensor_slices(data), batch_size=batch_size, shuffle=shuffle,
        shuffle_buffer=shuffle_buffer or n, seed=seed, drop_remainder=drop_remainder,
        dequantize=False)
