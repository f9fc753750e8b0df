"""Your own images: a folder of PNG/JPEG files, or a ``.npy``/``.npz`` array.

A dataset given by path (see `is_path`) is read once into memory (cached for
the life of the process, refreshed when a file changes) and served with the
same pipeline conventions as the built-in datasets: uint8 pixels reduced to
``n_bits`` and yielded as float32 integer values in ``[0, 2**n_bits)``.

Sources:

* **A folder** of ``.png``, ``.jpg`` or ``.jpeg`` files (extension case does
  not matter; read with Pillow). Only the files directly inside are read,
  sorted by file name (Python string order); hidden files (names starting
  with ``'.'``), other extensions and other subfolders are ignored. If the
  folder has a subfolder ``train``, ``validation`` or ``test``, it must have
  all three, they are the splits, and the folder itself must not hold images.
  Pixel modes: grayscale (``L``, ``1``, and ``LA`` with its alpha dropped)
  gives 1 channel; RGB (``RGB``, and ``RGBA``/``RGBX``/``CMYK``/``YCbCr``/
  palette ``P``/``PA`` converted to RGB, alpha dropped, not composited)
  gives 3 channels. A folder mixing the two kinds is an error, as are 16-bit
  and floating-point images. An EXIF orientation tag is applied, so images
  come out upright as viewers show them.
* **A .npy file**: uint8 ``[N, H, W]`` or ``[N, H, W, C]`` with ``C`` 1 or
  3 (any integer dtype is accepted when every value is in ``0..255``).
* **A .npz file** holding either the three splits under keys ``train``,
  ``validation`` and ``test`` (optionally labelled by ``train_labels``,
  ``validation_labels`` and ``test_labels``), or one image array under key
  ``images`` or ``x`` (or its only non-label key), optionally labelled by
  ``labels`` or ``y``. Labels are integers ``>= 0``, one per image; with
  labels, ``num_classes = max(label) + 1``.

Splits of a single collection (a flat folder, a ``.npy`` file, or a
single-array ``.npz``) of ``N`` images, in a fixed pseudo-random order::

    perm = np.random.default_rng(0).permutation(N)
    n = N // 10, but at least 1 when N >= 3
    test = perm[:n]; validation = perm[n:2 * n]; train = perm[2 * n:]

so 10% test, 10% validation, 80% train. The assignment depends only on
``N`` and the sorted file names, so it is the same on every run; with
``skip_bad=True`` skipped files change ``N`` and so the split.

Image size: all images must have the same size unless ``image_size=S`` is
given; then every image (folder or array) is centre-cropped to its largest
square and resized to ``S x S`` with an antialiased bilinear filter, rounded
back to 8 bits (as `tfp_flows.data.tfds_images.center_crop_resize`, the
CelebA preprocessing). Images already ``S x S`` are left untouched.

Errors name the file or folder and the problem: a missing path raises
FileNotFoundError; anything unreadable or inconsistent raises ValueError.
Corrupt or truncated image files are errors too, unless ``skip_bad=True``,
which skips them with a warning listing them. Nothing else is skipped.

This module recognises paths, dispatches and caches; the readers are
`tfp_flows.data.image_folder` (folders) and `tfp_flows.data.image_arrays`
(``.npy``/``.npz``), on `tfp_flows.data.image_data` (the split rule, crop and
resize, and the ``ImageData`` record they return).
"""

import functools
import os
import warnings

import numpy as np
import tensorflow as tf

from tfp_flows.data import common, image_arrays, image_folder
from tfp_flows.data.image_data import SPLITS
from tfp_flows.data.image_folder import IMAGE_EXTENSIONS

__all__ = ["IMAGE_EXTENSIONS", "SPLITS", "is_path", "info", "load", "arrays"]

_ARRAY_EXTENSIONS = (".npy", ".npz")


# --------------------------------------------------------------------------
# Path recognition
# --------------------------------------------------------------------------

def _reserved_names():
    """Names of the built-in datasets, which are never paths."""
    # Imported here: these modules may one day import this one.
    from tfp_flows.data import tfds_images, toy2d  # pylint: disable=import-outside-toplevel

    return (frozenset(("digits",)) | frozenset(getattr(toy2d, "DATASETS", ()))
            | frozenset(getattr(tfds_images, "DATASETS", ()))
            | frozenset(getattr(tfds_images, "ALIASES", {})))


