"""The serving module of an exported flow: its signatures as tf.functions.

:class:`ServingModule` holds a flow's variables and builds the functions that
:func:`tfp_flows.export` saves as the SavedModel's signatures (``log_prob``,
``bits_per_dim``, ``sample``, ``encode``, ``decode``, ``decode_levels``) and
its ``metadata()`` function, with the input checks that make bad serving
inputs fail with a `tf.errors.InvalidArgumentError`. The signatures are
documented in :mod:`tfp_flows.export`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf
from tensorflow_probability import bijectors as tfb
from tensorflow_probability import distributions as tfd

from tfp_flows import evaluation, flow_ops
from tfp_flows.bijectors import ActNorm, flow_bijectors
from tfp_flows.description import describe
from tfp_flows.serving_ops import (
    bits_per_dim_with_seed,
    class_conditional_priors,
    conditioning_kwargs,
    sample_with_seed,
    variational_bits_per_dim_with_seed,
)

if TYPE_CHECKING:
    from tfp_flows.training.flow_model import FlowModel

__all__ = ["ServingModule"]


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
    `tf.function`s with fixed input signatures; :func:`tfp_flows.export`
    saves them as the SavedModel's signatures. Calling them in memory gives
    the in-memory reference of the exported model.

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
        # A FlowModel's learned dequantiser: its variables and a signature.
        deq = getattr(dist_or_flowmodel, "dequantization", None)
        self._dequantization = self._no_dependency(deq)
        if deq is not None:
            self.dequantization_variables = list(deq.variables)
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
        if self._dequantization is not None:
            names.append("variational_bits_per_dim")
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

            def pixel_checks(images, labels):
                checks = [
                    tf.debugging.assert_non_negative(
                        images, message="pixel values must be >= 0"),
                    tf.debugging.assert_less(
                        tf.cast(images, tf.float64), tf.constant(bins, tf.float64),
                        message=f"pixel values must be < num_bins={bins:g}")]
                if cond:
                    checks.append(labels_match(tf.shape(images)[0], labels, "image"))
                return checks

            def bpd_pixels_fn(images, seed, labels=None):
                with tf.control_dependencies(pixel_checks(images, labels)):
                    return {"bits_per_dim": bits_per_dim_with_seed(
                        dist, images, seed, labels if cond else None)}
            bpd_fn = bpd_pixels_fn
            bpd_specs = [tf.TensorSpec((None,) + event, tf.int32, name="images"),
                         tf.TensorSpec([], tf.int64, name="seed")]
            deq = self._dequantization

            def variational_bpd_fn(images, seed, labels=None):
                with tf.control_dependencies(pixel_checks(images, labels)):
                    return {"bits_per_dim": variational_bits_per_dim_with_seed(
                        dist, deq, images, seed, labels if cond else None)}
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
        if self._dequantization is not None:
            self.variational_bits_per_dim = with_labels(variational_bpd_fn, bpd_specs)
        self.sample = with_labels(sample_fn, sample_specs)
        self.encode = with_labels(encode_fn, [data])
        # the latent's event shape is the base distribution's: the image
        # shape for Glow and RealNVP, a flat vector for NICE on images
        latent_event = tuple(dist.distribution.event_shape.as_list())
        self.decode = with_labels(
            decode_fn, [tf.TensorSpec((None,) + latent_event, dtype, name="latent")])
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
