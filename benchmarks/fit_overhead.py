"""Overhead of `FlowModel.fit` against a hand-written `tf.function` loop.

Both train the same Glow (two instances built with the same seeds) with the
same Keras Adam, batch size, dequantisation and `tf.data` pipeline, in one
process. Rounds alternate (fit, loop, fit, loop, ...) so that machine load
hits both alike; each round times ``--steps`` optimizer steps after a
warm-up round that traces (and with ``--jit`` compiles) both. Reported:
median images/s of each and the ratio ``fit / loop`` (1.0 = no overhead),
plus the same ratio for the fastest round of each (least disturbed by other
processes on a shared machine).

The loop is what `FlowModel.train_step` does, minus Keras::

    @tf.function
    def step(x):
        x = x + U[0, 1)
        with tf.GradientTape() as tape:
            loss = -mean(dist.log_prob(x))
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))

Usage::

    python benchmarks/fit_overhead.py [--jit] [--steps 20] [--rounds 7]
"""

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfp_flows  # noqa: E402
from tfp_flows.training import FlowModel  # noqa: E402

__all__ = ["main"]


def _build(args):
    keras.utils.set_random_seed(0)
    return tfp_flows.models.glow(
        args.image_shape, num_levels=args.levels, num_steps=args.flow_steps,
        hidden_channels=args.hidden, n_bits=args.n_bits, seed=0)


def _dataset(args):
    rng = np.random.default_rng(0)
    n = args.batch * args.steps
    images = rng.integers(0, 2 ** args.n_bits, size=(n, *args.image_shape))
    ds = tf.data.Dataset.from_tensor_slices(images.astype(np.float32))
    return ds.batch(args.batch, drop_remainder=True).cache().repeat()


def _fit_runner(args, ds):
    model = FlowModel(_build(args))
    model.compile(optimizer=keras.optimizers.Adam(1e-4), jit_compile=args.jit)

    def run():
        model.fit(ds, epochs=1, steps_per_epoch=args.steps, verbose=0)
    return run


def _loop_runner(args, ds):
    dist = _build(args)
    tfp_flows.initialize(dist, next(iter(ds)) + 0.5)
    variables = [w for layer in tfp_flows.keras_layers(dist)
                 for w in layer.trainable_weights]
    opt = keras.optimizers.Adam(1e-4)
    opt.build(variables)

    @tf.function(jit_compile=args.jit)
    def step(x):
        x = x + tf.random.uniform(tf.shape(x))
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(dist.log_prob(x))
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    iterator = iter(ds)

    def run():
        for _ in range(args.steps):
            loss = step(next(iterator))
        float(loss)  # wait for the last step
    return run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image-shape", type=int, nargs=3, default=[16, 16, 3])
    p.add_argument("--levels", type=int, default=2)
    p.add_argument("--flow-steps", type=int, default=4)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--n-bits", type=int, default=5)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=20, help="steps per round")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--jit", action="store_true", help="XLA for both")
    args = p.parse_args(argv)

    ds = _dataset(args)
    runners = {"fit": _fit_runner(args, ds), "loop": _loop_runner(args, ds)}
    for run in runners.values():  # warm-up: tracing / XLA compilation
        run()
    times = {k: [] for k in runners}
    for _ in range(args.rounds):
        for name, run in runners.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    images = args.batch * args.steps
    rate = {k: images / statistics.median(v) for k, v in times.items()}
    best = {k: images / min(v) for k, v in times.items()}
    result = {
        "config": vars(args),
        "images_per_s": {k: round(v, 2) for k, v in rate.items()},
        "round_seconds": {k: [round(t, 4) for t in v] for k, v in times.items()},
        "fit_over_loop_throughput": round(rate["fit"] / rate["loop"], 4),
        # the fastest round of each: least disturbed by other processes
        "fit_over_loop_best_round": round(best["fit"] / best["loop"], 4),
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
