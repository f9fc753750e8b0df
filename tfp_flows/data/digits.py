"""scikit-learn's handwritten digits: 1797 images of 8x8x1 pixels with 17
intensity levels (0..16), shipped with scikit-learn, so always offline.

Split protocol (the digits density benchmark, ``benchmarks/README.md``)::

    perm = np.random.default_rng(0).permutation(1797)
    test = perm[:359]              # 359 images, the benchmark's test split
    validation = perm[359:599]     # 240 images, for every choice made
    train = perm[599:]             # 1198 images

The test split is the one the benchmark has always used; the validation
split is carved out of what was its training part (a sixth of it, as MNIST
holds out 10,000 of its 60,000 training images).

Pixels are already quantised to 17 levels, so ``num_bins = 17`` and there is
no bit-depth reduction.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from tfp_flows.data import common

__all__ = ["NUM_BINS", "SHAPE", "SPLIT_SIZES", "arrays", "info", "load"]

NUM_BINS = 17
SHAPE = (8, 8, 1)
_NUM_IMAGES = 1797
_NUM_TEST = 359
_NUM_VALIDATION = 240
SPLIT_SIZES = {"train": _NUM_IMAGES - _NUM_TEST - _NUM_VALIDATION,
               "validation": _NUM_VALIDATION, "test": _NUM_TEST}


@functools.lru_cache(maxsize=1)
def _all_arrays():
    from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel

    digits = load_digits()
    images = digits.images.astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int32)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def _check_split(split):
    if split not in SPLIT_SIZES:
        raise ValueError(f"unknown split {split!r} for dataset 'digits'; valid "
                         f"splits: {', '.join(SPLIT_SIZES)}.")


def arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels of one split, in the protocol's order.

    Args:
      split: ``'train'`` (1198 images), ``'validation'`` (240) or
        ``'test'`` (359).

    Returns:
      ``(images, labels)``: uint8 ``[N, 8, 8, 1]`` with values in ``0..16``,
      and int32 ``[N]`` with values in ``0..9`` (read-only arrays).
    """
    _check_split(split)
    images, labels = _all_arrays()
    perm = np.random.default_rng(0).permutation(_NUM_IMAGES)
    bounds = {"test": (0, _NUM_TEST),
              "validation": (_NUM_TEST, _NUM_TEST + _NUM_VALIDATION),
              "train": (_NUM_TEST + _NUM_VALIDATION, _NUM_IMAGES)}[split]
    index = perm[bounds[0]:bounds[1]]
    return images[index], labels[index]


def info() -> common.DatasetInfo:
    """`DatasetInfo` of the digits dataset."""
    return common.DatasetInfo(
        name="digits", kind="image", shape=SHAPE, num_bins=NUM_BINS, n_bits=None,
        num_classes=10, splits=tuple(SPLIT_SIZES), source="sklearn.datasets.load_digits")


def load(split: str, *, batch_size: int, with_labels: bool = False,
         dequantize: bool = False, shuffle: bool | None = None,
         shuffle_buffer: int | None = None, seed: int | None = None,
         drop_remainder: bool | None = None) -> tf.data.Dataset:
    """Pipeline over the digits; see `tfp_flows.data.load`."""
    images, labels = arrays(split)
    return common.from_arrays(
        images, labels, split, with_labels=with_labels, batch_size=batch_size,
        shuffle=shuffle, shuffle_buffer=shuffle_buffer, seed=seed,
        drop_remainder=drop_remainder, dequantize=dequantize)
