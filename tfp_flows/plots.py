"""Pictures of flows: image grids (arrays and PNG files), interpolation
strips and training curves.

Drawing uses matplotlib's Agg canvas directly (no global backend switch, no
display needed) and Pillow for image grids.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from tfp_flows.typing import PathLike, TensorLike

__all__ = ["image_grid", "save_image_grid", "save_training_curve"]

# Intensity of the lines between grid cells, as a fraction of white.
_GAP_LEVEL = 0.35


def image_grid(images: TensorLike, num_bins: float, num_cols: int | None = None) -> np.ndarray:
    """Tiles a batch of images into one uint8 picture.

    Pixel values in ``[0, num_bins)`` (as sampled, continuous) are floored,
    clipped and mapped linearly to ``[0, 255]``.

    Args:
      images: ``[N, H, W, C]`` with C in {1, 3}, pixel units.
      num_bins: number of intensity levels of the model.
      num_cols: images per row (default: ceil(sqrt(N))).

    Returns:
      uint8 array ``[rows * H, num_cols * W, C]``; empty cells are black.
    """
    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError("image_grid needs images [N, H, W, C] with C = 1 or "
                         f"3; got shape {images.shape}.")
    n, h, w, c = images.shape
    if n == 0:
        raise ValueError("image_grid got an empty batch.")
    num_bins = float(num_bins)
    if not num_bins >= 2:
        raise ValueError(f"num_bins must be >= 2, got {num_bins}.")
    cols = int(num_cols or int(np.ceil(np.sqrt(n))))
    rows = int(np.ceil(n / cols))
    levels = np.clip(np.floor(np.nan_to_num(images, nan=0.0)), 0, num_bins - 1)
    pixels = np.round(levels * (255.0 / (num_bins - 1))).astype(np.uint8)
    grid = np.zeros((rows * h, cols * w, c), np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        grid[r * h:(r + 1) * h, k * w:(k + 1) * w] = pixels[i]
    return grid


def _upscale(grid, min_size):
    """Nearest-neighbour upscaling by an integer factor so that the longer
    side reaches at least ``min_size`` pixels (tiny 8x8 digits stay sharp)."""
    factor = max(1, int(np.ceil(min_size / max(grid.shape[:2]))))
    return np.repeat(np.repeat(grid, factor, axis=0), factor, axis=1)


def save_image_grid(images: TensorLike, num_bins: float, path: PathLike,
                    num_cols: int | None = None, min_size: int = 256,
                    gap: bool = True) -> np.ndarray:
    """Saves images in pixel units as one PNG grid.

    Args:
      images: ``[N, H, W, C]`` (C in {1, 3}), values in ``[0, num_bins)``
        (continuous samples are floored to their bin).
      num_bins: the model's number of intensity levels.
      path: output ``.png`` file (its folder is created).
      num_cols: images per row (default ``ceil(sqrt(N))``).
      min_size: upscale (nearest neighbour) until the longer side has at
        least this many pixels.
      gap: separate the images by a one-pixel grey line (before upscaling):
        image ``i`` then starts at ``1 + i * (H + 1)``.

    Returns:
      The uint8 array that was written, ``[rows, cols, C]``.
    """
    from PIL import Image  # pylint: disable=import-outside-toplevel

    images = np.asarray(images, dtype=np.float64)
    grey = _GAP_LEVEL * (float(num_bins) - 1)
    if gap:  # a line above and left of every image, then below and right
        images = np.pad(images, ((0, 0), (1, 0), (1, 0), (0, 0)),
                        constant_values=grey)
    grid = image_grid(images, num_bins, num_cols)
    if gap:
        grid = np.pad(grid, ((0, 1), (0, 1), (0, 0)), constant_values=grid[0, 0, 0])
    grid = _upscale(grid, min_size)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)
    return grid


def save_training_curve(history: Sequence[Mapping[str, Any]], path: PathLike,
                        title: str = "", selected_epoch: int | None = None) -> None:
    """Plots bits/dim per epoch (train and validation) into a PNG.

    Args:
      history: list of dicts with ``epoch``, ``train_bits_per_dim`` and
        ``validation_bits_per_dim`` (either may be None).
      path: output ``.png`` file.
      title: plot title.
      selected_epoch: the epoch chosen on validation, marked on the plot.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
    from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for key, label in (("train_bits_per_dim", "train"),
                       ("validation_bits_per_dim", "validation")):
        points = [(h["epoch"], h[key]) for h in history
                  if h.get(key) is not None and np.isfinite(h[key])]
        if points:
            x, y = zip(*points)
            ax.plot(x, y, marker="." if len(points) < 30 else None, label=label)
    chosen = next((h for h in history if h["epoch"] == selected_epoch), None)
    value = None if chosen is None else chosen.get("validation_bits_per_dim")
    if value is not None and selected_epoch is not None:
        ax.axvline(selected_epoch, color="grey", linewidth=0.5, linestyle=":")
        ax.annotate(f"epoch {selected_epoch}: validation {value:.3f}",
                    (selected_epoch, value), textcoords="offset points",
                    xytext=(-150, 12))
    ax.set_xlabel("epoch")
    ax.set_ylabel("bits/dim (dequantised)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
