"""A fused update for Keras 3's Adam: one op per variable instead of about
fifteen.

Keras 3's ``Adam.update_step`` writes the update as element-wise ops (casts,
powers, two moment updates, the step), about fifteen graph ops per variable.
In a traced train step TensorFlow keeps every op in the Python graph and the
runtime builds a kernel for each, so for a deep flow (hundreds of variables)
the optimizer's graph, not the activations, dominates memory growth with
depth (``docs/memory.md``). :func:`fuse_adam` replaces the update of one Adam
instance by TensorFlow's fused ``ResourceApplyAdam`` kernel, which computes
the same thing::

    alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)
    m += (g - m) (1 - beta_1);   v += (g^2 - v) (1 - beta_2)
    w -= alpha * m / (sqrt(v) + epsilon)

Everything else stays Keras': the slot variables (saved and restored as
usual), learning-rate schedules, clipping, weight decay, EMA, loss scaling,
gradient accumulation and the iteration counter. Variables the kernel does
not cover (``amsgrad=True``, under a `tf.distribute` strategy, or a dtype
other than the gradient's) take Keras' own update.
"""

from __future__ import annotations

import types
from typing import Any

import keras
import tensorflow as tf

__all__ = ["fuse_adam", "is_fused"]

_FUSABLE = (tf.float16, tf.bfloat16, tf.float32, tf.float64)


def _tf_variable(variable: Any) -> Any:
    return variable.value if isinstance(variable, keras.Variable) else variable


def _scalars(self, dtype, learning_rate):
    """The kernel's scalar inputs in `dtype`: computed once per dtype per
    update of all variables (not once per variable: a flow has hundreds of
    variables, and each repetition was about ten scalar graph ops)."""
    cache = self.__dict__.get("_fused_scalars")
    if cache is not None and dtype in cache:
        return cache[dtype]
    step = tf.cast(self.iterations + 1, dtype)
    beta_1 = tf.cast(self.beta_1, dtype)
    beta_2 = tf.cast(self.beta_2, dtype)
    scalars = dict(beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
                   lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
                   epsilon=tf.cast(self.epsilon, dtype))
    if cache is not None:
        cache[dtype] = scalars
    return scalars


def _fused_update_step(self, gradient, variable, learning_rate):
    var = _tf_variable(variable)
    dtype = var.dtype
    if (self.amsgrad or tf.distribute.has_strategy() or dtype not in _FUSABLE
            or not hasattr(var, "handle")):
        return type(self).update_step(self, gradient, variable, learning_rate)
    index = self._get_variable_index(variable)
    m = _tf_variable(self._momentums[index])
    v = _tf_variable(self._velocities[index])
    return tf.raw_ops.ResourceApplyAdam(
        var=var.handle, m=m.handle, v=v.handle, grad=tf.cast(gradient, dtype),
        use_locking=False, **_scalars(self, dtype, learning_rate))


def _shared_backend_update_step(self, grads, trainable_variables, learning_rate):
    # One update of every variable: the iteration counter and the learning
    # rate are the same for all of them (Keras increments the counter after
    # this call), so their derived scalars are shared through a cache that
    # lives for this call only. object.__setattr__: the cache of tensors is
    # not state for Keras' or TensorFlow's attribute tracking to see.
    # Under a tf.distribute strategy every variable takes Keras' own update
    # (see _fused_update_step) and replicas may update in parallel threads:
    # no cache there.
    if tf.distribute.has_strategy():
        return type(self)._backend_update_step(self, grads, trainable_variables, learning_rate)
    object.__setattr__(self, "_fused_scalars", {})
    try:
        return type(self)._backend_update_step(self, grads, trainable_variables, learning_rate)
    finally:
        object.__delattr__(self, "_fused_scalars")


def fuse_adam(optimizer: Any) -> bool:
    """Gives a Keras 3 Adam instance the fused update (in place).

    Args:
      optimizer: any Keras optimizer; a `keras.optimizers.LossScaleOptimizer`
        is looked through. Only an instance whose class is exactly
        `keras.optimizers.Adam` is changed (a subclass may have its own
        update).

    Returns:
      True when `optimizer` (or the one it wraps) now uses the fused update.
    """
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if type(inner) is not keras.optimizers.Adam:
        return False
    if not is_fused(inner):
        inner.update_step = types.MethodType(_fused_update_step, inner)
        inner._backend_update_step = types.MethodType(_shared_backend_update_step, inner)
    return True


def is_fused(optimizer: Any) -> bool:
    """True when :func:`fuse_adam` was applied to `optimizer` (or the
    optimizer it wraps)."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    step = inner.__dict__.get("update_step")
    return getattr(step, "__func__", None) is _fused_update_step
