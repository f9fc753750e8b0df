"""`ReversibleChain`: a `FlowChain` whose gradients are reversible, and
:func:`memory_efficient`, which switches a whole flow to (or from) it."""

from __future__ import annotations

from typing import Any

import tensorflow as tf
from tensorflow_probability import bijectors as tfb
from tensorflow_probability import distributions as tfd

from tfp_flows.bijectors.chain import FactorOut, FlowChain
from tfp_flows.bijectors.reversible import gradient

__all__ = ["ReversibleChain", "memory_efficient"]


class ReversibleChain(FlowChain):
    """A `FlowChain` whose gradients recompute activations instead of
    storing them: training memory does not grow with depth.

    Same values, arguments and variables as `FlowChain`. Its gradient
    reconstructs each layer's input from the layer's output during the
    backward pass (see :mod:`tfp_flows.bijectors.reversible`), descending
    into nested chains: a `FlowChain` nested in a `ReversibleChain` is
    covered by the outer chain's gradient.

    Example:
      >>> from tfp_flows import masks
      >>> from tfp_flows.bijectors import ActNorm, AffineCoupling
      >>> chain = ReversibleChain([ActNorm(2, event_ndims=1),
      ...                          AffineCoupling(masks.channel([2]))])
      >>> chain.memory_efficient
      True
    """

    @property
    def memory_efficient(self) -> bool:
        """True: gradients are reversible."""
        return True

    def _inverse_and_log_det(self, y: tf.Tensor, **kwargs: Any) -> tuple[tf.Tensor, tf.Tensor]:
        return gradient.inverse_and_log_det(self, self._check_data(y), **kwargs)

    def _forward_and_log_det(self, x: tf.Tensor, **kwargs: Any) -> tuple[tf.Tensor, tf.Tensor]:
        return gradient.forward_and_log_det(self, self._finite(x, "latents"), **kwargs)


def memory_efficient(dist_or_bijector: tfd.Distribution | tfb.Bijector,
                     enabled: bool = True) -> tfd.Distribution | FlowChain:
    """An equivalent flow whose gradients are reversible (or not).

    Rebuilds the containers (`FlowChain` as `ReversibleChain` or back,
    `FactorOut`, `tfb.Invert` of those, and `tfb.Chain`, which becomes one of
    the two) and reuses every leaf bijector, so the result shares all
    variables (and Keras layers) with the original: training one trains the
    other. A leaf bijector given on its own is wrapped in a one-element
    chain; its conditioning kwargs are then routed by its name.

    Args:
      dist_or_bijector: a `tfd.TransformedDistribution` over a tfp_flows chain
        (e.g. from `tfp_flows.models`), or a bijector.
      enabled: True for reversible gradients, False for the normal path.

    Returns:
      A distribution (same base distribution and name) or a chain
      (`ReversibleChain` if `enabled`, else `FlowChain`).

    Raises:
      TypeError: if the argument is neither a bijector nor a transformed
        distribution.

    Example:
      >>> import tfp_flows
      >>> dist = tfp_flows.models.glow([8, 8, 3], 2, 2, 16)
      >>> lean = tfp_flows.memory_efficient(dist)
      >>> lean.trainable_variables == dist.trainable_variables
      True
    """
    if isinstance(dist_or_bijector, tfd.Distribution) and isinstance(
            getattr(dist_or_bijector, "bijector", None), tfb.Bijector):
        # (tfd.TransformedDistribution may build a non-composite subclass.)
        bijector = memory_efficient(dist_or_bijector.bijector, enabled)
        return tfd.TransformedDistribution(
            dist_or_bijector.distribution, bijector,
            validate_args=dist_or_bijector.validate_args, name=dist_or_bijector.name)
    if not isinstance(dist_or_bijector, tfb.Bijector):
        raise TypeError(
            "memory_efficient() takes a tfd.TransformedDistribution or a "
            f"bijector, got {type(dist_or_bijector).__name__}.")
    chain_type = ReversibleChain if enabled else FlowChain
    rebuilt = _rebuild(dist_or_bijector, chain_type)
    if isinstance(rebuilt, FlowChain):
        return rebuilt
    return chain_type([rebuilt], name=f"{rebuilt.name}_chain")


def _rebuild(b, chain_type):
    if isinstance(b, FlowChain):
        new = chain_type([_rebuild(c, chain_type) for c in b.bijectors],
                         data_event_shape=b.data_event_shape,
                         validate_args=b.validate_args, name=b.name)
        if b.description is not None:
            new.description = b.description.replace(
                config={"memory_efficient": new.memory_efficient})
        return new
    if isinstance(b, FactorOut):
        return FactorOut(_rebuild(b.bijector, chain_type), b.num_kept,
                         validate_args=b.validate_args, name=b.name)
    if isinstance(b, tfb.Invert) and isinstance(
            b.bijector, (FlowChain, FactorOut, tfb.Chain)):
        return tfb.Invert(_rebuild(b.bijector, chain_type),
                          validate_args=b.validate_args, name=b.name)
    if type(b) is tfb.Chain:  # pylint: disable=unidiomatic-typecheck
        names = [c.name for c in b.bijectors]
        if len(set(names)) == len(names):
            return chain_type([_rebuild(c, chain_type) for c in b.bijectors],
                              validate_args=b.validate_args, name=b.name)
    return b
