"""Reversible gradients: memory that does not grow with the depth of a flow.

Every layer of a normalizing flow is invertible, so the activations that
backpropagation normally stores can be *recomputed* from the layer outputs
instead (Gomez et al., 2017, "The Reversible Residual Network"; Kingma &
Dhariwal, 2018, Sec. 3, name it as an advantage of flows). For a chain
``z = f_n(... f_1(x))`` with log-determinant ``L = sum_i L_i(h_{i-1})``, the
gradient is computed by a custom gradient that keeps only ``z``:

* forward pass: walk the chain without recording anything; keep ``(z, L)``;
* backward pass, for ``i = n .. 1``, given ``h_i`` and the cotangents
  ``dh_i = dLoss/dh_i`` and ``dL = dLoss/dL``:

  1. reconstruct the layer input ``h_{i-1} = f_i^{-1}(h_i)``;
  2. recompute ``f_i(h_{i-1})`` under a `tf.GradientTape` and take its
     vector-Jacobian product ``(dh_{i-1}, dtheta_i) = VJP(dh_i, dL)``.

At any time only one layer's activations are alive, so peak memory is
constant in depth (plus the parameters and their gradients).

**Couplings** get a cheaper step (`AffineCoupling.reversible_step`): the
conditioning half is the same on both sides, so the network is evaluated
once on the tape, its output serves both the reconstruction and the VJP
(about 1.33x the cost of the normal gradient instead of 1.67x for
reconstruct + recompute). Any `FlowBijector` can offer such a step through
`FlowBijector.supports_reversible_step`.

**Structure.** The backward walk descends into nested `FlowChain`,
`FactorOut` and `tfb.Invert` of those, so every leaf layer is reconstructed
and recomputed exactly once, whatever the nesting. Any other TFP bijector is
a leaf: its input is reconstructed with its own inverse and its value and
log-determinant recomputed through the usual TFP methods.

**Ordering.** In a graph (`tf.function`, XLA) the reconstruction of layer i
only depends on ``h_i``, so an executor could run every reconstruction ahead of
the gradient sweep and store them all. Each reconstruction therefore gets a
data dependency on the incoming cotangent ``dh_i`` (as in `tf.recompute_grad`;
XLA ignores control dependencies).

**Graph size.** In a graph, runs of identical blocks (Glow's ``K`` steps per
level) are traced once and called per block with that block's variables
(:mod:`tfp_flows.bijectors.reversible.blocks`), so the graph, and the memory
TensorFlow spends on it, does not grow with ``K`` either.

**ActNorm.** Its data-dependent initialisation never runs inside the custom
gradient: eagerly it runs first in a plain pass; in a traced function an
uninitialised ActNorm is an error (call `tfp_flows.initialize` first).

**Limits.** First-order gradients only. The reconstruction is exact up to
rounding, which compounds over depth in float32 (see ``docs/memory.md``).
Uses TensorFlow internals (``record.stop_recording``, the same one
`tf.recompute_grad` uses, and ``ConcreteFunction._call_flat``).

Modules: :mod:`~tfp_flows.bijectors.reversible.chain` (`ReversibleChain`,
:func:`memory_efficient`), :mod:`~tfp_flows.bijectors.reversible.gradient`
(the custom gradient and its sweep),
:mod:`~tfp_flows.bijectors.reversible.layers` (one layer's backward step) and
:mod:`~tfp_flows.bijectors.reversible.blocks` (repeated blocks traced once).
"""

from tfp_flows.bijectors.reversible.chain import ReversibleChain, memory_efficient

__all__ = ["ReversibleChain", "memory_efficient"]
