"""Your own images from a ``.npy`` or ``.npz`` file of NumPy arrays.

Reads the file (never unpickling), checks the images (integer dtype with
values in ``0..255``, rank 3 or 4, 1 or 3 channels, at least one pixel) and
the labels (integers ``>= 0``, one per image), and the keys of an ``.npz``
(three splits, or one image array with optional labels). The formats are
documented in `tfp_flows.data.files`, which caches what `read_npy` and
`read_npz` return.
"""

from __future__ import annotations

import numpy as np

from tfp_flows.data.image_data import SPLITS, ImageData, crop_resize, freeze, split_collection

__all__ = ["read_npy", "read_npz"]

_NPZ_LAYOUTS = ("keys 'train', 'validation', 'test' (optionally 'train_labels', "
                "'validation_labels', 'test_labels'), or one image array under "
                "'images' or 'x' (optionally labels under 'labels' or 'y')")


def _check_images(array, where):
    """Validates one image array; returns uint8 ``[N, H, W, C]``."""
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        hint = ""
        if np.issubdtype(array.dtype, np.floating):
            hint = (" Convert floats in [0, 1] with (x * 255).round().astype(np.uint8), "
                    "or floats in [0, 255] with x.round().astype(np.uint8).")
        raise ValueError(f"{where}: images have dtype {array.dtype}; expected uint8 "
                         f"(or integers in 0..255).{hint}")
    if array.ndim not in (3, 4):
        raise ValueError(f"{where}: images have rank {array.ndim} (shape {array.shape}); "
                         "expected [N, H, W] or [N, H, W, C] with C = 1 or 3.")
    if array.ndim == 3:
        array = array[..., None]
    n, h, w, c = array.shape
    if c not in (1, 3):
        raise ValueError(f"{where}: images have shape {array.shape} with {c} channels "
                         "on the last axis; expected 1 (grayscale) or 3 (RGB), e.g. "
                         "x[..., :3] drops an alpha channel.")
    if n == 0 or h == 0 or w == 0:
        raise ValueError(f"{where}: image array has shape {array.shape}, with no "
                         "images or no pixels.")
    if array.dtype != np.uint8:
        lo, hi = int(array.min()), int(array.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"{where}: image values range over {lo}..{hi}; expected "
                             "8-bit pixels in 0..255.")
        array = array.astype(np.uint8)
    return array


def _check_labels(labels, n, where):
    """Validates labels of ``n`` images; returns int32 ``[n]``."""
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{where}: labels have dtype {labels.dtype}; expected "
                         "integers.")
    if labels.shape != (n,):
        raise ValueError(f"{where}: labels have shape {labels.shape}; expected ({n},), "
                         "one label per image.")
    if n and (int(labels.min()) < 0 or int(labels.max()) > np.iinfo(np.int32).max):
        raise ValueError(f"{where}: labels range over {int(labels.min())}.."
                         f"{int(labels.max())}; expected class indices >= 0.")
    return labels.astype(np.int32)


def _num_classes(per_split):
    labels = [y for _, y in per_split.values() if y is not None]
    if not labels:
        return None
    sizes = [int(y.max()) for y in labels if y.size]
    return max(sizes) + 1 if sizes else None


def _resize_arrays(images, image_size):
    if image_size is None or images.shape[1:3] == (image_size, image_size):
        return images
    return crop_resize(images, image_size)


def _open_array_file(path, expect_npz):
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as e:  # bad zip, bad header, pickled data, empty file...
        kind = ".npz archive" if expect_npz else ".npy array"
        raise ValueError(f"cannot read {path!r} as a {kind}: {type(e).__name__}: {e}. "
                         "The file is corrupt or not in NumPy format.") from None
    if expect_npz and isinstance(loaded, np.ndarray):
        raise ValueError(f"{path!r} holds a single .npy array, not an .npz archive: "
                         "rename it to end in .npy.")
    if not expect_npz and not isinstance(loaded, np.ndarray):
        loaded.close()
        raise ValueError(f"{path!r} is an .npz archive, not a .npy array: rename it to "
                         "end in .npz.")
    return loaded


def read_npy(path: str, image_size: int | None) -> ImageData:
    """Reads a ``.npy`` image array into memory (uncached).

    Args:
      path: an existing ``.npy`` file of ``[N, H, W]`` or ``[N, H, W, C]``
        integers in ``0..255``, ``C`` 1 or 3.
      image_size: None keeps the native size, or an int ``S``: centre-crop to
        a square and resize to ``S x S``.

    Returns:
      The `ImageData`, without labels, split by
      `tfp_flows.data.image_data.split_indices`.

    Raises:
      ValueError: naming the file and the problem (not a ``.npy`` array,
        wrong dtype, rank, channels or range, no pixels).
    """
    images = _check_images(_open_array_file(path, expect_npz=False), path)
    images = _resize_arrays(images, image_size)
    return freeze(split_collection(images, None), images.shape[1:])


