"""tfp_flows inside TFP's inference pipelines, at full size.

Targets (normalised, written as `tfd.JointDistributionSequential`):

* ``banana``: ``x1 ~ N(0, 1.5^2)``, ``x2 | x1 ~ N(0.5 (x1^2 - 1.5^2), 0.5^2)``;
* ``funnel2`` / ``funnel10``: Neal's funnel, ``v ~ N(0, 3^2)``,
  ``x_i | v ~ N(0, e^v)`` for ``i < D`` (D = 2 and D = 10, Neal's own).

**Variational inference.** Three surrogates, each fitted by
``tfp.vi.fit_surrogate_posterior`` with the same optimiser (Adam, learning rate
3e-3 decaying exponentially to 3e-4, gradients clipped to global norm 1),
steps and sample size: a mean-field Gaussian, a full-rank Gaussian, and a
tfp_flows ``vector_flow`` (6 affine couplings with random complementary mask
pairs, 2x64 MLPs; on the funnel ``exp`` scales soft-clamped to ``e^{+-3}``
per coupling). Reported:
``neg_elbo`` = ``E_q[log q - log p]`` = ``KL(q || p)`` (the targets are
normalised) from ``--eval`` fresh samples, with its standard error; the mean
of the last 100 optimisation losses; ``forward_kl`` = ``KL(p || q)`` from
exact target samples; training time.

**NeuTra** (Hoffman et al., 2019). NUTS on each funnel, with
``DualAveragingStepSizeAdaptation`` over 80% of the burn-in, plain and inside
``tfp.mcmc.TransformedTransitionKernel`` whose bijector is the fitted full-rank
Gaussian's affine map or the fitted flow. NUTS rather than fixed-length HMC:
in NeuTra's nearly Gaussian space the adapted step size times a fixed number
of leapfrog steps can come close to the Gaussian's period, and fixed-length
HMC then barely moves; NUTS picks the path length itself. Reported:
cross-chain effective sample size (``tfp.mcmc.effective_sample_size``) of
``v`` and the minimum over dimensions, per gradient evaluation (the leapfrog
steps NUTS took in the sampling phase, summed over chains) and per second of
the whole run, the largest R-hat, and the estimates of ``E[v] = 0`` and
``Var[v] = 9``.

Usage::

    .venv/bin/python benchmarks/tfp_pipelines.py            # full size
    .venv/bin/python benchmarks/tfp_pipelines.py --quick    # smoke run

Results go to ``benchmarks/results/tfp_pipelines.json`` (and ``.md``).
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402
import tf_keras  # noqa: E402

import tfp_flows  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _results  # noqa: E402

tfd, tfb = tfp.distributions, tfp.bijectors

__all__ = ["main", "target", "surrogate"]

TARGETS = {"banana": 2, "funnel2": 2, "funnel10": 10}


def target(name):
    """(vector distribution over [D], joint model, D) for a target name."""
    dim = TARGETS[name]
    if name == "banana":
        model = tfd.JointDistributionSequential([
            tfd.Normal(0.0, 1.5),
            lambda x1: tfd.Normal(0.5 * (tf.square(x1) - 1.5 ** 2), 0.5)])
        parts = [tfb.Reshape([], [1]), tfb.Reshape([], [1])]
    else:
        model = tfd.JointDistributionSequential([
            tfd.Normal(0.0, 3.0),
            lambda v: tfd.Sample(tfd.Normal(0.0, tf.exp(v / 2.0)), dim - 1)])
        parts = [tfb.Reshape([], [1]), tfb.Identity()]
    structure = tfb.Chain([tfb.JointMap(parts), tfb.Split([1, dim - 1])])
    return tfd.TransformedDistribution(model, tfb.Invert(structure)), model, dim


def surrogate(kind, dim, name):
    """A trainable surrogate over [dim]: 'mean_field', 'full_rank' or 'flow'."""
    base = tfd.Sample(tfd.Normal(0.0, 1.0), dim)
    if kind == "flow":
        return tfp_flows.models.vector_flow(
            dim, num_couplings=6, hidden_units=64, num_hidden_layers=2,
            scale_fn="exp" if name.startswith("funnel") else "exp_tanh",
            max_log_scale=3.0 if name.startswith("funnel") else None,
            mask_pattern="random", seed=0)
    loc = tf.Variable(tf.zeros(dim))
    if kind == "mean_field":
        scale = tfp.util.TransformedVariable(tf.ones(dim), tfb.Softplus())
        affine = tfb.Chain([tfb.Shift(loc), tfb.Scale(scale)])
    else:
        tril = tfp.util.TransformedVariable(tf.eye(dim), tfb.FillScaleTriL())
        affine = tfb.Chain([tfb.Shift(loc), tfb.ScaleMatvecTriL(tril)])
    return tfd.TransformedDistribution(base, affine)


def _mean_se(values):
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(values.std() / np.sqrt(values.size))


def run_vi(name, kind, args):
    tgt, _, dim = target(name)
    q = surrogate(kind, dim, name)
    schedule = tf_keras.optimizers.schedules.ExponentialDecay(
        3e-3, args.steps, 0.1)
    optimizer = tf_keras.optimizers.Adam(schedule, global_clipnorm=1.0)
    start = time.perf_counter()
    trace = tfp.vi.fit_surrogate_posterior(
        tgt.log_prob, q, optimizer, args.steps,
        sample_size=args.sample_size, seed=(1, 2)).numpy()
    seconds = time.perf_counter() - start
    z = q.sample(args.eval, seed=(3, 4))
    neg_elbo, neg_elbo_se = _mean_se(q.log_prob(z) - tgt.log_prob(z))
    x = tgt.sample(args.eval, seed=5)
    fkl, fkl_se = _mean_se(tgt.log_prob(x) - q.log_prob(x))
    return q, {"target": name, "surrogate": kind, "dim": dim,
               "num_parameters": int(sum(np.prod(v.shape)
                                         for v in q.trainable_variables)),
               "neg_elbo": neg_elbo, "neg_elbo_se": neg_elbo_se,
               "last100_loss": float(trace[-100:].mean()),
               "forward_kl": fkl, "forward_kl_se": fkl_se,
               "train_seconds": seconds}


def run_nuts(name, bijector, label, args, fit_seconds=0.0):
    tgt, _, dim = target(name)
    nuts = tfp.mcmc.NoUTurnSampler(tgt.log_prob, step_size=0.3,
                                   max_tree_depth=args.max_tree_depth)
    kernel = (nuts if bijector is None
              else tfp.mcmc.TransformedTransitionKernel(nuts, bijector))
    kernel = tfp.mcmc.DualAveragingStepSizeAdaptation(
        kernel, num_adaptation_steps=int(0.8 * args.burnin))
    init = tf.zeros([args.chains, dim])
    if bijector is not None:
        init = bijector.forward(init)

    def leapfrogs(_, results):
        inner = results.inner_results
        return (inner if bijector is None else inner.inner_results).leapfrogs_taken

    @tf.function(autograph=False)
    def sample():
        return tfp.mcmc.sample_chain(args.results, init, kernel=kernel,
                                     num_burnin_steps=args.burnin,
                                     trace_fn=leapfrogs, seed=(7, 8))
    sample.get_concrete_function()  # trace outside the timing
    start = time.perf_counter()
    draws, steps = sample()
    seconds = time.perf_counter() - start
    ess = tfp.mcmc.effective_sample_size(draws, cross_chain_dims=1).numpy()
    rhat = tfp.mcmc.potential_scale_reduction(draws).numpy()
    grads = float(tf.reduce_sum(steps))  # sampling phase, all chains
    v = draws.numpy()[..., 0]
    return {"target": name, "sampler": label, "chains": args.chains,
            "burnin": args.burnin, "results": args.results,
            "gradients": grads, "ess_v": float(ess[0]),
            "ess_min": float(ess.min()),
            "ess_v_per_grad": float(ess[0] / grads),
            "ess_min_per_grad": float(ess.min() / grads),
            "ess_v_per_second": float(ess[0] / seconds),
            "fit_seconds": float(fit_seconds),
            "ess_v_per_second_with_fit": float(ess[0] / (seconds + fit_seconds)),
            "max_rhat": float(rhat.max()), "mean_v": float(v.mean()),
            "var_v": float(v.var()), "seconds": seconds}


def report(result):
    lines = ["# tfp_flows in TFP pipelines", "",
             f"`{result['command']}` on {result['machine']}", "",
             "## Variational inference (`tfp.vi.fit_surrogate_posterior`)", "",
             "| target | surrogate | params | -ELBO = KL(q‖p) | last-100 loss "
             "| KL(p‖q) | train s |", "|---|---|---|---|---|---|---|"]
    for r in result["vi"]:
        lines.append(
            f"| {r['target']} | {r['surrogate']} | {r['num_parameters']} | "
            f"{r['neg_elbo']:.4f} ± {r['neg_elbo_se']:.4f} | "
            f"{r['last100_loss']:.4f} | {r['forward_kl']:.3g} ± "
            f"{r['forward_kl_se']:.2g} | {r['train_seconds']:.0f} |")
    lines += ["", "## NeuTra vs NUTS (`tfp.mcmc.TransformedTransitionKernel`)", "",
              "| target | sampler | gradients | ESS(v) | ESS(v)/grad | "
              "min ESS/grad | ESS(v)/s | fit s | ESS(v)/s with fit | max R-hat | "
              "E[v] (0) | Var[v] (9) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["mcmc"]:
        lines.append(
            f"| {r['target']} | {r['sampler']} | {r['gradients']:.0f} | "
            f"{r['ess_v']:.0f} | "
            f"{r['ess_v_per_grad']:.4f} | {r['ess_min_per_grad']:.4f} | "
            f"{r['ess_v_per_second']:.0f} | {r.get('fit_seconds', 0):.0f} | "
            f"{r.get('ess_v_per_second_with_fit', r['ess_v_per_second']):.0f} | "
            f"{r['max_rhat']:.3f} | "
            f"{r['mean_v']:.2f} | {r['var_v']:.2f} |")
    lines += ["", "ESS(v)/s counts the sampling phase (burn-in included); "
              "'with fit' adds the seconds spent fitting the transport map "
              "(the full-rank Gaussian or the flow, by VI above). R-hat is "
              "the potential scale reduction over the chains (1 is ideal; "
              "above ~1.01 the chains disagree)."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny smoke run (nothing is written)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--sample-size", type=int, default=64)
    parser.add_argument("--eval", type=int, default=65536)
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--burnin", type=int, default=1000)
    parser.add_argument("--results", type=int, default=2000)
    parser.add_argument("--max-tree-depth", type=int, default=8)
    parser.add_argument("--targets", nargs="+", default=list(TARGETS))
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.eval, args.burnin, args.results = 100, 2048, 100, 100
    tf.random.set_seed(0)
    vi, mcmc = [], []
    for name in args.targets:
        fitted = {}
        for kind in ("mean_field", "full_rank", "flow"):
            q, row = run_vi(name, kind, args)
            fitted[kind] = q
            vi.append(row)
            print(json.dumps(row), flush=True)
        if name.startswith("funnel"):
            for label, kind in (("nuts", None), ("nuts+affine", "full_rank"),
                                ("neutra_flow", "flow")):
                bij = None if kind is None else fitted[kind].bijector
                fit = 0.0 if kind is None else next(
                    r["train_seconds"] for r in vi
                    if r["target"] == name and r["surrogate"] == kind)
                row = run_nuts(name, bij, label, args, fit)
                mcmc.append(row)
                print(json.dumps(row), flush=True)
    result = {"command": "benchmarks/tfp_pipelines.py " + " ".join(
        argv if argv is not None else sys.argv[1:]),
        "machine": f"{_results.cpu_model()}, commit {_results.commit()}, "
                   f"{os.cpu_count()} CPU cores (shared), TF {tf.__version__}, "
                   f"TFP {tfp.__version__}",
        "config": vars(args), "vi": vi, "mcmc": mcmc}
    text = report(result)
    print(text)
    if not args.quick:
        _results.write("tfp_pipelines", result, text)
    return result


if __name__ == "__main__":
    main()
