"""tfp_flows: NICE, RealNVP and Glow as TensorFlow Probability bijectors."""

from tfp_flows import bijectors, masks, networks, priors
from tfp_flows.bijectors import keras_layers

__version__ = "0.1.0"

__all__ = ["bijectors", "masks", "networks", "priors", "keras_layers",
           "__version__"]
