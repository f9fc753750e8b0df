"""Training recipes: the settings of ``tfp-flows train`` (defaults, model
sizes per dataset, the stored run config) and the model and pipelines they
build. :mod:`tfp_flows.cli.trainer` runs them into a run folder.

The default recipe is Glow on the scikit-learn digits, sized as in the digits
density benchmark (``benchmarks/README.md``): 2 levels x 8 steps x 128 hidden
channels, batch 64, Adam with learning rate 1e-3 after a linear warmup
(Kingma & Dhariwal, 2018), for a budget of ``_EPOCHS`` epochs; the epoch with
the lowest validation bits/dim becomes the run's model. Other datasets get a
small CPU-friendly model by default; every builder argument can be
overridden (``model_args``).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from typing import Any

import keras
import tensorflow as tf

import tfp_flows
from tfp_flows import data, models, networks
from tfp_flows.dequantization import VariationalDequantization
from tfp_flows.training import FlowModel

__all__ = ["DEFAULTS", "DEQUANTIZATIONS", "MODELS", "PRECISIONS", "dataset_label",
           "default_run_folder", "model_args_for", "new_config", "build_model",
           "use_averaged_weights", "datasets",
           "EVAL_BATCH"]

MODELS = ("glow", "real_nvp", "nice")

DEFAULTS: dict[str, Any] = dict(model="glow", dataset="digits", n_bits=8, image_size=None,
                data_dir=None, skip_bad_files=False, batch_size=64, learning_rate=1e-3,
                warmup_steps=100, seed=0, temperature=0.7, eval_draws=3,
                keep_checkpoints=3, dequantization="uniform", importance_samples=0,
                precision="float32", clip_norm=None, ema=None,
                checkpoint_minutes=10.0)

#: ``--precision``: the Keras dtype policy the coupling networks are built
#: under. ``mixed_bfloat16`` runs them in bfloat16 (AMX on recent Intel
#: Xeons); variables, log-determinants and priors stay float32, so
#: checkpoints are the same either way and a run may switch on resume.
#: Measured: docs/performance.md.
PRECISIONS = ("float32", "mixed_bfloat16")

#: ``--clip-norm``: each step's gradients are scaled down to this global
#: norm when they exceed it (Keras' ``global_clipnorm``); ``None`` (the
#: default) leaves them alone. A guard against the rare step whose gradient
#: is orders of magnitude above the rest, which throws Adam's moments off for
#: an epoch (the loss spikes of the MNIST runs). 0 turns it off; may change
#: on resume.

#: ``--ema``: Polyak averaging. The optimizer keeps an exponential moving
#: average of the weights with this decay (Keras' ``use_ema``); validation,
#: the choice of epoch, test, samples and export use the averaged weights,
#: checkpoints keep both (training resumes from the raw ones). Fixed for a
#: run. On by default on digits (``_EMA``); 0 turns it off.

#: ``--dequantization``: uniform noise (the papers' convention) or a learned
#: q(u | x) (:class:`tfp_flows.dequantization.VariationalDequantization`).
DEQUANTIZATIONS = ("uniform", "variational")

# The learned dequantiser of ``--dequantization variational``: 4 conditional
# affine couplings with 32-channel networks on a 16-channel feature map
# (Flow++ used 4 couplings; these widths are sized for a CPU).
# The run's config records them (``dequantizer``); runs created before that
# key existed used Glow's sigmoid scale, and resume with it.
_DEQUANTIZER_ARGS: dict[str, Any] = dict(num_steps=4, hidden_channels=32,
                                         context_channels=16, scale_fn="exp_tanh")
_FIRST_DEQUANTIZER_ARGS: dict[str, Any] = dict(num_steps=4, hidden_channels=32,
                                               context_channels=16, scale_fn="sigmoid")

# Epoch budget of the default recipe on digits (60 x 18 steps of batch 64),
# chosen on validation: in a 100-epoch run validation bits/dim was lowest at
# epoch 46 and rose after ~55 (benchmarks/results/digits_recipe_epochs.md).
# Other datasets default to 10 epochs.
_EPOCHS = {"digits": 60}

# Weight averaging of the default recipe on digits (--ema): decay 0.99,
# chosen on validation: over seeds 0-2 the chosen epochs' validation
# bits/dim was 2.242 with it against 2.302 without (each seed 0.056-0.063
# lower; benchmarks/results/digits_ema.md). Other datasets: off.
_EMA = {"digits": 0.99}

# Model sizes for the 8x8 digits (the protocol's Glow; RealNVP and NICE sized
# as in benchmarks/digits_density.py).
_DIGITS_ARGS = {
    "glow": dict(num_levels=2, num_steps=8, hidden_channels=128),
    "real_nvp": dict(num_scales=2, hidden_channels=48, num_blocks=1),
    "nice": dict(num_couplings=4, hidden_units=256, num_hidden_layers=3),
}

# Arguments a builder gets from the dataset or the run, not from the user.
_RESERVED = ("image_shape", "event_shape", "n_bits", "num_bins", "dtype", "name",
             "num_classes")

EVAL_BATCH = 256


def _levels_for(shape, most):
    """Largest L <= most with H and W divisible by 2**L (at least 1)."""
    h, w = shape[:2]
    for levels in range(most, 0, -1):
        if h % 2 ** levels == 0 and w % 2 ** levels == 0:
            return levels
    return 1


def model_args_for(model: str, info: data.DatasetInfo,
                   overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Builder arguments for `model` on a dataset, with user overrides.

    Args:
      model: ``'glow'``, ``'real_nvp'`` or ``'nice'``.
      info: the dataset's :class:`tfp_flows.data.DatasetInfo`.
      overrides: ``{name: value}`` set by the user (``--model-arg``).

    Returns:
      ``{name: value}`` for the builder.

    Raises:
      ValueError: unknown model, or an override the builder does not take.
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of: "
                         f"{', '.join(MODELS)}.")
    builder = models.BUILDERS[model]
    valid = [p for p in inspect.signature(builder).parameters
             if p not in _RESERVED]
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(f"{model} has no argument {', '.join(unknown)}; "
                         f"valid --model-arg names: {', '.join(valid)}.")
    args: dict[str, Any]
    if info.name == "digits":
        args = dict(_DIGITS_ARGS[model])
    elif model == "glow":
        args = dict(num_levels=_levels_for(info.shape, 3), num_steps=8,
                    hidden_channels=128)
    elif model == "real_nvp":
        args = dict(num_scales=_levels_for(info.shape, 2) + 1,
                    hidden_channels=64, num_blocks=4)
    else:
        args = {}
    args.update(overrides)
    return args


def dataset_label(dataset: str) -> str:
    """A dataset's name for messages and folders: the name, or for a path
    its file or folder name (``faces`` for ``~/data/faces/``)."""
    if data.files.is_path(dataset):
        return os.path.basename(os.path.normpath(dataset))
    return dataset


def default_run_folder(model: str | None = None, dataset: str | None = None) -> str:
    """``runs/<model>-<dataset>``; a dataset given as a path is named by its
    file or folder name (``runs/glow-faces`` for ``~/data/faces/``)."""
    model = model or DEFAULTS["model"]
    dataset = dataset or DEFAULTS["dataset"]
    if data.files.is_path(dataset):
        dataset = os.path.splitext(dataset_label(dataset))[0]
    return os.path.join("runs", f"{model}-{dataset.replace('_', '-')}")


def _dataset_info(config):
    info = data.info(config["dataset"], config["n_bits"], config["image_size"],
                     skip_bad=config.get("skip_bad_files", False))
    if info.kind != "image":
        raise ValueError(f"'{info.name}' is 2-D toy data; tfp-flows train fits "
                         "image models (see examples/nice_toy2d.py for flows "
                         "on 2-D data).")
    return info


def new_config(requested: Mapping[str, Any]) -> dict[str, Any]:
    """The full config of a new run from the settings the user gave.

    Builds the model once, to validate the settings and record the builder's
    complete config (``model_config``, rebuilt by
    :func:`tfp_flows.models.from_config`).
    """
    config: dict[str, Any] = dict(DEFAULTS)
    config.update({k: v for k, v in requested.items() if k != "model_args"})
    for key, choices in (("dequantization", DEQUANTIZATIONS), ("precision", PRECISIONS)):
        if config[key] not in choices:
            raise ValueError(f"{key} must be one of {', '.join(choices)}, got "
                             f"{config[key]!r}.")
    info = _dataset_info(config)
    config["epochs"] = requested.get("epochs", _EPOCHS.get(info.name, 10))
    if "ema" not in requested:
        config["ema"] = _EMA.get(info.name)
    args = model_args_for(config["model"], info, requested.get("model_args"))
    if config["model"] == "glow":
        args.setdefault("seed", config["seed"])
    config["model_args"] = args
    keras.utils.set_random_seed(config["seed"])
    dist = models.BUILDERS[config["model"]](list(info.shape),
                                            num_bins=info.num_bins, **args)
    config["model_config"] = dict(dist.bijector.description.config)
    if config["dequantization"] == "variational":
        config["dequantizer"] = dict(_DEQUANTIZER_ARGS)
    config["format"] = 1
    config["tfp_flows_version"] = tfp_flows.__version__
    return config


def build_model(config: Mapping[str, Any]) -> FlowModel:
    """A compiled :class:`FlowModel` for a run config (fresh weights), its
    networks built under the config's ``precision`` policy; with
    ``dequantization='variational'`` it trains a learned q(u | x) too."""
    keras.utils.set_random_seed(config["seed"])
    with networks.global_policy(config.get("precision", "float32")):
        dist = models.from_config(config["model_config"])
    deq = None
    if config.get("dequantization", "uniform") == "variational":
        bins = tfp_flows.flow_ops.num_bins(dist)
        if bins is None:
            raise ValueError("variational dequantisation needs an image model "
                             "with pixel bins.")
        deq = VariationalDequantization(
            dist.event_shape.as_list(), num_bins=int(bins),
            **(config.get("dequantizer") or _FIRST_DEQUANTIZER_ARGS))
    model = FlowModel(dist, dequantization=deq)
    ema = config.get("ema")
    model.compile(optimizer=keras.optimizers.Adam(
        config["learning_rate"], global_clipnorm=config.get("clip_norm") or None,
        use_ema=bool(ema), ema_momentum=ema or 0.99))
    return model


def use_averaged_weights(model: FlowModel) -> None:
    """Replaces `model`'s trainable weights by the optimizer's exponential
    moving averages when the run keeps them (``--ema``); else nothing.

    The weights a checkpoint restores are the raw ones (training resumes
    from them); the run's model -- scored, sampled, exported -- is their
    average.
    """
    if getattr(model.optimizer, "use_ema", False):
        model.optimizer.finalize_variable_values(model.trainable_variables)


def datasets(config: Mapping[str, Any], first_epoch: int = 0,
             split: str = "train") -> tf.data.Dataset:
    """The run's training (or other split's) pipeline.

    The shuffle seed is offset by ``first_epoch`` so that a resumed run does
    not replay the first epochs' order (a run resumed inside an epoch passes
    its optimizer step instead).
    """
    training = split == "train"
    return data.load(config["dataset"], split,
                     config["batch_size"] if training else EVAL_BATCH,
                     n_bits=config["n_bits"], image_size=config["image_size"],
                     data_dir=config.get("data_dir"),
                     skip_bad=config.get("skip_bad_files", False),
                     seed=config["seed"] + first_epoch if training else None)
