"""A RealNVP-style flow over vectors, for variational inference and NeuTra.

The image models (Glow, RealNVP, NICE) are densities over pixels. For
posterior approximation (``tfp.vi.fit_surrogate_posterior``) and as an MCMC
transport map (``tfp.mcmc.TransformedTransitionKernel``) one wants a flow over
unconstrained vectors ``R^D``: this builder stacks affine couplings with
alternating vector masks (Dinh et al., 2016) and MLP coupling networks, then a
learned elementwise affine map (location and scale) on the data side. With
``coupling='spline'`` the couplings are neural splines (Durkan et al., 2019).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tensorflow_probability import bijectors as tfb
from tensorflow_probability import distributions as tfd

from tfp_flows import masks, networks, priors
from tfp_flows.bijectors import ActNorm, AffineCoupling, SplineCoupling
from tfp_flows.models import _common
from tfp_flows.typing import DTypeLike, Shape

__all__ = ["vector_flow", "ClampedMLP"]


@keras.saving.register_keras_serializable(package="tfp_flows")
class ClampedMLP(networks.MLP):
    """An affine-coupling MLP whose raw scale output is soft-clamped.

    The output is ``(shift, c * tanh(raw / c))`` with ``c = max_log_scale``:
    with ``scale_fn='exp'`` each coupling scales by at most ``e^c``. This keeps
    the wide range of the unbounded scale (needed e.g. for Neal's funnel)
    while one large optimisation step cannot overflow ``exp`` (a NaN in VI).
    At zero raw output it is the identity, like the plain MLP.
    """

    def __init__(self, out_units: int, hidden_units: int = 256, num_hidden_layers: int = 2,
                 max_log_scale: float = 3.0, **kwargs: Any) -> None:
        super().__init__(out_units, hidden_units, num_hidden_layers, **kwargs)
        if out_units % 2:
            raise ValueError(f"out_units must be even (shift and scale), got "
                             f"{out_units}.")
        self.max_log_scale = float(max_log_scale)
        if self.max_log_scale <= 0:
            raise ValueError(f"max_log_scale must be positive, got "
                             f"{max_log_scale}.")

    def call(self, x: tf.Tensor) -> tf.Tensor:
        shift, raw = tf.split(super().call(x), 2, axis=-1)
        c = tf.cast(self.max_log_scale, raw.dtype)
        return tf.concat([shift, c * tf.tanh(raw / c)], axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "max_log_scale": self.max_log_scale}


def vector_flow(event_shape: int | Shape, num_couplings: int = 4, hidden_units: int = 64,
                num_hidden_layers: int = 2, *, scale_fn: str = "exp_tanh",
                mask_pattern: str = "alternate", seed: int | None = None,
                max_log_scale: float | None = None,
                affine: bool = True, coupling: str = "affine",
                num_spline_bins: int = 8, spline_bound: float = 3.0,
                num_classes: int | None = None, dtype: DTypeLike = tf.float32,
                validate_args: bool = False,
                name: str = "vector_flow") -> tfd.TransformedDistribution:
    """Builds a flow over vectors ``[D]`` with a standard normal base.

    Data -> latent (the bijector's ``inverse``)::

        x -> (x - loc) / scale -> coupling_0 -> ... -> coupling_{K-1}
          [-> class-conditional prior]  -> z ~ N(0, I_D)

    With ``mask_pattern='alternate'``, coupling ``k`` conditions on the entries
    of parity ``k % 2`` (a checkerboard over the vector); with ``'random'``,
    couplings come in pairs conditioning on a random half and then on its
    complement, so that across pairs every entry is transformed given
    different others (alternating parities always split the same two sets,
    which matters for D > 2). The transformed entries get
    ``y = x * s(h) + t(h)``, ``(t, h) = MLP(conditioning part)``. The MLPs end
    in a zero layer, and the affine map starts at ``loc = 0, scale = 1``, so a
    fresh flow is the identity: it starts as the standard normal.

    Args:
      event_shape: ``D`` or ``[D]``, ``D >= 2``.
      num_couplings: number of affine couplings (>= 2 so that every entry is
        transformed).
      hidden_units: width of each hidden layer of the coupling MLPs.
      num_hidden_layers: number of hidden layers of each coupling MLP.
      scale_fn: ``'exp_tanh'`` (bounded per layer), ``'sigmoid'`` or ``'exp'``
        (unbounded, needed for scales that vary over orders of magnitude, e.g.
        Neal's funnel); see `AffineCoupling`.
      mask_pattern: ``'alternate'`` or ``'random'`` (see above).
      seed: seed of the random masks.
      max_log_scale: if set, the raw scale is soft-clamped to
        ``(-max_log_scale, max_log_scale)`` before ``scale_fn``
        (:class:`ClampedMLP`); with ``scale_fn='exp'`` this bounds each
        coupling's log-scale, which keeps VI on heavy-tailed targets from
        overflowing.
      affine: add the learned elementwise location/scale on the data side (an
        `ActNorm` without data-dependent initialisation).
      coupling: ``'affine'`` (the couplings above) or ``'spline'``:
        rational-quadratic neural spline couplings
        (:class:`~tfp_flows.bijectors.SplineCoupling`) with the same masks and
        MLPs; `scale_fn` does not apply, and `max_log_scale`, if set, gives
        each spline coupling an affine map before its spline (log-scale
        soft-clamped to ``(-max_log_scale, max_log_scale)``).
      num_spline_bins: bins of each spline (``coupling='spline'``).
      spline_bound: B, the splines act on ``[-B, B]`` and are the identity
        outside. The default B = 3 suits roughly standardised values;
        raise it for a target whose scale is much wider (the data-side
        affine map starts at the identity).
      num_classes: if set, a class-conditional Gaussian prior
        (:class:`tfp_flows.priors.LearnedPrior` named ``'class_prior'``);
        pass ``bijector_kwargs={'class_prior': {'labels': y}}``.
      dtype: float dtype.
      validate_args: TFP's flag: check values at run time (finite data and
        latents), raising errors that name the problem. Off by default, as
        in TFP; not recorded in the config (docs/reliability.md).
      name: distribution name (the bijector is ``f'{name}_chain'``).

    Returns:
      A `tfd.TransformedDistribution` with event shape ``[D]``; its
      ``bijector`` maps latent to data with ``forward``.

    Example:
      >>> q = vector_flow(2, num_couplings=4, hidden_units=32)
      >>> q.event_shape
      TensorShape([2])
    """
    try:
        shape = tuple(int(d) for d in np.atleast_1d(event_shape))
    except (TypeError, ValueError) as e:
        raise ValueError(f"event_shape must be D or [D], got {event_shape!r}.") from e
    if len(shape) != 1 or shape[0] < 2:
        raise ValueError(f"vector_flow needs a vector event [D] with D >= 2; "
                         f"got {shape}.")
    dim = shape[0]
    num_couplings = int(num_couplings)
    if num_couplings < 2:
        raise ValueError(f"num_couplings must be >= 2 so that every entry is "
                         f"transformed; got {num_couplings}.")
    if int(hidden_units) < 1 or int(num_hidden_layers) < 0:
        raise ValueError(f"hidden_units must be >= 1 and num_hidden_layers "
                         f">= 0; got {hidden_units} and {num_hidden_layers}.")
    if mask_pattern not in ("alternate", "random"):
        raise ValueError(f"mask_pattern must be 'alternate' or 'random', got "
                         f"{mask_pattern!r}.")
    _common.check_choice("coupling", coupling, ("affine", "spline"))
    num_spline_bins, spline_bound = _common.spline_options(num_spline_bins,
                                                           spline_bound)
    dtype = _common.float_dtype(dtype)
    policy = networks.policy_for(dtype)
    layer_masks = _masks(dim, num_couplings, mask_pattern, seed)
    bijectors: list[tfb.Bijector] = []
    if affine:
        bijectors.append(ActNorm(dim, event_ndims=1, data_init=False,
                                 dtype=dtype, name="affine"))
    for k, mask in enumerate(layer_masks):
        n_trans = int((mask == 0).sum())
        if coupling == "spline":
            per_entry = SplineCoupling.params_per_entry(num_spline_bins, max_log_scale)
            net = networks.MLP(per_entry * n_trans,
                               int(hidden_units), int(num_hidden_layers),
                               dtype=policy, name=f"coupling{k}_net")
            bijectors.append(SplineCoupling(
                mask, net, num_bins=num_spline_bins, bound=spline_bound,
                max_log_scale=max_log_scale, dtype=dtype, name=f"coupling{k}"))
            continue
        if max_log_scale is None:
            net = networks.MLP(2 * n_trans, int(hidden_units),
                               int(num_hidden_layers), dtype=policy,
                               name=f"coupling{k}_net")
        else:
            net = ClampedMLP(2 * n_trans, int(hidden_units),
                             int(num_hidden_layers), max_log_scale=max_log_scale,
                             dtype=policy, name=f"coupling{k}_net")
        bijectors.append(AffineCoupling(mask, net, scale_fn=scale_fn,
                                        dtype=dtype, name=f"coupling{k}"))
    if num_classes is not None:
        bijectors.append(priors.LearnedPrior(dim, num_classes=num_classes,
                                             event_ndims=1, dtype=dtype,
                                             name="class_prior"))
    config = dict(model="vector_flow", event_shape=[dim],
                  num_couplings=num_couplings, hidden_units=int(hidden_units),
                  num_hidden_layers=int(num_hidden_layers), scale_fn=scale_fn,
                  mask_pattern=mask_pattern, seed=seed,
                  max_log_scale=max_log_scale, affine=bool(affine),
                  coupling=coupling, num_spline_bins=num_spline_bins,
                  spline_bound=spline_bound, num_classes=num_classes,
                  dtype=dtype.name, name=name)
    return _common.make_flow(
        bijectors, base=_common.base_distribution("gaussian", shape, dtype),
        data_shape=shape, name=name, config=config, num_classes=num_classes,
        label_bijector="class_prior", validate_args=validate_args)


def _masks(dim, num_couplings, kind, seed):
    """One 0/1 vector mask per coupling (1 = conditioning)."""
    if kind == "alternate":
        return [masks.checkerboard([dim], parity=k % 2)
                for k in range(num_couplings)]
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    while len(out) < num_couplings:
        mask = np.zeros(dim, np.float32)
        mask[rng.permutation(dim)[:(dim + 1) // 2]] = 1.0
        out += [mask, 1.0 - mask]
    return out[:num_couplings]
