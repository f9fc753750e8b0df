"""Pieces shared by every dataset: `DatasetInfo`, argument checks, and the
batch-level end of each pipeline (bit-depth reduction, dequantisation,
batching, prefetching).

Pixel convention (Kingma & Dhariwal, 2018, Sec. 5; Dinh et al., 2016,
Sec. 4.1): a pipeline yields *quantised* pixels as float32 integer values in
``[0, num_bins)``. Reducing 8-bit pixels to ``n_bits`` bits is::

    x_n = floor(x_8 / 2**(8 - n_bits)),     num_bins = 2**n_bits

and optional dequantisation adds ``u ~ U[0, 1)`` per pixel, so that a
continuous density over ``[0, num_bins)^D`` bounds the discrete code length
(Theis et al., 2016).
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from tfp_flows import evaluation

__all__ = ["DatasetInfo", "reduce_bits", "finish", "from_arrays", "check_positive_int",
           "check_n_bits", "check_seed", "DEFAULT_SHUFFLE_BUFFER"]

DEFAULT_SHUFFLE_BUFFER = 10_000


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset before seeing it.

    Attributes:
      name: canonical dataset name, as accepted by `tfp_flows.data.load`.
      kind: ``'image'`` (event shape ``[H, W, C]``) or ``'vector'``.
      shape: event shape of one example, e.g. ``(8, 8, 1)`` or ``(2,)``.
      num_bins: number of pixel intensity levels the pipeline yields
        (``2**n_bits`` for 8-bit tfds images, 17 for digits), or None for
        continuous data (2-D toy densities). Build the model with it.
      n_bits: bit depth after reduction for 8-bit datasets, else None.
      num_classes: number of class labels (``with_labels=True``), or None
        when the dataset has no class labels.
      splits: accepted split names (tfds datasets also accept tfds slicing
        syntax on them, e.g. ``'train[:90%]'``).
      source: where the data comes from, e.g. ``'tfds:celeb_a'``.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    num_bins: int | None
    n_bits: int | None
    num_classes: int | None
    splits: tuple[str, ...]
    source: str

    @property
    def num_dims(self) -> int:
        """Number of scalar dimensions of one example (``prod(shape)``)."""
        n = 1
        for s in self.shape:
            n *= s
        return n


def check_positive_int(value: int, what: str) -> int:
    """Returns ``value`` if it is an int > 0, else raises ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{what} must be a positive integer, got {value!r}.")
    return int(value)


def check_n_bits(n_bits: int) -> int:
    """Returns ``n_bits`` if it is an int in ``1..8``, else raises ValueError."""
    if (isinstance(n_bits, bool) or not isinstance(n_bits, numbers.Integral)
            or not 1 <= n_bits <= 8):
        raise ValueError(f"n_bits must be an integer in 1..8 (8 keeps the full "
                         f"8-bit depth), got {n_bits!r}.")
    return int(n_bits)


def check_seed(seed: int | None) -> int | None:
    """Returns ``seed`` if it is None or an int, else raises ValueError."""
    if seed is not None and (isinstance(seed, bool)
                             or not isinstance(seed, numbers.Integral)):
        raise ValueError(f"seed must be None or an integer, got {seed!r}.")
    return None if seed is None else int(seed)


def reduce_bits(images: tf.Tensor, n_bits: int) -> tf.Tensor:
    """Keeps the ``n_bits`` most significant bits of 8-bit pixels.

    Args:
      images: uint8 tensor of any shape, values in ``[0, 256)``.
      n_bits: int in ``1..8``.

    Returns:
      uint8 tensor of the same shape, ``floor(images / 2**(8 - n_bits))``,
      values in ``[0, 2**n_bits)``.
    """
    shift = 8 - n_bits
    if shift == 0:
        return images
    return tf.bitwise.right_shift(images, tf.constant(shift, images.dtype))


