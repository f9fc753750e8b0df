"""Tiny model configurations and helpers shared by the model / flow-op tests.

Every builder is used at its real architecture (levels, scales, couplings)
with very small networks so that the tests run in seconds on a CPU.
"""

import numpy as np
import tensorflow as tf

import tfp_flows
from tfp_flows import models

__all__ = ["SHAPES", "MODEL_NAMES", "tiny", "pixels", "perturb", "ready"]

SHAPES = [(8, 8, 1), (32, 32, 3)]
MODEL_NAMES = ["nice", "real_nvp", "glow"]

TINY = {
    "nice": dict(hidden_units=16, num_hidden_layers=1),
    "real_nvp": dict(num_scales=2, hidden_channels=8, num_blocks=1),
    "glow": dict(num_levels=2, num_steps=2, hidden_channels=8, seed=0),
}


def tiny(name, shape, **overrides):
    """A tiny model `name` over images of `shape`."""
    kwargs = dict(TINY[name])
    kwargs.update(overrides)
    return models.BUILDERS[name](shape, **kwargs)


def pixels(shape, rng, batch=4, bins=256):
    """Dequantised pixels: integers in [0, bins) plus U[0, 1) noise, float32."""
    x = rng.integers(0, bins, size=(batch,) + tuple(shape))
    return (x + rng.random(x.shape)).astype(np.float32)


def perturb(dist, rng, scale=0.02):
    """Moves every trainable variable off its (identity) initialisation.

    Zero-initialised output convolutions and learned priors become non-zero,
    so couplings and priors are no longer the identity and round trips are
    not trivially exact.
    """
    for v in dist.trainable_variables:
        v.assign(v + tf.constant(scale * rng.standard_normal(v.shape), v.dtype))


def ready(dist, rng, bins=256, bijector_kwargs=None, scale=0.02, batch=8):
    """Data-initialises the ActNorms on a random batch, then perturbs."""
    tfp_flows.initialize(dist, pixels(dist.event_shape, rng, batch, bins),
                         bijector_kwargs=bijector_kwargs)
    perturb(dist, rng, scale)
    return dist
