#!/usr/bin/env bash
# The MNIST table: NICE, RealNVP and Glow trained on the real MNIST with the
# tfp-flows command, sized for a 2-core CPU. Each run resumes from its last
# checkpoint when started again (after a kill, a reboot, a new session), so
# run this script as often as needed until every run reports its test figure.
#
#   benchmarks/mnist_table.sh DATA_DIR [MODEL...]     # default: glow real_nvp
#   (MODEL: glow, real_nvp, nice, or deq_uniform / deq_variational, the
#   small-Glow pair that measures variational dequantisation; with _s1,
#   _s2, ... the same pair with another training seed)
#   benchmarks/mnist_table.sh --snapshot [MODEL...]    # save the runs' state
#
# Run folders (runs/, not tracked by git) do not survive a fresh checkout:
# --snapshot copies each run's config and its latest (and best-validation)
# checkpoint into benchmarks/results/mnist/state/, to be committed; a later
# launch restores a missing run folder from there and resumes it.
#
# DATA_DIR holds MNIST's four IDX files (original names, gzip or not).
# Runs go to runs/<model>-mnist; logs to runs/<model>-mnist.log, and one line
# per launch (time, first epoch, CPU model, oneDNN) to
# runs/<model>-mnist.machines.tsv. Each run
# gets one CPU thread (two runs share a 2-core machine without
# oversubscription); set THREADS to change that.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=benchmarks/results/mnist/state
if [ "${1:-}" = "--snapshot" ]; then
  shift
  MODELS=("$@")
  [ ${#MODELS[@]} -gt 0 ] || MODELS=(glow real_nvp nice)
  for model in "${MODELS[@]}"; do
    run="runs/$model-mnist"
    [ -f "$run/config.json" ] || continue
    dest="$STATE/$model-mnist"
    rm -rf "$dest" && mkdir -p "$dest/checkpoints"
    cp "$run/config.json" "$dest/"
    [ ! -f "$run.machines.tsv" ] || cp "$run.machines.tsv" "$dest/machines.tsv"
    # the newest manifest, and the one with the lowest validation bits/dim
    keep=$(python3 - "$run/checkpoints" <<'PY'
import json, os, sys
d = sys.argv[1]
ms = sorted(f for f in os.listdir(d) if f.startswith("epoch-") and f.endswith(".json"))
vals = [(json.load(open(os.path.join(d, f))).get("validation_bits_per_dim"), f) for f in ms]
best = min((v, f) for v, f in vals if v is not None)[1] if any(v is not None for v, _ in vals) else None
print(" ".join(sorted({ms[-1], best} - {None})))
PY
)
    for m in $keep; do
      cp "$run/checkpoints/$m" "$run/checkpoints/${m%.json}.weights.h5" "$dest/checkpoints/"
    done
    # a checkpoint inside the next epoch (tfp-flows train --checkpoint-minutes)
    if [ -f "$run/checkpoints/partial.json" ]; then
      weights=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["file"])' \
                "$run/checkpoints/partial.json")
      cp "$run/checkpoints/$weights" "$run/checkpoints/partial.json" "$dest/checkpoints/"
      keep="$keep partial.json"
    fi
    echo "saved $run ($keep) to $dest"
  done
  exit 0
fi
DATA_DIR=${1:?usage: benchmarks/mnist_table.sh DATA_DIR [MODEL...] | --snapshot [MODEL...]}
shift
MODELS=("$@")
[ ${#MODELS[@]} -gt 0 ] || MODELS=(glow real_nvp)
THREADS=${THREADS:-1}
# oneDNN's convolutions: on by default on Intel CPUs with AVX-512; on an AMD
# EPYC (AVX2) TensorFlow leaves them off, and RealNVP's small-channel 3x3
# convolutions then train 1.7x slower (Eigen's filter gradient dominates;
# docs/performance.md). Set TF_ENABLE_ONEDNN_OPTS=0 to keep TF's default.
export TF_ENABLE_ONEDNN_OPTS=${TF_ENABLE_ONEDNN_OPTS:-1}
TFP_FLOWS=${TFP_FLOWS:-tfp-flows}

# The 28x28 recipes (docs/cli.md): 8-bit pixels, uniform dequantisation,
# batch 64, Adam 5e-4 after 500 warmup steps; the epoch with the lowest
# validation bits/dim is the run's model, scored once on the test split.
# (A first attempt at Adam 1e-3 after 100 warmup steps had loss spikes within
# 5 epochs: benchmarks/results/mnist/attempt1_lr1e-3/.)
COMMON="--learning-rate 5e-4 --warmup-steps 500"
args_for() {
  case "$1" in
    glow) echo "$COMMON --epochs 60 --model-arg num_levels=2 --model-arg num_steps=8 --model-arg hidden_channels=128" ;;
    real_nvp) echo "$COMMON --epochs 40 --model-arg num_scales=3 --model-arg hidden_channels=32 --model-arg num_blocks=2" ;;
    nice) echo "$COMMON --epochs 40" ;;
    # The dequantisation pair (beyond-the-papers issue): the same small Glow
    # (2 levels x 4 steps x 64 channels), the same 10 epochs (7,810 steps),
    # with uniform noise and with a learned q(u|x); both also scored with
    # the importance-weighted estimate from 16 draws.
    # deq_<kind>_s<N>: the same run with training seed N (the spread
    # between seeds; the unsuffixed runs are seed 0).
    deq_uniform|deq_variational|deq_uniform_s[0-9]*|deq_variational_s[0-9]*)
      local kind=${1#deq_} seed=0
      if [[ $kind == *_s* ]]; then seed=${kind##*_s}; kind=${kind%_s*}; fi
      echo "$COMMON --epochs 10 --model-arg num_levels=2 --model-arg num_steps=4 --model-arg hidden_channels=64 --importance-samples 16 --dequantization $kind --seed $seed" ;;
    *) echo "unknown model $1" >&2; exit 2 ;;
  esac
}

