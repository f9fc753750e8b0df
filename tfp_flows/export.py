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

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf
from tensorflow_probability import bijectors as tfb
from tensorflow_probability import distributions as tfd

from tfp_flows import evaluation, flow_ops
from tfp_flows.bijectors import ActNorm, flow_bijectors
from tfp_flows.bijectors.chain import forward_and_log_det
from tfp_flows.description import describe
from tfp_flows.typing import PathLike, TensorLike

if TYPE_CHECKING:
    from tfp_flows.training.flow_model import FlowModel

__all__ = ["export", "ServingModule", "ExportPathExistsError",
           "sample_with_seed", "bits_per_dim_with_seed", "stateless_seed",
           "conditioning_kwargs", "class_conditional_priors"]


class ExportPathExistsError(FileExistsError, ValueError):
    """The export path exists and ``overwrite`` was not set."""


def _as_distribution(dist_or_flowmodel):
    """The distribution of a flow, or of an object with `.distribution`."""
    if isinstance(dist_or_flowmodel, tfd.Distribution):
        return dist_or_flowmodel
    dist = getattr(dist_or_flowmodel, "distribution", None)
    if isinstance(dist, tfd.Distribution):
        return dist
    raise ValueError(
        "export needs a tfp_flows distribution or an object with a "
        f"`.distribution` attribute (e.g. a FlowModel); got "
        f"{type(dist_or_flowmodel).__name__}.")


def class_conditional_priors(dist: tfd.Distribution) -> list[tfb.Bijector]:
    """The class-conditional bijectors of a flow (those taking ``labels``)."""
    bijector = getattr(dist, "bijector", None)
    if bijector is None:
        return []
    return [b for b in flow_bijectors(bijector)
            if getattr(b, "num_classes", None) is not None]


def conditioning_kwargs(dist: tfd.Distribution,
                        labels: TensorLike | None) -> dict[str, Any]:
    """``bijector_kwargs`` routing ``labels`` to every class-conditional prior.

    Args:
      dist: a flow distribution.
      labels: int tensor of the batch shape, or None for an unconditional model.

    Raises:
      ValueError: labels missing for a conditional model, or given to an
        unconditional one.
    """
    priors = class_conditional_priors(dist)
    if not priors:
        if labels is not None:
            raise ValueError("this model is not class-conditional; labels were "
                             "given.")
        return {}
    if labels is None:
        raise ValueError(
            "this model is class-conditional (priors "
            f"{[b.name for b in priors]}): labels are required.")
    return {b.name: {"labels": labels} for b in priors}


def stateless_seed(seed: int | tf.Tensor) -> tf.Tensor:
    """An ``int32 [2]`` stateless-RNG seed from an integer ``seed`` (any int64).

    The low and high 31-bit parts of ``seed`` form the two words, so distinct
    seeds below ``2**62`` give distinct streams.
    """
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    base = tf.constant(2 ** 31, tf.int64)
    return tf.cast(tf.stack([tf.math.floormod(seed, base),
                             tf.math.floormod(tf.math.floordiv(seed, base), base)]),
                   tf.int32)


def sample_with_seed(dist: tfd.TransformedDistribution, num: int | tf.Tensor,
                     temperature: float | tf.Tensor, seed: int | tf.Tensor,
                     labels: TensorLike | None = None) -> tf.Tensor:
    """Seeded temperature sampling with stateless RNG ops (graph-safe).

    The same function runs inside the exported ``sample`` signature, so the
    same ``seed`` gives the same samples in memory and after loading.

    Args:
      dist: a tfp_flows distribution.
      num: int scalar, number of samples.
      temperature: float scalar >= 0; the base noise is scaled by it.
      seed: int scalar (see :func:`stateless_seed`).
      labels: ``int [num]`` for a class-conditional model.

    Returns:
      ``[num, *event_shape]`` samples.
    """
    kwargs = conditioning_kwargs(dist, labels)
    if not isinstance(temperature, tf.Tensor):
        temperature = evaluation.check_temperature(temperature)
    z = evaluation.base_sample(dist, num, tf.cast(temperature, dist.dtype),
                               stateless_seed(seed))
    return forward_and_log_det(dist.bijector, z, **kwargs)[0]