def _apply_to_images(element, fn):
    if isinstance(element, tuple):
        return (fn(element[0]),) + tuple(element[1:])
    return fn(element)


def finish(ds: tf.data.Dataset, *, batch_size: int, shuffle: bool, shuffle_buffer: int,
           seed: int | None, drop_remainder: bool, dequantize: bool,
           to_float: Callable[[tf.Tensor], tf.Tensor] | None = None) -> tf.data.Dataset:
    """Shuffles, batches, converts, optionally dequantises, and prefetches.

    Args:
      ds: unbatched dataset of images (or ``(image, label)`` tuples); images
        stay compact (e.g. uint8) until after batching.
      batch_size: int > 0.
      shuffle: whether to shuffle examples (reshuffled every epoch, in a
        sequence fixed by ``seed``).
      shuffle_buffer: shuffle buffer size (int > 0).
      seed: None or int; fixes the shuffle order and the dequantisation noise.
      drop_remainder: drop the last partial batch.
      dequantize: add ``U[0, 1)`` noise to every pixel of every batch.
      to_float: batch-level function from the stored images to float32
        integer-valued pixels; default ``tf.cast(x, tf.float32)``.

    Returns:
      A prefetched `tf.data.Dataset` of float32 batches ``[B, ...]`` (or
      ``(images, labels)``).
    """
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    convert = to_float or (lambda x: tf.cast(x, tf.float32))
    ds = ds.map(lambda *e: _apply_to_images(e if len(e) > 1 else e[0], convert),
                num_parallel_calls=tf.data.AUTOTUNE)
    if dequantize:
        # One stateless seed pair per batch, drawn from a seeded stream that
        # is re-randomised every epoch: the noise differs across epochs but
        # the whole sequence is reproducible for a given `seed`.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

        def add_noise(element, pair):
            return _apply_to_images(element, lambda x: evaluation.dequantize(x, pair))

        ds = tf.data.Dataset.zip((ds, seeds)).map(add_noise,
                                                  num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def from_arrays(images: np.ndarray, labels: np.ndarray | None, split: str, *,
                with_labels: bool, batch_size: int, shuffle: bool | None,
                shuffle_buffer: int | None, seed: int | None,
                drop_remainder: bool | None, dequantize: bool,
                n_bits: int | None = None) -> tf.data.Dataset:
    """The pipeline over in-memory arrays of one split (digits, IDX files,
    your own files).

    Args:
      images: uint8 array ``[N, H, W, C]``.
      labels: int32 array ``[N]``, or None when ``with_labels`` is False.
      split: the split's name; ``'train'`` is shuffled (and drops its last
        partial batch) unless ``shuffle``/``drop_remainder`` say otherwise.
      with_labels: yield ``(images, labels)``.
      batch_size: as :func:`finish`.
      shuffle: as :func:`finish`; None: ``split == 'train'``.
      shuffle_buffer: as :func:`finish`; None: the whole split.
      seed: as :func:`finish`.
      drop_remainder: as :func:`finish`; None: as ``shuffle``.
      dequantize: as :func:`finish`.
      n_bits: reduce 8-bit pixels to ``n_bits`` (None: keep the values, e.g.
        the 17 levels of digits).

    Returns:
      A prefetched `tf.data.Dataset`, as :func:`finish`.
    """
    shuffle = split == "train" if shuffle is None else bool(shuffle)
    drop_remainder = shuffle if drop_remainder is None else bool(drop_remainder)
    ds = tf.data.Dataset.from_tensor_slices((images, labels) if with_labels else images)
    to_float = None if n_bits is None else (
        lambda x: tf.cast(reduce_bits(x, n_bits), tf.float32))
    return finish(ds, batch_size=batch_size, shuffle=shuffle,
                  shuffle_buffer=shuffle_buffer or len(images), seed=seed,
                  drop_remainder=drop_remainder, dequantize=dequantize,
                  to_float=to_float)
