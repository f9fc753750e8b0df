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

**The ceiling.** Beside the two flows, the training step is also timed for
our Glow's coupling networks alone (``networks``): the same network objects,
each fed a fixed random tensor of the shape it sees inside the flow, one
gradient step of the same optimizer on the sum of their squared outputs --
no flow math (no ActNorm, 1x1 convolution, coupling arithmetic, squeeze,
priors or log-determinants). For ``log_prob`` the ceiling is the networks'
forward passes alone, chained. ``networks`` also backpropagates into each
network's input, as the flow must (every coupling's input depends on
earlier parameters); ``networks_no_dx`` skips that, a stricter bar.
``networks_chained`` makes each network's input depend on the previous
network's output, so they run in sequence as in a flow (unchained, TF runs
independent networks side by side on its inter-op threads). Our training
step is reported as a fraction of each.

**Between processes.** Figures of one process move by a few percent from one
process to the next (memory layout, thread placement, the machine's state).
``--processes N`` runs the whole benchmark N times, each in a fresh process,
and reports for every ratio and fraction the median of the N per-process
medians and their range: the spread a claimed margin must exceed.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402
from _configs import CONFIGS, pixels  # noqa: E402
from _peers import num_params, ours_glow, tfp_glow  # noqa: E402
from _results import commit, cpu_model  # noqa: E402

import tfp_flows  # noqa: E402
from tfp_flows.bijectors.coupling import Coupling  # noqa: E402
from tfp_flows.training.fused_adam import fuse_adam  # noqa: E402


def set_precision(policy):
    """The same dtype policy for both Keras versions (ours: Keras 3; TFP's
    networks: tf_keras)."""
    import keras
    keras.config.set_dtype_policy(policy)
    tf_keras.mixed_precision.set_global_policy(policy)


def make_optimizer(kind):
    """Adam at 1e-4: ``tf_keras`` (TFP's Keras), ``keras`` (Keras 3) or
    ``fused`` (Keras 3 with tfp_flows' fused update, FlowModel's default)."""
    if kind == "tf_keras":
        return tf_keras.optimizers.Adam(1e-4)
    import keras
    opt = keras.optimizers.Adam(1e-4)
    if kind == "fused":
        fuse_adam(opt)
    return opt


def make_ops(dist, batch, jit, optimizer="tf_keras"):
    """tf.functions for one training step, log_prob and sampling."""
    variables = dist.trainable_variables
    opt = make_optimizer(optimizer)

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


def coupling_network_calls(dist, x):
    """``(network, input shape)`` of every coupling-network call that
    ``dist.log_prob(x)`` makes, in order (recorded on one eager call)."""
    calls = []
    original = Coupling._call_network

    def record(self, cond, context=None):
        inputs = cond if context is None else tf.concat([cond, context], -1)
        calls.append((self.network, tuple(inputs.shape[1:])))
        return original(self, cond, context)

    Coupling._call_network = record
    try:
        dist.log_prob(x)
    finally:
        Coupling._call_network = original
    return calls


def _network_inputs(calls, batch):
    """A fixed random input of each network's in-flow shape."""
    rng = np.random.default_rng(1)
    return [tf.constant(rng.standard_normal((batch,) + shape), tf.float32)
            for _, shape in calls]


def _run_networks(calls, inputs, link=None):
    """Every network's float32 output on its input. With `link` (a
    zero-valued variable the graph optimiser cannot fold), network k's input
    also depends on network k-1's output through ``+ link * mean(output)``,
    so the networks run one after the other, forward and backward, as they do
    inside a flow; without it, TensorFlow runs independent networks side by
    side on its inter-op threads, which no sequential flow can do."""
    outputs = []
    for (net, _), x in zip(calls, inputs):
        if link is not None and outputs:
            x = x + link * tf.reduce_mean(outputs[-1])
        outputs.append(tf.cast(net(x), tf.float32))
    return outputs


def make_forward_ceiling(calls, batch, jit):
    """``log_prob``'s ceiling: the coupling networks' forward passes alone,
    chained (each input depends on the previous output, as in a flow)."""
    inputs = _network_inputs(calls, batch)
    link = tf.Variable(0.0, trainable=False)

    def forward():
        return tf.add_n([tf.reduce_mean(o) for o in _run_networks(calls, inputs, link)])

    return tf.function(forward, jit_compile=jit)


def make_ceiling(calls, batch, jit, optimizer="tf_keras", input_grads=True, chained=False):
    """A training step of the coupling networks alone: each network on a fixed
    random input of its in-flow shape; the loss sums the mean squared
    outputs (values do not matter: dense convolutions cost the same for any
    numbers). With ``input_grads`` the gradient also reaches every input;
    with ``chained`` the networks run in sequence (`_run_networks`).
    """
    inputs = _network_inputs(calls, batch)
    link = tf.Variable(0.0, trainable=False) if chained else None
    variables, seen = [], set()
    for net, _ in calls:
        for v in net.trainable_variables:
            if id(v) not in seen:
                seen.add(id(v))
                variables.append(v)
    opt = make_optimizer(optimizer)

    def train():
        with tf.GradientTape() as tape:
            if input_grads:
                tape.watch(inputs)
            loss = tf.add_n([tf.reduce_mean(tf.square(o))
                             for o in _run_networks(calls, inputs, link)])
        grads = tape.gradient(loss, variables + (inputs if input_grads else []))
        opt.apply_gradients(zip(grads[:len(variables)], variables))
        # the input gradients are outputs, so the graph keeps them
        return loss if not input_grads else loss + tf.add_n(
            [tf.reduce_sum(g[:1, :1, :1, :1]) for g in grads[len(variables):]])

    return tf.function(train, jit_compile=jit)


def timed(fn, x, iters):
    args = () if x is None else (x,)
    start = time.perf_counter()
    for _ in range(iters):
        out = fn(*args)
    _ = np.asarray(out)  # wait for the result
    return time.perf_counter() - start


def run(config, ops, jit_modes, rounds, iters, precision="float32", save=None,
        optimizer="tf_keras", ceiling=True):
    set_precision(precision)
    cfg = CONFIGS[config]
    shape, batch = cfg["shape"], cfg["batch"]
    x_pix = tf.constant(pixels(cfg))
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
    calls = coupling_network_calls(ours, x_pix) if ceiling else []
    result = {"config": config, "precision": precision, "optimizer": optimizer,
              "tfp_precision": tfp_precision, **{k: list(v) if isinstance(v, tuple) else v
                                   for k, v in cfg.items()},
              "params_tfp_flows": num_params(ours), "params_tfp": num_params(theirs),
              "coupling_network_calls": len(calls),
              "rounds": rounds, "iters": iters, "timings": {}}
    print(f"== {config} ({precision}, {optimizer} Adam): {shape}, L={cfg['levels']} "
          f"K={cfg['steps']} hidden={cfg['hidden']} batch={batch}; params tfp_flows "
          f"{result['params_tfp_flows']:,} vs TFP {result['params_tfp']:,}", flush=True)
    for jit in jit_modes:
        ops_a = make_ops(ours, batch, jit, optimizer)
        ops_b = make_ops(theirs, batch, jit, optimizer)
        for op in ops:
            xa = None if op == "sample" else x_pix
            xb = None if op == "sample" else x_theirs
            contenders = {"tfp_flows": (ops_a[op], xa), "tfp": (ops_b[op], xb)}
            if op == "train" and calls:
                contenders["networks"] = (make_ceiling(calls, batch, jit, optimizer), None)
                contenders["networks_no_dx"] = (
                    make_ceiling(calls, batch, jit, optimizer, input_grads=False), None)
                contenders["networks_chained"] = (
                    make_ceiling(calls, batch, jit, optimizer, chained=True), None)
            elif op == "log_prob" and calls:
                contenders["networks_chained"] = (make_forward_ceiling(calls, batch, jit), None)
            key = f"{op}/jit={jit}"
            try:
                for _ in range(2):  # trace + warm up
                    for fn, x in contenders.values():
                        timed(fn, x, 1)
            except Exception as e:  # noqa: BLE001 - report and move on
                print(f"  {op:8s} jit={jit}: failed: {type(e).__name__}: "
                      f"{str(e).splitlines()[0][:120]}", flush=True)
                result["timings"][key] = {"error": str(e)[:300]}
                if save:
                    save(result)
                continue
            rates = {name: [] for name in contenders}
            for _ in range(rounds):  # alternating: A, B, (C, D), A, B, ...
                for name, (fn, x) in contenders.items():
                    rates[name].append(batch * iters / timed(fn, x, iters))
            result["timings"][key] = entry = summarize(rates)
            line = (f"  {op:8s} jit={str(jit):5s}  tfp_flows {entry['tfp_flows_img_s']:8.1f} "
                    f"img/s  TFP {entry['tfp_img_s']:8.1f}  ratio {entry['ratio']:5.2f}x "
                    f"[{entry['ratio_min']:.2f}, {entry['ratio_max']:.2f}]")
            if "networks" not in rates and "networks_chained" in rates:
                line += (f"  | networks (forward, chained) "
                         f"{entry['networks_chained_img_s']:8.1f} img/s: "
                         f"{entry['fraction_of_networks_chained']:.1%}")
            if "networks" in rates:
                line += (f"  | networks {entry['networks_img_s']:8.1f} img/s: "
                         f"{entry['fraction_of_networks']:.1%} "
                         f"[{entry['fraction_of_networks_min']:.1%}, "
                         f"{entry['fraction_of_networks_max']:.1%}]; no dx "
                         f"{entry['networks_no_dx_img_s']:8.1f}: "
                         f"{entry['fraction_of_networks_no_dx']:.1%}; chained "
                         f"{entry['networks_chained_img_s']:8.1f}: "
                         f"{entry['fraction_of_networks_chained']:.1%} "
                         f"[{entry['fraction_of_networks_chained_min']:.1%}, "
                         f"{entry['fraction_of_networks_chained_max']:.1%}]")
            print(line, flush=True)
            if save:
                save(result)
    set_precision("float32")
    return result


def summarize(rates):
    """Medians per contender, and per-round ratios against tfp_flows (median,
    min, max): ``ratio`` = tfp_flows / TFP, ``fraction_of_<ceiling>`` =
    tfp_flows / ceiling."""
    ours = rates["tfp_flows"]
    entry = {f"{name}_img_s": statistics.median(r) for name, r in rates.items()}
    entry["rounds_img_s"] = rates

    def per_round(name, key):
        r = [a / b for a, b in zip(ours, rates[name])]
        entry[key] = statistics.median(r)
        entry[f"{key}_min"], entry[f"{key}_max"] = min(r), max(r)

    per_round("tfp", "ratio")
    entry["ratio_of_medians"] = entry["tfp_flows_img_s"] / entry["tfp_img_s"]
    for name in rates:
        if name.startswith("networks"):
            per_round(name, f"fraction_of_{name}")
    return entry


def _without(argv, *options):
    """`argv` without `options` and their values (``--opt v`` or ``--opt=v``)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in options:
            skip = True
        elif not arg.startswith(tuple(o + "=" for o in options)):
            out.append(arg)
    return out


def across_processes(runs):
    """Per ``config/precision/op/jit``: the median, min and max over `runs`
    (each one process's results) of every median ratio and fraction."""
    values = {}
    for run in runs:
        for res in run["results"]:
            for key, entry in res["timings"].items():
                for name, value in entry.items():
                    if name == "ratio" or (name.startswith("fraction_of_")
                                           and not name.endswith(("_min", "_max"))):
                        where = f"{res['config']}/{res['precision']}/{key}"
                        values.setdefault(where, {}).setdefault(name, []).append(value)
    return {where: {name: {"median": statistics.median(v), "min": min(v), "max": max(v),
                           "per_process": v} for name, v in names.items()}
            for where, names in values.items()}


def run_processes(argv, n, info, out):
    """Runs the benchmark of `argv` in `n` fresh processes, one after the
    other; prints and returns the spread between them."""
    runs = []
    child = _without(argv, "--processes", "--out")
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            path = os.path.join(tmp, f"process{i}.json")
            print(f"-- process {i + 1}/{n}", flush=True)
            subprocess.run([sys.executable, os.path.abspath(__file__), *child, "--out", path],
                           check=True)
            with open(path) as f:
                runs.append(json.load(f))
    spread = across_processes(runs)
    for where, names in spread.items():
        print(f"== {where} over {n} processes: " + "; ".join(
            f"{name} {v['median']:.3f} [{v['min']:.3f}, {v['max']:.3f}]"
            for name, v in names.items()), flush=True)
    if out:
        with open(out, "w") as f:
            json.dump({**{k: v for k, v in info.items() if k != "results"},
                       "processes": runs, "across_processes": spread}, f, indent=2)
    return spread


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="small,cifar")
    p.add_argument("--ops", default="train,log_prob,sample")
    p.add_argument("--jit", default="false,true")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--precision", default="float32",
                   help="comma-separated dtype policies, e.g. "
                        "float32,mixed_float16")
    p.add_argument("--optimizer", default="tf_keras", choices=["tf_keras", "keras", "fused"],
                   help="Adam on every side: TFP's tf_keras, Keras 3, or Keras 3 "
                        "with tfp_flows' fused update (FlowModel's default)")
    p.add_argument("--no-ceiling", action="store_true",
                   help="skip timing the coupling networks alone")
    p.add_argument("--out", default=None,
                   help="write results as JSON here (after every measurement)")
    p.add_argument("--processes", type=int, default=1,
                   help="run everything this many times, each in a fresh process, "
                        "and report the spread between processes")
    args = p.parse_args(argv)
    jit_modes = [s.strip().lower() == "true" for s in args.jit.split(",")]
    info = {"tensorflow": tf.__version__, "devices": [d.name for d in
                                                      tf.config.list_logical_devices()],
            "cpu_count": os.cpu_count(), "cpu_model": cpu_model(), "commit": commit(),
            "threads": {k: os.environ.get(k) for k in
                        ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
                         "OMP_NUM_THREADS", "TF_ENABLE_ONEDNN_OPTS")},
            "results": []}
    if args.processes > 1:
        return run_processes(argv, args.processes, info, args.out)

    def save(partial=None):
        if not args.out:
            return
        done = info["results"] + ([partial] if partial is not None else [])
        with open(args.out, "w") as f:
            json.dump({**info, "results": done}, f, indent=2)

    for precision in args.precision.split(","):
        for c in args.config.split(","):
            info["results"].append(run(c, args.ops.split(","), jit_modes,
                                       args.rounds, args.iters, precision, save,
                                       args.optimizer, not args.no_ceiling))
            save()
    return info


if __name__ == "__main__":
    main()
