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
import time

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


def _markdown(res):
    c = res["config"]
    rows = [
        ("round trip, max abs (pixel units)", res["round_trip_max_abs_px"]),
        ("round trip, median abs (pixel units)", res["round_trip_median_abs_px"]),
        ("round trip, max relative", res["round_trip_max_rel"]),
        ("round trip, median relative", res["round_trip_median_rel"]),
        ("latent, max abs vs float64", res["latent_max_abs_err_vs_f64"]),
        ("log-det, max abs vs float64 (nats)", res["logdet_max_abs_err_nats"]),
        ("log-det, median abs vs float64 (nats)", res["logdet_median_abs_err_nats"]),
        ("log-det, max relative vs float64", res["logdet_max_rel_err"]),
        ("log-det, median relative vs float64", res["logdet_median_rel_err"]),
        ("log-prob, max abs vs float64 (nats)", res["log_prob_max_abs_err_nats"]),
        ("bits/dim, max abs vs float64", res["bits_per_dim_max_abs_err"]),
    ]
    lines = [
        "# Float32 accuracy of Glow at depth", "",
        f"Glow L={c['levels']}, K={c['steps']}, hidden {c['hidden']} "
        f"({res['num_params']:,} parameters) on {c['batch']} 32x32x3 crops of "
        "scikit-learn's sample photographs (dequantised, pixel units "
        f"[0, 256)); weights perturbed by N(0, {c['perturb']}^2), ActNorm "
        "initialised from the photos. Float32 model vs a float64 copy of the "
        "same parameters. Relative round-trip error: |x' - x| / max(|x|, 1) "
        "per pixel; log-det: the inverse log-det-Jacobian of each image "
        f"(float64 mean {res['logdet_f64_mean_nats']:.1f} nats).", "",
        "| quantity | value |", "|---|---|"]
    lines += [f"| {name} | {value:.3g} |" for name, value in rows]
    lines += ["", f"float64 bits/dim of the crops: {res['bits_per_dim_f64_mean']:.3f}",
              f"Wall time: {res['seconds']:.0f} s", ""]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--perturb", type=float, default=0.02,
                   help="std of the noise added to every trainable weight")
    p.add_argument("--out", default="benchmarks/results/numerics.json")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
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
    rel = err / np.maximum(np.abs(x), 1.0)
    ld_err = np.abs(ildj32.numpy() - ildj64.numpy())
    ld_rel = ld_err / np.abs(ildj64.numpy())
    lp64 = d64.log_prob(tf.constant(x, tf.float64)).numpy()
    lp32 = d32.log_prob(x32).numpy()
    dim = 32 * 32 * 3
    res = {
        "config": dict(levels=3, steps=args.steps, hidden=args.hidden, batch=args.batch,
                       perturb=args.perturb),
        "num_params": int(sum(np.prod(v.shape) for v in d32.trainable_variables)),
        "round_trip_max_abs_px": float(err.max()),
        "round_trip_median_abs_px": float(np.median(err)),
        "round_trip_max_rel": float(rel.max()),
        "round_trip_median_rel": float(np.median(rel)),
        "round_trip_mean_abs_px": float(err.mean()),
        "latent_max_abs_err_vs_f64": float(np.abs(z32.numpy() - z64.numpy()).max()),
        "logdet_f64_mean_nats": float(ildj64.numpy().mean()),
        "logdet_max_abs_err_nats": float(ld_err.max()),
        "logdet_median_abs_err_nats": float(np.median(ld_err)),
        "logdet_max_rel_err": float(ld_rel.max()),
        "logdet_median_rel_err": float(np.median(ld_rel)),
        "log_prob_max_abs_err_nats": float(np.abs(lp32 - lp64).max()),
        "bits_per_dim_max_abs_err": float(np.abs(lp32 - lp64).max() / (dim * np.log(2))),
        "bits_per_dim_f64_mean": float(-lp64.mean() / (dim * np.log(2))),
        "seconds": time.perf_counter() - t0,
    }
    for k, v in res.items():
        print(f"{k:32s} {v}")
    if args.out:
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(res, f, indent=2)
        with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
            f.write(_markdown(res))
    return res


if __name__ == "__main__":
    main()
