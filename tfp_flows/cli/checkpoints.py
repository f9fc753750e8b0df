"""Checkpoints of a run: the record of one intact checkpoint, and the Keras
callback that writes one at the end of every epoch (the files and their
crash safety are :class:`tfp_flows.cli.runs.RunFolder`'s)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import keras

from tfp_flows.training.guards import NaNGuard, all_finite
from tfp_flows.typing import PathLike

__all__ = ["Checkpoint", "CheckpointWriter", "CheckpointFolder", "sha256", "fsync_file"]


def fsync_file(path: PathLike) -> None:
    """Flushes a written file to disk."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def sha256(path: PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """An intact checkpoint: its epoch, weights file and manifest."""

    epoch: int
    path: str
    manifest: dict[str, Any]

    @property
    def history(self) -> list[dict[str, Any]]:
        """Per-epoch records up to this checkpoint (list of dicts)."""
        return list(self.manifest.get("history", []))

    @property
    def name(self) -> str:
        """File name of the weights."""
        return os.path.basename(self.path)


class CheckpointFolder(Protocol):
    """What `CheckpointWriter` needs of a run folder
    (:class:`tfp_flows.cli.runs.RunFolder` is one)."""

    def save_checkpoint(self, model: keras.Model, epoch: int,
                        history: Iterable[Mapping[str, Any]], keep: int = 3) -> Checkpoint:
        """Writes the weights of epoch `epoch` (1-based) and its manifest."""
        ...


class CheckpointWriter(keras.callbacks.Callback):
    """Saves a checkpoint of the run at the end of every epoch.

    Keeps the per-epoch history (train and validation bits/dim, learning
    rate) in the manifests. Nothing is saved once ``guard`` (a
    :class:`tfp_flows.training.NaNGuard`) has seen a failure, or when any
    weight is not finite: the last good checkpoint stays the latest.

    Args:
      folder: the :class:`RunFolder`.
      history: records of the epochs before this `fit` (from the checkpoint
        it resumed from).
      guard: the run's NaN guard, or None.
      keep: number of checkpoints kept.
    """

    def __init__(self, folder: CheckpointFolder, history: Iterable[dict[str, Any]] = (),
                 guard: NaNGuard | None = None, keep: int = 3) -> None:
        super().__init__()
        self.folder, self.guard, self.keep = folder, guard, int(keep)
        self.history = list(history)
        self.last: Checkpoint | None = None
        self._started: float | None = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        if self.guard is not None and self.guard.failure is not None:
            return
        if not all_finite(self.model):
            return

        def value(key):
            v = logs.get(key)
            return None if v is None else float(keras.ops.convert_to_numpy(v))

        self.history.append({
            "epoch": epoch + 1, "train_bits_per_dim": value("bits_per_dim"),
            "validation_bits_per_dim": value("val_bits_per_dim"),
            "learning_rate": value("learning_rate"),
            "clip_norm": getattr(self.model.optimizer, "global_clipnorm", None),
            "optimizer_steps": int(keras.ops.convert_to_numpy(
                self.model.optimizer.iterations)),
            "seconds": (time.perf_counter() - self._started
                        if self._started is not None else None)})
        self.last = self.folder.save_checkpoint(self.model, epoch + 1,
                                                self.history, self.keep)
