"""Runs a recipe (:mod:`tfp_flows.cli.recipes`) into a run folder
(:mod:`tfp_flows.cli.runs`): training with resumption, selection of the epoch
on validation, the single test evaluation and the run's outputs.

Objective: the dequantised negative log-likelihood in bits/dim
``-log p(x + u) / (D log 2)``, ``u ~ U[0, 1)^D`` (:class:`FlowModel`), or with
``dequantization='variational'`` the variational bound
``-(log p(x + u) - log q(u | x)) / (D log 2)``, ``u ~ q(u | x)``; metrics.json
names which (``bits_per_dim_is``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tensorflow_probability import distributions as tfd

import tfp_flows
from tfp_flows import plots
from tfp_flows.cli import recipes, runs
from tfp_flows.cli.recipes import build_model, datasets, new_config, use_averaged_weights
from tfp_flows.dequantization import importance_weighted_bits_per_dim as _iw_batch
from tfp_flows.training import FlowModel, LinearWarmup
from tfp_flows.training.guards import NaNGuard, TrainingDivergedError
from tfp_flows.typing import PathLike

__all__ = ["train", "open_run", "evaluate_bits_per_dim", "importance_weighted_bits_per_dim",
           "finalize", "image_bins"]

# What `test_bits_per_dim` (and every per-epoch figure) is, per dequantisation.
_KINDS = {
    "uniform": "-log p(x + u) / (D log 2), u ~ U[0,1)^D: the papers' uniform "
               "dequantisation bound",
    "variational": "-(log p(x + u) - log q(u|x)) / (D log 2), u ~ q(u|x): the "
                   "variational dequantisation bound (Flow++)",
}


def open_run(
        path: PathLike, log: Callable[[str], Any] | None = None,
) -> tuple[runs.RunFolder, dict[str, Any], FlowModel, runs.Checkpoint]:
    """Loads a run's model: the checkpoint with the lowest validation
    bits/dim, else the latest intact one.

    Args:
      path: the run folder.
      log: function receiving warning lines (default: print to stderr).

    Returns:
      ``(folder, config, model, checkpoint)``.

    Raises:
      RunError: not a run folder, or no checkpoint yet.
      CheckpointError: no intact checkpoint.
    """
    folder = runs.RunFolder(path, log)
    config = folder.read_config()
    checkpoint = folder.best_checkpoint() or folder.latest_checkpoint()
    if checkpoint is None:
        raise runs.RunError(f"{path} has no checkpoint yet; train it first "
                            f"(tfp-flows train --out {path}).")
    model = build_model(config)
    folder.restore(model, checkpoint)
    use_averaged_weights(model)
    return folder, config, model, checkpoint


def evaluate_bits_per_dim(model: keras.Model, dataset: tf.data.Dataset, draws: int = 3,
                          seed: int = 0) -> float:
    """Mean dequantised bits/dim over a dataset, averaged over noise draws.

    Args:
      model: a compiled :class:`tfp_flows.training.FlowModel`.
      dataset: batches of integer-valued images.
      draws: number of evaluations (dequantisation noise draws) averaged.
      seed: seed of Keras' random generators, set before the first draw.

    Returns:
      The mean bits/dim.
    """
    keras.utils.set_random_seed(seed)
    values = [float(model.evaluate(dataset, verbose=0, return_dict=True)
                    ["bits_per_dim"]) for _ in range(int(draws))]
    return float(np.mean(values))


def importance_weighted_bits_per_dim(model: FlowModel, dataset: tf.data.Dataset,
                                     num_samples: int, seed: int = 0) -> float:
    """Mean importance-weighted bits/dim over a dataset, ``k = num_samples``
    noise draws per image from the model's dequantiser (uniform noise when
    it has none); see :mod:`tfp_flows.dequantization`."""
    dist, deq = model.distribution, model.dequantization

    @tf.function
    def batch_estimate(images, batch_seed):
        return _iw_batch(dist, images, num_samples, deq, seed=batch_seed)

    total, count = 0.0, 0
    for i, batch in enumerate(dataset):
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        values = batch_estimate(tf.cast(images, dist.dtype),
                                tf.constant([seed, 1000 * i], tf.int32)).numpy()
        total += float(values.sum())
        count += len(values)
    return total / max(count, 1)


def train(path: PathLike, requested: Mapping[str, Any], *,
          train_data: tf.data.Dataset | None = None,
          validation_data: tf.data.Dataset | None = None,
          test_data: tf.data.Dataset | None = None, verbose: int = 1,
          log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Trains (or resumes) a run in folder `path`, then writes its outputs.

    Args:
      path: the run folder; an existing run is resumed, never overwritten.
      requested: settings the user gave (keys of :data:`DEFAULTS`, plus
        ``epochs`` and ``model_args``); the others keep their defaults, or
        the stored values when resuming.
      train_data: overrides the training pipeline (tests; a poisoned batch).
      validation_data: overrides the validation pipeline.
      test_data: overrides the test pipeline.
      verbose: Keras verbosity (1: progress bar, 2: a line per epoch).
      log: function receiving progress lines.

    Every epoch is scored on the validation split; the checkpoint with the
    lowest validation bits/dim becomes the run's model, and only that one is
    scored on the test split, once, when training ends.

    Returns:
      The metrics dict written to ``metrics.json``.

    Raises:
      RunError: a settings mismatch, a folder that is not a run, or no intact
        checkpoint.
      TrainingDivergedError: the loss became NaN/Inf; the last good
        checkpoint is left as it was.
    """
    folder = runs.RunFolder(path)  # its warnings go to stderr
    stored = None
    if folder.is_run():
        stored = folder.read_config()
        config = runs.resolve_config(stored, requested, path)
    else:
        folder.check_new()
        config = new_config(requested)
    model = build_model(config)
    checkpoint = folder.latest_checkpoint(quarantine=True)
    start, history = 0, []  # type: tuple[int, list[dict[str, Any]]]
    if checkpoint is not None:
        folder.restore(model, checkpoint)
        start, history = checkpoint.epoch, checkpoint.history
        if config["epochs"] < start:
            raise runs.RunError(f"{path} has already trained {start} epochs; "
                                f"--epochs {config['epochs']} is fewer.")
    if validation_data is None and start < config["epochs"]:
        # before the folder is written: missing data fails without a trace
        validation_data = datasets(config, split="validation")
    if config != stored:
        folder.write_config(config)
    if checkpoint is not None and start == config["epochs"]:
        metrics = _finished(folder, start)
        if metrics is not None:
            log(f"{path} is complete after epoch {start} (test bits/dim "
                f"{metrics['test_bits_per_dim']:.4f} at epoch "
                f"{metrics.get('selected_epoch', start)}); raise --epochs to "
                "train it further.")
            return metrics
    if start < config["epochs"]:
        history = _fit(folder, config, model, checkpoint, train_data,
                       validation_data, verbose, log)
    if test_data is None:
        test_data = datasets(config, split="test")
    return finalize(folder, config, model, history, test_data, log)


