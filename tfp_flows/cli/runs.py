"""Run folders: the on-disk state of one training run, and checkpoints that
survive crashes and detect corruption.

Layout of a run folder (written by ``tfp-flows train``)::

    config.json              settings that rebuild the run (never overwritten)
    checkpoints/
      epoch-0007.weights.h5  Keras weights: the flow and the optimizer state
      epoch-0007.json        its manifest: epoch, size, SHA-256, history,
                             validation bits/dim
      partial-000005400.weights.h5   inside epoch 8: the weights after
      partial.json           some of its steps, and their manifest (every
                             ``checkpoint_minutes``; removed at the epoch's end)
    metrics.json             final figures: test_bits_per_dim (once, of the
                             epoch with the lowest validation bits/dim)
    samples.png              sample grid
    training_curve.png       bits/dim per epoch, train and validation
    saved_model/             the exported SavedModel (tfp_flows.export)

**Crash safety.** A checkpoint is written to a temporary file, flushed to
disk and renamed into place; its manifest is written the same way *after*
it. A checkpoint counts only once its manifest exists, so a process killed at
any instant (even with SIGKILL) leaves either the new checkpoint complete or
the previous one as the latest. Inside an epoch, a partial checkpoint is
written the same way every few minutes; a resumed run continues from it
(the rest of that epoch's batches, then the next epochs), so a kill loses
at most those minutes. Every manifest carries the per-epoch history,
so the training curve resumes with the weights. Besides the last ``keep``
checkpoints, the one with the lowest validation bits/dim so far is kept: the
run's final model (:meth:`RunFolder.best_checkpoint`).

**Corruption.** Before loading, the weights file's size and SHA-256 are
compared with the manifest. A truncated or altered file is reported by name
and skipped in favour of the previous intact checkpoint (the last
``keep`` are kept); when none is intact, :class:`CheckpointError` stops the
run instead of silently starting over.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import keras

from tfp_flows.cli.checkpoints import (
    Checkpoint,
    CheckpointWriter,
    PartialCheckpointWriter,
    fsync_file,
    sha256,
)
from tfp_flows.typing import PathLike

__all__ = ["RunFolder", "Checkpoint", "CheckpointWriter", "PartialCheckpointWriter", "RunError",
           "CheckpointError", "write_json", "read_json", "resolve_config",
           "FIXED_KEYS", "CONFIG", "METRICS", "SAMPLES", "CURVE", "SAVED_MODEL",
           "CHECKPOINTS"]

CONFIG = "config.json"
METRICS = "metrics.json"
SAMPLES = "samples.png"
CURVE = "training_curve.png"
SAVED_MODEL = "saved_model"
CHECKPOINTS = "checkpoints"
PARTIAL = "partial"  # checkpoints/partial.json + partial-<step>.weights.h5: inside an epoch

# Settings that define a run; resuming with a different value is an error.
# (``epochs`` may change: raising it extends a finished run.)
FIXED_KEYS = ("model", "dataset", "n_bits", "image_size", "skip_bad_files", "model_args",
              "batch_size", "learning_rate", "warmup_steps", "seed", "dequantization",
              "ema")

# Settings added after some runs were created: their value in those runs.
_ADDED_KEYS = {"dequantization": "uniform", "ema": None}

_NAME = re.compile(r"^epoch-(\d{4,})\.json$")


class RunError(ValueError):
    """A problem with a run folder: not a run, settings mismatch, no checkpoint."""


class CheckpointError(RunError):
    """No intact checkpoint could be loaded; the message names the files."""


def write_json(path: PathLike, obj: Any) -> None:
    """Writes JSON atomically: a temporary file renamed over ``path``."""
    tmp = os.path.join(os.path.dirname(path) or ".",
                       f".tmp-{os.getpid()}-{os.path.basename(path)}")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _selectable(value: Any) -> float | None:
    """A validation figure that can make an epoch the run's best, else None:
    a number, and finite (NaN or Inf means the evaluation diverged)."""
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def read_json(path: PathLike, what: str = "file") -> dict[str, Any]:
    """Reads a JSON object; a clear RunError when missing or unreadable."""
    try:
        with open(path) as f:
            value = json.load(f)
    except FileNotFoundError as e:
        raise RunError(f"{what} {path} does not exist.") from e
    except (OSError, ValueError) as e:
        raise RunError(f"{what} {path} is unreadable ({e}).") from e
    if not isinstance(value, dict):
        raise RunError(f"{what} {path} does not hold a JSON object.")
    return value


def resolve_config(stored: Mapping[str, Any], requested: Mapping[str, Any],
                   path: PathLike) -> dict[str, Any]:
    """The config to resume ``stored`` with, given explicitly requested settings.

    Args:
      stored: the run's ``config.json``.
      requested: settings given on this invocation (only those the user set).
      path: the run folder, for messages.

    Returns:
      ``stored`` with ``epochs``, ``data_dir`` (where the files are on
      this machine), ``importance_samples``, ``precision``, ``clip_norm``
      and ``checkpoint_minutes`` replaced if requested.

    Raises:
      RunError: a setting of `FIXED_KEYS` differs from the stored one. (That
        ``epochs`` is not below the epochs already trained is checked by the
        caller, against the checkpoints.)
    """
    diffs = []
    for key in FIXED_KEYS:
        if key not in requested:
            continue
        want, have = requested[key], stored.get(key, _ADDED_KEYS.get(key))
        if key == "model_args":
            stored_args = have or {}
            changed = {k: v for k, v in want.items() if stored_args.get(k) != v}
            diffs += [f"model_args.{k}={stored_args.get(k)!r} (asked {v!r})"
                      for k, v in changed.items()]
        elif want != have:
            diffs.append(f"{key}={have!r} (asked {want!r})")
    if diffs:
        raise RunError(
            f"{path} is an existing run created with different settings: "
            f"{'; '.join(diffs)}. Resume it without those options, or choose "
            "another --out.")
    config = dict(stored)
    for key in ("epochs", "data_dir", "importance_samples", "precision",
                "clip_norm", "checkpoint_minutes"):  # may change
        if key in requested:
            config[key] = requested[key]
    return config


class RunFolder:
    """A run folder on disk (see the module docstring for the layout).

    Args:
      path: the folder.
      log: function receiving warning lines (default: print to stderr).
    """

    def __init__(self, path: PathLike, log: Callable[[str], Any] | None = None) -> None:
        self.path = os.fspath(path)
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))

    def file(self, name: str) -> str:
        """Path of a file in the run folder."""
        return os.path.join(self.path, name)

    @property
    def checkpoint_dir(self) -> str:
        """The folder of the checkpoints."""
        return self.file(CHECKPOINTS)

    def is_run(self) -> bool:
        """True when the folder exists and holds a ``config.json``."""
        return os.path.isfile(self.file(CONFIG))

    def check_new(self) -> None:
        """Raises RunError unless the folder is absent or empty."""
        if os.path.exists(self.path) and (not os.path.isdir(self.path)
                                          or os.listdir(self.path)):
            raise RunError(
                f"{self.path} exists and is not a tfp-flows run folder (no "
                f"{CONFIG}); choose another --out (an existing run folder is "
                "resumed, anything else is never overwritten).")

    def read_config(self) -> dict[str, Any]:
        """The run's ``config.json`` (a RunError if it is not a run)."""
        if not self.is_run():
            raise RunError(f"{self.path} is not a tfp-flows run folder (no "
                           f"{CONFIG}); train one with tfp-flows train --out "
                           f"{self.path}.")
        return read_json(self.file(CONFIG), "run config")

    def write_config(self, config: Mapping[str, Any]) -> None:
        """Writes the run's ``config.json`` (atomically)."""
        os.makedirs(self.checkpoint_dir, exist_ok=True)
        write_json(self.file(CONFIG), config)

    # -- checkpoints -------------------------------------------------------------
    def _manifests(self):
        """(epoch, manifest path) of every manifest, newest first."""
        if not os.path.isdir(self.checkpoint_dir):
            return []
        found = []
        for name in os.listdir(self.checkpoint_dir):
            m = _NAME.match(name)
            if m:
                found.append((int(m.group(1)),
                              os.path.join(self.checkpoint_dir, name)))
        return sorted(found, reverse=True)

    def _weights_path(self, epoch):
        return os.path.join(self.checkpoint_dir, f"epoch-{epoch:04d}.weights.h5")

    def _verified(self, path: str, manifest_path: str
                  ) -> tuple[dict[str, Any] | None, str | None]:
        """``(manifest, None)`` if the weights at `path` match their
        manifest's size and SHA-256, else ``(None, reason)``."""
        try:
            manifest = read_json(manifest_path, "checkpoint manifest")
        except RunError as e:
            return None, str(e)
        if not os.path.isfile(path):
            return None, f"{path} is missing"
        size = os.path.getsize(path)
        if size != manifest.get("bytes"):
            return None, (f"{path} is truncated or altered: {size} bytes, "
                          f"{manifest.get('bytes')} expected")
        if sha256(path) != manifest.get("sha256"):
            return None, (f"{path} is corrupted: its SHA-256 does not match "
                          f"{os.path.basename(manifest_path)}")
        return manifest, None

    def verify(self, epoch: int, manifest_path: str) -> tuple[Checkpoint | None, str | None]:
        """``(Checkpoint, None)`` if intact, else ``(None, reason)``."""
        path = self._weights_path(epoch)
        manifest, reason = self._verified(path, manifest_path)
        if manifest is None:
            return None, reason
        return Checkpoint(epoch, path, manifest), None

    def latest_checkpoint(self, quarantine: bool = False) -> Checkpoint | None:
        """The newest intact checkpoint, or None when there is none yet.

        Corrupted ones are reported through ``log`` and skipped; with
        ``quarantine`` their files are renamed to ``*.corrupt`` (so that the
        resumed run can write that epoch again).

        Raises:
          CheckpointError: checkpoints exist but none is intact.
        """
        problems: list[str] = []
        for epoch, manifest_path in self._manifests():
            checkpoint, reason = self.verify(epoch, manifest_path)
            if checkpoint is not None:
                if problems:
                    self.log(f"warning: using {checkpoint.name} (epoch "
                             f"{epoch}) instead.")
                return checkpoint
            problems.append(str(reason))
            self.log(f"warning: skipping a bad checkpoint: {reason}.")
            if quarantine:
                for p in (manifest_path, self._weights_path(epoch)):
                    if os.path.exists(p):
                        os.replace(p, p + ".corrupt")
        if problems:
            raise CheckpointError(
                f"no intact checkpoint in {self.checkpoint_dir}: "
                f"{'; '.join(problems)}. Restore the files, or delete the run "
                "folder to train again from scratch.")
        return None

    def restore(self, model: keras.Model, checkpoint: Checkpoint) -> None:
        """Loads a checkpoint's weights (and optimizer state) into `model`."""
        try:
            model.load_weights(checkpoint.path)
        except Exception as e:  # h5py/Keras raise many types for bad files
            raise CheckpointError(
                f"cannot load {checkpoint.path} into this model ({e}); the "
                f"file or {CONFIG} was changed by hand.") from e

    def _write_weights(self, model: keras.Model, path: str) -> dict[str, Any]:
        """Saves `model`'s weights and optimizer state to `path` atomically
        (temporary file, flushed, renamed); their manifest fields."""
        os.makedirs(self.checkpoint_dir, exist_ok=True)
        tmp = os.path.join(self.checkpoint_dir,
                           f".tmp-{os.getpid()}-{os.path.basename(path)}")
        model.save_weights(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
        optimizer = getattr(model, "optimizer", None)
        steps = (int(keras.ops.convert_to_numpy(optimizer.iterations))
                 if optimizer is not None else None)
        return {"format": 1, "file": os.path.basename(path),
                "bytes": os.path.getsize(path), "sha256": sha256(path),
                "optimizer_steps": steps}

    def save_checkpoint(self, model: keras.Model, epoch: int,
                        history: Iterable[Mapping[str, Any]], keep: int = 3) -> Checkpoint:
        """Writes the weights of epoch `epoch` (1-based) and its manifest.

        A partial checkpoint of that epoch (:meth:`save_partial`) is
        superseded and removed.

        Args:
          model: a compiled Keras model (its optimizer state is saved too).
          epoch: number of completed epochs.
          history: per-epoch records up to `epoch`.
          keep: number of checkpoints kept (older ones are deleted).

        Returns:
          The written :class:`Checkpoint`.
        """
        path = self._weights_path(epoch)
        history = list(history)
        last = history[-1] if history else {}
        validation = last.get("validation_bits_per_dim")
        if validation is not None and _selectable(validation) is None:
            self.log(f"warning: epoch {epoch}'s validation bits/dim is {validation} "
                     "(the evaluation diverged, though the weights are finite); this "
                     "epoch cannot be chosen as the run's model.")
        manifest = {**self._write_weights(model, path), "epoch": int(epoch),
                    "history": history, "validation_bits_per_dim": validation}
        write_json(path[:-len(".weights.h5")] + ".json", manifest)
        self.discard_partial()
        self._prune(keep)
        return Checkpoint(int(epoch), path, manifest)

    # -- partial checkpoints: within an epoch ---------------------------------------
    def save_partial(self, model: keras.Model, epoch: int, step: int,
                     steps_in_epoch: int, train_bits_per_dim: float | None,
                     seconds: float) -> Checkpoint:
        """Writes a checkpoint taken inside an epoch (``checkpoints/
        partial-<optimizer step>.weights.h5`` and ``partial.json``,
        replacing the previous one), so that a kill loses at most the steps
        since.

        Args:
          model: the compiled model.
          epoch: number of completed epochs (the partial one is ``epoch + 1``).
          step: batches of epoch ``epoch + 1`` done.
          steps_in_epoch: batches in a whole epoch.
          train_bits_per_dim: mean training bits/dim over those `step` batches.
          seconds: training time of those batches.
        """
        # A new weights file per save, named by the optimizer step, and the
        # manifest renamed over the old one after it: a kill at any instant
        # leaves the old pair or the new pair intact.
        steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        path = os.path.join(self.checkpoint_dir, f"{PARTIAL}-{steps:09d}.weights.h5")
        manifest = {**self._write_weights(model, path), "epoch": int(epoch),
                    "step": int(step), "steps_in_epoch": int(steps_in_epoch),
                    "train_bits_per_dim": train_bits_per_dim, "seconds": float(seconds)}
        write_json(os.path.join(self.checkpoint_dir, PARTIAL + ".json"), manifest)
        self._remove_partial_weights(keep=os.path.basename(path))
        return Checkpoint(int(epoch), path, manifest)

    def _remove_partial_weights(self, keep: str | None = None) -> None:
        for name in os.listdir(self.checkpoint_dir):
            if name.startswith(PARTIAL + "-") and name.endswith(".weights.h5") \
                    and name != keep:
                os.remove(os.path.join(self.checkpoint_dir, name))

    def partial_checkpoint(self, after: Checkpoint | None) -> Checkpoint | None:
        """The intact partial checkpoint that continues `after` (the latest
        epoch checkpoint, None before the first), else None.

        A partial checkpoint of an earlier epoch (left by a kill between an
        epoch's checkpoint and its clean-up) is removed; a damaged one is
        reported through ``log``, renamed to ``*.corrupt`` and skipped: the
        run then resumes from the end of `after`'s epoch.
        """
        manifest_path = os.path.join(self.checkpoint_dir, PARTIAL + ".json")
        if not os.path.exists(manifest_path):
            return None
        try:
            name = str(read_json(manifest_path, "partial checkpoint manifest")["file"])
        except (RunError, KeyError):
            name = PARTIAL + ".weights.h5"  # unreadable: reported just below
        path = os.path.join(self.checkpoint_dir, os.path.basename(name))
        manifest, reason = self._verified(path, manifest_path)
        epoch = 0 if after is None else after.epoch
        if manifest is None:
            self.log(f"warning: skipping a bad partial checkpoint: {reason}; "
                     f"resuming from the end of epoch {epoch}.")
            for p in (manifest_path, path):
                if os.path.exists(p):
                    os.replace(p, p + ".corrupt")
            return None
        if manifest.get("epoch") != epoch or not (
                0 < int(manifest.get("step", 0)) < int(manifest.get("steps_in_epoch", 0))):
            self.discard_partial()
            return None
        return Checkpoint(epoch, path, manifest)

    def discard_partial(self) -> None:
        """Removes the partial checkpoint, if any (its manifest first)."""
        manifest_path = os.path.join(self.checkpoint_dir, PARTIAL + ".json")
        if os.path.exists(manifest_path):
            os.remove(manifest_path)
        if os.path.isdir(self.checkpoint_dir):
            self._remove_partial_weights()

    @staticmethod
    def _validation_of(manifest_path):
        try:
            value = read_json(manifest_path).get("validation_bits_per_dim")
        except RunError:
            return None
        return _selectable(value)

    def best_checkpoint(self) -> Checkpoint | None:
        """The intact checkpoint with the lowest validation bits/dim (the
        latest among equals), or None when no manifest records one."""
        best = None
        for epoch, manifest_path in self._manifests():  # newest first
            value = self._validation_of(manifest_path)
            if value is None or (best is not None and value >= best[0]):
                continue
            checkpoint, reason = self.verify(epoch, manifest_path)
            if checkpoint is None:
                self.log(f"warning: skipping a bad checkpoint: {reason}.")
                continue
            best = (value, checkpoint)
        return None if best is None else best[1]

    def _prune(self, keep):
        manifests = self._manifests()
        scored = [(v, -e) for e, m in manifests
                  if (v := self._validation_of(m)) is not None]
        best_epoch = -min(scored)[1] if scored else None
        for epoch, manifest_path in manifests[max(1, int(keep)):]:
            if epoch == best_epoch:
                continue  # the run's best model so far
            os.remove(manifest_path)
            if os.path.exists(self._weights_path(epoch)):
                os.remove(self._weights_path(epoch))
        for name in os.listdir(self.checkpoint_dir):  # leftovers of a kill
            if name.startswith(".tmp-"):
                os.remove(os.path.join(self.checkpoint_dir, name))
