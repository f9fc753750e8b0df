"""tfp_flows: NICE, RealNVP and Glow as TensorFlow Probability bijectors."""

from tfp_flows import bijectors, data, masks, models, networks, priors
from tfp_flows.bijectors import keras_layers, memory_efficient
from tfp_flows.description import FlowDescription, describe
from tfp_flows.export import export
from tfp_flows.flow_ops import (
                                Latents,
                                bits_per_dim,
                                decode,
                                encode,
                                initialize,
                                interpolate,
                                sample,
)
from tfp_flows.training import FlowModel, LinearWarmup, SampleGrid, TensorBoardSamples

__version__ = "0.1.0"

__all__ = [
    "bijectors", "data", "masks", "models", "networks", "priors",
    "keras_layers", "bits_per_dim", "sample", "encode", "decode",
    "interpolate", "initialize", "Latents", "__version__", "export",
    "memory_efficient", "FlowDescription", "describe",
    "training", "FlowModel", "SampleGrid", "TensorBoardSamples", "LinearWarmup",
]
