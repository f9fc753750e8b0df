"""Your own images held in memory, as the readers of `tfp_flows.data.files`
return them: the split names, the fixed 10/10/80 split of a single
collection, the centre-crop and resize of ``image_size``, and `ImageData`,
the frozen record of a dataset's splits.

Shared by `tfp_flows.data.image_folder` (folders of PNG/JPEG files) and
`tfp_flows.data.image_arrays` (``.npy``/``.npz`` files). The user
documentation of the formats, the split rule and the errors is the docstring
of `tfp_flows.data.files`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

import numpy as np
import tensorflow as tf

__all__ = ["SPLITS", "ImageData", "split_indices", "split_collection", "crop_resize",
           "freeze"]

SPLITS = ("train", "validation", "test")


class ImageData(NamedTuple):
    """One dataset read into memory (cached by `tfp_flows.data.files`).

    Attributes:
      splits: ``{split: (images, labels)}`` for every split of `SPLITS`:
        read-only uint8 ``[N, H, W, C]``, and read-only int32 ``[N]`` labels
        or None.
      shape: ``(H, W, C)`` of one image.
      num_classes: ``max label + 1``, or None without labels.
      skipped: ``((file, reason), ...)``, the image files skipped as
        unreadable with ``skip_bad=True``.
    """

    splits: dict
    shape: tuple
    num_classes: int | None
    skipped: tuple


def split_indices(n: int) -> dict[str, np.ndarray]:
    """The fixed 10/10/80 split of ``n`` examples.

    ``k = n // 10`` (at least 1 when ``n >= 3``) examples go to ``'test'``,
    the next ``k`` to ``'validation'`` and the rest to ``'train'``, in the
    order of ``np.random.default_rng(0).permutation(n)``.

    Args:
      n: number of examples (int >= 0).

    Returns:
      ``{split: indices}``: disjoint int64 ``[N_split]`` index arrays covering
      ``0..n-1``, keyed ``'test'``, ``'validation'``, ``'train'``.
    """
    k = n // 10
    if n >= 3:
        k = max(k, 1)
    perm = np.random.default_rng(0).permutation(n)
    return {"test": perm[:k], "validation": perm[k:2 * k], "train": perm[2 * k:]}


def split_collection(images: np.ndarray, labels: np.ndarray | None
                     ) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Splits one collection with the fixed permutation of `split_indices`.

    Args:
      images: ``[N, H, W, C]`` array.
      labels: ``[N]`` array, or None.

    Returns:
      ``{split: (images [N_split, H, W, C], labels [N_split] or None)}``.
    """
    return {s: (images[i], None if labels is None else labels[i])
            for s, i in split_indices(len(images)).items()}


def crop_resize(images: np.ndarray, size: int) -> np.ndarray:
    """Centre-crops images to squares and resizes them to ``size x size``.

    The batched equivalent of `tfp_flows.data.tfds_images.center_crop_resize`:
    the largest central square, an antialiased bilinear resize in float32,
    rounded and clipped back to uint8. Images whose central square is already
    ``size x size`` are only cropped.

    Args:
      images: uint8 ``[N, H, W, C]``.
      size: side of the output squares (int > 0).

    Returns:
      uint8 ``[N, size, size, C]``, C-contiguous.
    """
    n, h, w, c = images.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = images[:, top:top + side, left:left + side]
    if side == size:
        return np.ascontiguousarray(crop)
    out = np.empty((n, size, size, c), np.uint8)
    chunk = max(1, (1 << 24) // (side * side * c))  # ~64 MB of float32 per call
    for start in range(0, n, chunk):
        resized = tf.image.resize(tf.cast(crop[start:start + chunk], tf.float32),
                                  [size, size], method="bilinear", antialias=True)
        out[start:start + chunk] = tf.cast(
            tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8).numpy()
    return out


def _read_only(array):
    array = np.ascontiguousarray(array)
    array.setflags(write=False)
    return array


def freeze(per_split: Mapping[str, tuple[np.ndarray, np.ndarray | None]],
           shape: Iterable[int], num_classes: int | None = None,
           skipped: Iterable[tuple[str, str]] = ()) -> ImageData:
    """Freezes the splits of a dataset into an `ImageData`.

    Args:
      per_split: ``{split: (images, labels)}``: uint8 ``[N, H, W, C]`` and
        int32 ``[N]`` or None; made C-contiguous and read-only.
      shape: ``(H, W, C)`` of one image.
      num_classes: ``max label + 1``, or None without labels.
      skipped: ``((file, reason), ...)`` of image files skipped as unreadable.

    Returns:
      The `ImageData`.
    """
    splits = {s: (_read_only(x), None if y is None else _read_only(y))
              for s, (x, y) in per_split.items()}
    return ImageData(splits=splits, shape=tuple(int(d) for d in shape),
                     num_classes=num_classes, skipped=tuple(skipped))
