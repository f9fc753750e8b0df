"""Digits density benchmark (quality): test bits/dim after 1500 Adam steps.

Follows the "Digits density" protocol of ``shared/BENCHMARKS.md``:

* data: ``sklearn.datasets.load_digits().images`` (1797 images 8x8, levels
  0..16); ``np.random.default_rng(0).permutation(1797)``, first 359 = test;
* dequantisation ``y = (x + u) / 17``, ``u ~ U[0, 1)``;
* bits/dim in 17-level units ``(-log p01(y) + 64 log 17) / (64 log 2)``;
* 1500 Adam steps, lr 1e-3, batch 64; Glow with 2 levels x 8 steps x 128
  hidden channels.

Our models are built with ``num_bins=17``: their event space is ``[0, 17)``
and they are evaluated at ``17 * y``. Their density on ``[0, 1)^64`` is
``log p01(y) = log p17(17 y) + 64 log 17``, so the protocol's bits/dim is::

    (-log p17(17 y) - 64 log 17 + 64 log 17) / (64 log 2)
        = -log p17(17 y) / (64 log 2)  =  tfp_flows.bits_per_dim

i.e. bits/dim in the model's own units (checked numerically for every model
in :func:`evaluate`). TFP's ``tfb.Glow`` is a model over pixel units
``[0, 256)`` (``x / 256 - 0.5`` feeds the Glow bijector, as in Glow's own
preprocessing), evaluated at ``256 y`` with ``log p01(y) = log p256(256 y) +
64 log 256``. Both therefore see exactly the same input ``y - 0.5``.

Usage::

    python benchmarks/digits_density.py                     # all four models
    python benchmarks/digits_density.py --models glow,tfp_glow --seeds 0,1,2
    python benchmarks/digits_density.py --models glow --ema 0.99

Results are merged into ``benchmarks/results/digits_density.json`` (one
entry per model, so models can be run in separate processes) and the table
``benchmarks/results/digits_density.md`` is rewritten from it.
"""

import argparse
import ast
import json
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402

import tfp_flows  # noqa: E402
from tfp_flows import models  # noqa: E402

tfb, tfd = tfp.bijectors, tfp.distributions

__all__ = ["load_split", "build", "train", "evaluate", "main"]

LEVELS = 17          # digit intensities 0..16
DIM = 64             # 8 x 8 x 1
HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
MODELS = ("nice", "real_nvp", "glow", "tfp_glow")

# The protocol fixes Glow's size only. For NICE and RealNVP we chose sizes of
# the same order as that Glow (~0.43M parameters): NICE's paper size, 5 x 1000
# units (16M parameters), is far too big for 64 dimensions and 1500 steps.
CONFIGS = {
    "nice": dict(num_couplings=4, hidden_units=256, num_hidden_layers=3,
                 prior="logistic"),
    "real_nvp": dict(num_scales=2, hidden_channels=48, num_blocks=1),
    "glow": dict(num_levels=2, num_steps=8, hidden_channels=128),
}


def load_split():
    """(train, test) int arrays ``[N, 8, 8, 1]`` in 0..16, protocol split."""
    from sklearn.datasets import load_digits
    images = load_digits().images.astype(np.int64)[..., None]
    perm = np.random.default_rng(0).permutation(len(images))
    return images[perm[359:]], images[perm[:359]]


class Model:
    """A distribution with its pixel scale: ``log p01(y) = log p(s y) + D log s``."""

    def __init__(self, name, dist, pixel_scale, config):
        self.name, self.dist, self.pixel_scale = name, dist, float(pixel_scale)
        self.config = config

    def log_p01(self, y):
        s = self.pixel_scale
        return self.dist.log_prob(s * y) + DIM * np.log(s)

    @property
    def variables(self):
        return self.dist.trainable_variables


