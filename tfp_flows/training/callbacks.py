"""Keras callbacks for flow training: sample grids (PNG and TensorBoard) and
Glow's linear learning-rate warmup."""

from __future__ import annotations

import os
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from tfp_flows import evaluation, flow_ops
from tfp_flows.plots import image_grid
from tfp_flows.typing import PathLike, TensorLike

__all__ = ["write_image_summary", "SampleGrid",
           "TensorBoardSamples", "LinearWarmup"]


def write_image_summary(tag: str, image: TensorLike, step: int | tf.Tensor) -> bool | tf.Tensor:
    """Writes one uint8 image ``[H, W, C]`` as a TensorBoard image summary.

    The same record as ``tf.summary.image`` (a string tensor ``[width,
    height, png]`` tagged for TensorBoard's "images" plugin), written with
    core TF only: ``tf.summary.image`` needs the `tensorboard` package.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError("write_image_summary needs a uint8 image [H, W, C], "
                         f"got {image.dtype} {image.shape}.")
    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = "images"  # ImagePluginData v0: empty
    tensor = tf.stack([tf.as_string(image.shape[1]),
                       tf.as_string(image.shape[0]),
                       tf.io.encode_png(image)])
    return tf.summary.write(tag, tensor, step=step, metadata=metadata)


class _Sampler(keras.callbacks.Callback):
    """Shared part: draw a fixed-seed sample grid from the model's flow."""

    def __init__(self, num_samples: int, temperature: float, seed: int,
                 every_n_epochs: int) -> None:
        super().__init__()
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
        temperature = evaluation.check_temperature(temperature)
        if int(every_n_epochs) < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}.")
        self.num_samples = int(num_samples)
        self.temperature = float(temperature)
        self.seed = seed
        self.every_n_epochs = int(every_n_epochs)

    def _due(self, epoch):
        return (epoch + 1) % self.every_n_epochs == 0

    def _grid(self):
        dist = self.model.distribution
        bins = flow_ops.num_bins(dist)
        if bins is None:
            raise ValueError("sample grids need an image model with num_bins "
                             "in its description (tfp_flows.models builders).")
        # A stateless seed (a pair): the same base noise at every epoch.
        seed = (0, int(self.seed))
        with self.model.distribute_strategy.scope():
            x = flow_ops.sample(dist, self.num_samples, self.temperature,
                                seed=seed)
        return image_grid(np.asarray(x), bins)


class SampleGrid(_Sampler):
    """Saves a PNG grid of samples at a chosen temperature after each epoch.

    Uses a fixed stateless seed ``(0, seed)``, so successive files show the
    same base noise decoded by the model as it trains. Under several workers,
    give non-chief workers another directory (as for `ModelCheckpoint`).

    Args:
      directory: where to write ``samples_epoch{epoch:04d}.png`` (1-based).
      num_samples: images in the grid.
      temperature: scale of the base noise (Glow used 0.7).
      seed: int; the base noise is drawn with the stateless seed
        ``(0, seed)``.
      every_n_epochs: write every this many epochs.
    """

    def __init__(self, directory: PathLike, num_samples: int = 16,
                 temperature: float = 0.7, seed: int = 0, every_n_epochs: int = 1) -> None:
        super().__init__(num_samples, temperature, seed, every_n_epochs)
        self.directory = os.fspath(directory)
        self.paths: list[str] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if not self._due(epoch):
            return
        from PIL import Image  # pylint: disable=import-outside-toplevel
        os.makedirs(self.directory, exist_ok=True)
        grid = self._grid()
        path = os.path.join(self.directory, f"samples_epoch{epoch + 1:04d}.png")
        Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)
        self.paths.append(path)


class TensorBoardSamples(_Sampler):
    """Writes a sample grid as a TensorBoard image summary after each epoch.

    The tag is ``samples/temperature_<T>`` and the step the 1-based epoch.
    Use the same `log_dir` as `keras.callbacks.TensorBoard` to see both.

    Args:
      log_dir: TensorBoard log directory (a ``samples`` subdirectory is used).
      num_samples, temperature, seed, every_n_epochs: as in `SampleGrid`.
    """

    def __init__(self, log_dir: PathLike, num_samples: int = 16,
                 temperature: float = 0.7, seed: int = 0, every_n_epochs: int = 1) -> None:
        super().__init__(num_samples, temperature, seed, every_n_epochs)
        self.log_dir = os.path.join(os.fspath(log_dir), "samples")
        self._writer: Any = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if not self._due(epoch):
            return
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        grid = self._grid()
        with self._writer.as_default():
            write_image_summary(f"samples/temperature_{self.temperature:g}",
                                grid, step=epoch + 1)
        self._writer.flush()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class LinearWarmup(keras.callbacks.Callback):
    """Glow's linear learning-rate warmup (Kingma & Dhariwal, 2018, code).

    Before each batch::

        lr(step) = peak_learning_rate * min(1, (step + 1) / warmup_steps)

    where ``step`` is ``optimizer.iterations`` (restored on resume, so a
    resumed run continues the same schedule). After the warmup the rate
    stays at the peak.

    Args:
      peak_learning_rate: the rate reached after the warmup.
      warmup_steps: number of optimizer steps of the ramp (Glow: the steps of
        10 epochs).
    """

    def __init__(self, peak_learning_rate: float, warmup_steps: int) -> None:
        super().__init__()
        if not float(peak_learning_rate) > 0:
            raise ValueError("peak_learning_rate must be > 0, got "
                             f"{peak_learning_rate}.")
        if int(warmup_steps) < 1:
            raise ValueError(f"warmup_steps must be >= 1, got {warmup_steps}.")
        self.peak_learning_rate = float(peak_learning_rate)
        self.warmup_steps = int(warmup_steps)

    def rate(self, step: int) -> float:
        """The learning rate before optimizer step `step` (0-based)."""
        return self.peak_learning_rate * min(1.0, (step + 1) / self.warmup_steps)

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        step = int(self.model.optimizer.iterations.numpy())
        self.model.optimizer.learning_rate = self.rate(step)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None:
            logs["learning_rate"] = float(
                keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
