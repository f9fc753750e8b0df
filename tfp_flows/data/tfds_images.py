"""8-bit image datasets from TensorFlow Datasets: MNIST, Fashion-MNIST,
CIFAR-10, CelebA and downsampled ImageNet 32x32 / 64x64.

Preprocessing follows the flow papers:

* CelebA (Dinh et al., 2016, Sec. 4.1): central 148x148 crop of the aligned
  218x178 faces, then a resize to ``image_size`` (default 64) with an
  antialiased bilinear filter, rounded back to 8-bit integers.
* Downsampled ImageNet (van den Oord et al., 2016; the tfds builder
  ``downsampled_imagenet/32x32`` and ``/64x64``): used as is. Images of any
  other size (only mock data has them) are centre-cropped to a square and
  resized.
* All: reduction to ``n_bits`` as in Glow, ``floor(x / 2**(8 - n_bits))``.

Splits: ``'train'``, ``'validation'`` and ``'test'``, disjoint. Where the
dataset has no validation split of its own, it is the end of the training
split: the last 10,000 images for MNIST, Fashion-MNIST and downsampled
ImageNet, the last 5,000 for CIFAR-10. (TensorFlow Datasets stores examples
in its own order, so these are not the same images as the last 10,000 of
MNIST's original files, which :mod:`tfp_flows.data.idx` holds out.)
Downsampled ImageNet has no test split: its ``validation`` set serves as
``'test'``.

MNIST and Fashion-MNIST are read from their original IDX files when
``data_dir`` holds them (:mod:`tfp_flows.data.idx`), without TensorFlow
Datasets. Otherwise `tensorflow_datasets` (imported on first use) loads data
it has prepared, and downloads only after a quick check (a few seconds) that
its servers are reachable: offline, the error names the ``data_dir`` way.
"""

from __future__ import annotations

import os
import re
import socket

import tensorflow as tf

from tfp_flows.data import common, idx
from tfp_flows.typing import PathLike

__all__ = ["DATASETS", "SPEC", "ALIASES", "IDX_DATASETS", "info", "load",
           "resolve_split", "center_crop_resize", "CELEB_A_CROP", "DataUnavailableError"]

CELEB_A_CROP = 148

# user split -> tfds split. Held-out validation parts come off the end of
# the training split; downsampled ImageNet's validation set is its test set.
_MNIST = {"train": "train[:50000]", "validation": "train[50000:]", "test": "test"}
_CIFAR = {"train": "train[:45000]", "validation": "train[45000:]", "test": "test"}
_THREE = {"train": "train", "validation": "validation", "test": "test"}
_IMAGENET = {"train": "train[:-10000]", "validation": "train[-10000:]",
             "test": "validation"}

# name -> (tfds name, native [H, W, C], user split -> tfds split, classes)
SPEC: dict[str, tuple[str, tuple[int, int, int], dict[str, str], int | None]] = {
    "mnist": ("mnist", (28, 28, 1), _MNIST, 10),
    "fashion_mnist": ("fashion_mnist", (28, 28, 1), _MNIST, 10),
    "cifar10": ("cifar10", (32, 32, 3), _CIFAR, 10),
    "celeb_a": ("celeb_a", (218, 178, 3), _THREE, None),
    "imagenet32": ("downsampled_imagenet/32x32", (32, 32, 3), _IMAGENET, None),
    "imagenet64": ("downsampled_imagenet/64x64", (64, 64, 3), _IMAGENET, None),
}
DATASETS = tuple(SPEC)
ALIASES = {spec[0]: name for name, spec in SPEC.items() if spec[0] != name}
# datasets that can also be read from their original IDX files
IDX_DATASETS = ("mnist", "fashion_mnist")
_PROBE_HOST, _PROBE_TIMEOUT = ("storage.googleapis.com", 443), 3.0


class DataUnavailableError(OSError):
    """The data is neither on disk nor downloadable (e.g. offline)."""

_TERM = re.compile(r"^\s*([A-Za-z_]+)\s*(\[[^\]]*\])?\s*$")


