#!/usr/bin/env bash
# One-shot GPU benchmark (torch + JAX, float32 and bfloat16) at (B, N, D) = (8192, 262144, 256), against the
# GPU's own GEMM time. Run from the repository root on the GPU machine; writes gpu_results.{json,md} and
# gpu_log.txt under $OUT (default benchmarks/results/gpu). Finishes in under 5 minutes (budget 270 s).
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results/gpu}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
python -c "import recloss" 2>/dev/null || "$PY" -m pip install --no-deps --no-build-isolation -e . >"$OUT/pip_log.txt" 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/gpu_info.txt" 2>&1 || true
"$PY" benchmarks/gpu.py --out "$OUT" --budget "${BUDGET:-270}" "$@" 2>&1 | tee "$OUT/gpu_log.txt"
