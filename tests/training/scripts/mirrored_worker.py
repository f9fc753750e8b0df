"""MirroredStrategy on 2 logical CPU devices vs one device.

Usage: mirrored_worker.py OUTDIR. Writes OUTDIR/result.json and
OUTDIR/{one,mirrored}.npz; the test asserts on them.
"""

import json
import os
import sys

import tensorflow as tf

# Before anything initialises the devices.
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfp_flows  # noqa: E402
from tests.training import training_helpers as th  # noqa: E402
from tfp_flows.training import FlowModel  # noqa: E402
from tfp_flows.training.init import actnorms  # noqa: E402

out = sys.argv[1]
GLOBAL_BATCH = 16
data = th.pixels(32) + np.float32(0.5)  # continuous: runs are comparable


class Probe(keras.callbacks.Callback):
    """Per-replica ActNorm values right before the first update."""

    def __init__(self, strategy):
        super().__init__()
        self.strategy, self.values = strategy, None

    def on_train_batch_begin(self, batch, logs=None):
        if self.values is None:
            self.values = [[v.numpy() for v in self.strategy.experimental_local_results(var)]
                           for b in actnorms(self.model.distribution)
                           for var in (b.loc, b.log_scale)]


def train(strategy, dequantize=False, x=data, eager=False):
    with strategy.scope():
        model = FlowModel(th.tiny_glow(), dequantize=dequantize)
        model.compile(optimizer=keras.optimizers.SGD(1e-3), run_eagerly=eager)
    probe = Probe(strategy)
    hist = model.fit(x, batch_size=GLOBAL_BATCH, epochs=2, shuffle=False,
                     verbose=0, callbacks=[probe])
    return model, hist.history, probe.values


mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
# The reference runs eagerly (same math, no tracing cost); the mirrored run
# is the real thing: a traced train step under strategy.run.
m_one, h_one, _ = train(tf.distribute.get_strategy(), eager=True)
m_mir, h_mir, per_replica = train(mirrored)
th.save_npz(os.path.join(out, "one.npz"), {v.path: v.numpy() for v in m_one.variables})
th.save_npz(os.path.join(out, "mirrored.npz"), {v.path: v.numpy() for v in m_mir.variables})

reference = th.tiny_glow()
tfp_flows.initialize(reference, data[:GLOBAL_BATCH])
ref_values = [var.numpy() for b in actnorms(reference) for var in (b.loc, b.log_scale)]
replicas_agree = all(np.array_equal(vals[0], vals[1]) for vals in per_replica)
init_is_global_batch = all(np.array_equal(vals[0], ref)
                           for vals, ref in zip(per_replica, ref_values))

# The default path (dequantisation noise) also trains under the strategy
# (eagerly here, to save tracing time).
m_deq, h_deq, _ = train(mirrored, dequantize=True, x=th.pixels(32), eager=True)
with mirrored.scope():
    pred = m_deq.predict(th.pixels(8), batch_size=GLOBAL_BATCH, verbose=0)
    ev = m_deq.evaluate(th.pixels(8), batch_size=GLOBAL_BATCH, verbose=0,
                        return_dict=True)

# A flow built outside the scope is refused with a clear error.
outside = th.tiny_glow()
try:
    with mirrored.scope():
        FlowModel(outside)
    outside_error = ""
except ValueError as e:
    outside_error = str(e)

result = {
    "outside_scope_error": outside_error,
    "num_replicas": mirrored.num_replicas_in_sync,
    "variable_types": sorted({type(v).__name__ for v in m_mir.distribution.variables}),
    "history_one": h_one, "history_mirrored": h_mir,
    "replicas_agree": replicas_agree, "num_actnorm_vars": len(per_replica),
    "init_is_global_batch": init_is_global_batch,
    "history_dequantized": h_deq, "predict_shape": list(pred.shape),
    "predict_finite": bool(np.all(np.isfinite(pred))),
    "evaluate_bits_per_dim": float(ev["bits_per_dim"]),
}
with open(os.path.join(out, "result.json"), "w") as f:
    json.dump(result, f)
