"""Input pipelines: `load` returns a `tf.data.Dataset` for a named dataset,
`info` what a model needs to know about it (event shape, ``num_bins``).

Datasets:

* Offline: ``'digits'`` (scikit-learn, 8x8x1, 17 levels; the default),
  and the 2-D toy densities ``'two_moons'``, ``'eight_gaussians'``,
  ``'checkerboard'``, ``'spirals'`` (continuous, for vector flows).
* MNIST and Fashion-MNIST from their original IDX files:
  ``load("mnist", split, data_dir=DIR)`` (:mod:`~tfp_flows.data.idx`).
* Your own images: a folder of PNG/JPEG files or a ``.npy``/``.npz`` array,
  named by its path (:mod:`~tfp_flows.data.files`).
* TensorFlow Datasets (prepared, or downloaded when online): ``'mnist'``,
  ``'fashion_mnist'``, ``'cifar10'``, ``'celeb_a'`` (148x148 centre crop,
  resized to ``image_size``), ``'imagenet32'`` and ``'imagenet64'``
  (tfds ``downsampled_imagenet/32x32`` and ``/64x64``, also accepted as names).

Every image dataset has three disjoint splits, ``'train'``, ``'validation'``
and ``'test'``. Choose epochs, schedules and architectures on
``'validation'``; evaluate ``'test'`` once, at the end.

Image pipelines yield quantised pixels, float32 integer values in
``[0, num_bins)``, shape ``[B, H, W, C]``; `tfp_flows.training.FlowModel`
and `tfp_flows.bits_per_dim` add the dequantisation noise themselves.

Example:
  >>> import tfp_flows
  >>> ds = tfp_flows.data.load("digits", "train", batch_size=64, seed=0)
  >>> tfp_flows.data.info("digits").num_bins
  17
"""

from __future__ import annotations

import os
from typing import Any

import tensorflow as tf

from tfp_flows.data import common, digits, files, idx, tfds_images, toy2d
from tfp_flows.data.common import DatasetInfo
from tfp_flows.data.tfds_images import DataUnavailableError
from tfp_flows.typing import PathLike

__all__ = ["load", "info", "DatasetInfo", "DataUnavailableError", "DATASETS",
           "DEFAULT_DATASET", "common", "digits", "files", "idx", "tfds_images",
           "toy2d"]

DEFAULT_DATASET = "digits"
DATASETS = ("digits",) + toy2d.DATASETS + tfds_images.DATASETS


def _canonical(name: PathLike) -> str:
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if not isinstance(name, str):
        raise ValueError(f"dataset name must be a string, got {name!r}; choose "
                         f"one of: {', '.join(DATASETS)}, or a path.")
    if files.is_path(name):
        return name
    key = name.strip().lower().replace("-", "_")
    key = tfds_images.ALIASES.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: "
                         f"{', '.join(DATASETS)}, or the path of an image "
                         "folder or a .npy/.npz file.")
    return key


def _check_full_depth(name, n_bits, why):
    if n_bits != 8:
        raise ValueError(f"n_bits does not apply to '{name}' ({why}); leave "
                         f"n_bits=8, got {n_bits!r}.")


def info(name: PathLike, n_bits: int = 8, image_size: int | None = None, *,
         skip_bad: bool = False) -> DatasetInfo:
    """Describes a dataset as `load` would yield it.

    Args:
      name: dataset name (see `DATASETS`), or the path of an image folder
        or ``.npy``/``.npz`` file (read to learn its shape).
      n_bits: bit depth for 8-bit datasets (1..8); must stay 8 for
        ``'digits'`` (17 levels) and the continuous toy densities.
      image_size: output side for ``'celeb_a'`` (default 64) and for your
        own images (centre crop and resize); None elsewhere.
      skip_bad: for a folder of images, skip corrupt files with a warning
        instead of raising.

    Returns:
      A `DatasetInfo`: event ``shape``, ``num_bins`` (``2**n_bits``, 17 for
      digits, None for toy data), ``num_classes``, valid ``splits``.

    Raises:
      ValueError: unknown dataset, n_bits out of range or not applicable,
        bad image_size.
    """
    name = _canonical(name)
    common.check_n_bits(n_bits)
    if files.is_path(name):
        return files.info(name, n_bits, image_size, skip_bad=skip_bad)
    if name in tfds_images.DATASETS:
        return tfds_images.info(name, n_bits, image_size)
    if image_size is not None:
        raise ValueError(f"image_size applies to celeb_a only, got image_size="
                         f"{image_size!r} for '{name}'.")
    if name == "digits":
        _check_full_depth(name, n_bits, "17 intensity levels, num_bins=17")
        return digits.info()
    _check_full_depth(name, n_bits, "continuous 2-D data")
    return toy2d.info(name)