def _tfp_glow():
    net = lambda shape: tfb.GlowDefaultNetwork(shape, num_hidden=128)  # noqa: E731
    glow = tfb.Glow(output_shape=(8, 8, 1), num_glow_blocks=2,
                    num_steps_per_block=8, coupling_bijector_fn=net,
                    exit_bijector_fn=tfb.GlowDefaultExitNetwork, seed=0)
    # forward: glow output g in ~[-0.5, 0.5) -> pixels (g + 0.5) * 256.
    pixels = tfb.Chain([tfb.Scale(256.0), tfb.Shift(0.5), glow])
    z_shape = glow.inverse_event_shape([8, 8, 1])
    base = tfd.Sample(tfd.Normal(0.0, 1.0), z_shape)
    return tfd.TransformedDistribution(base, pixels, name="tfp_glow")


def build(name, seed=0, overrides=None):
    """The model `name` as a :class:`Model` (`overrides`: builder keywords
    that replace the defaults of ``CONFIGS``)."""
    keras.utils.set_random_seed(seed)
    if name == "tfp_glow":
        cfg = dict(num_glow_blocks=2, num_steps_per_block=8, num_hidden=128,
                   exit_networks=True)
        return Model(name, _tfp_glow(), 256, cfg)
    cfg = dict(CONFIGS[name], num_bins=LEVELS, **(overrides or {}))
    if name == "glow":
        cfg["seed"] = seed
    builder = models.BUILDERS[name]
    return Model(name, builder([8, 8, 1], **cfg), LEVELS, cfg)


def _dequantize(x, rng):
    """``y = (x + u) / 17`` as float32, ``u ~ U[0, 1)``."""
    return ((x + rng.random(x.shape)) / LEVELS).astype(np.float32)


def num_params(model):
    return int(sum(np.prod(v.shape) for v in model.variables))


class _Warmup(keras.optimizers.schedules.LearningRateSchedule):
    """``lr * min(1, (step + 1) / warmup)``: linear warmup, then constant."""

    def __init__(self, lr, warmup):
        self.lr, self.warmup = float(lr), int(warmup)

    def __call__(self, step):
        frac = tf.cast(step + 1, tf.float32) / float(self.warmup)
        return self.lr * tf.minimum(1.0, frac)

    def get_config(self):
        return {"lr": self.lr, "warmup": self.warmup}


def train(model, train_x, steps=1500, lr=1e-3, batch=64, seed=0, log_every=250,
          warmup=0, ema=0.0):
    """Plain `tf.function` Adam loop on the mean negative log-likelihood.

    Args:
      warmup: steps of linear learning-rate warmup (0: constant ``lr``).
      ema: if > 0, the decay of an exponential moving average of the
        parameters, which replace the parameters after training.

    Returns:
      dict with the final running loss (bits/dim) and train img/s (timed from
      step 2, so graph tracing is not counted).
    """
    rng = np.random.default_rng(seed)
    first = _dequantize(train_x[rng.permutation(len(train_x))[:batch]], rng)
    if model.name != "tfp_glow":
        # data-dependent ActNorm init on the first (dequantised) batch
        tfp_flows.initialize(model.dist, model.pixel_scale * first)
    else:
        model.dist.log_prob(model.pixel_scale * first)  # TFP's own ActNorm init
    variables = model.variables
    opt = keras.optimizers.Adam(_Warmup(lr, warmup) if warmup else lr)
    to_bits = 1.0 / (DIM * np.log(2.0))
    offset = DIM * np.log(LEVELS)
    shadow = [tf.Variable(v, trainable=False) for v in variables] if ema else []

    @tf.function
    def step(y):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(model.log_p01(y))
        grads = tape.gradient(loss, variables)
        opt.apply_gradients(zip(grads, variables))
        for s, v in zip(shadow, variables):
            s.assign(ema * s + (1.0 - ema) * v)
        return (loss + offset) * to_bits

    order, pos, history, t0 = rng.permutation(len(train_x)), 0, [], None
    for i in range(steps):
        if pos + batch > len(order):
            order, pos = rng.permutation(len(train_x)), 0
        y = first if i == 0 else _dequantize(train_x[order[pos:pos + batch]], rng)
        pos += batch
        bits = float(step(tf.constant(y)))
        if i == 0:
            t0 = time.perf_counter()
        history.append(bits)
        if log_every and (i + 1) % log_every == 0:
            print(f"  [{model.name}] step {i + 1}: train bits/dim "
                  f"{np.mean(history[-log_every:]):.3f}", flush=True)
    elapsed = time.perf_counter() - t0
    for s, v in zip(shadow, variables):
        v.assign(s)
    return {"final_train_bits_per_dim": float(np.mean(history[-100:])),
            "train_img_per_s": (steps - 1) * batch / elapsed,
            "train_seconds": elapsed}