def resolve_split(name: str, split: str) -> tuple[str, bool]:
    """Maps a user split (``'train'``, ``'validation'``, ``'test'``, or tfds
    slicing) to tfds.

    Bare names map to the disjoint splits of the module docstring. A sliced
    name slices the *whole* tfds split of that name, e.g. ``'train[:10%]'``
    is the first tenth of all of tfds' training examples, validation part
    included; ``+`` unions pass through, e.g. ``'test[:50%]+train[:10]'``.

    Args:
      name: canonical dataset name (a key of `SPEC`).
      split: split string.

    Returns:
      ``(tfds_split, is_train)``: the tfds split string, and whether every
      part of it comes from the training split.

    Raises:
      ValueError: for an unknown split name or malformed split string.
    """
    mapping = SPEC[name][2]
    valid = ", ".join(mapping)
    if not isinstance(split, str) or not split.strip():
        raise ValueError(f"split must be a non-empty string such as 'train' or "
                         f"'test', got {split!r}; splits of '{name}': {valid}.")
    parts, bases = [], []
    for term in split.split("+"):
        match = _TERM.match(term)
        if match is None:
            raise ValueError(f"malformed split {split!r} for '{name}': use a split "
                             f"name ({valid}) optionally sliced, e.g. 'train[:90%]'.")
        base, slice_ = match.group(1), match.group(2) or ""
        if base not in mapping:
            raise ValueError(f"unknown split '{base}' for dataset '{name}'; valid "
                             f"splits: {valid} (tfds slicing such as "
                             f"'train[:90%]' is accepted).")
        if slice_:
            whole = mapping[base].split("[")[0]
            if whole != base and base != "test":
                raise ValueError(f"split '{base}' of '{name}' is itself a slice "
                                 f"({mapping[base]}); slice '{whole}' instead.")
            parts.append(whole + slice_.replace(" ", ""))
        else:
            parts.append(mapping[base])
        bases.append(base)
    return "+".join(parts), all(b == "train" for b in bases)


def _check_image_size(name, image_size):
    native = SPEC[name][1][0]
    if name == "celeb_a":
        size = 64 if image_size is None else common.check_positive_int(
            image_size, "image_size")
        if size > CELEB_A_CROP:
            raise ValueError(f"image_size for celeb_a must be at most the "
                             f"{CELEB_A_CROP}x{CELEB_A_CROP} crop, got {size}.")
        return size
    if image_size is not None and image_size != native:
        raise ValueError(f"'{name}' has a fixed image size {native}; image_size "
                         f"applies to celeb_a only, got {image_size!r}.")
    return native


def info(name: str, n_bits: int = 8, image_size: int | None = None) -> common.DatasetInfo:
    """`DatasetInfo` of a tfds image dataset after preprocessing."""
    n_bits = common.check_n_bits(n_bits)
    size = _check_image_size(name, image_size)
    tfds_name, native, mapping, classes = SPEC[name]
    return common.DatasetInfo(
        name=name, kind="image", shape=(size, size, native[2]),
        num_bins=2 ** n_bits, n_bits=n_bits, num_classes=classes,
        splits=tuple(mapping), source=f"tfds:{tfds_name}")


