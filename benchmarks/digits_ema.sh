#!/usr/bin/env bash
# `tfp-flows train --ema` on the default digits recipe: the bare command
# (Glow, 60 epochs, epoch chosen on validation) with and without
# `--ema DECAY`, seeds 0-2, one CPU thread per run, one run at a time.
# Writes benchmarks/results/digits_ema.md: per seed the chosen epoch, its
# validation and its test bits/dim (test scored once, for the chosen epoch).
#
#   benchmarks/digits_ema.sh [WORKDIR] [DECAY]     # default /tmp/digits_ema 0.99
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/digits_ema}
DECAY=${2:-0.99}
TFP_FLOWS=${TFP_FLOWS:-tfp-flows}
mkdir -p "$WORK"
for seed in 0 1 2; do
  for ema in none "$DECAY"; do
    out="$WORK/glow-s$seed-ema$ema"
    extra=()
    [ "$ema" = none ] || extra=(--ema "$ema")
    TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 TF_CPP_MIN_LOG_LEVEL=3 \
      "$TFP_FLOWS" train --out "$out" --seed "$seed" --verbose 0 "${extra[@]}" \
      > "$out.log" 2>&1
  done
done
python3 - "$WORK" "$DECAY" <<'PY'
import json, os, statistics, sys
sys.path.insert(0, "benchmarks")
from _results import commit, cpu_model
work, decay = sys.argv[1], sys.argv[2]
cpu, commit = cpu_model(), commit()
rows, means = [], {}
for ema in ("none", decay):
    vals, tests = [], []
    for seed in (0, 1, 2):
        m = json.load(open(os.path.join(work, f"glow-s{seed}-ema{ema}", "metrics.json")))
        vals.append(m["validation_bits_per_dim"]); tests.append(m["test_bits_per_dim"])
        rows.append(f"| {'off' if ema == 'none' else ema} | {seed} | {m['selected_epoch']} "
                    f"| {m['validation_bits_per_dim']:.4f} | {m['test_bits_per_dim']:.4f} |")
    means[ema] = (statistics.mean(vals), max(vals) - min(vals),
                  statistics.mean(tests), max(tests) - min(tests))
lines = ["# `tfp-flows train --ema` on the digits recipe", "",
         f"`benchmarks/digits_ema.sh` on {cpu}, one thread per run (sharing the machine "
         f"with another training run), commit {commit}.", "",
         "The bare `tfp-flows train` (Glow 2 x 8 x 128, 60 epochs of 18 steps, the epoch "
         "with the lowest validation bits/dim chosen), with and without weight averaging. "
         "Validation decides; test is scored once per run, for its chosen epoch.", "",
         "| --ema | seed | chosen epoch | validation | test |", "|---|---|---|---|---|", *rows, "",
         "| --ema | validation, mean (spread) | test, mean (spread) |", "|---|---|---|"]
for ema, (v, vs, t, ts) in means.items():
    lines.append(f"| {'off' if ema == 'none' else ema} | {v:.4f} ({vs:.4f}) | {t:.4f} ({ts:.4f}) |")
path = "benchmarks/results/digits_ema.md"
open(path, "w").write("\n".join(lines) + "\n")
print(open(path).read())
PY