def _fit(folder: runs.RunFolder, config: Mapping[str, Any], model: FlowModel,
         checkpoint: runs.Checkpoint | None, train_data: tf.data.Dataset | None,
         validation_data: tf.data.Dataset, verbose: int,
         log: Callable[[str], Any]) -> list[dict[str, Any]]:
    """Trains from `checkpoint` (already restored into `model`; None: from
    the start) to the config's last epoch, first finishing an interrupted
    epoch from its partial checkpoint, if any. Returns the whole history.

    Raises:
      TrainingDivergedError: the loss or a weight became NaN/Inf.
    """
    start = 0 if checkpoint is None else checkpoint.epoch
    history = [] if checkpoint is None else checkpoint.history
    partial = folder.partial_checkpoint(checkpoint)
    where = ""
    if partial is not None:
        folder.restore(model, partial)
        where = (f", epoch {start + 1} from step {partial.manifest['step']} of "
                 f"{partial.manifest['steps_in_epoch']}")
    log(f"{'resuming' if start or partial else 'training'} {config['model']} on "
        f"{config['dataset']} in {folder.path}: epochs {start + 1}..{config['epochs']}"
        f"{where} ({model.count_params():,} parameters)")
    guard = NaNGuard()
    # --ema: validate (and so choose the epoch) with the averaged weights
    averaging = [keras.callbacks.SwapEMAWeights()] if model.optimizer.use_ema else []
    writer = runs.CheckpointWriter(folder, history, guard, config["keep_checkpoints"],
                                   partial=partial)
    partials = runs.PartialCheckpointWriter(
        folder, config.get("checkpoint_minutes", recipes.DEFAULTS["checkpoint_minutes"]),
        guard, partial=partial)
    callbacks = [LinearWarmup(config["learning_rate"], config["warmup_steps"]),
                 *averaging, guard, writer, partials]

    def fit(data, first, last):
        model.fit(data, epochs=last, initial_epoch=first, validation_data=validation_data,
                  shuffle=False, verbose=verbose, callbacks=callbacks)

    t0 = time.perf_counter()
    first = start
    if partial is not None:
        # the rest of the interrupted epoch: its remaining number of batches,
        # drawn afresh (the order is not replayed)
        remaining = partial.manifest["steps_in_epoch"] - partial.manifest["step"]
        rest = (train_data if train_data is not None else
                datasets(config, partial.manifest["optimizer_steps"]))
        fit(rest.take(remaining), start, start + 1)
        first += 1
        if model.optimizer.use_ema and writer.last is not None and guard.failure is None:
            # Keras' fit ends by putting the averages into the weights; the
            # next epochs train the raw ones, saved in the epoch's checkpoint
            folder.restore(model, writer.last)
    if guard.failure is None and first < config["epochs"]:
        fit(train_data if train_data is not None else datasets(config, first),
            first, config["epochs"])
    if guard.failure is not None:
        last = writer.last or checkpoint
        kept = (f"the last good checkpoint, {last.path} (epoch {last.epoch}), "
                "is intact" if last else "no checkpoint was written")
        raise TrainingDivergedError(
            f"training diverged: {guard.failure.describe()}; {kept}. Lower "
            "the learning rate or raise --warmup-steps in a new run folder, "
            "or resume this one with the same command.")
    log(f"trained {config['epochs'] - start} epochs in {time.perf_counter() - t0:.0f} s")
    return writer.history


