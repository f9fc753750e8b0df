"""Model builders: each returns a `tfd.TransformedDistribution`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tensorflow_probability import distributions as tfd

from tfp_flows.models.glow import glow
from tfp_flows.models.nice import nice
from tfp_flows.models.real_nvp import real_nvp
from tfp_flows.models.vector import vector_flow

BUILDERS: dict[str, Callable[..., tfd.TransformedDistribution]] = {
    "glow": glow, "real_nvp": real_nvp, "nice": nice,
            "vector_flow": vector_flow}


def from_config(config: Mapping[str, Any], *,
                validate_args: bool = False) -> tfd.TransformedDistribution:
    """Rebuilds a model from ``dist.bijector.description.config``.

    ``config`` holds the builder's own keyword arguments plus ``model``.
    ``validate_args`` is the builders' run-time checking flag, which the
    config does not record.
    """
    config = dict(config)
    model = config.pop("model")
    if model not in BUILDERS:
        raise ValueError(f"unknown model {model!r}; expected one of "
                         f"{sorted(BUILDERS)}.")
    shape_key = ("event_shape" if model in ("nice", "vector_flow")
                 else "image_shape")
    shape = config.pop(shape_key)
    return BUILDERS[model](shape, validate_args=validate_args, **config)


__all__ = ["glow", "real_nvp", "nice", "vector_flow", "from_config",
           "BUILDERS"]
