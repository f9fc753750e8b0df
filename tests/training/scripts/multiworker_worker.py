"""One worker of a 2-worker MultiWorkerMirroredStrategy run (TF_CONFIG set).

Usage: multiworker_worker.py OUTDIR. Each worker shuffles the data with its
own seed, so the workers' first batches differ: only the broadcast in
FlowModel's ActNorm initialisation makes them agree. The chief (task 0)
writes its ModelCheckpoint to OUTDIR/chief.weights.h5, the other worker to
a file of its own, as TF recommends for multi-worker checkpoints.
"""

import json
import os
import sys

import tensorflow as tf

strategy = tf.distribute.MultiWorkerMirroredStrategy()

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tests.training import training_helpers as th  # noqa: E402
from tfp_flows.training import FlowModel  # noqa: E402

out = sys.argv[1]
task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
options = tf.data.Options()
options.experimental_distribute.auto_shard_policy = \
    tf.data.experimental.AutoShardPolicy.DATA
ds = (tf.data.Dataset.from_tensor_slices(th.pixels(32))
      .shuffle(32, seed=task).batch(8).with_options(options))

with strategy.scope():
    model = FlowModel(th.tiny_glow())
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
name = "chief.weights.h5" if task == 0 else f"worker{task}.weights.h5"
ckpt = keras.callbacks.ModelCheckpoint(os.path.join(out, name),
                                       save_weights_only=True)
hist = model.fit(ds, epochs=2, verbose=0, callbacks=[ckpt])
fixed = th.pixels(4, seed=9) + np.float32(0.5)
th.save_npz(os.path.join(out, f"worker{task}.npz"),
            {v.path: v.numpy() for v in model.variables})
with open(os.path.join(out, f"worker{task}.json"), "w") as f:
    json.dump({"history": hist.history,
               "num_replicas": strategy.num_replicas_in_sync,
               "bits_per_dim_fixed": model(fixed).numpy().tolist()}, f)
