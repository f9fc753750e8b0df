"""Training stability of the default recipes on digits (issue 8).

For each model of ``tfp-flows train`` on digits (glow, real_nvp, nice, built
and compiled exactly as :mod:`tfp_flows.cli.recipes` builds them: the recipe's
model sizes, batch 64, Adam at the recipe's learning rate after its linear
warmup), train ``--seeds`` seeds for ``--steps`` optimizer steps each with
`FlowModel.fit` and check

* every step's loss is finite (Keras logs the running mean of the epoch's
  losses after every batch, so one NaN/Inf step makes every later value of
  that epoch non-finite: the first non-finite value is the first bad step);
* every parameter and optimizer slot is finite at the end.

Records the final train bits/dim (mean over the last epoch of
``--steps-per-epoch`` steps), the test bits/dim (one dequantisation draw) and
the wall time per run. Results are written after every run, so an
interrupted benchmark keeps what it finished.

    python benchmarks/stability.py [--models nice real_nvp glow] [--seeds 5]
        [--steps 1500]
    # models in parallel processes, then one table:
    python benchmarks/stability.py --models glow --out /tmp/glow.json
    python benchmarks/stability.py --merge a.json /tmp/glow.json
"""

import argparse
import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfp_flows.cli import recipes  # noqa: E402
from tfp_flows.training import LinearWarmup  # noqa: E402
from tfp_flows.training.guards import NaNGuard, all_finite  # noqa: E402


class _StepRecorder(keras.callbacks.Callback):
    """Finds the first non-finite step and keeps each epoch's train bits/dim."""

    def __init__(self, steps_per_epoch):
        super().__init__()
        self.steps_per_epoch = steps_per_epoch
        self.first_bad_step = None
        self.epoch_bpd = []
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.first_bad_step is not None or not logs:
            return
        loss = float(np.asarray(keras.ops.convert_to_numpy(logs["loss"])))
        if not np.isfinite(loss):
            self.first_bad_step = self._epoch * self.steps_per_epoch + batch + 1

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_bpd.append(float(logs["bits_per_dim"]))


def run_one(model_name, seed, steps, steps_per_epoch):
    config = recipes.new_config({"model": model_name, "dataset": "digits",
                                 "seed": seed})
    model = recipes.build_model(config)
    train = recipes.datasets(config).repeat()
    test = recipes.datasets(config, split="test")
    epochs = steps // steps_per_epoch
    recorder = _StepRecorder(steps_per_epoch)
    guard = NaNGuard()
    t0 = time.perf_counter()
    model.fit(train, epochs=epochs, steps_per_epoch=steps_per_epoch,
              shuffle=False, verbose=0,
              callbacks=[LinearWarmup(config["learning_rate"],
                                      config["warmup_steps"]),
                         recorder, guard])
    seconds = time.perf_counter() - t0
    finite = all_finite(model)
    keras.utils.set_random_seed(seed)
    test_bpd = float(model.evaluate(test, verbose=0,
                                    return_dict=True)["bits_per_dim"])
    return {
        "model": model_name, "seed": seed,
        "optimizer_steps": int(model.optimizer.iterations.numpy()),
        "first_nonfinite_step": recorder.first_bad_step,
        "diverged": guard.failure.describe() if guard.failure else None,
        "params_finite_at_end": bool(finite),
        "final_train_bits_per_dim": recorder.epoch_bpd[-1] if recorder.epoch_bpd
        else None,
        "test_bits_per_dim": test_bpd,
        "seconds": round(seconds, 1),
        "num_params": int(model.count_params()),
        "model_args": config["model_args"],
        "learning_rate": config["learning_rate"],
        "warmup_steps": config["warmup_steps"],
        "batch_size": config["batch_size"],
    }


def write(results, args):
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    env = {"cpus": os.cpu_count(), "python": platform.python_version(),
           "tensorflow": tf.__version__, "keras": keras.__version__}
    with open(args.out, "w") as f:
        json.dump({"steps": args.steps, "seeds": args.seeds,
                   "steps_per_epoch": args.steps_per_epoch, "environment": env,
                   "runs": results}, f, indent=2)
    lines = [
        "# Training stability (default recipes on digits)", "",
        f"Each default `tfp-flows train` recipe on digits, {args.seeds} seeds x "
        f"{args.steps} Adam steps (batch 64, the recipe's learning rate and "
        "linear warmup), trained with `FlowModel.fit`. `non-finite steps`: "
        "runs in which some step's loss was NaN/Inf; `params finite`: every "
        "weight and optimizer slot finite at the end. Bits/dim in 17-level "
        "units: train = mean over the last epoch "
        f"({args.steps_per_epoch} steps), test = one dequantisation draw. "
        "Time on a shared 2-core CPU (noisy).", "",
        "| model | seeds x steps | non-finite steps | params finite | "
        "final train bits/dim (per seed) | test bits/dim (mean) | s/run |",
        "|---|---|---|---|---|---|---|"]
    for name in args.models:
        rs = [r for r in results if r["model"] == name]
        if not rs:
            continue
        bad = sum(r["first_nonfinite_step"] is not None for r in rs)
        fin = sum(r["params_finite_at_end"] for r in rs)
        per_seed = ", ".join(f"{r['final_train_bits_per_dim']:.3f}" for r in rs)
        test = np.mean([r["test_bits_per_dim"] for r in rs])
        secs = np.mean([r["seconds"] for r in rs])
        lines.append(f"| {name} | {len(rs)} x {rs[0]['optimizer_steps']} | "
                     f"{bad} of {len(rs)} | {fin} of {len(rs)} | {per_seed} | "
                     f"{test:.3f} | {secs:.0f} |")
    lines += ["", f"Environment: {json.dumps(env)}", ""]
    with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
        f.write("\n".join(lines))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["nice", "real_nvp", "glow"],
                   choices=recipes.MODELS)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--steps-per-epoch", type=int, default=100)
    p.add_argument("--out", default="benchmarks/results/stability.json")
    p.add_argument("--merge", nargs="+", metavar="JSON",
                   help="only merge the runs of these result files (e.g. "
                   "models run in parallel processes) into --out")
    args = p.parse_args(argv)
    if args.merge:
        results = []
        for path in args.merge:
            with open(path) as f:
                results += json.load(f)["runs"]
        write(results, args)
        return results
    if args.steps % args.steps_per_epoch:
        p.error("--steps must be a multiple of --steps-per-epoch")
    results = []
    for name in args.models:
        for seed in range(args.seeds):
            r = run_one(name, seed, args.steps, args.steps_per_epoch)
            results.append(r)
            print(f"{name} seed {seed}: {r['optimizer_steps']} steps, "
                  f"first non-finite step {r['first_nonfinite_step']}, params "
                  f"finite {r['params_finite_at_end']}, train bits/dim "
                  f"{r['final_train_bits_per_dim']:.4f}, test "
                  f"{r['test_bits_per_dim']:.4f}, {r['seconds']:.0f} s",
                  flush=True)
            write(results, args)
    return results


if __name__ == "__main__":
    main()
