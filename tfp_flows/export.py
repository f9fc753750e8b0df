"""SavedModel export of a flow, with serving signatures.

:func:`export` writes a TensorFlow SavedModel that needs neither tfp_flows nor
TensorFlow Probability to load: every signature is a plain TF graph over the
model's variables. Loading is ``tf.saved_model.load(path)``; the signatures
are also usable from ``saved_model_cli`` and TF Serving.

Signatures (``N`` is a variable batch size, ``E`` the event shape, e.g.
``[H, W, C]``; ``labels`` is an extra ``int32 [N]`` input of every signature
for a class-conditional model)::

    log_prob(x: float[N, *E])                 -> {"log_prob": float[N]}
    bits_per_dim(images: int32[N, *E],        -> {"bits_per_dim": float[N]}
                 seed: int64[])
    variational_bits_per_dim(images, seed)    -> {"bits_per_dim": float[N]}
    sample(num: int32[], temperature: float[],-> {"samples": float[num, *E]}
           seed: int64[])
    encode(x: float[N, *E])                   -> {"latent": float[N, *E],
                                                  "level_1": ..., ...}
    decode(latent: float[N, *E])              -> {"x": float[N, *E]}
    decode_levels(level_1, ..., level_L)      -> {"x": float[N, *E]}

* ``log_prob`` is the density of continuous data in the model's event space
  (pixel units for image models).
* ``bits_per_dim`` takes **integer** pixels in ``[0, num_bins)``, adds uniform
  dequantisation noise ``u ~ U[0, 1)`` drawn with the stateless RNG from
  ``seed`` and returns ``-log p(x + u) / (D log 2)`` (the papers'
  convention, :func:`tfp_flows.bits_per_dim`). For a model without pixel bins
  (a density over vectors) it takes continuous ``x: float[N, *E]`` and no
  seed, and returns ``-log p(x) / (D log 2)``.
* ``variational_bits_per_dim`` exists only for a `FlowModel` trained with
  a learned dequantiser (:class:`tfp_flows.dequantization.
  VariationalDequantization`): the same checks, noise ``u ~ q(u | x)``
  drawn with the stateless RNG from ``seed``, and the variational bound
  ``-(log p(x + u) - log q(u | x)) / (D log 2)``.
* ``sample`` scales the base noise by ``temperature`` (Glow's temperature) and
  uses stateless RNG ops, so a seed gives the same samples in memory
  (:func:`sample_with_seed`, :class:`ServingModule`) and after loading. For a
  class-conditional model ``labels`` must have ``num`` entries.
* ``encode`` returns the flat latent plus, for multi-scale models, one output
  per level (finest first, as :func:`tfp_flows.encode`); ``decode`` and
  ``decode_levels`` invert it.

The loaded object also has a ``metadata()`` function returning the model's
config as JSON (rebuild with :func:`tfp_flows.models.from_config`), its
number of pixel bins (0 when none) and event shape.

Bad serving inputs (NaN/Inf, pixels out of range, negative temperature, wrong
label count) fail with a `tf.errors.InvalidArgumentError` naming the problem.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import TYPE_CHECKING

import tensorflow as tf
from tensorflow_probability import distributions as tfd

# The serving module and its seeded helpers live in tfp_flows.serving and
# tfp_flows.serving_ops; they stay importable from here.
from tfp_flows.serving import ServingModule
from tfp_flows.serving_ops import (
    bits_per_dim_with_seed,
    class_conditional_priors,
    conditioning_kwargs,
    sample_with_seed,
    stateless_seed,
)
from tfp_flows.typing import PathLike

if TYPE_CHECKING:
    from tfp_flows.training.flow_model import FlowModel

__all__ = ["export", "ServingModule", "ExportPathExistsError",
           "sample_with_seed", "bits_per_dim_with_seed", "stateless_seed",
           "conditioning_kwargs", "class_conditional_priors"]


class ExportPathExistsError(FileExistsError, ValueError):
    """The export path exists and ``overwrite`` was not set."""


def export(dist_or_flowmodel: tfd.Distribution | FlowModel, path: PathLike,
           overwrite: bool = False) -> ServingModule:
    """Writes a flow as a SavedModel with serving signatures.

    See the module docstring for the signatures. The SavedModel loads with
    ``tf.saved_model.load(path)`` in a process where neither tfp_flows nor
    TensorFlow Probability is installed.

    Args:
      dist_or_flowmodel: a tfp_flows distribution, or an object with a
        ``.distribution`` attribute (e.g. a Keras ``FlowModel``). Its ActNorm
        layers must be initialised.
      path: directory to create.
      overwrite: replace an existing ``path``. The new model is written to a
        temporary directory next to it first, so a failed export leaves the
        old one intact.

    Returns:
      The :class:`ServingModule` that was saved (its functions are the
      in-memory equivalents of the signatures).

    Raises:
      ExportPathExistsError: ``path`` exists and ``overwrite`` is False.
      ValueError: not a flow, unknown event shape, or uninitialised ActNorm.
    """
    path = os.fspath(path)
    if os.path.lexists(path) and not overwrite:
        raise ExportPathExistsError(
            f"export path {path!r} already exists; pass overwrite=True to "
            "replace it.")
    module = ServingModule(dist_or_flowmodel)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        tf.saved_model.save(module, tmp, signatures=module.signatures())
        if os.path.lexists(path):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return module
