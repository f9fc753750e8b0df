"""Peak memory of one Glow training step against depth: normal gradients,
reversible gradients (`tfp_flows.memory_efficient`), and TFP's `tfb.Glow`.

Every configuration runs in its own subprocess (a fresh TensorFlow runtime):
build the model, initialise ActNorm, trace and run a `tf.function` training
step (Adam) once, then run ``--steps`` more steps. Reported per run:

* ``peak_rss_mb``: the process's lifetime peak resident set size
  (``resource.getrusage(RUSAGE_SELF).ru_maxrss``), tracing included -- the
  figure the issue quotes for TFP;
* ``step_rss_mb``: the highest RSS sampled (psutil, every 2 ms) during the
  steps after the first one, i.e. steady-state training;
* ``tf_peak_mb``: TensorFlow's CPU allocator peak during those steps
  (``tf.config.experimental.get_memory_info('CPU:0')`` after
  ``reset_memory_stats``): tensors only, no runtime or Python overhead;
  ``None`` ("n/a") where TensorFlow keeps no such statistics (with oneDNN
  off, TensorFlow's default on an AMD EPYC).

Implementations (``--impls``): ``normal``, ``reversible`` and ``tfp_glow``
run a raw `tf.function` step with ``--optimizer``; ``flowmodel_fused`` and
``flowmodel_keras`` train the reversible Glow through
``FlowModel.train_on_batch`` with Keras 3's Adam, with and without the fused
update (``FlowModel.compile(fused_adam=...)``).

Step time (``--timing``) is measured in one process: the normal and the
memory-efficient distributions share their variables, and steps of the two
alternate; the medians and the median of per-pair ratios are reported.

Usage::

    .venv/bin/python benchmarks/memory_depth.py            # everything
    .venv/bin/python benchmarks/memory_depth.py --jit      # also XLA runs
    .venv/bin/python benchmarks/memory_depth.py --worker reversible 16

Results go to ``benchmarks/results/memory_depth.json`` (and ``.md``).
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _results  # noqa: E402

__all__ = ["main"]

IMAGE = (32, 32, 3)
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def build(impl, depth, args):
    """(distribution, data batch) for one implementation."""
    import numpy as np
    import tensorflow as tf
    import tensorflow_probability as tfp

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (args.batch,) + IMAGE) + rng.uniform(
        size=(args.batch,) + IMAGE)
    if impl == "tfp_glow":
        tfb, tfd = tfp.bijectors, tfp.distributions
        glow = tfb.Glow(
            output_shape=IMAGE, num_glow_blocks=args.levels,
            num_steps_per_block=depth,
            coupling_bijector_fn=lambda shape: tfb.GlowDefaultNetwork(
                shape, num_hidden=args.hidden),
            exit_bijector_fn=tfb.GlowDefaultExitNetwork)
        z_shape = glow.inverse_event_shape(IMAGE)
        dist = tfd.TransformedDistribution(
            tfd.Sample(tfd.Normal(0.0, 1.0), z_shape), glow)
        return dist, tf.constant(pixels / 256.0 - 0.5, tf.float32)
    import tfp_flows
    dist = tfp_flows.models.glow(IMAGE, args.levels, depth, args.hidden, seed=0)
    x = tf.constant(pixels, tf.float32)
    tfp_flows.initialize(dist, x)
    return tfp_flows.memory_efficient(dist, impl != "normal"), x


def make_adam(kind):
    """Keras 3 Adam (element-wise update ops per variable), or the fused Adam
    of tf_keras' legacy optimizer (one ``ResourceApplyAdam`` op per variable)."""
    if kind in ("keras", "keras_fused"):
        import keras

        from tfp_flows.training.fused_adam import fuse_adam
        opt = keras.optimizers.Adam(1e-4)
        if kind == "keras_fused":
            fuse_adam(opt)
        return opt
    import tf_keras
    return tf_keras.optimizers.legacy.Adam(1e-4)


def train_step_fn(dist, jit, optimizer="keras"):
    import tensorflow as tf
    opt = make_adam(optimizer)
    variables = list(dist.trainable_variables)

    @tf.function(jit_compile=jit)
    def step(x):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(dist.log_prob(x))
        grads = tape.gradient(loss, variables)
        opt.apply_gradients(zip(grads, variables))
        return loss

    return step


