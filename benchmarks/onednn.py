"""Training throughput with TensorFlow's oneDNN kernels on and off, for the
MNIST recipes of ``mnist_table.sh`` and the Glow configurations of
``_configs.py``.

TensorFlow reads ``TF_ENABLE_ONEDNN_OPTS`` once, at import: it turns oneDNN
on by default on Intel CPUs with AVX-512 and leaves it off elsewhere (an AMD
EPYC, for one). The two settings can therefore only be compared across
processes. Every round starts one process per setting (import, build, 3
warm-up steps, ``--iters`` timed steps) in alternating order (A, B, B, A,
...), each with ``--threads`` threads (TensorFlow's intra-op and inter-op
pools). Reported per model: median images/s with oneDNN off and on, the
median of the per-round ratios (on / off) and their range.

Models (the training step of ``throughput.py``: mean negative
log-likelihood, Keras 3 Adam with tfp_flows' fused update, graph mode):

* ``mnist_glow``, ``mnist_real_nvp``, ``mnist_nice``: the 28x28 recipes
  (``docs/cli.md``) at batch 64 on dequantised 8-bit pixels;
* ``small``, ``cifar``: the Glow configurations of ``_configs.py``.

Usage::

    .venv/bin/python benchmarks/onednn.py --models mnist_real_nvp,mnist_glow,mnist_nice
"""

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _configs import CONFIGS, pixels  # noqa: E402

WARMUP = 3
MNIST = {  # the 28x28 recipes of mnist_table.sh / docs/cli.md
    "mnist_glow": ("glow", dict(num_levels=2, num_steps=8, hidden_channels=128)),
    "mnist_real_nvp": ("real_nvp", dict(num_scales=3, hidden_channels=32, num_blocks=2)),
    "mnist_nice": ("nice", {}),
}


def _build(name):
    """(distribution, input batch) for a model name."""
    import tensorflow as tf

    import tfp_flows
    if name in MNIST:
        builder, kwargs = MNIST[name]
        cfg = dict(shape=(28, 28, 1), batch=64)
        dist = getattr(tfp_flows.models, builder)([28, 28, 1], num_bins=256, **kwargs)
    else:
        from _peers import ours_glow
        cfg = CONFIGS[name]
        dist = ours_glow(cfg["shape"], cfg["levels"], cfg["steps"], cfg["hidden"])
    return dist, tf.constant(pixels(cfg))


def worker(name, iters, threads):
    """Images/s of one model's training step in this process."""
    from _peers import set_threads, train_images_per_second

    set_threads(threads)
    dist, x = _build(name)
    return train_images_per_second(dist, x, iters, WARMUP)


def run_worker(name, onednn, iters, threads):
    from _results import run_json_worker

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", OMP_NUM_THREADS=str(threads),
               TF_ENABLE_ONEDNN_OPTS=str(int(onednn)))
    return run_json_worker(
        [sys.executable, os.path.abspath(__file__), "--worker", name,
         "--iters", str(iters), "--threads", str(threads)], env, name)["img_s"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="mnist_real_nvp,mnist_glow,mnist_nice",
                   help=f"comma-separated, from {sorted(MNIST) + sorted(CONFIGS)}")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--name", default="onednn", help="results name")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps({"img_s": worker(args.worker, args.iters, args.threads)}), flush=True)
        return None
    from _results import commit, cpu_model, write

    models = args.models.split(",")
    for name in models:
        if name not in MNIST and name not in CONFIGS:
            p.error(f"unknown model {name!r}")
    result = {"cpu_model": cpu_model(), "commit": commit(), "threads": args.threads,
              "rounds": args.rounds, "iters": args.iters, "models": {}}
    lines = [f"# oneDNN on vs off, training step\n\nCPU: {result['cpu_model']}; commit "
             f"{result['commit']}; {args.threads} threads; {args.rounds} alternating rounds "
             f"of {args.iters} timed steps (after {WARMUP} warm-up steps), one process per "
             "setting per round.\n",
             "| model | oneDNN off img/s | oneDNN on img/s | on / off (median) | range |",
             "|---|---|---|---|---|"]
    for name in models:
        rates = {False: [], True: []}
        for r in range(args.rounds):
            for onednn in ((False, True) if r % 2 == 0 else (True, False)):
                rates[onednn].append(run_worker(name, onednn, args.iters, args.threads))
                print(f"{name} round {r + 1}: oneDNN {'on ' if onednn else 'off'} "
                      f"{rates[onednn][-1]:8.1f} img/s", flush=True)
        ratios = [a / b for a, b in zip(rates[True], rates[False])]
        row = {"off_img_s": rates[False], "on_img_s": rates[True],
               "median_off": statistics.median(rates[False]),
               "median_on": statistics.median(rates[True]),
               "ratio": statistics.median(ratios), "ratio_min": min(ratios),
               "ratio_max": max(ratios)}
        result["models"][name] = row
        lines.append(f"| {name} | {row['median_off']:.1f} | {row['median_on']:.1f} | "
                     f"**{row['ratio']:.2f}x** | {row['ratio_min']:.2f}-{row['ratio_max']:.2f} |")
        write(args.name, result, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
