"""Collects the MNIST runs of `mnist_table.sh` into `benchmarks/results/mnist/`.

For each run folder ``runs/<model>-mnist`` it writes, from what is on disk:

* ``<model>.json``: the run's settings, parameters, per-epoch history
  (train and validation bits/dim, seconds), and — only once the run is
  complete — its test bits/dim (scored once by ``tfp-flows train`` for the
  epoch chosen on validation);
* ``<model>_curve.png``: train and validation bits/dim per epoch;
* ``<model>_samples_t0.7.png`` and ``<model>_samples_t1.png``: 64 samples of
  the run's model (the checkpoint with the lowest validation bits/dim) at
  temperatures 0.7 and 1.0.

and the table ``mnist.md`` beside the papers' figures, with the machines
that trained each run's epochs (``runs/<model>-mnist.machines.tsv``, one
line per launch of ``mnist_table.sh``). The small-Glow
dequantisation pair (``runs/deq_uniform-mnist``, ``runs/deq_variational-mnist``)
goes to ``dequantization/``: each run's metrics and curve, and
``dequantization.md`` comparing the two bounds. Unfinished runs are
reported with their best validation figure so far and no test figure: the
test split is never scored here.

    python benchmarks/mnist_report.py [--runs runs] [--out benchmarks/results/mnist]
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import _results  # noqa: E402
import numpy as np  # noqa: E402

import tfp_flows  # noqa: E402
from tfp_flows import plots  # noqa: E402
from tfp_flows.cli import runs, trainer  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = ("nice", "real_nvp", "glow")
# Test bits/dim reported by the papers (8-bit MNIST, uniform dequantisation).
PAPERS = {"nice": ("4.36", "NICE: 1980.50 nats (Dinh et al., 2014, noise of "
                           "1/256 on [0, 1] data), converted"),
          "real_nvp": ("1.06", "as reported in the Glow and FFJORD papers"),
          "glow": ("1.05", "Kingma & Dhariwal, 2018")}
TEMPERATURES = (0.7, 1.0)


def machines(folder, epochs_done):
    """Which CPU trained which epochs of the run in `folder`, from its
    ``.machines.tsv`` (launch time, first epoch, CPU model, oneDNN setting):
    e.g. ``epochs 1-43 Intel Xeon; 44-60 AMD EPYC, oneDNN on``; '' if there
    is no record."""
    path = folder.rstrip("/") + ".machines.tsv"
    if not os.path.exists(path):
        return ""
    launches = []
    with open(path) as f:
        for line in f:
            _, first, cpu, onednn = (line.rstrip("\n").split("\t") + [""] * 4)[:4]
            setting = {"1": ", oneDNN on", "0": ", oneDNN off"}.get(onednn, "")
            if int(first) > epochs_done:
                continue  # a launch that has not finished an epoch yet
            if launches and launches[-1][1] == cpu + setting:
                continue
            launches.append((int(first), cpu + setting))
    spans = []
    for i, (first, what) in enumerate(launches):
        last = launches[i + 1][0] - 1 if i + 1 < len(launches) else epochs_done
        spans.append(f"epochs {first}-{last}: {what}")
    return "; ".join(spans)


def collect(folder, model, out):
    """One run's figures and pictures; None when the run has no checkpoint."""
    run = runs.RunFolder(folder)
    if not run.is_run():
        return None
    config = run.read_config()
    latest = run.latest_checkpoint()
    if latest is None:
        return None
    history = latest.history
    metrics = None
    if os.path.exists(run.file(runs.METRICS)):
        metrics = runs.read_json(run.file(runs.METRICS))
        if metrics.get("exported_epoch") != latest.epoch:
            metrics = None  # an older completion; the run was extended
    best = min((h for h in history if h.get("validation_bits_per_dim") is not None),
               key=lambda h: h["validation_bits_per_dim"], default=None)
    _, _, flow_model, chosen = trainer.open_run(folder)
    dist = flow_model.distribution
    bins = tfp_flows.flow_ops.num_bins(dist)
    for t in TEMPERATURES:
        x = tfp_flows.sample(dist, 64, t, seed=0)
        plots.save_image_grid(np.asarray(x), bins,
                              os.path.join(out, f"{model}_samples_t{t:g}.png"))
    plots.save_training_curve(history, os.path.join(out, f"{model}_curve.png"),
                              f"{model} on MNIST", selected_epoch=chosen.epoch)
    record = {
        "model": model, "complete": metrics is not None,
        "epochs_done": latest.epoch, "epochs_budget": config["epochs"],
        "num_params": int(flow_model.count_params()),
        "model_args": config["model_args"], "batch_size": config["batch_size"],
        "learning_rate": config["learning_rate"],
        "warmup_steps": config["warmup_steps"],
        "train_seconds": float(sum(h.get("seconds") or 0.0 for h in history)),
        "best_validation_epoch": best["epoch"] if best else None,
        "best_validation_bits_per_dim": best["validation_bits_per_dim"] if best else None,
        "samples_from_epoch": chosen.epoch,
        "machines": machines(folder, latest.epoch),
        "test_bits_per_dim": metrics["test_bits_per_dim"] if metrics else None,
        "selected_epoch": metrics["selected_epoch"] if metrics else None,
        "history": history}
    with open(os.path.join(out, f"{model}.json"), "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)
    return record


def table(records, commit):
    lines = ["# MNIST (real data, CPU-only training)", "",
             "8-bit MNIST, 28x28 (no padding), uniform dequantisation; bits/dim "
             "in the papers' units. Train: first 50,000 training images; "
             "validation: last 10,000; test: the 10,000 t10k images. Each epoch "
             "is scored on validation; the epoch with the lowest validation "
             "bits/dim is the model, scored once on test when the run's budget "
             "is done (`tfp-flows train`, `benchmarks/mnist_table.sh`).", "",
             "| model | parameters | epochs (of budget) | train time | best validation "
             "(epoch) | **test bits/dim** | paper |", "|---|---|---|---|---|---|---|"]
    for model in MODELS:
        r = records.get(model)
        paper, source = PAPERS[model]
        if r is None:
            lines.append(f"| {model} | | not started | | | | {paper} ({source}) |")
            continue
        test = (f"**{r['test_bits_per_dim']:.3f}** (epoch {r['selected_epoch']})"
                if r["complete"] else "running: not scored yet")
        args = ", ".join(f"{k}={v}" for k, v in sorted(r["model_args"].items()))
        args = f" ({args})" if args else ""
        val = ("" if r["best_validation_bits_per_dim"] is None else
               f"{r['best_validation_bits_per_dim']:.3f} ({r['best_validation_epoch']})")
        lines.append(
            f"| {model}{args} "
            f"| {r['num_params']:,} | {r['epochs_done']} ({r['epochs_budget']}) "
            f"| {r['train_seconds'] / 3600:.1f} h | {val} | {test} | {paper} ({source}) |")
    lines += ["", "Machines (2 cores each; runs side by side, one thread each, "
              "sharing the machine with other work: wall times are not "
              "benchmarks; TensorFlow's oneDNN is on by default on the Intel "
              "Xeon and off on the AMD EPYC unless set):", ""]
    lines += [f"* {m}: {records[m]['machines'] or 'not recorded'}"
              for m in MODELS if m in records]
    lines += ["", f"Collected at commit {commit}.", "",
              "Learning curves: `<model>_curve.png`; samples of the chosen "
              "checkpoint at temperatures 0.7 and 1.0: "
              "`<model>_samples_t0.7.png`, `<model>_samples_t1.png`.", "",
              "A first attempt at Adam 1e-3 after 100 warmup steps had loss "
              "spikes within five epochs and was restarted at 5e-4 after 500: "
              "`attempt1_lr1e-3/`."]
    return "\n".join(lines) + "\n"


def _deq_runs(folder):
    """``{(kind, seed): run folder}`` of the dequantisation pair's runs:
    ``deq_<kind>-mnist`` (seed 0) and ``deq_<kind>_s<N>-mnist``."""
    found = {}
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        for kind in ("uniform", "variational"):
            prefix = f"deq_{kind}"
            if name == f"{prefix}-mnist":
                found[(kind, 0)] = os.path.join(folder, name)
            elif name.startswith(f"{prefix}_s") and name.endswith("-mnist"):
                seed = name[len(prefix) + 2:-len("-mnist")]
                if seed.isdigit():
                    found[(kind, int(seed))] = os.path.join(folder, name)
    return found


def dequantization_table(folder, out, commit):
    """The uniform / variational pair (per training seed): metrics and
    curves copied, one table, the gain per seed and its spread. A run whose
    folder is gone (a fresh checkout) keeps the metrics copied earlier."""
    os.makedirs(out, exist_ok=True)
    rows = {}
    for name in sorted(os.listdir(out)):  # copied by an earlier report
        if name.endswith("_metrics.json"):
            tag = name[:-len("_metrics.json")]
            kind, _, seed = tag.partition("_s")
            with open(os.path.join(out, name)) as f:
                rows[(kind, int(seed or 0))] = json.load(f)
    for (kind, seed), run in _deq_runs(folder).items():
        try:
            metrics = runs.read_json(os.path.join(run, runs.METRICS), "metrics")
        except runs.RunError:
            continue  # not complete yet
        metrics["machines"] = (machines(run, len(metrics["history"]))
                               or rows.get((kind, seed), {}).get("machines", ""))
        rows[(kind, seed)] = metrics
        tag = kind if seed == 0 else f"{kind}_s{seed}"
        with open(os.path.join(out, f"{tag}_metrics.json"), "w") as f:
            json.dump(metrics, f, indent=1)
        curve = os.path.join(run, runs.CURVE)
        if os.path.exists(curve):
            with open(curve, "rb") as src, open(os.path.join(out, f"{tag}_curve.png"),
                                                "wb") as dst:
                dst.write(src.read())
    rows = dict(sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])))
    lines = ["# Variational vs uniform dequantisation, MNIST", "",
             "The same Glow (2 levels x 4 steps x 64 channels), 10 epochs = "
             "7,810 steps each, Adam 5e-4 after 500 warmup steps, batch 64; "
             "epoch chosen on validation, test scored once (protocol: "
             "`benchmarks/README.md`). `test bound` is each run's own bound "
             "(uniform: q = 1; variational: the learned q), the mean over 3 noise "
             "draws; `IW k=16` is the importance-weighted estimate with 16 draws. "
             "`seed` is the training seed (initialisation, batches, noise). "
             "The variational runs' q uses the bounded `exp_tanh` scale (since commit "
             "6cbc009); the earlier sigmoid-scale runs are in `sigmoid_scale/`, not "
             "compared here.", "",
             "| dequantisation | seed | parameters | s/epoch (median) | best validation (epoch) "
             "| test bound | IW k=16 | machine |", "|---|---|---|---|---|---|---|---|"]
    for (kind, seed), m in rows.items():
        secs = [h.get("seconds") or 0.0 for h in m["history"]]
        lines.append(
            f"| {kind} | {seed} | {m['num_params']:,} | {np.median(secs):.0f} "
            f"| {m['validation_bits_per_dim']:.4f} ({m['selected_epoch']}) "
            f"| **{m['test_bits_per_dim']:.4f}** "
            f"| {m.get('test_importance_weighted_bits_per_dim', float('nan')):.4f} "
            f"| {m.get('machines') or 'not recorded'} |")
    seeds = sorted({seed for _, seed in rows})
    gains = {seed: rows[("uniform", seed)]["test_bits_per_dim"]
             - rows[("variational", seed)]["test_bits_per_dim"]
             for seed in seeds if ("uniform", seed) in rows and ("variational", seed) in rows}
    if gains:
        per_seed = ", ".join(f"seed {k}: {v:.4f}" for k, v in gains.items())
        lines += ["", f"Variational bound below the uniform bound on test (goal: at "
                  f"least 0.04): {per_seed}."]
        if len(gains) > 1:
            values = list(gains.values())
            lines[-1] += (f" Mean **{np.mean(values):.4f}** over {len(values)} seeds, "
                          f"range {min(values):.4f}-{max(values):.4f}.")
        else:
            lines[-1] += (" One training seed per arm: the seed-to-seed spread "
                          "of the gain is not measured.")
    lines += ["", "Each run had one thread and shared a 2-core machine with another "
              "run: s/epoch compares only runs on the same machine at the same time "
              f"(the machine column). Collected at commit {commit}."]
    with open(os.path.join(out, "dequantization.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", default="runs")
    p.add_argument("--out", default=os.path.join(HERE, "results", "mnist"))
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    records = {}
    for model in MODELS:
        r = collect(os.path.join(args.runs, f"{model}-mnist"), model, args.out)
        if r is not None:
            records[model] = r
    commit = _results.commit()
    text = table(records, commit)
    with open(os.path.join(args.out, "mnist.md"), "w") as f:
        f.write(text)
    print(text)
    dequantization_table(args.runs, os.path.join(args.out, "dequantization"), commit)


if __name__ == "__main__":
    main()
