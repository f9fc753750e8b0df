"""One layer of a Glow coupling network, timed two ways side by side: the
hidden 1x1 convolution (``conv -> bias -> ReLU``, forward and the gradients
to input, kernel and bias) as ``tf.nn.conv2d`` and as ``conv2d_same``'s
matrix product (``[N*H*W, c_in] @ [c_in, c_out]``, bias and ReLU fused).

Shapes: the hidden layer's input at every level of the Glow configurations
of ``_configs.py`` (``small``: 8x8x1, L=2, batch 64; ``cifar``: 32x32x3,
L=3, batch 32; 128 hidden channels). Both variants run in one process,
alternating within each round (``--rounds`` rounds of ``--iters`` calls after
two warm-up calls); reported per shape: median milliseconds per call of each
and the median of the per-round ratios (conv2d / matmul) with their range.

    .venv/bin/python benchmarks/layers.py --out layers_amd
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tensorflow as tf  # noqa: E402
from _configs import CONFIGS  # noqa: E402
from _results import commit, cpu_model, write  # noqa: E402

from tfp_flows.convolution import conv2d_same  # noqa: E402


def hidden_layer_shapes(config):
    """``[batch, H, W, hidden]`` of the hidden layer's input at each level."""
    cfg = CONFIGS[config]
    h, w, _ = cfg["shape"]
    return [(cfg["batch"], h >> level, w >> level, cfg["hidden"])
            for level in range(1, cfg["levels"] + 1)]


def layer_step(conv, shape):
    """A tf.function: the layer's output and its three gradients."""
    rng = tf.random.Generator.from_seed(0)
    x = rng.normal(shape)
    kernel = tf.Variable(rng.normal([1, 1, shape[-1], shape[-1]]) * 0.05)
    bias = tf.Variable(tf.zeros([shape[-1]]))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = conv(x, kernel, bias)
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, [x, kernel, bias])

    return step


VARIANTS = {
    "conv2d": lambda x, k, b: tf.nn.relu(tf.nn.bias_add(
        tf.nn.conv2d(x, k, strides=1, padding="SAME"), b)),
    "matmul": lambda x, k, b: conv2d_same(x, k, b, tf.nn.relu),
}


def time_shape(shape, rounds, iters):
    steps = {name: layer_step(fn, shape) for name, fn in VARIANTS.items()}
    for _ in range(2):
        for step in steps.values():
            step()
    ms = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(iters):
                out = step()
            _ = out[0].numpy()
            ms[name].append((time.perf_counter() - start) / iters * 1e3)
    ratios = [a / b for a, b in zip(ms["conv2d"], ms["matmul"])]
    return {"shape": list(shape), "ms": {n: statistics.median(v) for n, v in ms.items()},
            "rounds_ms": ms, "speedup": statistics.median(ratios),
            "speedup_min": min(ratios), "speedup_max": max(ratios)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="small,cifar")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--out", default=None, help="results/<OUT>.json and .md")
    args = p.parse_args(argv)
    info = {"cpu_model": cpu_model(), "commit": commit(), "tensorflow": tf.__version__,
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS"), "rounds": args.rounds,
            "iters": args.iters, "results": []}
    lines = [f"# Glow's hidden 1x1 layer: tf.nn.conv2d vs matrix product\n",
             f"{info['cpu_model']}, commit {info['commit']}, TF {tf.__version__}, "
             f"TF_ENABLE_ONEDNN_OPTS={info['onednn']}; {args.rounds} alternating rounds "
             f"of {args.iters} calls (forward + 3 gradients).\n",
             "| config | input shape | conv2d ms | matmul ms | conv2d / matmul [range] |",
             "|---|---|---|---|---|"]
    for config in args.configs.split(","):
        for shape in hidden_layer_shapes(config):
            r = {"config": config, **time_shape(shape, args.rounds, args.iters)}
            info["results"].append(r)
            lines.append(f"| {config} | {'x'.join(map(str, shape))} | {r['ms']['conv2d']:.3f} "
                         f"| {r['ms']['matmul']:.3f} | {r['speedup']:.2f}x "
                         f"[{r['speedup_min']:.2f}, {r['speedup_max']:.2f}] |")
            print(lines[-1], flush=True)
    if args.out:
        write(args.out, info, "\n".join(lines) + "\n")
    return info


if __name__ == "__main__":
    main()
