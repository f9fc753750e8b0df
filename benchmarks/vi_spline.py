"""Spline vs affine `vector_flow` as VI surrogates at the same parameter
budget, on Neal's 10-D funnel and on a rotated skewed 10-D target.

Targets (``--target``):

* ``funnel10`` (``benchmarks/tfp_pipelines.py``): ``v ~ N(0, 3^2)``,
  ``x_i | v ~ N(0, e^v)``. Every conditional is Gaussian given ``v``: an
  affine coupling that conditions on ``v`` maps it to ``N(0, 1)`` exactly, so
  a spline's extra shapes have nothing to fit there;
* ``skew10``: ``x = R y`` with ``y_i`` independent sinh-arcsinh variables
  (skewness 1, tail weight 0.8: skewed, heavier-tailed than a Gaussian) and
  ``R`` a fixed random rotation (seed 0), so the entries depend on each other
  and no conditional is Gaussian: ``log p(x) = sum_i log p_SAS((R^T x)_i)``.

The optimisation is that of ``benchmarks/tfp_pipelines.py``
(``tfp.vi.fit_surrogate_posterior``, Adam 3e-3 decaying to 3e-4, global
clip norm 1, ``--steps`` steps of ``--sample-size`` draws). Surrogates, each
with 6 couplings on random complementary masks (mask seed 0) and 2-hidden-
layer MLPs:

* ``affine``: the pipelines benchmark's flow (64 hidden units, ``exp``
  scales soft-clamped to e^{+-3}), 31,244 parameters;
* ``spline_B``: rational-quadratic spline couplings, 8 bins on [-B, B]
  (identity outside), 32 hidden units: 30,968 parameters, i.e. no more than
  the affine flow. B is the one spline setting varied (3, 6, 12): the funnel's
  x spans orders of magnitude and a spline only reshapes [-B, B];
* ``spline_affine_B``: each spline coupling maps its entries by an affine
  ``x s + t`` (log-scale soft-clamped to +-3, as the affine flow) before the
  spline (``max_log_scale=3``), 30 hidden units: 30,680 parameters;
  ``spline_affine_B_bK``: the same with K bins per spline, and the widest
  networks that stay within the affine flow's parameters.

Each surrogate is fitted with ``--seeds`` seeds (weights initialisation and
VI noise); reported per seed: ``-ELBO = E_q[log q - log p] = KL(q || p)``
(the target is normalised) from ``--eval`` fresh draws with its standard
error, and the fitting time. The summary gives the mean over seeds and the
spread (max - min) across seeds. The -ELBO is the objective VI minimises and
is estimated on fresh draws, so no held-out split is involved.

Usage::

    .venv/bin/python benchmarks/vi_spline.py              # full size
    .venv/bin/python benchmarks/vi_spline.py --quick      # smoke run
    .venv/bin/python benchmarks/vi_spline.py --target skew10 \
        --surrogates affine spline_affine_3 --out vi_spline_skew10

Results go to ``benchmarks/results/vi_spline.json`` (and ``.md``), or
``--out``.
"""

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import _results  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402
import tf_keras  # noqa: E402
from tfp_pipelines import target  # noqa: E402

import tfp_flows  # noqa: E402

tfd, tfb = tfp.distributions, tfp.bijectors


def skew10(dim=10):
    """The rotated sinh-arcsinh target over [dim] (see the module docstring)."""
    rotation, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((dim, dim)))
    base = tfd.Sample(tfd.SinhArcsinh(loc=0.0, scale=1.0, skewness=1.0, tailweight=0.8), dim)
    matrix = tf.linalg.LinearOperatorFullMatrix(rotation.astype(np.float32),
                                                is_non_singular=True, is_square=True)
    return tfd.TransformedDistribution(base, tfb.ScaleMatvecLinearOperator(matrix))


def get_target(name):
    """(normalised target over [D], D)."""
    if name == "skew10":
        return skew10(), 10
    tgt, _, dim = target(name)
    return tgt, dim


_COMMON = dict(num_couplings=6, num_hidden_layers=2, mask_pattern="random", seed=0)


def _affine(dim):
    return tfp_flows.models.vector_flow(dim, hidden_units=64, scale_fn="exp",
                                        max_log_scale=3.0, **_COMMON)


def _size(flow):
    return int(sum(np.prod(v.shape) for v in flow.trainable_variables))


def _spline_affine(dim, bound, bins, hidden):
    return tfp_flows.models.vector_flow(
        dim, hidden_units=hidden, coupling="spline", num_spline_bins=bins,
        spline_bound=bound, max_log_scale=3.0, **_COMMON)


def spline_hidden_units(dim, bound, bins):
    """The widest networks that keep a spline flow with an affine map first
    within the affine flow's parameters."""
    budget = _size(_affine(dim))
    low, high = 1, 1024  # the parameter count grows with the width: bisect
    while low < high:
        mid = (low + high + 1) // 2
        if _size(_spline_affine(dim, bound, bins, mid)) <= budget:
            low = mid
        else:
            high = mid - 1
    return low