def evaluate(model, test_x, draws=10, seed=1):
    """Test bits/dim (17-level units), mean over `draws` dequantisations."""
    rng = np.random.default_rng(seed)
    log_p01 = tf.function(model.log_p01)
    per_draw = []
    for _ in range(draws):
        y = _dequantize(test_x, rng)
        lp = log_p01(tf.constant(y)).numpy().astype(np.float64)
        bits = (-lp + DIM * np.log(LEVELS)) / (DIM * np.log(2.0))
        if model.name != "tfp_glow":
            # The protocol formula equals the library's bits/dim in the
            # model's own units, at the same (already dequantised) points.
            own = tfp_flows.bits_per_dim(model.dist, LEVELS * y,
                                         dequantize=False).numpy()
            # float32, graph vs eager kernels: log-det sums of ~1e3 nats
            # round to ~1e-3 nats, i.e. ~3e-5 bits/dim; allow 30x that.
            np.testing.assert_allclose(bits, own, atol=1e-3)
        per_draw.append(float(np.mean(bits)))
    out = {"test_bits_per_dim": float(np.mean(per_draw)),
           "test_bits_per_dim_draw_std": float(np.std(per_draw)),
           "draws": draws}
    if model.name != "tfp_glow":
        # the library helper on the integer images, one more noise draw
        out["tfp_flows_bits_per_dim"] = float(tf.reduce_mean(
            tfp_flows.bits_per_dim(model.dist, test_x, seed=seed)))
    return out


def sample_rate(model, n=1000, repeats=3):
    if model.name == "tfp_glow":
        fn = tf.function(lambda: model.dist.sample(n))
    else:
        fn = tf.function(lambda: tfp_flows.sample(model.dist, n))
    fn()  # trace
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn().numpy()
        times.append(time.perf_counter() - t0)
    return n / float(np.median(times))


def recipe_key(name, ema, warmup, overrides=None):
    """Result key: the model name, plus the recipe if not the default."""
    parts = [name] + [f"{k}={v}" for k, v in sorted((overrides or {}).items())]
    parts += ([f"ema={ema:g}"] if ema else []) + (
        [f"warmup={warmup}"] if warmup else [])
    return " ".join(parts)


def run(name, steps, draws, seeds, ema=0.0, warmup=0, overrides=None):
    """Trains and evaluates `name` once per seed; returns the summary dict."""
    train_x, test_x = load_split()
    per_seed = []
    for seed in seeds:
        model = build(name, seed, overrides)
        print(f"{recipe_key(name, ema, warmup, overrides)} seed {seed}: "
              f"{num_params(model):,} parameters", flush=True)
        r = {"seed": seed}
        r.update(train(model, train_x, steps=steps, seed=seed, ema=ema,
                       warmup=warmup))
        r.update(evaluate(model, test_x, draws=draws))
        r["sample_img_per_s"] = sample_rate(model)
        print(f"  test bits/dim {r['test_bits_per_dim']:.3f} (+- "
              f"{r['test_bits_per_dim_draw_std']:.3f} over draws), "
              f"{r['train_img_per_s']:.0f} train img/s", flush=True)
        per_seed.append(r)
    bits = [r["test_bits_per_dim"] for r in per_seed]
    return {"model": name, "config": model.config, "params": num_params(model),
            "steps": steps, "lr": 1e-3, "batch": 64, "ema": ema,
            "warmup": warmup, "seeds": list(seeds), "per_seed": per_seed,
            "test_bits_per_dim": float(np.mean(bits)),
            "test_bits_per_dim_seed_std": float(np.std(bits)),
            "train_img_per_s": float(np.median(
                [r["train_img_per_s"] for r in per_seed])),
            "sample_img_per_s": float(np.median(
                [r["sample_img_per_s"] for r in per_seed]))}


