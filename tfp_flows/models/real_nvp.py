"""RealNVP (Dinh et al., 2016) as a `tfd.TransformedDistribution`."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability import distributions as tfd

from tfp_flows import masks, networks
from tfp_flows.bijectors import AffineCoupling, FactorOut, PixelLogit, SplineCoupling, Squeeze
from tfp_flows.models import _common
from tfp_flows.typing import DTypeLike, Shape

tfb = tfp.bijectors

__all__ = ["real_nvp"]


def real_nvp(image_shape: Shape, num_scales: int = 2, *, hidden_channels: int = 64,
             num_blocks: int = 4, n_bits: int | None = 8, num_bins: float | None = None,
             alpha: float = 0.05, scale_fn: str = "exp_tanh",
             coupling: str = "affine", num_spline_bins: int = 8,
             spline_bound: float = 3.0, memory_efficient: bool = False,
             dtype: DTypeLike = tf.float32, validate_args: bool = False,
             name: str = "real_nvp") -> tfd.TransformedDistribution:
    """Builds RealNVP's multi-scale architecture over images in pixel units.

    Data -> latent: the logit preprocessing with ``alpha``, then for each scale
    but the last: 3 checkerboard affine couplings (alternating parity), a
    squeeze, 3 channel-wise couplings (alternating), and half of the channels
    factored out to the N(0, 1) prior; the last scale has 4 checkerboard
    couplings. The s/t functions are ResNets (:class:`tfp_flows.networks.ResNet`,
    without batch normalisation) and the scale is ``exp(tanh(h))``.

    Args:
      image_shape: ``[H, W, C]``; H and W divisible by ``2**(num_scales-1)``.
      num_scales: number of scales (the last one does not squeeze).
      hidden_channels: ResNet width (64 in the paper's CIFAR-10 model).
      num_blocks: residual blocks per ResNet (8 in the paper).
      n_bits: pixels are in ``[0, 2**n_bits)``.
      num_bins: alternatively, the number of intensity levels: pixels are in
        ``[0, num_bins)``.
      alpha: logit preprocessing margin (the paper used 0.05).
      scale_fn: coupling scale function (see `AffineCoupling`).
      coupling: ``'affine'`` (the paper) or ``'spline'``: every coupling is
        a rational-quadratic neural spline
        (:class:`~tfp_flows.bijectors.SplineCoupling`) with the same masks
        and ResNets.
      num_spline_bins: bins of each spline (``coupling='spline'``).
      spline_bound: B, the splines act on ``[-B, B]`` and are the identity
        outside; after the logit preprocessing values lie within
        ``+-logit(1 - alpha)`` (+-2.94 for alpha = 0.05), so B = 3 covers
        the first couplings' inputs.
      memory_efficient: reversible gradients.
      dtype: float dtype.
      validate_args: TFP's flag: check values at run time (finite data,
        pixels in ``[0, num_bins]``, finite latents), raising errors that
        name the problem. Off by default, as in TFP; not recorded in the
        config (docs/reliability.md).
      name: distribution name.

    Returns:
      A `tfd.TransformedDistribution` with event shape ``image_shape``.
    """
    shape = _common.image_shape(image_shape)
    num_scales = int(num_scales)
    if num_scales < 1:
        raise ValueError(f"num_scales must be >= 1, got {num_scales}.")
    _common.check_divisible(shape, 2 ** (num_scales - 1),
                            f"{num_scales} RealNVP scales")
    last = (shape[0] // 2 ** (num_scales - 1), shape[1] // 2 ** (num_scales - 1))
    if last[0] * last[1] < 2:
        raise ValueError(
            f"{num_scales} RealNVP scales are too many for a {shape[0]}x"
            f"{shape[1]} image: the last scale would be {last[0]}x{last[1]}, "
            f"and its checkerboard couplings need at least 2 pixels; use at "
            f"most {num_scales - 1} scales.")
    bins = _common.num_bins_from(n_bits, num_bins)
    if bins is None:
        raise ValueError("real_nvp models images: n_bits or num_bins is required.")
    _common.check_choice("coupling", coupling, ("affine", "spline"))
    num_spline_bins, spline_bound = _common.spline_options(num_spline_bins,
                                                           spline_bound)
    dtype = _common.float_dtype(dtype)
    policy = networks.policy_for(dtype)
    params_per_dim = (2 if coupling == "affine" else
                      SplineCoupling.params_per_entry(num_spline_bins))

    def make_coupling(mask, prefix):
        c = mask.shape[-1]
        if masks_is_channel(mask):
            out = params_per_dim * int((mask.reshape(-1, c)[0] == 0).sum())
        else:
            out = params_per_dim * c
        net = networks.ResNet(out, hidden_channels, num_blocks, dtype=policy,
                              name=f"{prefix}_net")
        if coupling == "spline":
            return SplineCoupling(mask, net, num_bins=num_spline_bins,
                                  bound=spline_bound, dtype=dtype,
                                  name=f"{prefix}_coupling")
        return AffineCoupling(mask, net, scale_fn=scale_fn, dtype=dtype,
                              name=f"{prefix}_coupling")

    levels_meta: list[tuple[int, int | None]] = []

    def scale(index, event):
        h, w, c = event
        if index == num_scales:
            levels_meta.append((1, None))
            return [make_coupling(masks.checkerboard(event, parity=i % 2),
                                  f"scale{index}_checker{i}") for i in range(4)]
        items = [make_coupling(masks.checkerboard(event, parity=i % 2),
                               f"scale{index}_checker{i}") for i in range(3)]
        squeezed = (h // 2, w // 2, 4 * c)
        items.append(tfb.Invert(Squeeze(2, dtype=dtype,
                                        name=f"scale{index}_squeeze")))
        items += [make_coupling(masks.channel(squeezed, parity=i % 2),
                                f"scale{index}_channel{i}") for i in range(3)]
        kept = squeezed[-1] // 2
        levels_meta.append((2, kept))
        inner = _common.chain(scale(index + 1, squeezed[:2] + (kept,)),
                              memory_efficient=memory_efficient,
                              name=f"scale{index + 1}")
        items.append(FactorOut(inner, kept, name=f"scale{index}_factor_out"))
        items.append(Squeeze(2, dtype=dtype, name=f"scale{index}_unsqueeze"))
        return items

    bijectors = [PixelLogit(bins, alpha=alpha, dtype=dtype, name="preprocess")]
    bijectors += scale(1, shape)
    config = dict(model="real_nvp", n_bits=None,
                  image_shape=list(shape), num_scales=num_scales,
                  hidden_channels=int(hidden_channels),
                  num_blocks=int(num_blocks), num_bins=bins, alpha=float(alpha),
                  scale_fn=scale_fn, coupling=coupling,
                  num_spline_bins=num_spline_bins, spline_bound=spline_bound,
                  memory_efficient=bool(memory_efficient),
                  dtype=dtype.name, name=name)
    return _common.make_flow(
        bijectors, base=_common.base_distribution("gaussian", shape, dtype),
        data_shape=shape, name=name, config=config, num_bins=bins,
        levels=levels_meta, memory_efficient=memory_efficient,
        validate_args=validate_args)


def masks_is_channel(mask: np.ndarray) -> bool:
    """True when `mask` only varies along its last axis."""
    flat = mask.reshape(-1, mask.shape[-1])
    return bool((flat == flat[:1]).all())