def surrogate(kind, dim):
    """'affine', 'spline_<B>' or 'spline_affine_<B>[_b<K>]' vector_flow
    over [dim]; a spline_affine flow gets the widest networks that keep it
    within the affine flow's parameters."""
    if kind == "affine":
        return _affine(dim)
    if kind.startswith("spline_affine_"):
        # an affine map (log-scale within +-3, as the affine flow's) before
        # each spline of K bins (default 8)
        parts = kind[len("spline_affine_"):].split("_b")
        bound, bins = float(parts[0]), int(parts[1]) if len(parts) > 1 else 8
        return _spline_affine(dim, bound, bins, spline_hidden_units(dim, bound, bins))
    bound = float(kind.split("_")[-1])
    return tfp_flows.models.vector_flow(dim, hidden_units=32, coupling="spline",
                                        num_spline_bins=8, spline_bound=bound, **_COMMON)


def fit(kind, seed, args):
    tgt, dim = get_target(args.target)
    keras.utils.set_random_seed(seed)
    q = surrogate(kind, dim)
    schedule = tf_keras.optimizers.schedules.ExponentialDecay(3e-3, args.steps, 0.1)
    optimizer = tf_keras.optimizers.Adam(schedule, global_clipnorm=1.0)
    start = time.perf_counter()
    trace = tfp.vi.fit_surrogate_posterior(
        tgt.log_prob, q, optimizer, args.steps, sample_size=args.sample_size,
        seed=(seed, 2)).numpy()
    seconds = time.perf_counter() - start
    z = q.sample(args.eval, seed=(seed, 4))
    gap = (q.log_prob(z) - tgt.log_prob(z)).numpy().astype(np.float64)
    finite = np.isfinite(gap)
    return {"surrogate": kind, "seed": seed,
            "num_parameters": _size(q),
            "neg_elbo": float(gap[finite].mean()),
            "neg_elbo_se": float(gap[finite].std() / np.sqrt(finite.sum())),
            "non_finite_draws": int((~finite).sum()),
            "last100_loss": float(np.mean(trace[-100:])), "train_seconds": seconds}


def report(result):
    name = {"funnel10": "the 10-D funnel", "skew10": "the rotated skewed 10-D target (skew10)"}
    lines = [f"# Spline vs affine vector_flow, VI on {name[result['config']['target']]}", "",
             f"`{result['command']}` on {result['machine']}, commit {result['commit']}", "",
             "-ELBO = KL(q‖p) in nats (lower is better), from "
             f"{result['config']['eval']} fresh draws per fit; "
             f"{result['config']['steps']} steps of {result['config']['sample_size']} "
             "draws per fit.", "",
             "| surrogate | params | -ELBO mean over seeds | spread (max-min) | "
             "per seed (± s.e.) | fit s |", "|---|---|---|---|---|---|"]
    for kind, rows in result["by_surrogate"].items():
        vals = [r["neg_elbo"] for r in rows]
        per = ", ".join(f"{r['neg_elbo']:.4f} ± {r['neg_elbo_se']:.4f}" for r in rows)
        lines.append(f"| {kind} | {rows[0]['num_parameters']:,} | {np.mean(vals):.4f} | "
                     f"{max(vals) - min(vals):.4f} | {per} | "
                     f"{np.mean([r['train_seconds'] for r in rows]):.0f} |")
    base = {r["seed"]: r["neg_elbo"] for r in result["by_surrogate"].get("affine", [])}
    for kind, rows in result["by_surrogate"].items():
        if kind == "affine" or len(base) < 2 or len(rows) < 2:
            continue
        ours = {r["seed"]: r["neg_elbo"] for r in rows}
        a, b = np.array(list(base.values())), np.array(list(ours.values()))
        se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
        wins = sum(ours[k] < base[k] for k in ours if k in base)
        lines += ["", f"{kind} minus affine: {b.mean() - a.mean():+.4f} nats (standard "
                  f"error of the difference of the means over seeds {se:.4f}); lower "
                  f"than the affine flow on {wins} of {len(ours)} seeds; largest "
                  f"{kind} {b.max():.4f}, smallest affine {a.min():.4f}."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (nothing written)")
    parser.add_argument("--target", choices=["funnel10", "skew10"], default="funnel10")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--sample-size", type=int, default=64)
    parser.add_argument("--eval", type=int, default=65536)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--surrogates", nargs="+",
                        default=["affine", "spline_3", "spline_6", "spline_12",
                                 "spline_affine_3"])
    parser.add_argument("--out", default="vi_spline", help="results file name")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.eval, args.seeds = 50, 1024, [0]
    by = {k: [] for k in args.surrogates}
    # seeds outermost: each surrogate sees the machine in the same state
    for seed in args.seeds:
        for kind in args.surrogates:
            row = fit(kind, seed, args)
            by[kind].append(row)
            print(json.dumps(row), flush=True)
    result = {"command": "benchmarks/vi_spline.py " + " ".join(
        argv if argv is not None else sys.argv[1:]),
        "machine": f"{_results.cpu_model()}, {os.cpu_count()} cores (shared with training runs), "
                   f"{platform.python_version()}, TF {tf.__version__}, TFP {tfp.__version__}",
        "commit": _results.commit(), "config": vars(args), "by_surrogate": by}
    text = report(result)
    print(text)
    if not args.quick:
        _results.write(args.out, result, text)
    return result


if __name__ == "__main__":
    main()