model_of() { case "$1" in deq_*) echo glow ;; *) echo "$1" ;; esac; }

mkdir -p runs
pids=()
for model in "${MODELS[@]}"; do
  if [ ! -d "runs/$model-mnist" ] && [ -d "$STATE/$model-mnist" ]; then
    cp -r "$STATE/$model-mnist" "runs/$model-mnist"
    if [ -f "runs/$model-mnist/machines.tsv" ]; then
      mv "runs/$model-mnist/machines.tsv" "runs/$model-mnist.machines.tsv"
    fi
    echo "restored runs/$model-mnist from $STATE"
  fi
  # which machine trains which epochs (mnist_report.py lists them): launch
  # time, first epoch of this launch, CPU model, oneDNN setting
  if [ -d "runs/$model-mnist/checkpoints" ]; then
    last=$(find "runs/$model-mnist/checkpoints" -name 'epoch-*.json' | sed 's/.*epoch-0*\([0-9]*\)\.json/\1/' | sort -n | tail -1)
  fi
  printf '%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$(( ${last:-0} + 1 ))" \
    "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)" \
    "$TF_ENABLE_ONEDNN_OPTS" >> "runs/$model-mnist.machines.tsv"
  last=
  # shellcheck disable=SC2046
  TF_NUM_INTRAOP_THREADS=$THREADS TF_NUM_INTEROP_THREADS=1 OMP_NUM_THREADS=$THREADS \
  TF_CPP_MIN_LOG_LEVEL=3 \
    "$TFP_FLOWS" train --model "$(model_of "$model")" --dataset mnist --data-dir "$DATA_DIR" \
      --out "runs/$model-mnist" \
      --verbose 2 $(args_for "$model") >>"runs/$model-mnist.log" 2>&1 &
  pids+=($!)
  echo "started $model (pid $!): runs/$model-mnist, log runs/$model-mnist.log"
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
