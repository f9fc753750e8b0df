"""What a model builder knows about the flow it built, in one typed place.

`tfp_flows.models` builders attach a :class:`FlowDescription` to the chain
they return (``dist.bijector.description``). Everything that needs a fact
about a model — the pixel range for bits/dim and sampling, the multi-scale
levels for encoding, the bijector that takes class labels for training and
export, the config that rebuilds it for saving — reads it from here, instead
of guessing. A hand-built `FlowChain` has no description (None): those
features then ask for the fact explicitly.

Example:
  >>> import tfp_flows
  >>> d = tfp_flows.models.glow([8, 8, 1], 2, 2, 16, num_bins=17).bijector.description
  >>> d.model, d.num_bins, d.levels, d.label_bijector
  ('glow', 17.0, ((2, 2), (2, None)), None)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tensorflow_probability import bijectors as tfb
    from tensorflow_probability import distributions as tfd

__all__ = ["FlowDescription", "describe"]


@dataclasses.dataclass(frozen=True)
class FlowDescription:
    """A built flow's facts (frozen; build a new one with `replace`).

    Attributes:
      model: builder name: ``'glow'``, ``'real_nvp'``, ``'nice'`` or
        ``'vector_flow'`` (a key of `tfp_flows.models.BUILDERS`).
      config: the builder's keyword arguments plus ``model``: enough for
        `tfp_flows.models.from_config` to rebuild the model (JSON-able).
      event_shape: the data-side event shape, e.g. ``(28, 28, 1)``.
      num_bins: pixel intensity levels (the event space is
        ``[0, num_bins)``), or None for continuous data.
      levels: for multi-scale image models, one ``(squeeze factor, kept
        channels)`` pair per level, data side first (``kept`` is None for
        the last level); empty otherwise. `tfp_flows.encode` splits the
        latent by it.
      num_classes: number of classes of a class-conditional model, else None.
      label_bijector: name of the bijector that takes ``labels=`` (e.g.
        ``'top_prior'`` for Glow, ``'class_prior'`` for `vector_flow`), or
        None when the model is not class-conditional.
    """

    model: str
    config: Mapping[str, Any]
    event_shape: tuple[int, ...]
    num_bins: int | float | None = None
    levels: tuple[tuple[int, int | None], ...] = ()
    num_classes: int | None = None
    label_bijector: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "config", dict(self.config))
        object.__setattr__(self, "event_shape", tuple(int(d) for d in self.event_shape))
        object.__setattr__(self, "levels", tuple(
            (int(f), None if k is None else int(k)) for f, k in self.levels))
        if (self.num_classes is None) != (self.label_bijector is None):
            raise ValueError("num_classes and label_bijector go together: a "
                             "class-conditional model names the bijector that "
                             f"takes labels; got num_classes={self.num_classes!r}, "
                             f"label_bijector={self.label_bijector!r}.")

    @property
    def conditional(self) -> bool:
        """Whether the model takes class labels."""
        return self.label_bijector is not None

    def replace(self, **changes: Any) -> FlowDescription:
        """A copy with some fields changed; ``config=`` entries are merged
        into the current config."""
        if "config" in changes:
            changes["config"] = {**self.config, **changes["config"]}
        return dataclasses.replace(self, **changes)


def describe(dist_or_bijector: tfd.Distribution | tfb.Bijector) -> FlowDescription | None:
    """The description of a flow built by `tfp_flows.models`, else None.

    Args:
      dist_or_bijector: a `tfd.TransformedDistribution` or its bijector.
    """
    bijector = getattr(dist_or_bijector, "bijector", dist_or_bijector)
    description = getattr(bijector, "description", None)
    return description if isinstance(description, FlowDescription) else None