def _finished(folder, epoch):
    """The metrics of a run whose outputs are all written for `epoch`, else None."""
    try:
        metrics = runs.read_json(folder.file(runs.METRICS), "metrics")
    except runs.RunError:
        return None
    outputs = (runs.SAMPLES, runs.CURVE, runs.SAVED_MODEL)
    if metrics.get("exported_epoch") != epoch or not all(
            os.path.exists(folder.file(name)) for name in outputs):
        return None
    return metrics


def finalize(folder: runs.RunFolder, config: Mapping[str, Any], model: FlowModel,
             history: list[dict[str, Any]], test_data: tf.data.Dataset,
             log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Scores the selected model on the test split and writes metrics.json,
    samples.png, training_curve.png and saved_model/.

    The selected model is the checkpoint with the lowest validation bits/dim
    (the last epoch when no epoch was validated). Every output is recomputed
    from it, so running this again (e.g. after a kill during export) gives
    the same files.

    Args:
      folder: the run folder.
      config: the run's config.
      model: the run's model, holding the weights of the last epoch.
      history: per-epoch records of the whole run.
      test_data: the test split's pipeline.
      log: function receiving progress lines.

    Returns:
      The metrics dict written to ``metrics.json``.
    """
    epoch = history[-1]["epoch"] if history else 0
    best = folder.best_checkpoint()
    selected = epoch
    if best is not None and best.epoch != epoch:
        folder.restore(model, best)
        selected = best.epoch
    use_averaged_weights(model)  # the run's model: its weights' average (--ema)
    test_bpd = evaluate_bits_per_dim(model, test_data, config["eval_draws"],
                                     config["seed"])
    deq_kind = config.get("dequantization", "uniform")
    k = int(config.get("importance_samples") or 0)
    test_iw = (importance_weighted_bits_per_dim(model, test_data, k, config["seed"])
               if k else None)
    dist = model.distribution
    samples = tfp_flows.sample(dist, 64, config["temperature"], seed=config["seed"])
    plots.save_image_grid(samples, image_bins(dist), folder.file(runs.SAMPLES))
    plots.save_training_curve(
        history, folder.file(runs.CURVE),
        f"{config['model']} on {recipes.dataset_label(config['dataset'])}",
        selected_epoch=selected)
    export_path = folder.file(runs.SAVED_MODEL)
    try:
        previous = runs.read_json(folder.file(runs.METRICS), "metrics")
    except runs.RunError:  # none yet, or cut short by a kill
        previous = {}
    if not (os.path.exists(export_path) and previous.get("exported_epoch") == epoch
            and previous.get("selected_epoch", epoch) == selected):
        if os.path.exists(export_path):
            log(f"replacing {export_path} (the model of epoch "
                f"{previous.get('selected_epoch', previous.get('exported_epoch', '?'))})"
                f" with the model of epoch {selected}")
        tfp_flows.export(model, export_path, overwrite=True)
    chosen: dict[str, Any] = next((h for h in history if h["epoch"] == selected), {})
    metrics = {
        "test_bits_per_dim": test_bpd,
        "selected_epoch": selected,
        "selection": "lowest validation bits/dim over the epochs",
        "validation_bits_per_dim": chosen.get("validation_bits_per_dim"),
        "train_bits_per_dim": chosen.get("train_bits_per_dim"),
        "epochs": epoch,
        "optimizer_steps": history[-1].get("optimizer_steps") if history else 0,
        "num_params": int(model.count_params()),
        "train_seconds": float(sum(h.get("seconds") or 0.0 for h in history)),
        "eval_draws": config["eval_draws"],
        "dequantization": deq_kind,
        "bits_per_dim_is": _KINDS[deq_kind],
        "model": config["model"],
        "dataset": config["dataset"], "exported_epoch": epoch,
        "history": history}
    if test_iw is not None:
        metrics["test_importance_weighted_bits_per_dim"] = test_iw
        metrics["importance_samples"] = k
    runs.write_json(folder.file(runs.METRICS), metrics)
    log(f"test bits/dim: {test_bpd:.4f} ({recipes.dataset_label(config['dataset'])}, "
        f"epoch {selected} of {epoch}, chosen on validation; mean over "
        f"{config['eval_draws']} dequantisation draws"
        f"{'; a variational bound' if deq_kind == 'variational' else ''}"
        f"{f'; importance-weighted with k={k}: {test_iw:.4f}' if k else ''}); "
        f"outputs in {folder.path}")
    return metrics


def image_bins(dist: tfd.Distribution) -> float:
    """The number of pixel bins of an image model (a ValueError without)."""
    bins = tfp_flows.flow_ops.num_bins(dist)
    if bins is None:
        raise ValueError("this flow has no pixel bins: it is not an image model.")
    return bins
