"""A flow as the surrogate posterior of variational inference (TFP VI).

Target: the "banana" (a curved 2-D density written as a TFP joint model)::

    x1 ~ N(0, 1.5^2),    x2 | x1 ~ N(0.5 (x1^2 - 1.5^2), 0.5^2)

Two surrogates are fitted with ``tfp.vi.fit_surrogate_posterior`` (the
reverse-KL ELBO): a full-rank Gaussian, and ``tfp_flows.models.vector_flow``
(RealNVP-style affine couplings over R^2; Dinh et al., 2016). Because the
target is normalised, ``-ELBO = KL(q || p) >= 0``; the flow bends to the
banana and gets a much smaller KL than the Gaussian. The figure compares
samples of both with the target's.

Usage::

    python examples/vi_surrogate_posterior.py           # ~1 min
    python examples/vi_surrogate_posterior.py --smoke   # seconds

Output: ``--out`` (default ``runs/example-vi-banana.png``).
"""

import argparse
import os

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras  # TFP's VI loop drives tf.Variables with a tf_keras optimizer

import tfp_flows

tfd, tfb = tfp.distributions, tfp.bijectors

__all__ = ["main", "banana", "neg_elbo"]


def banana():
    """The target as a distribution over vectors ``[2]``."""
    joint = tfd.JointDistributionSequential([
        tfd.Normal(0.0, 1.5, name="x1"),
        lambda x1: tfd.Normal(0.5 * (tf.square(x1) - 1.5 ** 2), 0.5, name="x2"),
    ])
    # vector [2] <-> the joint model's list of two scalars
    to_list = tfb.Chain([tfb.JointMap([tfb.Reshape([], [1]), tfb.Reshape([], [1])]),
                         tfb.Split([1, 1])])
    return tfd.TransformedDistribution(joint, tfb.Invert(to_list))


def full_rank_gaussian(dim=2):
    loc = tf.Variable(tf.zeros(dim), name="loc")
    scale = tfp.util.TransformedVariable(tf.eye(dim), tfb.FillScaleTriL(),
                                         name="scale_tril")
    return tfd.MultivariateNormalTriL(loc, scale_tril=scale)


def neg_elbo(target, q, n=4096, seed=(1, 2)):
    """Monte Carlo ``E_q[log q - log p] = KL(q || p)`` for a normalised p."""
    z = q.sample(n, seed=seed)
    return float(tf.reduce_mean(q.log_prob(z) - target.log_prob(z)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--out", default=os.path.join("runs", "example-vi-banana.png"))
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    steps, couplings = (10, 2) if args.smoke else (args.steps, 4)
    tf.random.set_seed(0)

    target = banana()
    flow = tfp_flows.models.vector_flow(2, num_couplings=couplings, hidden_units=32,
                                        num_hidden_layers=2)
    gauss = full_rank_gaussian()
    results = {}
    for name, q in (("flow", flow), ("gaussian", gauss)):
        tfp.vi.fit_surrogate_posterior(
            target.log_prob, q, tf_keras.optimizers.Adam(0.01), steps,
            sample_size=32, seed=(0, 1))
        results[name] = neg_elbo(target, q)
        print(f"{name:>8}: KL(q || p) = {results[name]:.3f} nats")

    _plot(target, flow, gauss, args.out)
    print(f"wrote {args.out}")
    return dict(results, out=args.out)


def _plot(target, flow, gauss, path, n=3000):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4), dpi=100)
    FigureCanvasAgg(fig)
    panels = fig.subplots(1, 3, sharex=True, sharey=True)
    for ax, (title, dist) in zip(panels, (("target", target), ("flow", flow),
                                          ("full-rank Gaussian", gauss))):
        z = np.asarray(dist.sample(n, seed=(3, 4)))
        ax.scatter(z[:, 0], z[:, 1], s=1, alpha=0.3)
        ax.set_title(title)
        ax.set_xlim(-5, 5)
        ax.set_ylim(-3, 7)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)


if __name__ == "__main__":
    main()
