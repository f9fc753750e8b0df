"""Training throughput of tfp_flows' Glow in float32 against Keras'
``mixed_bfloat16`` policy (bfloat16 networks, float32 variables, log-dets
and priors), side by side in one process.

    python benchmarks/precision.py --config cifar --rounds 7

The two models are built one after the other, each under its own global
dtype policy (a Keras layer keeps the policy it was built with), and their
training steps (`tf.function`, Keras 3 Adam with tfp_flows' fused update)
are timed alternately. On a CPU with AMX (``amx_bf16`` in ``lscpu``'s
flags), oneDNN runs bfloat16 convolutions and matrix products on the AMX
tiles. Protocol: benchmarks/README.md.
"""

import argparse
import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tensorflow as tf  # noqa: E402
from _configs import CONFIGS, pixels  # noqa: E402
from _peers import ours_glow  # noqa: E402
from _results import commit, cpu_model, write  # noqa: E402
from throughput import make_ops, timed  # noqa: E402

import tfp_flows  # noqa: E402


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            line = next(ln for ln in f if ln.startswith("flags"))
        return sorted(f for f in line.split() if f.startswith(("amx", "avx512_bf16")))
    except (OSError, StopIteration):
        return []


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="small,cifar")
    p.add_argument("--policies", default="float32,mixed_bfloat16")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--iters", type=int, default=3)
    args = p.parse_args(argv)
    policies = args.policies.split(",")
    out = {"cpu_model": cpu_model(), "cpu_flags": cpu_flags(), "commit": commit(),
           "tensorflow": tf.__version__, "rounds": args.rounds, "iters": args.iters,
           "results": []}
    lines = []
    for config in args.config.split(","):
        cfg = CONFIGS[config]
        shape, batch = cfg["shape"], cfg["batch"]
        x = tf.constant(pixels(cfg))
        fns = {}
        for policy in policies:
            with tfp_flows.networks.global_policy(policy):
                dist = ours_glow(shape, cfg["levels"], cfg["steps"], cfg["hidden"])
            tfp_flows.initialize(dist, x)
            fns[policy] = make_ops(dist, batch, False, "fused")["train"]
            for _ in range(2):
                timed(fns[policy], x, 1)
        rates = {k: [] for k in fns}
        for _ in range(args.rounds):
            for k, f in fns.items():
                rates[k].append(batch * args.iters / timed(f, x, args.iters))
        base = policies[0]
        entry = {"config": config, "img_s": rates,
                 "median_img_s": {k: statistics.median(v) for k, v in rates.items()}}
        for k in policies[1:]:
            r = [a / b for a, b in zip(rates[k], rates[base])]
            entry[f"speedup_{k}"] = {"median": statistics.median(r), "min": min(r),
                                     "max": max(r)}
            lines.append(f"| {config} ({shape}, L={cfg['levels']}, K={cfg['steps']}, "
                         f"{cfg['hidden']} hidden, batch {batch}) | "
                         f"{entry['median_img_s'][base]:.1f} | "
                         f"{entry['median_img_s'][k]:.1f} | "
                         f"**{statistics.median(r):.2f}x** ({min(r):.2f}-{max(r):.2f}) |")
            print(lines[-1], flush=True)
        out["results"].append(entry)
    text = (f"# Glow training: {policies[0]} vs {', '.join(policies[1:])}\n\n"
            f"CPU: {out['cpu_model']} (flags: {', '.join(out['cpu_flags']) or 'none'}); "
            f"commit {out['commit']}; {args.rounds} alternating rounds of "
            f"{args.iters} steps; fused Keras 3 Adam.\n\n"
            f"| configuration | {policies[0]} img/s | {policies[1]} img/s | "
            f"speed-up (per-round range) |\n|---|---|---|---|\n" + "\n".join(lines) + "\n")
    write("precision_" + "_".join(args.config.split(",")), out, text)
    print(text)


if __name__ == "__main__":
    main()
