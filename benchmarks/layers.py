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

``--models`` also times the whole training step of those Glows (fused Keras
3 Adam, graph mode, as in ``throughput.py``) with the hidden layer traced
either way, alternating in one process: what the layer's speed-up is worth
in a model.

    .venv/bin/python benchmarks/layers.py --models small,cifar --out layers_amd
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tensorflow as tf  # noqa: E402
from _configs import CONFIGS, pixels  # noqa: E402
from _peers import ours_glow  # noqa: E402
from _results import commit, cpu_model, write  # noqa: E402
from throughput import make_optimizer  # noqa: E402

import tfp_flows  # noqa: E402
from tfp_flows import convolution  # noqa: E402
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


def model_step(config, variant):
    """A traced training step of the `config` Glow, its hidden layers
    through `variant` (the matrix product is conv2d_same's own path)."""
    cfg = CONFIGS[config]
    x = tf.constant(pixels(cfg))
    dist = ours_glow(cfg["shape"], cfg["levels"], cfg["steps"], cfg["hidden"])
    tfp_flows.initialize(dist, x)
    opt = make_optimizer("fused")
    variables = dist.trainable_variables

    @tf.function
    def train():
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(dist.log_prob(x))
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    own = convolution._conv2d_1x1  # pylint: disable=protected-access
    if variant == "conv2d":  # trace with TensorFlow's convolution instead
        convolution._conv2d_1x1 = lambda x, k, b, f: convolution._bias_activation(
            convolution._native_conv2d(x, k), b, f)
    try:
        train()
    finally:
        convolution._conv2d_1x1 = own
    return train


def alternate(steps, rounds, iters):
    """Median ms per call of each step over alternating rounds, and the
    per-round ratios conv2d / matmul."""
    for _ in range(2):
        for step in steps.values():
            step()
    ms = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(iters):
                out = step()
            _ = tf.nest.flatten(out)[0].numpy()
            ms[name].append((time.perf_counter() - start) / iters * 1e3)
    ratios = [a / b for a, b in zip(ms["conv2d"], ms["matmul"])]
    return {"ms": {n: statistics.median(v) for n, v in ms.items()},
            "rounds_ms": ms, "speedup": statistics.median(ratios),
            "speedup_min": min(ratios), "speedup_max": max(ratios)}


def _row(r, what):
    return (f"| {r['config']} | {what} | {r['ms']['conv2d']:.3f} | {r['ms']['matmul']:.3f} "
            f"| {r['speedup']:.2f}x [{r['speedup_min']:.2f}, {r['speedup_max']:.2f}] |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="small,cifar")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--models", default="",
                   help="also time these configurations' training steps")
    p.add_argument("--model-iters", type=int, default=5)
    p.add_argument("--out", default=None, help="results/<OUT>.json and .md")
    args = p.parse_args(argv)
    info = {"cpu_model": cpu_model(), "commit": commit(), "tensorflow": tf.__version__,
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS"), "rounds": args.rounds,
            "iters": args.iters, "results": []}
    lines = ["# Glow's hidden 1x1 layer: tf.nn.conv2d vs matrix product\n",
             f"{info['cpu_model']}, commit {info['commit']}, TF {tf.__version__}, "
             f"TF_ENABLE_ONEDNN_OPTS={info['onednn']}; {args.rounds} alternating rounds "
             f"of {args.iters} calls (forward + 3 gradients).\n",
             "| config | what | conv2d ms | matmul ms | conv2d / matmul [range] |",
             "|---|---|---|---|---|"]
    for config in args.configs.split(","):
        for shape in hidden_layer_shapes(config):
            steps = {name: layer_step(fn, shape) for name, fn in VARIANTS.items()}
            r = {"config": config, "shape": list(shape),
                 **alternate(steps, args.rounds, args.iters)}
            info["results"].append(r)
            lines.append(_row(r, "layer " + "x".join(map(str, shape))))
            print(lines[-1], flush=True)
    for config in filter(None, args.models.split(",")):
        steps = {name: model_step(config, name) for name in VARIANTS}
        r = {"config": config, "model": True,
             **alternate(steps, args.rounds, args.model_iters)}
        info["results"].append(r)
        lines.append(_row(r, "training step"))
        print(lines[-1], flush=True)
    if args.out:
        write(args.out, info, "\n".join(lines) + "\n")
    return info


if __name__ == "__main__":
    main()
