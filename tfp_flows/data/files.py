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
"""

import functools
import os
import warnings
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from tfp_flows.data import common

__all__ = ["IMAGE_EXTENSIONS", "SPLITS", "is_path", "info", "load", "arrays"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
SPLITS = ("train", "validation", "test")

_ARRAY_EXTENSIONS = (".npy", ".npz")
_GRAY_MODES = frozenset({"1", "L", "LA", "La"})
_RGB_MODES = frozenset({"RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "P", "PA"})
_MAX_LISTED = 10


class _Data(NamedTuple):
    splits: dict        # split -> (uint8 [N, H, W, C], int32 [N] or None)
    shape: tuple        # (H, W, C)
    num_classes: int | None
    skipped: tuple      # ((file, reason), ...) with skip_bad=True


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
# Shared array helpers
# --------------------------------------------------------------------------

def _split_indices(n):
    """``{split: indices}`` of the fixed 10/10/80 split of ``n`` examples."""
    k = n // 10
    if n >= 3:
        k = max(k, 1)
    perm = np.random.default_rng(0).permutation(n)
    return {"test": perm[:k], "validation": perm[k:2 * k], "train": perm[2 * k:]}


def _crop_resize(images, size):
    """Centre-crops uint8 ``[N, H, W, C]`` to squares, resizes to ``size``.

    The batched equivalent of `tfds_images.center_crop_resize`: largest
    central square, antialiased bilinear resize in float32, rounded and
    clipped back to uint8. Returns uint8 ``[N, size, size, C]``.
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


def _finish(per_split, shape, num_classes=None, skipped=()):
    """Freezes ``{split: (images, labels)}`` into a `_Data`."""
    splits = {s: (_read_only(x), None if y is None else _read_only(y))
              for s, (x, y) in per_split.items()}
    return _Data(splits=splits, shape=tuple(int(d) for d in shape),
                 num_classes=num_classes, skipped=tuple(skipped))


def _split_collection(images, labels):
    """Splits one collection with the fixed permutation."""
    return {s: (images[i], None if labels is None else labels[i])
            for s, i in _split_indices(len(images)).items()}


def _num_classes(per_split):
    labels = [y for _, y in per_split.values() if y is not None]
    if not labels:
        return None
    sizes = [int(y.max()) for y in labels if y.size]
    return max(sizes) + 1 if sizes else None


# --------------------------------------------------------------------------
# Folders of images
# --------------------------------------------------------------------------

def _ext_list():
    return ", ".join(IMAGE_EXTENSIONS)


def _scan(folder):
    """``(image files, other file names)`` directly in ``folder``, sorted."""
    images, others = [], []
    for entry in sorted(os.listdir(folder)):
        if entry.startswith("."):
            continue
        full = os.path.join(folder, entry)
        if not os.path.isfile(full):
            continue
        if os.path.splitext(entry)[1].lower() in IMAGE_EXTENSIONS:
            images.append(full)
        else:
            others.append(entry)
    return images, others


def _no_images_error(folder, others, what="folder"):
    found = ""
    if others:
        exts = sorted({os.path.splitext(o)[1].lower() or "(none)" for o in others})
        found = (f" It holds {len(others)} other file(s) with extension(s) "
                 f"{', '.join(exts)}, which are not read.")
    return ValueError(f"{what} {folder!r} contains no images: expected files ending in "
                      f"{_ext_list()} (any case) directly inside; subfolders other than "
                      f"train/validation/test are not searched.{found}")


def _folder_layout(folder):
    """``((split or None, (file, ...)), ...)``; raises for a bad layout."""
    present = [s for s in SPLITS if os.path.isdir(os.path.join(folder, s))]
    root_images, others = _scan(folder)
    if not present:
        if not root_images:
            raise _no_images_error(folder, others)
        return ((None, tuple(root_images)),)
    missing = [s for s in SPLITS if s not in present]
    if missing:
        raise ValueError(
            f"folder {folder!r} has split subfolder(s) {', '.join(present)} but not "
            f"{', '.join(missing)}: give all three of train/, validation/ and test/, "
            "or none (then the images directly in the folder are split 80/10/10).")
    if root_images:
        raise ValueError(
            f"folder {folder!r} has train/validation/test subfolders and also "
            f"{len(root_images)} image(s) directly inside (e.g. {root_images[0]!r}), "
            "which would be ignored: move them into one of the split subfolders.")
    layout = []
    for split in SPLITS:
        sub = os.path.join(folder, split)
        files, sub_others = _scan(sub)
        if not files:
            raise _no_images_error(sub, sub_others, what="split folder")
        layout.append((split, tuple(files)))
    return tuple(layout)


def _fingerprint(layout):
    """Modification times and sizes, so the cache notices changed files."""
    stamps = []
    for _, files in layout:
        for f in files:
            st = os.stat(f)
            stamps.append((st.st_mtime_ns, st.st_size))
    return tuple(stamps)


class _BadImage(Exception):
    pass


def _decode(path):
    """``(uint8 [H, W, C], original Pillow mode)`` of one image file."""
    from PIL import Image, ImageOps  # pylint: disable=import-outside-toplevel

    try:
        img = Image.open(path)
    except Exception as e:  # Pillow raises many types for broken files.
        raise _BadImage(f"{type(e).__name__}: {e}") from None
    with img:
        try:
            img.load()
            upright = ImageOps.exif_transpose(img)
        except Exception as e:
            raise _BadImage(f"{type(e).__name__}: {e}") from None
        mode = upright.mode
        if mode in _GRAY_MODES:
            array = np.asarray(upright.convert("L"))[..., None]
        elif mode in _RGB_MODES:
            if mode in ("P", "PA"):
                upright = upright.convert("RGBA")
            array = np.asarray(upright.convert("RGB"))
        else:
            raise ValueError(
                f"image {path!r} has Pillow mode {mode!r} (e.g. 16-bit or floating-point "
                "pixels), which is not supported: save it as 8-bit grayscale or RGB.")
    return array, mode