def is_path(name: str | os.PathLike) -> bool:
    """Whether a dataset name is the path of your own data.

    True for an existing directory, for any name ending in ``.npy`` or
    ``.npz`` (existing or not; loading a missing one raises
    FileNotFoundError), and for any name containing a path separator. A
    built-in dataset name such as ``'mnist'`` or ``'digits'`` is never a path,
    even when a directory of that name exists; write ``'./mnist'`` for it.

    Args:
      name: dataset name or path (str or `os.PathLike`).

    Returns:
      bool.
    """
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if not isinstance(name, str) or not name.strip():
        return False
    if name.strip().lower().replace("-", "_") in _reserved_names():
        return False  # e.g. tfds' 'downsampled_imagenet/32x32'
    if name.lower().endswith(_ARRAY_EXTENSIONS):
        return True
    if os.sep in name or (os.altsep is not None and os.altsep in name):
        return True
    return os.path.isdir(name)


# --------------------------------------------------------------------------
# Cached reads (the fingerprint, only part of the key, notices changed files)
# --------------------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def _read_folder(folder, layout, fingerprint, image_size, skip_bad):
    del fingerprint
    return image_folder.read_folder(folder, layout, image_size, skip_bad)


@functools.lru_cache(maxsize=4)
def _read_npy(path, fingerprint, image_size):
    del fingerprint
    return image_arrays.read_npy(path, image_size)


@functools.lru_cache(maxsize=4)
def _read_npz(path, fingerprint, image_size):
    del fingerprint
    return image_arrays.read_npz(path, image_size)


# --------------------------------------------------------------------------
# Dispatch and public interface
# --------------------------------------------------------------------------

def _check_path(path: str | os.PathLike) -> str:
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str) or not path:
        raise ValueError(f"path must be a non-empty string or os.PathLike, got {path!r}.")
    return os.path.normpath(path)


def _check_split(path, split):
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} for {path!r}; valid splits: "
                         f"{', '.join(SPLITS)}.")


def _read(path, image_size, skip_bad):
    """The cached `image_data.ImageData` of ``path``; warns about skipped files."""
    path = _check_path(path)
    if image_size is not None:
        image_size = common.check_positive_int(image_size, "image_size")
    if os.path.isdir(path):
        layout = image_folder.folder_layout(path)
        data = _read_folder(path, layout, image_folder.fingerprint(layout), image_size,
                            bool(skip_bad))
    elif not os.path.exists(path):
        raise FileNotFoundError(f"no such file or folder: {path!r} (absolute path "
                                f"{os.path.abspath(path)!r}).")
    else:
        ext = os.path.splitext(path)[1].lower()
        if ext not in _ARRAY_EXTENSIONS:
            what = ("a single image" if ext in IMAGE_EXTENSIONS
                    else f"a file of unsupported type {ext or '(no extension)'!r}")
            raise ValueError(f"{path!r} is {what}; give a folder of "
                             f"{', '.join(IMAGE_EXTENSIONS)} images, or a .npy or .npz "
                             "file.")
        st = os.stat(path)
        reader = _read_npy if ext == ".npy" else _read_npz
        data = reader(path, (st.st_mtime_ns, st.st_size), image_size)
    if data.skipped:
        warnings.warn(f"{path}: skipped {len(data.skipped)} unreadable image file(s) "
                      f"(skip_bad=True): {image_folder.list_skipped(data.skipped)}.",
                      stacklevel=3)
    return data