def load(name: PathLike, split: str, batch_size: int, n_bits: int = 8, *,
         image_size: int | None = None, with_labels: bool = False,
         dequantize: bool = False, shuffle: bool | None = None,
         shuffle_buffer: int | None = None, seed: int | None = None,
         drop_remainder: bool | None = None, num_examples: int | None = None,
         infinite: bool = False, data_dir: PathLike | None = None,
         download: bool = True, skip_bad: bool = False,
         with_info: bool = False) -> tf.data.Dataset | tuple[tf.data.Dataset, DatasetInfo]:
    """A batched, prefetched `tf.data` pipeline over a named dataset.

    Training splits (``'train'``, or tfds slices of it only) are shuffled,
    reshuffled each epoch, and drop their last partial batch; other splits
    keep their order and every example. Images are reduced to ``n_bits``
    as in Glow (Kingma & Dhariwal, 2018): ``floor(x / 2**(8 - n_bits))``.

    Args:
      name: dataset name, one of `DATASETS` (``'digits'`` is the default of
        the command line).
      split: ``'train'``, ``'validation'`` or ``'test'`` (disjoint; see
        each dataset's module for how validation is held out); tfds datasets
        also take slicing of their whole splits, e.g. ``'train[:90%]'``.
      batch_size: examples per batch (int > 0).
      n_bits: bit depth of 8-bit tfds images, 1..8 (``num_bins = 2**n_bits``);
        must stay 8 for digits (17 levels) and toy data.
      image_size: output side of ``'celeb_a'`` images (default 64, at most
        148, the crop).
      with_labels: yield ``(images [B, H, W, C], labels [B] int32)`` for
        class-conditional models (mnist, fashion_mnist, cifar10, digits).
      dequantize: add ``U[0, 1)`` noise to every pixel (for custom loops;
        leave False with `FlowModel`, which adds it itself).
      shuffle: override the shuffling (default: training splits only).
      shuffle_buffer: shuffle buffer size (default 10000, or the whole split
        for digits and toy data).
      seed: int making shuffling, dequantisation noise and infinite toy
        streams reproducible; None for fresh randomness.
      drop_remainder: override dropping the last partial batch (default:
        as ``shuffle``).
      num_examples: size of a toy split (default 20000 train, 5000 test).
      infinite: toy data only: stream fresh batches forever.
      data_dir: a folder with MNIST/Fashion-MNIST's IDX files, or a tfds data
        directory (ignored by digits, toy data and paths).
      download: let tfds download and prepare missing data (after checking,
        in seconds, that its server is reachable).
      skip_bad: for a folder of images, skip corrupt files with a warning
        instead of raising.
      with_info: also return the dataset's `DatasetInfo`.

    Returns:
      `tf.data.Dataset` of float32 ``[B, H, W, C]`` images (``[B, 2]`` for
      toy data), or ``(images, labels)``; with ``with_info`` a
      ``(dataset, info)`` pair.

    Raises:
      ValueError: naming the bad argument and the valid choices (unknown
        dataset or split, n_bits out of range, batch_size <= 0, an option
        that does not apply to the dataset), or a corrupt file (named).
      FileNotFoundError: a file of a local dataset is missing (named).
      DataUnavailableError: the data is not on disk and cannot be
        downloaded (offline); the message names the ``data_dir`` way.
    """
    meta = info(name, n_bits, image_size, skip_bad=skip_bad)
    name = meta.name
    batch_size = common.check_positive_int(batch_size, "batch_size")
    if shuffle_buffer is not None:
        shuffle_buffer = common.check_positive_int(shuffle_buffer, "shuffle_buffer")
    seed = common.check_seed(seed)
    if with_labels and meta.num_classes is None:
        raise ValueError(f"'{name}' has no class labels; use with_labels=False.")
    if meta.kind == "image" and (num_examples is not None or infinite):
        raise ValueError("num_examples and infinite apply to the toy densities "
                         f"only ({', '.join(toy2d.DATASETS)}), not to '{name}'.")
    common_args: dict[str, Any] = dict(batch_size=batch_size, shuffle=shuffle,
                       shuffle_buffer=shuffle_buffer, seed=seed,
                       drop_remainder=drop_remainder)
    if files.is_path(name):
        ds = files.load(name, split, n_bits=n_bits, image_size=image_size,
                        with_labels=with_labels, dequantize=dequantize,
                        skip_bad=skip_bad, **common_args)
    elif name in tfds_images.DATASETS:
        ds = tfds_images.load(name, split, n_bits=n_bits, image_size=image_size,
                              with_labels=with_labels, dequantize=dequantize,
                              data_dir=data_dir, download=download, **common_args)
    elif name == "digits":
        ds = digits.load(split, with_labels=with_labels, dequantize=dequantize,
                         **common_args)
    else:
        if dequantize:
            raise ValueError(f"'{name}' is continuous data; dequantize applies to "
                             "quantised images only.")
        ds = toy2d.load(name, split, num_examples=num_examples, infinite=infinite,
                        **common_args)
    return (ds, meta) if with_info else ds