def bits_per_dim_with_seed(dist: tfd.TransformedDistribution, images: TensorLike,
                           seed: int | tf.Tensor,
                           labels: TensorLike | None = None) -> tf.Tensor:
    """Bits/dim of integer pixels with stateless dequantisation noise.

    ``-log p(x + u) / (D log 2)`` with ``u = stateless_uniform(seed)`` in
    ``[0, 1)``; the same function runs inside the ``bits_per_dim`` signature.

    Args:
      dist: a tfp_flows distribution with pixel bins.
      images: ``[N, *event_shape]`` integer-valued pixels.
      seed: int scalar (see :func:`stateless_seed`).
      labels: ``int [N]`` for a class-conditional model.

    Returns:
      ``[N]`` bits/dim.
    """
    x = evaluation.dequantize(tf.cast(images, dist.dtype), stateless_seed(seed))
    return flow_ops.bits_per_dim(dist, x, dequantize=False,
                                 bijector_kwargs=conditioning_kwargs(dist, labels))


def _check_finite(x, what):
    return tf.debugging.assert_all_finite(x, f"{what} contains NaN or Inf")


def _check_ready(dist):
    """Refuses flows whose data-dependent init has not run."""
    pending = [b.name for b in flow_bijectors(dist.bijector)
               if isinstance(b, ActNorm) and b.needs_initialization()]
    if pending:
        raise ValueError(
            f"ActNorm layers {pending} are not initialised: train the model or "
            "call tfp_flows.initialize(dist, batch) before exporting (otherwise "
            "the served model would initialise itself on its first request).")