def center_crop_resize(image: tf.Tensor, size: int, crop: int | None = None) -> tf.Tensor:
    """Centre crop, then resize to ``size x size``, back to 8-bit integers.

    Args:
      image: uint8 tensor ``[H, W, C]``.
      size: output side length (int).
      crop: side of the central square crop; None takes the largest square.

    Returns:
      uint8 tensor ``[size, size, C]``; ``round(resize(crop(image)))``,
      where resize is bilinear with antialiasing (an area-weighted filter
      when shrinking; the identity when the size does not change).
    """
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    side = tf.minimum(h, w) if crop is None else tf.constant(crop, tf.int32)
    top, left = (h - side) // 2, (w - side) // 2
    image = image[top:top + side, left:left + side]
    resized = tf.image.resize(tf.cast(image, tf.float32), [size, size],
                              method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def load(name: str, split: str, *, batch_size: int, n_bits: int = 8,
         image_size: int | None = None, with_labels: bool = False,
         dequantize: bool = False, shuffle: bool | None = None,
         shuffle_buffer: int | None = None, seed: int | None = None,
         drop_remainder: bool | None = None, data_dir: PathLike | None = None,
         download: bool = True) -> tf.data.Dataset:
    """Pipeline over a tfds image dataset; see `tfp_flows.data.load`."""
    meta = info(name, n_bits, image_size)
    if with_labels and meta.num_classes is None:
        raise ValueError(f"'{name}' has no class labels; use with_labels=False.")
    tfds_split, is_train = resolve_split(name, split)
    shuffle = is_train if shuffle is None else bool(shuffle)
    drop_remainder = shuffle if drop_remainder is None else bool(drop_remainder)
    size = meta.shape[0]
    crop = CELEB_A_CROP if name == "celeb_a" else None
    # Native-size datasets are left untouched; the others are cropped/resized
    # per example, before shuffling, so the shuffle buffer holds small images.
    resize = name == "celeb_a" or name.startswith("imagenet")

    if name in IDX_DATASETS and data_dir is not None and _has_idx(data_dir):
        if split not in idx.SPLITS:
            raise ValueError(f"split {split!r}: {name} read from IDX files in "
                             f"{data_dir} takes {', '.join(idx.SPLITS)} (no slicing).")
        images, labels = idx.arrays(data_dir, split)
        return common.from_arrays(
            images, labels, split, with_labels=with_labels, batch_size=batch_size,
            shuffle=shuffle, shuffle_buffer=shuffle_buffer, seed=seed,
            drop_remainder=drop_remainder, dequantize=dequantize, n_bits=meta.n_bits)
    ds = _tfds_load(name, tfds_split, shuffle, seed, data_dir, download)

    def prepare(example):
        image = example["image"]
        if resize:
            image = center_crop_resize(image, size, crop)
        image = tf.ensure_shape(image, meta.shape)
        if with_labels:
            return image, tf.cast(example["label"], tf.int32)
        return image

    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    bits = common.check_n_bits(n_bits)  # meta.n_bits, as an int
    return common.finish(
        ds, batch_size=batch_size, shuffle=shuffle,
        shuffle_buffer=shuffle_buffer or common.DEFAULT_SHUFFLE_BUFFER,
        seed=seed, drop_remainder=drop_remainder, dequantize=dequantize,
        to_float=lambda x: tf.cast(common.reduce_bits(x, bits), tf.float32))


def _has_idx(data_dir):
    try:
        idx.find_file(data_dir, idx.FILES["train"][0])
    except FileNotFoundError:
        try:
            idx.find_file(data_dir, idx.FILES["t10k"][0])
        except FileNotFoundError:
            return False
    return True


def _online(host=_PROBE_HOST, timeout=_PROBE_TIMEOUT):
    """Whether TensorFlow Datasets' download server answers within seconds."""
    try:
        socket.create_connection(host, timeout=timeout).close()
    except OSError:
        return False
    return True


def _tfds_load(name, tfds_split, shuffle, seed, data_dir, download):
    """`tfds.load`, failing in seconds (not minutes of retries) when the data
    is neither prepared nor downloadable."""
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    kwargs = dict(split=tfds_split, shuffle_files=shuffle,
                  read_config=tfds.ReadConfig(shuffle_seed=seed), data_dir=data_dir)
    try:
        return tfds.load(SPEC[name][0], download=False, **kwargs)
    except AssertionError:  # tfds: "could not find data in <dir>"
        pass
    where = data_dir or os.path.join("~", "tensorflow_datasets")
    local = (f" Or point data_dir (tfp-flows --data-dir) at a folder holding "
             f"{name}'s IDX files ({', '.join(sum(idx.FILES.values(), ()))}, "
             "gzip or not).") if name in IDX_DATASETS else ""
    if not download:
        raise DataUnavailableError(
            f"{name} is not prepared in {where} and download=False.{local}")
    if not _online():
        raise DataUnavailableError(
            f"{name} is not prepared in {where} and its download server "
            f"({_PROBE_HOST[0]}) cannot be reached: this machine is offline.{local}")
    return tfds.load(SPEC[name][0], download=True, **kwargs)
