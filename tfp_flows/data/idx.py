"""MNIST and Fashion-MNIST from their original IDX files on disk.

Both datasets ship as four IDX files with the same names::

    train-images-idx3-ubyte   train-labels-idx1-ubyte     60,000 examples
    t10k-images-idx3-ubyte    t10k-labels-idx1-ubyte      10,000 examples

each optionally gzip-compressed (``.gz``). IDX is a big-endian int32 magic
number (2051 for images, 2049 for labels), then one int32 size per axis
(count, rows, cols for images; count for labels), then the uint8 values.

Splits (the convention of the classic ``mnist.pkl.gz``): ``'train'`` is the
first 50,000 training images, ``'validation'`` the last 10,000, ``'test'`` the
10,000 ``t10k`` images. (Files with another number of training images hold
out their last sixth, which is 10,000 of 60,000.)
"""

from __future__ import annotations

import functools
import gzip
import os
import struct

import numpy as np

from tfp_flows.typing import PathLike

__all__ = ["FILES", "SPLITS", "read_idx", "find_file", "arrays", "validation_size"]

# part -> (images file, labels file), without the optional .gz suffix
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
SPLITS = ("train", "validation", "test")

_MAGIC = {3: 2051, 1: 2049}  # rank -> magic number (uint8 data)


def read_idx(path: PathLike, rank: int | None = None) -> np.ndarray:
    """Reads one uint8 IDX file (plain or gzip-compressed).

    Args:
      path: file path; gzip is recognised by its content, not its name.
      rank: expected number of axes (3 for images, 1 for labels), or None.

    Returns:
      A read-only uint8 numpy array with the file's shape.

    Raises:
      ValueError: naming the file, for a bad magic number, an unexpected
        rank, a data size that disagrees with the header (truncated or
        padded file), or a broken gzip stream.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path}: broken gzip stream ({e}); the file is "
                             "truncated or corrupt, download it again.") from None
    if len(raw) < 4:
        raise ValueError(f"{path}: not an IDX file ({len(raw)} bytes, shorter "
                         "than the 4-byte magic number).")
    (magic,) = struct.unpack(">i", raw[:4])
    ndim, dtype_code = magic & 0xFF, (magic >> 8) & 0xFF
    if magic >> 16 != 0 or dtype_code != 0x08 or not 1 <= ndim <= 4:
        raise ValueError(f"{path}: bad IDX magic number {magic} (uint8 images "
                         f"are {_MAGIC[3]}, labels {_MAGIC[1]}).")
    if rank is not None and ndim != rank:
        raise ValueError(f"{path}: an IDX file of rank {ndim} (magic {magic}); "
                         f"expected rank {rank} (magic {_MAGIC.get(rank)}).")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes, "
                         f"{header} needed).")
    shape = struct.unpack(f">{ndim}i", raw[4:header])
    if any(s < 0 for s in shape):
        raise ValueError(f"{path}: negative size in the IDX header {shape}.")
    size = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != size:
        what = "truncated" if len(raw) - header < size else "longer than its header says"
        raise ValueError(f"{path}: {what}: the header gives shape "
                         f"{tuple(shape)} ({size} bytes of data), the file "
                         f"holds {len(raw) - header}.")
    array = np.frombuffer(raw, np.uint8, count=size, offset=header).reshape(shape)
    array.setflags(write=False)
    return array


def find_file(data_dir: PathLike, name: str) -> str:
    """The path of IDX file `name` (or ``name.gz``) in `data_dir`.

    Raises:
      FileNotFoundError: naming the folder and the file names looked for.
    """
    for candidate in (name, name + ".gz"):
        path = os.path.join(data_dir, candidate)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"{name}[.gz] not found in {data_dir}.")


@functools.lru_cache(maxsize=8)
def _part(data_dir, part, mtimes):
    del mtimes  # part of the cache key: a replaced file is read again
    images_name, labels_name = FILES[part]
    images_path = find_file(data_dir, images_name)
    labels_path = find_file(data_dir, labels_name)
    images = read_idx(images_path, rank=3)
    labels = read_idx(labels_path, rank=1)
    if len(images) != len(labels):
        raise ValueError(f"{images_path} holds {len(images)} images but "
                         f"{labels_path} {len(labels)} labels.")
    return images[..., None], labels.astype(np.int32)


def _mtimes(data_dir, part):
    out: list[float | None] = []
    for name in FILES[part]:
        try:
            out.append(os.path.getmtime(find_file(data_dir, name)))
        except FileNotFoundError:
            out.append(None)
    return tuple(out)


def validation_size(num_train_files: int) -> int:
    """Images held out for validation from the end of the training files:
    a sixth of them (10,000 of MNIST's 60,000)."""
    return num_train_files // 6


def arrays(data_dir: PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one split, read from the IDX files in `data_dir`.

    Args:
      data_dir: folder holding the four IDX files (original names, gzip or not).
      split: ``'train'`` (the first 50,000 training images),
        ``'validation'`` (the last 10,000) or ``'test'`` (``t10k``).

    Returns:
      ``(images, labels)``: read-only uint8 ``[N, H, W, 1]`` and int32 ``[N]``.

    Raises:
      FileNotFoundError: a file is missing (the message names it).
      ValueError: an unknown split, or a corrupt file (named).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}.")
    data_dir = os.fspath(data_dir)
    part = "t10k" if split == "test" else "train"
    images, labels = _part(data_dir, part, _mtimes(data_dir, part))
    if split == "test":
        return images, labels
    cut = len(images) - validation_size(len(images))
    if split == "train":
        return images[:cut], labels[:cut]
    return images[cut:], labels[cut:]