def _npz_member(archive, key, path):
    try:
        return archive[key]
    except Exception as e:
        raise ValueError(f"cannot read key {key!r} of {path!r}: {type(e).__name__}: "
                         f"{e}. The archive is corrupt.") from None


def read_npz(path: str, image_size: int | None) -> ImageData:
    """Reads a ``.npz`` archive of images (and labels) into memory (uncached).

    Args:
      path: an existing ``.npz`` file holding the three splits under keys
        ``train``, ``validation``, ``test`` (optionally ``<split>_labels``),
        or one image array under ``images`` or ``x`` (or its only non-label
        key), optionally labelled by ``labels`` or ``y``.
      image_size: None keeps the native size, or an int ``S``: centre-crop to
        a square and resize to ``S x S``.

    Returns:
      The `ImageData`, with int32 labels and ``num_classes = max(label) + 1``
      when labelled; one image array is split by
      `tfp_flows.data.image_data.split_indices`.

    Raises:
      ValueError: naming the file (and key) and the problem (bad keys, a
        wrong image or label array, splits of different shapes).
    """
    with _open_array_file(path, expect_npz=True) as archive:
        keys = list(archive.files)
        if any(s in keys for s in SPLITS):
            per_split = _npz_splits(archive, keys, path, image_size)
        else:
            per_split = _npz_single(archive, keys, path, image_size)
    shapes = {s: x.shape[1:] for s, (x, _) in per_split.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{s!r} is {shape}" for s, shape in shapes.items())
        hint = (" Pass image_size (CLI: --image-size) to centre-crop and resize "
                "them to one size." if len({sh[2] for sh in shapes.values()}) == 1 else "")
        raise ValueError(f"{path!r}: the splits have different image shapes (H, W, C): "
                         f"{listed}.{hint}")
    return freeze(per_split, per_split["train"][0].shape[1:], _num_classes(per_split))


def _npz_splits(archive, keys, path, image_size):
    missing = [s for s in SPLITS if s not in keys]
    if missing:
        raise ValueError(f"{path!r} has split key(s) "
                         f"{', '.join(repr(s) for s in SPLITS if s in keys)} but not "
                         f"{', '.join(repr(s) for s in missing)}: give all three splits, "
                         "or a single array under 'images' to split it 80/10/10.")
    label_keys = [f"{s}_labels" for s in SPLITS]
    present = [k for k in label_keys if k in keys]
    if present and len(present) != len(label_keys):
        absent = [k for k in label_keys if k not in keys]
        raise ValueError(f"{path!r} has {', '.join(map(repr, present))} but not "
                         f"{', '.join(map(repr, absent))}: label every split or none.")
    extra = [k for k in keys if k not in SPLITS and k not in label_keys]
    if extra:
        raise ValueError(f"{path!r} has unexpected key(s) {', '.join(map(repr, extra))}; "
                         f"expected {_NPZ_LAYOUTS}.")
    per_split = {}
    for split in SPLITS:
        where = f"{path}['{split}']"
        images = _check_images(_npz_member(archive, split, path), where)
        labels = None
        if present:
            labels = _check_labels(_npz_member(archive, f"{split}_labels", path),
                                   len(images), f"{path}['{split}_labels']")
        per_split[split] = (_resize_arrays(images, image_size), labels)
    return per_split


def _npz_single(archive, keys, path, image_size):
    image_keys = [k for k in ("images", "x") if k in keys]
    label_keys = [k for k in ("labels", "y") if k in keys]
    for found, what in ((image_keys, "image"), (label_keys, "label")):
        if len(found) > 1:
            raise ValueError(f"{path!r} has both {found[0]!r} and {found[1]!r}; keep one "
                             f"{what} array.")
    if image_keys:
        image_key = image_keys[0]
    else:
        rest = [k for k in keys if k not in label_keys]
        if len(rest) != 1:
            raise ValueError(f"{path!r} has key(s) {', '.join(map(repr, keys)) or 'none'}; "
                             f"expected {_NPZ_LAYOUTS}.")
        image_key = rest[0]
    extra = [k for k in keys if k != image_key and k not in label_keys]
    if extra:
        raise ValueError(f"{path!r} has unexpected key(s) {', '.join(map(repr, extra))} "
                         f"besides the images {image_key!r}; expected {_NPZ_LAYOUTS}.")
    images = _check_images(_npz_member(archive, image_key, path), f"{path}['{image_key}']")
    labels = None
    if label_keys:
        labels = _check_labels(_npz_member(archive, label_keys[0], path), len(images),
                               f"{path}['{label_keys[0]}']")
    return split_collection(_resize_arrays(images, image_size), labels)
