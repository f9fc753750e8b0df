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

__all__ = ["Checkpoint", "CheckpointWriter", "PartialCheckpointWriter", "CheckpointFolder",
           "sha256", "fsync_file"]


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

    def save_partial(self, model: keras.Model, epoch: int, step: int,
                     steps_in_epoch: int, train_bits_per_dim: float | None,
                     seconds: float) -> Checkpoint:
        """Writes a checkpoint inside epoch ``epoch + 1``."""
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
      partial: the partial checkpoint this `fit` resumes inside its first
        epoch from, or None: that epoch's record then covers its earlier
        steps too (their mean training bits/dim and time).
    """

    def __init__(self, folder: CheckpointFolder, history: Iterable[dict[str, Any]] = (),
                 guard: NaNGuard | None = None, keep: int = 3,
                 partial: Checkpoint | None = None) -> None:
        super().__init__()
        self.folder, self.guard, self.keep = folder, guard, int(keep)
        self.partial = partial
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

        train, seconds = value("bits_per_dim"), (
            time.perf_counter() - self._started if self._started is not None else None)
        carried = _carried(self.partial, epoch)
        if carried is not None:  # the epoch began in an earlier process
            train = _steps_mean(carried, train, self.params.get("steps"))
            seconds = None if seconds is None else seconds + carried["seconds"]
        self.history.append({
            "epoch": epoch + 1, "train_bits_per_dim": train,
            "validation_bits_per_dim": value("val_bits_per_dim"),
            "learning_rate": value("learning_rate"),
            "clip_norm": getattr(self.model.optimizer, "global_clipnorm", None),
            "optimizer_steps": int(keras.ops.convert_to_numpy(
                self.model.optimizer.iterations)),
            "seconds": seconds,
            **({"resumed_at_step": carried["step"]} if carried is not None else {})})
        self.last = self.folder.save_checkpoint(self.model, epoch + 1,
                                                self.history, self.keep)


def _carried(partial: Checkpoint | None, epoch: int) -> dict[str, Any] | None:
    """The manifest of `partial` if it lies inside (0-based) `epoch`."""
    if partial is None or partial.epoch != epoch:
        return None
    return partial.manifest


def _steps_mean(carried: Mapping[str, Any], mean: float | None,
                steps: int | None) -> float | None:
    """The mean over a whole epoch from the carried steps' mean and the
    mean of the `steps` run since (None if either is unknown)."""
    before = carried.get("train_bits_per_dim")
    if mean is None or before is None or not steps:
        return None
    done = int(carried["step"])
    return (before * done + mean * steps) / (done + steps)


class PartialCheckpointWriter(keras.callbacks.Callback):
    """Writes a partial checkpoint (inside an epoch) every `minutes` of
    training, so that a killed run loses at most that much.

    Its manifest records the epoch, the step within it, the steps of a whole
    epoch and the mean training bits/dim so far; a resumed run trains the
    rest of that epoch's steps and completes the epoch's record
    (:class:`CheckpointWriter` with ``partial=``). Nothing is written when
    the number of steps per epoch is unknown (a dataset of unknown length),
    after a NaN guard's failure, or when a weight is not finite.

    Args:
      folder: the :class:`RunFolder`.
      minutes: interval between partial checkpoints; None or 0: never.
      guard: the run's NaN guard, or None.
      partial: the partial checkpoint this `fit` resumed from, or None
        (steps and means then count from its step).
    """

    def __init__(self, folder: CheckpointFolder, minutes: float | None,
                 guard: NaNGuard | None = None, partial: Checkpoint | None = None) -> None:
        super().__init__()
        self.folder, self.guard, self.partial = folder, guard, partial
        self.interval = float(minutes) * 60.0 if minutes else None
        self._epoch = 0
        self._started = self._saved = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch
        self._started = self._saved = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        now = time.perf_counter()
        steps = self.params.get("steps")
        if self.interval is None or now - self._saved < self.interval or not steps:
            return
        if batch + 1 >= steps:  # the epoch's own checkpoint follows
            return
        failed = self.guard is not None and self.guard.failure is not None
        if failed or not all_finite(self.model):
            return
        mean = (logs or {}).get("bits_per_dim")
        mean = None if mean is None else float(keras.ops.convert_to_numpy(mean))
        step, total, seconds = batch + 1, steps, now - self._started
        carried = _carried(self.partial, self._epoch)
        if carried is not None:
            mean = _steps_mean(carried, mean, step)
            step, total = step + carried["step"], total + carried["step"]
            seconds += carried["seconds"]
        self.folder.save_partial(self.model, self._epoch, step, total, mean, seconds)
        self._saved = time.perf_counter()
