"""The ``tfp-flows`` command line.

* :mod:`~tfp_flows.cli.main`: the parser and the commands (train, sample,
  evaluate, export, interpolate).
* :mod:`~tfp_flows.cli.recipes`: the settings of a run and what they build.
* :mod:`~tfp_flows.cli.trainer`: training a recipe into a run folder,
  selection on validation, the single test evaluation, the outputs.
* :mod:`~tfp_flows.cli.runs`: run folders and crash-safe checkpoints.
"""

from tfp_flows.cli.main import build_parser, main

__all__ = ["main", "build_parser"]