def flow_model_step_fn(dist, jit, fused):
    """`FlowModel.train_on_batch` with Keras 3's Adam, its update fused (the
    default) or not: the path `FlowModel.fit` users get."""
    import keras

    from tfp_flows.training import FlowModel
    model = FlowModel(dist, dequantize=False)  # the batch is continuous already
    model.compile(optimizer=keras.optimizers.Adam(1e-4), fused_adam=fused,
                  jit_compile=jit)
    return lambda x: model.train_on_batch(x, return_dict=True)["loss"]


def worker(impl, depth, args):
    """Measures one configuration; prints one JSON line."""
    import psutil
    import tensorflow as tf

    proc = psutil.Process()
    dist, x = build(impl, depth, args)
    if impl.startswith("flowmodel"):
        step = flow_model_step_fn(dist, args.jit, impl == "flowmodel_fused")
    else:
        step = train_step_fn(dist, args.jit, args.optimizer)
    t0 = time.perf_counter()
    first_loss = float(step(x))  # trace (and compile) + one step
    first_s = time.perf_counter() - t0
    rss_after_first = proc.memory_info().rss
    try:
        tf.config.experimental.reset_memory_stats("CPU:0")
        allocator_stats = True
    except ValueError:  # TF keeps no CPU allocator statistics without oneDNN
        allocator_stats = False
    peak, stop = [0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        loss = float(step(x))
        times.append(time.perf_counter() - t0)
    stop.set()
    thread.join()
    info = tf.config.experimental.get_memory_info("CPU:0") if allocator_stats else None
    mb = 1024.0 ** 2
    print(json.dumps({
        "impl": impl, "depth": depth, "jit": args.jit,
        "optimizer": args.optimizer,
        "num_params": int(sum(v.shape.num_elements()
                              for v in dist.trainable_variables)),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "rss_after_first_step_mb": rss_after_first / mb,
        "step_rss_mb": peak[0] / mb,
        "tf_peak_mb": info["peak"] / mb if info else None,
        "first_step_s": first_s, "median_step_s": statistics.median(times),
        "first_loss": first_loss, "last_loss": loss,
    }))


def timing(depth, args):
    """Alternating step times, normal vs memory-efficient, shared variables."""
    import tfp_flows
    normal, x = build("normal", depth, args)
    lean = tfp_flows.memory_efficient(normal)
    steps = {"normal": train_step_fn(normal, args.jit, args.optimizer),
             "reversible": train_step_fn(lean, args.jit, args.optimizer)}
    for s in steps.values():
        float(s(x))  # trace
    times = {k: [] for k in steps}
    for _ in range(args.repeats):
        for k, s in steps.items():
            t0 = time.perf_counter()
            float(s(x))
            times[k].append(time.perf_counter() - t0)
    ratios = [r / n for r, n in zip(times["reversible"], times["normal"])]
    print(json.dumps({
        "depth": depth, "jit": args.jit, "optimizer": args.optimizer,
        "repeats": args.repeats,
        "normal_median_s": statistics.median(times["normal"]),
        "reversible_median_s": statistics.median(times["reversible"]),
        "ratio_of_medians": statistics.median(times["reversible"])
        / statistics.median(times["normal"]),
        "median_pair_ratio": statistics.median(ratios),
        "times": times,
    }))


def accuracy(depth, args):
    """Max relative gradient difference, reversible vs normal path, per
    variable (max|g_rev - g| / max|g|), for float32 and float64 Glows whose
    parameters are perturbed off their identity initialisation."""
    import numpy as np
    import tensorflow as tf

    import tfp_flows
    out = {"depth": depth}
    for dtype in (tf.float32, tf.float64):
        rng = np.random.default_rng(1)
        dist = tfp_flows.models.glow(IMAGE, args.levels, depth, args.hidden,
                                     seed=0, dtype=dtype)
        x = tf.constant(rng.integers(0, 256, (args.batch,) + IMAGE)
                        + rng.uniform(size=(args.batch,) + IMAGE), dtype)
        tfp_flows.initialize(dist, x)
        for v in dist.trainable_variables:
            v.assign(v + tf.constant(0.05 * rng.standard_normal(v.shape), dtype))
        grads = []
        for d in (dist, tfp_flows.memory_efficient(dist)):
            @tf.function
            def grad(x, d=d):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    loss = -tf.reduce_mean(d.log_prob(x))
                return tape.gradient(loss, [x] + list(dist.trainable_variables))
            grads.append([g.numpy() for g in grad(x)])
        rel = [float(np.abs(a - b).max() / np.abs(a).max())
               for a, b in zip(*grads)]
        out[dtype.name] = {"max": max(rel), "median": float(np.median(rel)),
                           "input": rel[0], "num_tensors": len(rel)}
    print(json.dumps(out))


def _run(cmd):
    out = subprocess.run([sys.executable, os.path.abspath(__file__)] + cmd,
                         capture_output=True, text=True, check=False)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode or not lines:
        raise RuntimeError(f"{cmd} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def _common_flags(args):
    flags = ["--batch", str(args.batch), "--levels", str(args.levels),
             "--hidden", str(args.hidden), "--steps", str(args.steps),
             "--repeats", str(args.repeats), "--optimizer", args.optimizer]
    return flags + (["--jit"] if args.jit else [])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", nargs=2, metavar=("IMPL", "DEPTH"))
    p.add_argument("--timing-worker", type=int, metavar="DEPTH")
    p.add_argument("--accuracy", type=int, metavar="DEPTH",
                   help="only compare gradients (float32 and float64)")
    p.add_argument("--impls", default="normal,reversible,tfp_glow")
    p.add_argument("--depths", default="2,16")
    p.add_argument("--timing-depths", default="2,16")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--jit", action="store_true")
    p.add_argument("--optimizer", choices=["keras", "keras_fused", "fused"],
                   default="keras",
                   help="Adam of the raw train steps: Keras 3's, Keras 3's with "
                   "tfp_flows' fused update, or tf_keras' legacy fused Adam")
    p.add_argument("--out", default="memory_depth")
    args = p.parse_args()
    if args.worker:
        return worker(args.worker[0], int(args.worker[1]), args)
    if args.timing_worker:
        return timing(args.timing_worker, args)
    if args.accuracy:
        return accuracy(args.accuracy, args)
    runs = []
    for impl in args.impls.split(","):
        for depth in map(int, args.depths.split(",")):
            r = _run(["--worker", impl, str(depth)] + _common_flags(args))
            print(json.dumps(r), flush=True)
            runs.append(r)
    timings = []
    for depth in map(int, filter(None, args.timing_depths.split(","))):
        t = _run(["--timing-worker", str(depth)] + _common_flags(args))
        print(json.dumps({k: v for k, v in t.items() if k != "times"}),
              flush=True)
        timings.append(t)
    result = {"config": {"image": IMAGE, **{k: getattr(args, k) for k in (
        "batch", "levels", "hidden", "steps", "repeats", "jit", "optimizer")}},
        "machine": {"cpu_model": _results.cpu_model(), "commit": _results.commit(),
                    "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_at_end": os.getloadavg()},
        "runs": runs, "timing": timings}
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"{args.out}.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(RESULTS, f"{args.out}.md"), "w") as f:
        f.write(report(result))
    print(report(result))


def _mb(value):
    return "n/a" if value is None else f"{value:.0f}"


def _growth(a, b):
    return "n/a" if a is None or b is None else f"x{b / a:.2f}"


def report(result):
    """A markdown table with growth ratios from the smallest to largest depth."""
    runs = result["runs"]
    lines = ["| impl | K | jit | params | peak RSS (MB) | steady-step RSS (MB) "
             "| TF allocator peak (MB) | step (s) |", "|" + "---|" * 8]
    for r in runs:
        lines.append(
            f"| {r['impl']} | {r['depth']} | {r['jit']} | {r['num_params']:,} "
            f"| {r['peak_rss_mb']:.0f} | {r['step_rss_mb']:.0f} "
            f"| {_mb(r['tf_peak_mb'])} | {r['median_step_s']:.2f} |")
    lines += ["", "| impl | growth peak RSS | growth steady RSS "
              "| growth TF allocator peak |", "|---|---|---|---|"]
    for impl in dict.fromkeys(r["impl"] for r in runs):
        rs = sorted((r for r in runs if r["impl"] == impl),
                    key=lambda r: r["depth"])
        if len(rs) < 2:
            continue
        a, b = rs[0], rs[-1]
        lines.append(
            f"| {impl} (K={a['depth']} -> {b['depth']}) "
            f"| x{b['peak_rss_mb'] / a['peak_rss_mb']:.2f} "
            f"| x{b['step_rss_mb'] / a['step_rss_mb']:.2f} "
            f"| {_growth(a['tf_peak_mb'], b['tf_peak_mb'])} |")
    if result["timing"]:
        lines += ["", "| K | normal step (s) | reversible step (s) "
                  "| ratio of medians | median pair ratio |", "|---|---|---|---|---|"]
        for t in result["timing"]:
            lines.append(
                f"| {t['depth']} | {t['normal_median_s']:.2f} "
                f"| {t['reversible_median_s']:.2f} | {t['ratio_of_medians']:.2f} "
                f"| {t['median_pair_ratio']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