def arrays(path: str | os.PathLike, split: str, image_size: int | None = None,
           skip_bad: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """The images (and labels) of one split of your own data.

    Args:
      path: a folder of images, or a ``.npy``/``.npz`` file.
      split: ``'train'``, ``'validation'`` or ``'test'``.
      image_size: None keeps the native size (all images must share it), or
        an int ``S``: centre-crop to a square and resize to ``S x S``.
      skip_bad: skip corrupt or truncated image files with a warning instead
        of raising.

    Returns:
      ``(images, labels)``: read-only uint8 ``[N, H, W, C]`` with ``C`` 1
      or 3, and read-only int32 ``[N]`` labels, or None when the data has
      no labels. A flat collection of fewer than 3 images has empty
      ``'validation'`` and ``'test'`` splits (``N = 0``).

    Raises:
      FileNotFoundError: the path does not exist.
      ValueError: naming the file and the problem (unknown split, corrupt
        file, wrong dtype, rank, shape or range, mixed sizes or kinds).
    """
    path = _check_path(path)
    _check_split(path, split)
    return _read(path, image_size, skip_bad).splits[split]


def info(path: str | os.PathLike, n_bits: int = 8, image_size: int | None = None, *,
         skip_bad: bool = False) -> common.DatasetInfo:
    """`DatasetInfo` of your own data (reads it, through the cache).

    Args:
      path: a folder of images, or a ``.npy``/``.npz`` file.
      n_bits: bit depth kept, 1..8 (``num_bins = 2**n_bits``).
      image_size: None, or the side ``S`` of the centre-cropped, resized
        ``S x S`` images.
      skip_bad: skip corrupt or truncated image files (see `arrays`).

    Returns:
      A `DatasetInfo` with ``name`` the normalised path, ``kind='image'``,
      ``shape=(H, W, C)``, ``num_classes`` (``max label + 1``, or None
      without labels) and ``source='files:<absolute path>'``.

    Raises:
      FileNotFoundError, ValueError: as `arrays`; also a bad n_bits.
    """
    n_bits = common.check_n_bits(n_bits)
    path = _check_path(path)
    data = _read(path, image_size, skip_bad)
    return common.DatasetInfo(
        name=path, kind="image", shape=data.shape, num_bins=2 ** n_bits, n_bits=n_bits,
        num_classes=data.num_classes, splits=SPLITS,
        source=f"files:{os.path.abspath(path)}")


def load(path: str | os.PathLike, split: str, *, batch_size: int, n_bits: int = 8,
         image_size: int | None = None, with_labels: bool = False,
         dequantize: bool = False, shuffle: bool | None = None,
         shuffle_buffer: int | None = None, seed: int | None = None,
         drop_remainder: bool | None = None, skip_bad: bool = False) -> tf.data.Dataset:
    """Pipeline over your own images; see `tfp_flows.data.load`.

    Args:
      path: a folder of images, or a ``.npy``/``.npz`` file.
      split: ``'train'``, ``'validation'`` or ``'test'``.
      batch_size: examples per batch (int > 0).
      n_bits: bit depth kept, 1..8: pixels become ``floor(x / 2**(8 - n_bits))``.
      image_size: None, or the side ``S`` of centre-cropped, resized images.
      with_labels: yield ``(images, labels)``; the data must have labels.
      dequantize: add ``U[0, 1)`` noise to every pixel.
      shuffle: default True for ``'train'`` only.
      shuffle_buffer: default the whole split.
      seed: None or int, fixing the shuffle order and the noise.
      drop_remainder: default as ``shuffle``.
      skip_bad: skip corrupt or truncated image files (see `arrays`).

    Returns:
      `tf.data.Dataset` of float32 ``[B, H, W, C]`` batches with integer
      values in ``[0, 2**n_bits)``, or ``(images, int32 labels [B])``.

    Raises:
      FileNotFoundError, ValueError: as `arrays`; also bad arguments,
        labels requested from unlabelled data, or an empty split.
    """
    n_bits = common.check_n_bits(n_bits)
    batch_size = common.check_positive_int(batch_size, "batch_size")
    if shuffle_buffer is not None:
        shuffle_buffer = common.check_positive_int(shuffle_buffer, "shuffle_buffer")
    seed = common.check_seed(seed)
    path = _check_path(path)
    images, labels = arrays(path, split, image_size, skip_bad)
    if with_labels and labels is None:
        raise ValueError(f"{path!r} has no class labels; use with_labels=False (labels "
                         "come from an .npz key 'labels'/'y' or '<split>_labels').")
    if len(images) == 0:
        raise ValueError(f"split {split!r} of {path!r} is empty: fewer than 3 images "
                         "give no validation or test examples; add images.")
    return common.from_arrays(
        images, labels, split, with_labels=with_labels, batch_size=batch_size,
        shuffle=shuffle, shuffle_buffer=shuffle_buffer, seed=seed,
        drop_remainder=drop_remainder, dequantize=dequantize, n_bits=n_bits)