class ServingModule(tf.Module):
    """A `tf.Module` holding a flow and its serving functions.

    The functions (``log_prob``, ``bits_per_dim``, ``sample``, ``encode``,
    ``decode``, ``decode_levels`` for multi-scale models, ``metadata``) are
    `tf.function`s with fixed input signatures; :func:`export` saves them as
    the SavedModel's signatures. Calling them in memory gives the in-memory
    reference of the exported model.

    Args:
      dist_or_flowmodel: a tfp_flows distribution (a
        `tfd.TransformedDistribution` with a static event shape), or an object
        with a ``.distribution`` attribute.
    """

    def __init__(self, dist_or_flowmodel: tfd.Distribution | FlowModel,
                 name: str = "tfp_flows_serving") -> None:
        super().__init__(name=name)
        dist = _as_distribution(dist_or_flowmodel)
        if not (isinstance(getattr(dist, "bijector", None), tfb.Bijector)
                and isinstance(getattr(dist, "distribution", None),
                               tfd.Distribution)):
            raise ValueError("export needs a flow, i.e. a "
                             "tfd.TransformedDistribution; got "
                             f"{type(dist).__name__}.")
        if not dist.event_shape.is_fully_defined():
            raise ValueError(f"the flow's event shape {dist.event_shape} must "
                             "be fully known to export it.")
        if dist.batch_shape.rank is None or dist.batch_shape.rank != 0:
            raise ValueError("export needs a flow with an empty batch shape; "
                             f"got batch shape {dist.batch_shape}.")
        _check_ready(dist)
        # Only the variables are saved (and the signatures' graphs): tracking
        # the distribution object itself would serialise TFP/Keras internals
        # the SavedModel does not need, and make saving several times slower.
        self._distribution = self._no_dependency(dist)
        self.model_variables = list(dist.variables)
        description = describe(dist)
        self._levels = list(description.levels) if description else []
        self._num_bins = description.num_bins if description else None
        self._conditional = bool(class_conditional_priors(dist))
        self._event = tuple(dist.event_shape.as_list())
        self._config_json = json.dumps(dict(description.config) if description else {},
                                       sort_keys=True, default=str)
        self._build()

    @property
    def distribution(self) -> tfd.Distribution:
        """The exported flow (in memory only; not part of the SavedModel)."""
        return self._distribution

    @property
    def signature_names(self) -> list[str]:
        """Names of the serving signatures, in a fixed order."""
        names = ["log_prob", "bits_per_dim", "sample", "encode", "decode"]
        if len(self._levels) > 1:
            names.append("decode_levels")
        return names

    def signatures(self) -> dict[str, Callable[..., Any]]:
        """``{name: tf.function}`` for `tf.saved_model.save`.

        The functions are passed untraced: saving traces them once in its own
        context (tracing them beforehand as well would double the cost).
        """
        return {n: getattr(self, n) for n in self.signature_names}

    def _level_shapes(self):
        """Per-level latent event shapes, found by encoding one zero image."""
        z = tf.zeros((1,) + self._event, self._distribution.dtype)
        labels = tf.zeros([1], tf.int32) if self._conditional else None
        levels = flow_ops.encode(self._distribution, z, self._kw(labels)).levels
        return [tuple(t.shape[1:].as_list()) for t in levels]

    def _kw(self, labels):
        return conditioning_kwargs(self._distribution,
                                   labels if self._conditional else None)

    def _build(self):
        dist, event, dtype = self._distribution, self._event, self._distribution.dtype
        data = tf.TensorSpec((None,) + event, dtype, name="x")
        label = tf.TensorSpec([None], tf.int32, name="labels")
        cond = self._conditional

        def labels_match(n, labels, what):
            return tf.debugging.assert_equal(
                tf.size(labels, out_type=tf.int32), tf.cast(n, tf.int32),
                message=f"labels must have one entry per {what}")

        def log_prob_fn(x, labels=None):
            with tf.control_dependencies([_check_finite(x, "x")] + (
                    [labels_match(tf.shape(x)[0], labels, "input")] if cond else [])):
                return {"log_prob": dist.log_prob(x, bijector_kwargs=self._kw(labels))}

        bpd_fn: Callable[..., dict[str, tf.Tensor]]
        if self._num_bins is not None:
            bins = float(self._num_bins)

            def bpd_pixels_fn(images, seed, labels=None):
                checks = [
                    tf.debugging.assert_non_negative(
                        images, message="pixel values must be >= 0"),
                    tf.debugging.assert_less(
                        tf.cast(images, tf.float64), tf.constant(bins, tf.float64),
                        message=f"pixel values must be < num_bins={bins:g}")]
                if cond:
                    checks.append(labels_match(tf.shape(images)[0], labels, "image"))
                with tf.control_dependencies(checks):
                    return {"bits_per_dim": bits_per_dim_with_seed(
                        dist, images, seed, labels if cond else None)}
            bpd_fn = bpd_pixels_fn
            bpd_specs = [tf.TensorSpec((None,) + event, tf.int32, name="images"),
                         tf.TensorSpec([], tf.int64, name="seed")]
        else:
            dim = float(np.prod(event))

            def bpd_continuous_fn(x, labels=None):
                lp = log_prob_fn(x, labels)["log_prob"]
                return {"bits_per_dim": evaluation.bits_per_dim(lp, dim)}
            bpd_fn = bpd_continuous_fn
            bpd_specs = [data]

        def sample_fn(num, temperature, seed, labels=None):
            checks = [tf.debugging.assert_non_negative(
                temperature, message="temperature must be >= 0"),
                tf.debugging.assert_non_negative(
                    num, message="num must be >= 0")]
            if cond:
                checks.append(labels_match(num, labels, "sample"))
            with tf.control_dependencies(checks):
                return {"samples": sample_with_seed(
                    dist, num, temperature, seed, labels if cond else None)}
        sample_specs = [tf.TensorSpec([], tf.int32, name="num"),
                        tf.TensorSpec([], dtype, name="temperature"),
                        tf.TensorSpec([], tf.int64, name="seed")]

        def encode_fn(x, labels=None):
            with tf.control_dependencies([_check_finite(x, "x")]):
                lat = flow_ops.encode(dist, x, self._kw(labels))
            out = {"latent": lat.flat}
            if len(self._levels) > 1:
                out.update({f"level_{i + 1}": t for i, t in enumerate(lat.levels)})
            return out

        def decode_fn(latent, labels=None):
            with tf.control_dependencies([_check_finite(latent, "latent")]):
                return {"x": flow_ops.decode(dist, latent, self._kw(labels))}

        def with_labels(fn, specs):
            if not cond:
                return tf.function(fn, input_signature=specs, autograph=False)
            return tf.function(fn, input_signature=specs + [label],
                               autograph=False)

        self.log_prob = with_labels(log_prob_fn, [data])
        self.bits_per_dim = with_labels(bpd_fn, bpd_specs)
        self.sample = with_labels(sample_fn, sample_specs)
        self.encode = with_labels(encode_fn, [data])
        self.decode = with_labels(
            decode_fn, [tf.TensorSpec((None,) + event, dtype, name="latent")])
        if len(self._levels) > 1:
            shapes = self._level_shapes()
            names = [f"level_{i + 1}" for i in range(len(shapes))]
            specs = [tf.TensorSpec((None,) + s, dtype, name=n)
                     for s, n in zip(shapes, names)]

            def decode_levels_fn(*args):
                parts, labels = (args[:-1], args[-1]) if cond else (args, None)
                return {"x": flow_ops.decode(dist, list(parts), self._kw(labels))}
            self.decode_levels = with_labels(decode_levels_fn, specs)
        config, nb = self._config_json, float(self._num_bins or 0.0)

        @tf.function(input_signature=[], autograph=False)
        def metadata():
            return {"config_json": tf.constant(config),
                    "num_bins": tf.constant(nb, tf.float32),
                    "event_shape": tf.constant(event, tf.int32),
                    "class_conditional": tf.constant(cond)}
        self.metadata = metadata


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