def write(results, path_json, path_md):
    with open(path_json, "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
    lines = ["# Digits density (shared/BENCHMARKS.md protocol)", "",
             "Test bits/dim in 17-level units after 1500 Adam steps (lr 1e-3, "
             "batch 64), each seed's figure the mean over dequantisation draws; "
             "mean over seeds (std in brackets). Throughput: median over seeds, "
             "on a shared 2-core CPU (noisy). `ema`: evaluated with an "
             "exponential moving average of the parameters (Polyak averaging).",
             "", "| model | recipe | test bits/dim | seeds | train img/s | "
             "sample img/s | params |", "|---|---|---|---|---|---|---|"]
    runs = results.get("runs", {})
    order = {m: i for i, m in enumerate(MODELS)}
    for key in sorted(runs, key=lambda k: (order.get(runs[k]["model"], 99), k)):
        r = runs[key]
        recipe = key[len(r["model"]):].strip() or "plain Adam"
        if r["steps"] != 1500:
            recipe += f" ({r['steps']} steps: not the protocol)"
        lines.append(
            f"| {r['model']} | {recipe} | {r['test_bits_per_dim']:.3f} "
            f"({r['test_bits_per_dim_seed_std']:.3f}) | "
            f"{','.join(map(str, r['seeds']))} | {r['train_img_per_s']:.0f} | "
            f"{r['sample_img_per_s']:.0f} | {r['params']:,} |")
    lines += ["", "Configurations:", ""]
    seen = set()
    for key in runs:
        name = runs[key]["model"]
        if name not in seen:
            seen.add(name)
            cfg = ", ".join(f"{k}={v}" for k, v in sorted(runs[key]["config"].items()))
            lines.append(f"* {name}: {cfg}")
    env = results.get("environment", {})
    lines += ["", f"Environment: {json.dumps(env, sort_keys=True)}", ""]
    with open(path_md, "w") as f:
        f.write("\n".join(lines))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--draws", type=int, default=10,
                   help="dequantisation draws averaged in the test figure")
    p.add_argument("--seeds", default="0",
                   help="comma-separated seeds (init, batches, noise)")
    p.add_argument("--ema", type=float, default=0.0,
                   help="parameter EMA decay for evaluation (0: none)")
    p.add_argument("--warmup", type=int, default=0,
                   help="linear learning-rate warmup steps (0: none)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="builder keyword overriding the model's default "
                        "configuration (Python literal), e.g. coupling='additive'")
    p.add_argument("--out", default=os.path.join(RESULTS, "digits_density"))
    args = p.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}.")
        overrides[key] = ast.literal_eval(value)
    names = [m for m in args.models.split(",") if m]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        raise ValueError(f"unknown models {unknown}; choose from {MODELS}.")
    seeds = [int(v) for v in args.seeds.split(",") if v]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    path_json, path_md = args.out + ".json", args.out + ".md"
    results = {}
    if os.path.exists(path_json):
        with open(path_json) as f:
            results = json.load(f)
    results["environment"] = {
        "python": platform.python_version(), "tensorflow": tf.__version__,
        "tfp": tfp.__version__, "keras": keras.__version__,
        "cpus": os.cpu_count()}
    for name in names:
        r = run(name, args.steps, args.draws, seeds, ema=args.ema,
                warmup=args.warmup, overrides=overrides)
        key = recipe_key(name, args.ema, args.warmup, overrides)
        results.setdefault("runs", {})[key] = r
        write(results, path_json, path_md)
    return results


if __name__ == "__main__":
    main()
