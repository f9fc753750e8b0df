"""Trains a tiny Glow with BackupAndRestore + ModelCheckpoint.

Usage: resume_worker.py WORKDIR EPOCHS PAUSE_EPOCH

With PAUSE_EPOCH >= 0 the run stops at the end of that (0-based) epoch,
after the callbacks saved it, dumps every variable to WORKDIR/at_pause.npz,
prints CHECKPOINTED and sleeps, waiting to be killed. Every run dumps the
variables it starts from (before its first update) to
WORKDIR/start_<pid>.npz and its epochs to WORKDIR/epochs_<pid>.json.
"""

import json
import os
import sys
import time

import keras

from tests.training import training_helpers as th
from tfp_flows.training import FlowModel

workdir, epochs, pause_epoch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pid = os.getpid()


class Probe(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs, self.dumped = [], False

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)
        with open(os.path.join(workdir, f"epochs_{pid}.json"), "w") as f:
            json.dump(self.epochs, f)

    def on_train_batch_begin(self, batch, logs=None):
        if not self.dumped:  # after every on_train_begin: restore and init
            th.save_npz(os.path.join(workdir, f"start_{pid}.npz"),
                        th.variables_dict(self.model))
            self.dumped = True

    def on_epoch_end(self, epoch, logs=None):
        if epoch == pause_epoch:
            th.save_npz(os.path.join(workdir, "at_pause.npz"),
                        th.variables_dict(self.model))
            print("CHECKPOINTED", flush=True)
            time.sleep(600)


model = FlowModel(th.tiny_glow())
# Eager steps: resuming does not depend on tracing, and it saves ~5 s a run.
model.compile(optimizer=keras.optimizers.Adam(1e-2), run_eagerly=True)
callbacks = [
    keras.callbacks.BackupAndRestore(os.path.join(workdir, "backup")),
    keras.callbacks.ModelCheckpoint(
        os.path.join(workdir, "ckpt", "epoch{epoch}.weights.h5"),
        save_weights_only=True),
    Probe(),  # after the savers: its pause comes once they have written
]
model.fit(th.pixels(32), batch_size=16, epochs=epochs, verbose=0,
          callbacks=callbacks)
th.save_npz(os.path.join(workdir, f"final_{pid}.npz"), th.variables_dict(model))
print("FINISHED", flush=True)
