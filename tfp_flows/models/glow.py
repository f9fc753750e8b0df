"""Glow (Kingma & Dhariwal, 2018) as a `tfd.TransformedDistribution`."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability import distributions as tfd

from tfp_flows import masks, networks, priors
from tfp_flows.bijectors import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    FactorOut,
    InvertibleConv1x1,
    PixelRescale,
    SplineCoupling,
    Squeeze,
)
from tfp_flows.models import _common
from tfp_flows.typing import DTypeLike, Shape

tfb = tfp.bijectors

__all__ = ["glow"]


def glow(image_shape: Shape, num_levels: int = 3, num_steps: int = 32,
         hidden_channels: int = 512, *,
         coupling: str = "affine", permutation: str = "conv1x1", lu: bool = True,
         n_bits: int | None = 8,
         num_bins: float | None = None,
         num_classes: int | None = None, learn_top_prior: bool = True,
         split_prior: bool = True,
         scale_fn: str = "sigmoid", num_spline_bins: int = 8, spline_bound: float = 3.0,
         memory_efficient: bool = False, seed: int | None = None,
         dtype: DTypeLike = tf.float32, validate_args: bool = False,
         name: str = "glow") -> tfd.TransformedDistribution:
    """Builds Glow over images in pixel units.

    Data -> latent (the ``inverse`` of the returned distribution's bijector):
    ``x / 2^n_bits - 0.5``, then ``num_levels`` levels of
    ``squeeze -> num_steps x (ActNorm -> InvertibleConv1x1 -> coupling) ->
    split``; at each split the factored-out half gets a learned conditional
    Gaussian prior given the kept half (:func:`tfp_flows.priors.split_prior`),
    and the last level a learned top prior. Every learned prior is written as a
    bijector onto the standard normal base, so the latent has the image's
    shape; :func:`tfp_flows.encode` unpacks it per level.

    Args:
      image_shape: ``[H, W, C]``; H and W must be divisible by ``2**num_levels``.
      num_levels: L, the number of levels (squeezes).
      num_steps: K, flow steps per level.
      hidden_channels: width of the coupling CNNs (512 in the paper).
      coupling: ``'affine'``, ``'additive'`` or ``'spline'`` (a
        rational-quadratic neural spline, :class:`~tfp_flows.bijectors.SplineCoupling`).
      permutation: how each step mixes channels before its coupling:
        ``'conv1x1'`` (the paper's learned invertible 1x1 convolution),
        ``'reverse'`` (RealNVP's fixed reversal of the channel order) or
        ``'shuffle'`` (a fixed random permutation per step), the three
        variants compared in the Glow paper (Sec. 5.1). The fixed ones are
        `tfb.Permute` bijectors, without parameters.
      lu: LU-decomposed 1x1 convolutions.
      n_bits: pixels are in ``[0, 2**n_bits)`` (5 for Glow's CelebA-HQ).
      num_bins: alternatively, the number of intensity levels (e.g. 17).
      num_classes: class-conditional top prior (Glow's y-conditioning); pass
        ``bijector_kwargs={'top_prior': {'labels': y}}``.
      learn_top_prior: learn the top prior's per-channel mean and scale.
      split_prior: learn a conditional prior at each split (else N(0, 1)).
      scale_fn: the affine coupling's scale function (see `AffineCoupling`).
      num_spline_bins: bins of each spline (``coupling='spline'``).
      spline_bound: B, the splines act on ``[-B, B]`` and are the identity
        outside; after ActNorm the coupling inputs are roughly standardised,
        so B = 3 covers most values.
      memory_efficient: reversible gradients (memory constant in depth).
      seed: seed of the 1x1 convolutions' random rotations, or of the
        shuffles. With ``permutation='shuffle'`` and no seed, one is drawn
        and recorded in the config, so `models.from_config` rebuilds the
        same permutations.
      dtype: float dtype of the parameters.
      validate_args: TFP's flag: check values at run time (finite data,
        pixels in ``[0, num_bins]``, finite latents), raising errors that
        name the problem. Off by default, as in TFP; not recorded in the
        config (docs/reliability.md).
      name: name of the distribution.

    Returns:
      A `tfd.TransformedDistribution` whose event shape is ``image_shape``.

    Example:
      >>> dist = glow([8, 8, 1], num_levels=2, num_steps=2, hidden_channels=16)
      >>> dist.event_shape
      TensorShape([8, 8, 1])
    """
    shape = _common.image_shape(image_shape)
    num_levels, num_steps = int(num_levels), int(num_steps)
    if num_levels < 1 or num_steps < 1:
        raise ValueError(f"num_levels and num_steps must be >= 1, got "
                         f"{num_levels} and {num_steps}.")
    _common.check_divisible(shape, 2 ** num_levels, f"{num_levels} Glow levels")
    _common.check_choice("coupling", coupling, ("affine", "additive", "spline"))
    _common.check_choice("permutation", permutation, ("conv1x1", "reverse", "shuffle"))
    if permutation == "shuffle" and seed is None:
        seed = int(np.random.default_rng().integers(2**31 - 1))
    num_spline_bins, spline_bound = _common.spline_options(num_spline_bins,
                                                           spline_bound)
    bins = _common.num_bins_from(n_bits, num_bins)
    if bins is None:
        raise ValueError("glow models images: n_bits or num_bins is required.")
    dtype = _common.float_dtype(dtype)
    seeds = _common.seed_stream(seed)
    policy = networks.policy_for(dtype)

    def step(level, k, event):
        c = event[-1]
        prefix = f"level{level}_step{k}"
        mask = masks.channel(event)
        n_trans = c // 2  # the channel mask conditions on ceil(c/2)
        if coupling == "affine":
            net = networks.GlowCNN(2 * n_trans, hidden_channels, dtype=policy,
                                   name=f"{prefix}_net")
            cpl = AffineCoupling(mask, net, scale_fn=scale_fn, dtype=dtype,
                                 name=f"{prefix}_coupling")
        elif coupling == "spline":
            net = networks.GlowCNN(SplineCoupling.params_per_entry(num_spline_bins) * n_trans,
                                   hidden_channels, dtype=policy,
                                   name=f"{prefix}_net")
            cpl = SplineCoupling(mask, net, num_bins=num_spline_bins,
                                 bound=spline_bound, dtype=dtype,
                                 name=f"{prefix}_coupling")
        else:
            net = networks.GlowCNN(n_trans, hidden_channels, dtype=policy,
                                   name=f"{prefix}_net")
            cpl = AdditiveCoupling(mask, net, dtype=dtype,
                                   name=f"{prefix}_coupling")
        if permutation == "conv1x1":
            mix = InvertibleConv1x1(c, lu=lu, seed=next(seeds), dtype=dtype,
                                    name=f"{prefix}_conv1x1")
        else:
            order = (np.arange(c)[::-1] if permutation == "reverse"
                     else np.random.default_rng(next(seeds)).permutation(c))
            mix = tfb.Permute(order.astype(np.int32), axis=-1,
                              name=f"{prefix}_permute")
        return [ActNorm(c, dtype=dtype, name=f"{prefix}_actnorm"), mix, cpl]

    levels_meta: list[tuple[int, int | None]] = []

    def level(index, event):
        h, w, c = event
        squeezed = (h // 2, w // 2, 4 * c)
        items = [tfb.Invert(Squeeze(2, dtype=dtype, name=f"level{index}_squeeze"))]
        for k in range(num_steps):
            items += step(index, k, squeezed)
        if index < num_levels:
            kept = squeezed[-1] // 2
            levels_meta.append((2, kept))
            if split_prior:
                items.append(priors.split_prior(
                    squeezed, dtype=dtype, name=f"level{index}_split_prior"))
            inner = _common.chain(level(index + 1, squeezed[:2] + (kept,)),
                                  memory_efficient=memory_efficient,
                                  name=f"level{index + 1}")
            items.append(FactorOut(inner, kept, name=f"level{index}_factor_out"))
        else:
            levels_meta.append((2, None))
            if learn_top_prior or num_classes is not None:
                items.append(priors.LearnedPrior(
                    squeezed[-1], num_classes=num_classes, dtype=dtype,
                    name="top_prior"))
        items.append(Squeeze(2, dtype=dtype, name=f"level{index}_unsqueeze"))
        return items

    bijectors = [PixelRescale(bins, shift=-0.5, dtype=dtype, name="preprocess")]
    bijectors += level(1, shape)
    config = dict(model="glow", n_bits=None,
                  image_shape=list(shape), num_levels=num_levels,
                  num_steps=num_steps, hidden_channels=int(hidden_channels),
                  coupling=coupling, permutation=permutation, lu=bool(lu),
                  num_bins=bins,
                  num_classes=num_classes, learn_top_prior=bool(learn_top_prior),
                  split_prior=bool(split_prior), scale_fn=scale_fn,
                  num_spline_bins=num_spline_bins, spline_bound=spline_bound,
                  memory_efficient=bool(memory_efficient), seed=seed,
                  dtype=dtype.name, name=name)
    return _common.make_flow(
        bijectors, base=_common.base_distribution("gaussian", shape, dtype),
        data_shape=shape, name=name, config=config, num_bins=bins,
        levels=levels_meta, num_classes=num_classes, label_bijector="top_prior",
        memory_efficient=memory_efficient, validate_args=validate_args)
