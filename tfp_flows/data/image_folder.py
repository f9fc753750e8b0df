"""Your own images from a folder of PNG/JPEG files (read with Pillow).

Scans a folder, flat or with ``train``/``validation``/``test`` subfolders,
decodes every image upright (EXIF orientation applied) to 1-channel
grayscale or 3-channel RGB, checks that the images agree in kind and size (or
centre-crops and resizes them to ``image_size``), and skips corrupt files
only with ``skip_bad=True``. The rules are documented in
`tfp_flows.data.files`, which caches what `read_folder` returns.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TypeAlias

import numpy as np

from tfp_flows.data.image_data import SPLITS, ImageData, crop_resize, freeze, split_collection

__all__ = ["IMAGE_EXTENSIONS", "Layout", "folder_layout", "fingerprint", "read_folder",
           "list_skipped"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")

Layout: TypeAlias = tuple[tuple[str | None, tuple[str, ...]], ...]
"""``((split, (file, ...)), ...)``: the image files of a folder, sorted by
name, under the split ``None`` for a flat folder (one collection, split by
the fixed rule), or under each of `SPLITS` for split subfolders."""

_GRAY_MODES = frozenset({"1", "L", "LA", "La"})
_RGB_MODES = frozenset({"RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "P", "PA"})
_MAX_LISTED = 10


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


def folder_layout(folder: str) -> Layout:
    """The image files of a folder, by split.

    Args:
      folder: path of an existing folder.

    Returns:
      The folder's `Layout`.

    Raises:
      ValueError: no images (in the folder or a split subfolder), only some
        of the split subfolders, or images beside the split subfolders.
    """
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
    layout: list[tuple[str | None, tuple[str, ...]]] = []
    for split in SPLITS:
        sub = os.path.join(folder, split)
        files, sub_others = _scan(sub)
        if not files:
            raise _no_images_error(sub, sub_others, what="split folder")
        layout.append((split, tuple(files)))
    return tuple(layout)


def fingerprint(layout: Layout) -> tuple[tuple[int, int], ...]:
    """Modification times and sizes, so a cache notices changed files.

    Args:
      layout: a `Layout` from `folder_layout`.

    Returns:
      ``((st_mtime_ns, st_size), ...)``, one pair per file, in layout order.
    """
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


def read_folder(folder: str, layout: Layout, image_size: int | None,
                skip_bad: bool) -> ImageData:
    """Reads the images of a folder into memory (uncached).

    Args:
      folder: the folder, as named in error messages.
      layout: its `Layout`, from `folder_layout`.
      image_size: None keeps the native size (all images must share it), or
        an int ``S``: centre-crop each image to a square, resize to ``S x S``.
      skip_bad: skip corrupt or truncated files (listed in ``skipped``)
        instead of raising.

    Returns:
      The `ImageData`: uint8 ``[N, H, W, C]`` images, ``C`` 1 or 3, without
      labels; a flat folder is split by `tfp_flows.data.image_data.split_indices`.

    Raises:
      ValueError: a corrupt file (without ``skip_bad``), an unsupported
        Pillow mode, grayscale mixed with RGB, different sizes without
        ``image_size``, or no readable image in a split.
    """
    per_split: dict[str | None, list[np.ndarray]] = {}
    skipped: list[tuple[str, str]] = []
    first_of_kind: dict[str, tuple[str, str]] = {}  # "grayscale"/"RGB" -> (file, mode)
    first_size: tuple[str, tuple[int, ...]] | None = None   # (file, (H, W))
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
                array = crop_resize(array[None], image_size)[0]
            arrays_.append(array)
        per_split[split] = arrays_
    for split, arrays_ in per_split.items():
        if not arrays_:
            where = folder if split is None else os.path.join(folder, split)
            raise ValueError(
                f"no readable images in {where!r}: all {len(skipped)} image file(s) "
                f"were skipped as unreadable ({list_skipped(skipped)}).")
    if None in per_split:
        out = split_collection(np.stack(per_split[None]), None)
    else:
        out = {s: (np.stack(per_split[s]), None) for s in SPLITS}
    return freeze(out, out["train"][0].shape[1:], None, skipped)


def list_skipped(skipped: Sequence[tuple[str, str]]) -> str:
    """The skipped files and reasons for a message, at most 10 of them.

    Args:
      skipped: ``((file, reason), ...)``.

    Returns:
      ``'file (reason); ...'``, ending ``'and K more'`` beyond 10 files.
    """
    names = [f"{f} ({reason})" for f, reason in skipped[:_MAX_LISTED]]
    if len(skipped) > _MAX_LISTED:
        names.append(f"and {len(skipped) - _MAX_LISTED} more")
    return "; ".join(names)
