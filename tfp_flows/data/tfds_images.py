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

`tensorflow_datasets` is imported on first use, so importing `tfp_flows`
stays cheap.
"""

import re

import tensorflow as tf

from tfp_flows.data import common

__all__ = ["DATASETS", "SPEC", "ALIASES", "info", "load", "resolve_split",
           "center_crop_resize", "CELEB_A_CROP"]

CELEB_A_CROP = 148

_TWO = {"train": "train", "test": "test"}
_THREE = {"train": "train", "validation": "validation", "test": "test"}
# downsampled ImageNet has no test split: its validation set is the test set.
_IMAGENET = {"train": "train", "validation": "validation", "test": "validation"}

# name -> (tfds name, native [H, W, C], user split -> tfds split, classes)
SPEC = {
    "mnist": ("mnist", (28, 28, 1), _TWO, 10),
    "fashion_mnist": ("fashion_mnist", (28, 28, 1), _TWO, 10),
    "cifar10": ("cifar10", (32, 32, 3), _TWO, 10),
    "celeb_a": ("celeb_a", (218, 178, 3), _THREE, None),
    "imagenet32": ("downsampled_imagenet/32x32", (32, 32, 3), _IMAGENET, None),
    "imagenet64": ("downsampled_imagenet/64x64", (64, 64, 3), _IMAGENET, None),
}
DATASETS = tuple(SPEC)
ALIASES = {spec[0]: name for name, spec in SPEC.items() if spec[0] != name}

_TERM = re.compile(r"^\s*([A-Za-z_]+)\s*(\[[^\]]*\])?\s*$")


def resolve_split(name, split):
    """Maps a user split (``'train'``, ``'test'``, tfds slicing) to tfds.

    ``'test'`` becomes the dataset's held-out split (``'validation'`` for
    downsampled ImageNet). Slices and ``+`` unions pass through unchanged,
    e.g. ``'test[:50%]+train[:10]'``.

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
        parts.append(mapping[base] + slice_.replace(" ", ""))
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


def info(name, n_bits=8, image_size=None):
    """`DatasetInfo` of a tfds image dataset after preprocessing."""
    n_bits = common.check_n_bits(n_bits)
    size = _check_image_size(name, image_size)
    tfds_name, native, mapping, classes = SPEC[name]
    return common.DatasetInfo(
        name=name, kind="image", shape=(size, size, native[2]),
        num_bins=2 ** n_bits, n_bits=n_bits, num_classes=classes,
        splits=tuple(mapping), source=f"tfds:{tfds_name}")


def center_crop_resize(image, size, crop=None):
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


def load(name, split, *, batch_size, n_bits=8, image_size=None,
         with_labels=False, dequantize=False, shuffle=None, shuffle_buffer=None,
         seed=None, drop_remainder=None, data_dir=None, download=True):
    """Pipeline over a tfds image dataset; see `tfp_flows.data.load`."""
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

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

    ds = tfds.load(SPEC[name][0], split=tfds_split, shuffle_files=shuffle,
                   read_config=tfds.ReadConfig(shuffle_seed=seed),
                   data_dir=data_dir, download=download)

    def prepare(example):
        image = example["image"]
        if resize:
            image = center_crop_resize(image, size, crop)
        image = tf.ensure_shape(image, meta.shape)
        if with_labels:
            return image, tf.cast(example["label"], tf.int32)
        return image

    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return common.finish(
        ds, batch_size=batch_size, shuffle=shuffle,
        shuffle_buffer=shuffle_buffer or common.DEFAULT_SHUFFLE_BUFFER,
        seed=seed, drop_remainder=drop_remainder, dequantize=dequantize,
        to_float=lambda x: tf.cast(common.reduce_bits(x, meta.n_bits), tf.float32))
