"""Float32 accuracy of a paper-size Glow at depth (issue 8).

Glow with L=3 levels x K=32 steps on 32x32x3 patches of real photographs
(scikit-learn's two sample images). The same parameters are loaded into a
float32 and a float64 copy; we report

* the float32 round-trip error ``|decode(encode(x)) - x|`` (pixel units),
* the float32 log-det (hence log-prob) error against the float64 model,

with every coupling moved off its identity initialisation (random weights of
the scale a few hundred training steps produce) and ActNorm initialised from
the data, so the numbers reflect a working model rather than the identity.

    python benchmarks/numerics.py [--steps 32] [--hidden 512] [--batch 16]
"""

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.datasets import load_sample_images  # noqa: E402

import tfp_flows  # noqa: E402
from tfp_flows.bijectors import forward_and_log_det, inverse_and_log_det  # noqa: E402


def photo_patches(n, size=32, seed=0):
    """`n` random size x size crops of the sample photos, dequantised."""
    rng = np.random.default_rng(seed)
    images = load_sample_images().images
    out = []
    for i in range(n):
        img = images[i % len(images)]
        r = rng.integers(0, img.shape[0] - size)
        c = rng.integers(0, img.shape[1] - size)
        out.append(img[r:r + size, c:c + size])
    x = np.stack(out).astype(np.float64)
    return x + rng.random(x.shape)


def build(dtype, args):
    return tfp_flows.models.glow((32, 32, 3), num_levels=3, num_steps=args.steps,
                                 hidden_channels=args.hidden, seed=0, dtype=dtype)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--perturb", type=float, default=0.02,
                   help="std of the noise added to every trainable weight")
    p.add_argument("--out", default="benchmarks/results/numerics.json")
    args = p.parse_args(argv)

    x = photo_patches(args.batch)
    d64 = build(tf.float64, args)
    rng = np.random.default_rng(1)
    for v in d64.trainable_variables:
        v.assign(v + args.perturb * rng.standard_normal(v.shape))
    tfp_flows.initialize(d64, x)  # ActNorm from the photos, after perturbing
    d32 = build(tf.float32, args)
    for v32, v64 in zip(d32.variables, d64.variables):
        assert v32.shape == v64.shape, (v32.name, v64.name)
        v32.assign(tf.cast(v64, v32.dtype))

    z64, ildj64 = inverse_and_log_det(d64.bijector, tf.constant(x, tf.float64))
    x32 = tf.constant(x, tf.float32)
    z32, ildj32 = inverse_and_log_det(d32.bijector, x32)
    x_back, _ = forward_and_log_det(d32.bijector, z32)
    err = np.abs(x_back.numpy() - x)
    lp64 = d64.log_prob(tf.constant(x, tf.float64)).numpy()
    lp32 = d32.log_prob(x32).numpy()
    dim = 32 * 32 * 3
    res = {
        "config": dict(levels=3, steps=args.steps, hidden=args.hidden, batch=args.batch,
                       perturb=args.perturb),
        "num_params": int(sum(np.prod(v.shape) for v in d32.trainable_variables)),
        "round_trip_max_abs_px": float(err.max()),
        "round_trip_max_rel": float((err / np.maximum(np.abs(x), 1.0)).max()),
        "round_trip_mean_abs_px": float(err.mean()),
        "latent_max_abs_err_vs_f64": float(np.abs(z32.numpy() - z64.numpy()).max()),
        "logdet_max_abs_err_nats": float(np.abs(ildj32.numpy() - ildj64.numpy()).max()),
        "logdet_max_rel_err": float((np.abs(ildj32.numpy() - ildj64.numpy())
                                     / np.abs(ildj64.numpy())).max()),
        "log_prob_max_abs_err_nats": float(np.abs(lp32 - lp64).max()),
        "bits_per_dim_max_abs_err": float(np.abs(lp32 - lp64).max() / (dim * np.log(2))),
        "bits_per_dim_f64_mean": float(-lp64.mean() / (dim * np.log(2))),
    }
    for k, v in res.items():
        print(f"{k:32s} {v}")
    if args.out:
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()
