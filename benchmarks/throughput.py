"""Throughput of tfp_flows' Glow against TFP's own `tfb.Glow`, side by side.

Both models have the same shapes, levels, steps and hidden width, both are
wrapped in `tf.function` (optionally `jit_compile=True`), and they are timed
alternately (A, B, A, B, ...) in one process; we report median images/s and
the ratio of medians (tfp_flows / TFP). Protocol: benchmarks/README.md.

    python benchmarks/throughput.py                       # both CPU configs
    python benchmarks/throughput.py --config small --ops train --rounds 5
    python benchmarks/throughput.py --config paper --precision mixed_float16

``paper`` is Glow's CIFAR-10 size (32x32x3, L=3, K=32, 512 hidden, batch 64),
meant for a GPU (``benchmarks/gpu_paper.sh``). ``--precision`` sets the Keras 3
dtype policy (tfp_flows' networks) and the tf_keras one (TFP's networks)
before both models are built.
"""

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402
from _peers import num_params, ours_glow, tfp_glow  # noqa: E402

import tfp_flows  # noqa: E402

CONFIGS = {
    "small": dict(shape=(8, 8, 1), levels=2, steps=8, hidden=128, batch=64),
    "cifar": dict(shape=(32, 32, 3), levels=3, steps=8, hidden=128, batch=32),
    "paper": dict(shape=(32, 32, 3), levels=3, steps=32, hidden=512, batch=64),
}


def set_precision(policy):
    """The same dtype policy for both Keras versions (ours: Keras 3; TFP's
    networks: tf_keras)."""
    import keras
    keras.config.set_dtype_policy(policy)
    tf_keras.mixed_precision.set_global_policy(policy)


def make_ops(dist, batch, jit, init_data=None):
    """tf.functions for one training step, log_prob and sampling."""
    variables = dist.trainable_variables
    opt = tf_keras.optimizers.Adam(1e-4)

    def train(x):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(dist.log_prob(x))
        grads = tape.gradient(loss, variables)
        opt.apply_gradients(zip(grads, variables))
        return loss

    def log_prob(x):
        return dist.log_prob(x)

    def sample():
        return dist.sample(batch)

    return {
        "train": tf.function(train, jit_compile=jit),
        "log_prob": tf.function(log_prob, jit_compile=jit),
        "sample": tf.function(sample, jit_compile=jit),
    }


def timed(fn, x, iters):
    args = () if x is None else (x,)
    start = time.perf_counter()
    for _ in range(iters):
        out = fn(*args)
    _ = np.asarray(out)  # wait for the result
    return time.perf_counter() - start


def run(config, ops, jit_modes, rounds, iters, precision="float32", save=None):
    set_precision(precision)
    cfg = CONFIGS[config]
    shape, batch = cfg["shape"], cfg["batch"]
    rng = np.random.default_rng(0)
    x_pix = tf.constant(rng.integers(0, 256, (batch,) + shape) + rng.random(
        (batch,) + shape), tf.float32)
    ours = ours_glow(shape, cfg["levels"], cfg["steps"], cfg["hidden"])
    tfp_flows.initialize(ours, x_pix)
    tfp_precision = precision
    try:
        theirs = tfp_glow(shape, cfg["levels"], cfg["steps"], cfg["hidden"])
    except (ValueError, TypeError) as e:
        # TFP's RealNVP/Glow casts its input to the networks' compute dtype
        # and fails under a mixed policy: compare against its float32 then.
        print(f"  TFP's tfb.Glow under {precision}: {type(e).__name__}: "
              f"{str(e).splitlines()[0][:100]}; timing it in float32", flush=True)
        tf_keras.mixed_precision.set_global_policy("float32")
        tfp_precision = "float32"
        theirs = tfp_glow(shape, cfg["levels"], cfg["steps"], cfg["hidden"])
    x_theirs = x_pix / 256.0  # TFP's Glow has no preprocessing: feed [0, 1)
    result = {"config": config, "precision": precision,
              "tfp_precision": tfp_precision, **{k: list(v) if isinstance(v, tuple) else v
                                   for k, v in cfg.items()},
              "params_tfp_flows": num_params(ours), "params_tfp": num_params(theirs),
              "timings": {}}
    print(f"== {config} ({precision}): {shape}, L={cfg['levels']} K={cfg['steps']} "
          f"hidden={cfg['hidden']} batch={batch}; params tfp_flows "
          f"{result['params_tfp_flows']:,} vs TFP {result['params_tfp']:,}", flush=True)
    for jit in jit_modes:
        ops_a = make_ops(ours, batch, jit)
        ops_b = make_ops(theirs, batch, jit)
        for op in ops:
            xa = None if op == "sample" else x_pix
            xb = None if op == "sample" else x_theirs
            try:
                for _ in range(2):  # trace + warm up
                    timed(ops_a[op], xa, 1)
                    timed(ops_b[op], xb, 1)
            except Exception as e:  # noqa: BLE001 - report and move on
                print(f"  {op:8s} jit={jit}: failed: {type(e).__name__}: "
                      f"{str(e).splitlines()[0][:120]}", flush=True)
                result["timings"][f"{op}/jit={jit}"] = {"error": str(e)[:300]}
                if save:
                    save(result)
                continue
            ta, tb = [], []
            for _ in range(rounds):
                ta.append(batch * iters / timed(ops_a[op], xa, iters))
                tb.append(batch * iters / timed(ops_b[op], xb, iters))
            ma, mb = statistics.median(ta), statistics.median(tb)
            ratio = statistics.median(a / b for a, b in zip(ta, tb))
            result["timings"][f"{op}/jit={jit}"] = {
                "tfp_flows_img_s": ma, "tfp_img_s": mb, "ratio": ratio,
                "ratio_of_medians": ma / mb}
            print(f"  {op:8s} jit={str(jit):5s}  tfp_flows {ma:9.1f} img/s   "
                  f"TFP {mb:9.1f} img/s   ratio {ratio:5.2f}x", flush=True)
            if save:
                save(result)
    set_precision("float32")
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="small,cifar")
    p.add_argument("--ops", default="train,log_prob,sample")
    p.add_argument("--jit", default="false,true")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--precision", default="float32",
                   help="comma-separated dtype policies, e.g. "
                        "float32,mixed_float16")
    p.add_argument("--out", default=None,
                   help="write results as JSON here (after every measurement)")
    args = p.parse_args(argv)
    jit_modes = [s.strip().lower() == "true" for s in args.jit.split(",")]
    info = {"tensorflow": tf.__version__, "devices": [d.name for d in
                                                      tf.config.list_logical_devices()],
            "cpu_count": os.cpu_count(), "results": []}

    def save(partial=None):
        if not args.out:
            return
        done = info["results"] + ([partial] if partial is not None else [])
        with open(args.out, "w") as f:
            json.dump({**info, "results": done}, f, indent=2)

    for precision in args.precision.split(","):
        for c in args.config.split(","):
            info["results"].append(run(c, args.ops.split(","), jit_modes,
                                       args.rounds, args.iters, precision, save))
            save()
    return info


if __name__ == "__main__":
    main()
