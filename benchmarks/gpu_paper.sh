#!/usr/bin/env bash
# Paper-size Glow (32x32x3, L=3, K=32, 512 hidden, batch 64) against TFP's
# tfb.Glow on one GPU: float32 with and without XLA, then mixed_float16 with
# XLA. Results go to ${OUT:-benchmarks/results}/throughput_paper_gpu*.json after
# every measurement, so a run cut short still reports what it measured.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results}
PY=${PYTHON:-python}
export TF_CPP_MIN_LOG_LEVEL=2
nvidia-smi --query-gpu=name,memory.total --format=csv || true
"$PY" benchmarks/throughput.py --config paper --ops train,sample \
  --jit false,true --rounds 3 --iters 3 --out "$OUT/throughput_paper_gpu.json"
"$PY" benchmarks/throughput.py --config paper --ops train,sample \
  --jit true --precision mixed_float16 --rounds 3 --iters 3 \
  --out "$OUT/throughput_paper_gpu_mixed.json"