def _kind(array):
    return "grayscale" if array.shape[-1] == 1 else "RGB"


@functools.lru_cache(maxsize=4)
def _read_folder(folder, layout, fingerprint, image_size, skip_bad):
    del fingerprint  # only part of the cache key
    per_split, skipped = {}, []
    first_of_kind: dict[str, tuple[str, str]] = {}  # "grayscale"/"RGB" -> (file, mode)
    first_size = None   # (file, (H, W))
    for split, files in layout:
        arrays_ = []
        for f in files:
            try:
                array, mode = _decode(f)
            except _BadImage as e:
                if skip_bad:
                    skipped.append((f, str(e)))
                    continue
                raise ValueError(
                    f"cannot read image {f!r}: the file is corrupt or truncated ({e}). "
                    "Remove or replace it, or pass skip_bad=True to skip unreadable "
                    "files.") from None
            first_of_kind.setdefault(_kind(array), (f, mode))
            if len(first_of_kind) > 1:
                (g, gm), (c, cm) = first_of_kind["grayscale"], first_of_kind["RGB"]
                raise ValueError(
                    f"folder {folder!r} mixes grayscale and RGB images: {g!r} is "
                    f"grayscale (mode {gm}) but {c!r} is RGB (mode {cm}). Convert all "
                    "images to one kind.")
            if image_size is None:
                if first_size is None:
                    first_size = (f, array.shape[:2])
                elif array.shape[:2] != first_size[1]:
                    (h0, w0), (h1, w1) = first_size[1], array.shape[:2]
                    raise ValueError(
                        f"images in {folder!r} have different sizes: {first_size[0]!r} "
                        f"is {w0}x{h0} but {f!r} is {w1}x{h1} (width x height). Pass "
                        "image_size (CLI: --image-size) to centre-crop and resize every "
                        "image to image_size x image_size.")
            else:
                array = _crop_resize(array[None], image_size)[0]
            arrays_.append(array)
        per_split[split] = arrays_
    for split, arrays_ in per_split.items():
        if not arrays_:
            where = folder if split is None else os.path.join(folder, split)
            raise ValueError(
                f"no readable images in {where!r}: all {len(skipped)} image file(s) "
                f"were skipped as unreadable ({_list_skipped(skipped)}).")
    if None in per_split:
        images = np.stack(per_split[None])
        out = _split_collection(images, None)
    else:
        out = {s: (np.stack(a), None) for s, a in per_split.items()}
    return _finish(out, out["train"][0].shape[1:], None, skipped)


def _list_skipped(skipped):
    names = [f"{f} ({reason})" for f, reason in skipped[:_MAX_LISTED]]
    if len(skipped) > _MAX_LISTED:
        names.append(f"and {len(skipped) - _MAX_LISTED} more")
    return "; ".join(names)


# --------------------------------------------------------------------------
# .npy / .npz arrays
# --------------------------------------------------------------------------

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


def _resize_arrays(images, image_size):
    if image_size is None or images.shape[1:3] == (image_size, image_size):
        return images
    return _crop_resize(images, image_size)


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


@functools.lru_cache(maxsize=4)
def _read_npy(path, fingerprint, image_size):
    del fingerprint
    images = _check_images(_open_array_file(path, expect_npz=False), path)
    images = _resize_arrays(images, image_size)
    return _finish(_split_collection(images, None), images.shape[1:])


def _npz_member(archive, key, path):
    try:
        return archive[key]
    except Exception as e:
        raise ValueError(f"cannot read key {key!r} of {path!r}: {type(e).__name__}: "
                         f"{e}. The archive is corrupt.") from None


_NPZ_LAYOUTS = ("keys 'train', 'validation', 'test' (optionally 'train_labels', "
                "'validation_labels', 'test_labels'), or one image array under "
                "'images' or 'x' (optionally labels under 'labels' or 'y')")


@functools.lru_cache(maxsize=4)
def _read_npz(path, fingerprint, image_size):
    del fingerprint
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
    return _finish(per_split, per_split["train"][0].shape[1:], _num_classes(per_split))


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
    return _split_collection(_resize_arrays(images, image_size), labels)


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
    """The cached `_Data` of ``path``; warns about skipped files."""
    path = _check_path(path)
    if image_size is not None:
        image_size = common.check_positive_int(image_size, "image_size")
    if os.path.isdir(path):
        layout = _folder_layout(path)
        data = _read_folder(path, layout, _fingerprint(layout), image_size, bool(skip_bad))
    elif not os.path.exists(path):
        raise FileNotFoundError(f"no such file or folder: {path!r} (absolute path "
                                f"{os.path.abspath(path)!r}).")
    else:
        ext = os.path.splitext(path)[1].lower()
        if ext not in _ARRAY_EXTENSIONS:
            what = ("a single image" if ext in IMAGE_EXTENSIONS
                    else f"a file of unsupported type {ext or '(no extension)'!r}")
            raise ValueError(f"{path!r} is {what}; give a folder of {_ext_list()} "
                             "images, or a .npy or .npz file.")
        st = os.stat(path)
        reader = _read_npy if ext == ".npy" else _read_npz
        data = reader(path, (st.st_mtime_ns, st.st_size), image_size)
    if data.skipped:
        warnings.warn(f"{path}: skipped {len(data.skipped)} unreadable image file(s) "
                      f"(skip_bad=True): {_list_skipped(data.skipped)}.", stacklevel=3)
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
