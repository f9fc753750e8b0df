"""The tfp_flows bijectors: every layer of NICE, RealNVP and Glow,
and the neural spline coupling.

All are `tfp.bijectors.Bijector` subclasses. Except for `Squeeze`, ``inverse``
maps data to latent (the papers' f) and ``forward`` maps latent to data.
"""

from tfp_flows.bijectors.actnorm import ActNorm
from tfp_flows.bijectors.base import FlowBijector, ParameterLayer, flow_bijectors, keras_layers
from tfp_flows.bijectors.chain import FactorOut, FlowChain, forward_and_log_det, inverse_and_log_det
from tfp_flows.bijectors.conv1x1 import InvertibleConv1x1
from tfp_flows.bijectors.coupling import AdditiveCoupling, AffineCoupling
from tfp_flows.bijectors.reversible import ReversibleChain, memory_efficient
from tfp_flows.bijectors.scaling import DiagonalScaling, PixelLogit, PixelRescale
from tfp_flows.bijectors.spline import SplineCoupling
from tfp_flows.bijectors.squeeze import Squeeze

__all__ = [
    "ActNorm", "AdditiveCoupling", "AffineCoupling", "DiagonalScaling",
    "FactorOut", "FlowBijector", "FlowChain", "InvertibleConv1x1",
    "ParameterLayer", "PixelLogit", "PixelRescale", "ReversibleChain",
    "SplineCoupling", "Squeeze", "flow_bijectors", "forward_and_log_det", "inverse_and_log_det",
    "keras_layers", "memory_efficient",
]
