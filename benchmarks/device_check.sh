#!/usr/bin/env bash
# One call on a GPU machine (PyTorch and JAX with CUDA, possibly no TensorFlow, no network):
#   1. cross-framework validation on the GPU in float32 and float64 (`recloss validate --device gpu`),
#   2. the GPU benchmarks (benchmarks/gpu.sh), then validation in bfloat16 and float16,
#   3. with RUN_TESTS=1, the device-parametrised tests on the GPU.
# Runs from the repository root without pip: the package is assembled under /tmp and put on PYTHONPATH.
# Writes its results under $OUT (default /tmp/recloss-device-out).
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/recloss-device-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
SRC=/tmp/recloss-src
rm -rf "$SRC" && mkdir -p "$SRC"
cp -r "$REPO/recloss" "$SRC/recloss" && cp -r "$REPO/backends" "$SRC/recloss/backends"
export PYTHONPATH="$SRC"
cd /tmp  # keep the repository root (whose recloss/ has no backends/) off sys.path

{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -m recloss info; } 2>&1 | tee "$OUT/machine.txt"

echo "== recloss validate on the GPU (float32, float64)"
timeout "${VALIDATE_SECONDS:-110}" python3 -m recloss validate --device gpu --dtype float32 --dtype float64 \
    --json "$OUT/validate_gpu.json" --quiet 2>&1 | tee "$OUT/validate_gpu.md"
echo "validate exit: ${PIPESTATUS[0]}"

echo "== GPU benchmarks"
(cd "$REPO" && OUT="$OUT" PYTHON=python3 BUDGET="${BENCH_SECONDS:-150}" timeout $(( ${BENCH_SECONDS:-150} + 30 )) \
    bash benchmarks/gpu.sh) 2>&1 | tail -n 60 > "$OUT/bench_gpu_tail.log"

echo "== recloss validate on the GPU (bfloat16, float16)"
timeout "${HALF_SECONDS:-60}" python3 -m recloss validate --device gpu --dtype bfloat16 --dtype float16 \
    --quiet 2>&1 | tee "$OUT/validate_gpu_half.md"

if [ -n "${RUN_TESTS:-}" ]; then
    echo "== device-parametrised tests on the GPU"
    timeout 200 python3 -m pytest -q -p no:cacheprovider -k "gpu or cuda" "$REPO/tests" 2>&1 | tail -n 40 \
        | tee "$OUT/pytest_gpu.txt"
fi
ls -la "$OUT"
