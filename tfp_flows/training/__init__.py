"""Training flows with Keras 3: `FlowModel`, callbacks, data-dependent init.

See ``docs/training.md`` for distribution strategies, mixed precision,
checkpointing and the other ways to train (a `tf.GradientTape` loop, and
`tf_keras`).
"""

from tfp_flows.plots import image_grid
from tfp_flows.training.callbacks import LinearWarmup, SampleGrid, TensorBoardSamples
from tfp_flows.training.flow_model import FlowModel
from tfp_flows.training.guards import NaNGuard, TrainingDivergedError
from tfp_flows.training.init import initialize_from_batch

__all__ = ["FlowModel", "SampleGrid", "TensorBoardSamples", "LinearWarmup",
           "image_grid", "initialize_from_batch", "NaNGuard",
           "TrainingDivergedError"]
