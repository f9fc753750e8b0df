"""Training throughput of tfp_flows' Glow against normflows' Glow (PyTorch),
the same configuration, in separate processes run alternately.

normflows is not a dependency of this project: install it (and PyTorch) in
a separate virtualenv and point ``--normflows-python`` at that venv's
interpreter::

    python3 -m venv /tmp/nf && /tmp/nf/bin/pip install torch normflows
    python benchmarks/normflows_peer.py --normflows-python /tmp/nf/bin/python \\
        --config cifar --rounds 5

Every round starts one process per library (import, build, 3 warm-up steps,
then ``--iters`` timed steps) in alternating order (A, B, B, A, ...), so
both see the same machine state; each process reports images/s over its
timed steps. We report the median of each, the median of the per-round
ratios (tfp_flows / normflows) and their range. Both libraries get the same
CPU threads (``--threads``; TensorFlow intra-op and inter-op pools, torch's
``set_num_threads``). Protocol: benchmarks/README.md.

The two models: the configurations of ``_configs.py`` (levels L, steps K per
level, hidden width, batch); tfp_flows' `models.glow` (affine couplings, LU
1x1 convolutions, learned split and top priors) trained with Keras 3's Adam
and tfp_flows' fused update (`FlowModel`'s default) in a `tf.function`;
normflows' `GlowBlock`s (affine coupling with a sigmoid scale, LU 1x1
convolution, ActNorm; networks of 3x3, 1x1, 3x3 convolutions with ``hidden``
channels) in a `MultiscaleFlow` with channel splits and diagonal Gaussian
priors per level, trained with `torch.optim.Adam`, in eager PyTorch (its
usual mode). Both at learning rate 1e-4, float32, on inputs in [0, 1).

The priors differ: tfp_flows' Glow has the paper's conditional priors at the
splits (a zero-initialised 3x3 convolution of the kept half gives the mean
and scale of the factored-out half), normflows' model unconditional diagonal
Gaussians. ``--no-split-prior`` times tfp_flows with a standard normal at the
splits instead, which is closer to normflows' model (its priors' learned
means and scales are element-wise work).
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _configs import CONFIGS, pixels  # noqa: E402

WARMUP = 3


def worker_tfp_flows(cfg, iters, threads, split_prior=True):
    """Images/s of tfp_flows' Glow training step (fused Keras 3 Adam);
    ``split_prior=False`` drops Glow's conditional priors at the splits
    (their 3x3 convolutions), which normflows' model does not have."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    from _peers import num_params, ours_glow, set_threads, train_images_per_second

    set_threads(threads)
    dist = ours_glow(cfg["shape"], cfg["levels"], cfg["steps"], cfg["hidden"],
                     split_prior=split_prior)
    rate = train_images_per_second(dist, tf.constant(pixels(cfg)), iters, WARMUP)
    return rate, num_params(dist)


