"""Glow on the scikit-learn digits with Keras 3: build, fit, sample, export.

The library path of ``tfp-flows train`` in one page: a Glow
(Kingma & Dhariwal, 2018) with 2 levels x 8 steps x 128 hidden channels,
trained with ``FlowModel.fit`` on dequantised 17-level digits. The epoch is
chosen on the validation split (Keras' ``EarlyStopping`` keeps the weights
with the lowest validation bits/dim); the test split is scored once, at the
end. Then samples at temperature 0.7 and a SavedModel that loads without
tfp_flows.

Usage::

    python examples/glow_digits_keras.py              # ~3 min on 2 CPU cores
    python examples/glow_digits_keras.py --smoke      # seconds: tiny model

Outputs in ``--out`` (default ``runs/example-glow-digits``): per-epoch sample
grids, ``samples.png`` and ``saved_model/``.
"""

import argparse
import os

import keras
import numpy as np
import tensorflow as tf

import tfp_flows
from tfp_flows import plots

__all__ = ["main"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--out", default=os.path.join("runs", "example-glow-digits"))
    parser.add_argument("--smoke", action="store_true",
                        help="small model, 4 short epochs: checks that the script runs")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)

    # Data: quantised pixels in [0, 17); FlowModel adds the U[0, 1) noise.
    info = tfp_flows.data.info("digits")
    train = tfp_flows.data.load("digits", "train", batch_size=64, seed=0)
    validation = tfp_flows.data.load("digits", "validation", batch_size=256)
    test = tfp_flows.data.load("digits", "test", batch_size=256)
    size = dict(num_levels=2, num_steps=8, hidden_channels=128)
    epochs, warmup = args.epochs, 100
    if args.smoke:
        size, epochs, warmup = dict(num_levels=2, num_steps=2, hidden_channels=16), 4, 5

    # Model: a tfd.TransformedDistribution over pixel units [0, 17)^64.
    dist = tfp_flows.models.glow(info.shape, num_bins=info.num_bins, seed=0, **size)
    model = tfp_flows.FlowModel(dist)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(train, epochs=epochs, validation_data=validation, shuffle=False,
              verbose=2, callbacks=[
                  tfp_flows.LinearWarmup(1e-3, warmup_steps=warmup),
                  keras.callbacks.EarlyStopping("val_bits_per_dim", mode="min", patience=10,
                                                restore_best_weights=True),
                  tfp_flows.SampleGrid(args.out, num_samples=64, temperature=0.7,
                                       every_n_epochs=max(1, epochs // 4))])

    # The test split, once, with the weights chosen on validation.
    bpd = model.evaluate(test, verbose=0, return_dict=True)["bits_per_dim"]
    print(f"test bits/dim: {bpd:.3f} (uniform model: {np.log2(info.num_bins):.3f})")

    x = tfp_flows.sample(dist, 64, temperature=0.7, seed=0)
    plots.save_image_grid(x, info.num_bins, os.path.join(args.out, "samples.png"))

    # Export: the SavedModel serves log_prob, bits_per_dim, sample, encode and
    # decode without tfp_flows. overwrite=True: this folder is the example's.
    path = os.path.join(args.out, "saved_model")
    tfp_flows.export(model, path, overwrite=True)
    served = tf.saved_model.load(path)
    more = served.sample(4, 0.7, 1)["samples"]  # (num, temperature, seed)
    print(f"exported to {path}; served samples: {tuple(more.shape)}")
    return {"test_bits_per_dim": float(bpd), "out": args.out}


if __name__ == "__main__":
    main()