def worker_normflows(cfg, iters, threads, split_prior=None):
    """Images/s of normflows' Glow training step (torch Adam, eager)."""
    import normflows as nf
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    h, w, c = cfg["shape"]
    levels, steps, hidden = cfg["levels"], cfg["steps"], cfg["hidden"]
    # normflows lists levels from the deepest (index 0) to the data side;
    # level i works on c * 2^(levels + 1 - i) channels after its squeeze and
    # factors out half of them (all of them at the deepest level).
    flows, priors, merges = [], [], []
    for i in range(levels):
        channels = c * 2 ** (levels + 1 - i)
        flows.append([nf.flows.GlowBlock(channels, hidden, split_mode="channel",
                                         scale=True) for _ in range(steps)]
                     + [nf.flows.Squeeze()])
        if i == 0:
            latent = (channels, h // 2 ** levels, w // 2 ** levels)
        else:
            # the half factored out here, at this level's resolution
            latent = (c * 2 ** (levels - i), h // 2 ** (levels - i),
                      w // 2 ** (levels - i))
            merges.append(nf.flows.Merge())
        priors.append(nf.distributions.DiagGaussian(latent))
    model = nf.MultiscaleFlow(priors, flows, merges, class_cond=False)
    x = torch.from_numpy(pixels(cfg) / 256.0).permute(0, 3, 1, 2).contiguous()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model.forward_kld(x)
        loss.backward()
        opt.step()
        return loss

    for _ in range(WARMUP):
        step()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    rate = cfg["batch"] * iters / (time.perf_counter() - start)
    return rate, sum(p.numel() for p in model.parameters())


WORKERS = {"tfp_flows": worker_tfp_flows, "normflows": worker_normflows}


def run_worker(python, lib, config, iters, threads, split_prior=True):
    from _results import run_json_worker

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", OMP_NUM_THREADS=str(threads))
    return run_json_worker(
        [python, os.path.abspath(__file__), "--worker", lib, "--config", config,
         "--iters", str(iters), "--threads", str(threads)]
        + ([] if split_prior else ["--no-split-prior"]), env, lib)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="cifar", choices=sorted(CONFIGS))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--normflows-python", default=os.environ.get("NORMFLOWS_PYTHON"),
                   help="the interpreter of a venv with torch and normflows")
    p.add_argument("--no-split-prior", dest="split_prior", action="store_false",
                   help="tfp_flows without Glow's conditional split priors "
                        "(normflows' model has unconditional ones)")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--name", default=None,
                   help="results name (default normflows_peer_<config>)")
    args = p.parse_args(argv)
    cfg = CONFIGS[args.config]
    if args.worker:
        rate, params = WORKERS[args.worker](cfg, args.iters, args.threads,
                                            args.split_prior)
        print(json.dumps({"img_s": rate, "params": params}), flush=True)
        return None
    if not args.normflows_python:
        p.error("--normflows-python (or NORMFLOWS_PYTHON) is required")
    from _results import commit, cpu_model, write

    pythons = {"tfp_flows": sys.executable, "normflows": args.normflows_python}
    rates = {lib: [] for lib in pythons}
    params = {}
    for r in range(args.rounds):
        order = list(pythons) if r % 2 == 0 else list(pythons)[::-1]
        for lib in order:
            got = run_worker(pythons[lib], lib, args.config, args.iters, args.threads,
                             args.split_prior)
            rates[lib].append(got["img_s"])
            params[lib] = got["params"]
            print(f"round {r + 1}: {lib:9s} {got['img_s']:8.1f} img/s", flush=True)
    ratios = [a / b for a, b in zip(rates["tfp_flows"], rates["normflows"])]
    result = {
        "config": args.config, **{k: list(v) if isinstance(v, tuple) else v
                                  for k, v in cfg.items()},
        "cpu_model": cpu_model(), "commit": commit(), "threads": args.threads,
        "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "rounds": args.rounds, "iters": args.iters, "params": params,
        "split_prior": args.split_prior,
        "img_s": rates,
        "median_img_s": {lib: statistics.median(v) for lib, v in rates.items()},
        "ratio": statistics.median(ratios), "ratio_min": min(ratios),
        "ratio_max": max(ratios)}
    m = result["median_img_s"]
    text = (f"# tfp_flows vs normflows, Glow training ({args.config})\n\n"
            f"CPU: {result['cpu_model']}; commit {result['commit']}; "
            f"{args.threads} threads each; tfp_flows "
            f"{'with' if args.split_prior else 'without'} conditional split "
            f"priors; TF_ENABLE_ONEDNN_OPTS="
            f"{result['tf_enable_onednn_opts'] or 'unset (TF default)'}; "
            f"{args.rounds} alternating rounds of "
            f"{args.iters} timed steps (after {WARMUP} warm-up steps), one "
            f"process per library per round.\n\n"
            f"| library | parameters | img/s (median) | per round |\n|---|---|---|---|\n"
            + "".join(f"| {lib} | {params[lib]:,} | {m[lib]:.1f} | "
                      f"{', '.join(f'{v:.1f}' for v in rates[lib])} |\n" for lib in rates)
            + f"\nratio tfp_flows / normflows: **{result['ratio']:.2f}x** "
              f"(per-round range {result['ratio_min']:.2f}-{result['ratio_max']:.2f})\n")
    write(args.name or f"normflows_peer_{args.config}", result, text)
    print(text)
    return result


if __name__ == "__main__":
    main()
