#!/usr/bin/env bash
# One call on the GPU machine (torch and JAX with CUDA, no TensorFlow, no network): the fused kernels' parity on
# the device, then the side-by-side with Cut Cross-Entropy and Liger (benchmarks/fused_gpu.py; its docstring
# says how to download their wheels into .whl/, which this script installs when present).
#   device run: command "bash benchmarks/fused_gpu.sh", carry [".whl"], timeout_s 590
# Runs from the repository root without installing recloss: the package is assembled under /tmp and put on
# PYTHONPATH. Writes fused_gpu.{json,md}, fused_log.txt and machine.txt under $OUT (default
# /tmp/recloss-fused-out); BUDGET seconds for the python part (default 480).
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/recloss-fused-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
SITE=/tmp/recloss-fused-site
if ls "$REPO"/.whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "$REPO"/.whl/*.whl || echo "wheel install failed: CCE and Liger rows will say so"
fi
SRC=/tmp/recloss-fused-src
rm -rf "$SRC" && mkdir -p "$SRC"
cp -r "$REPO/recloss" "$SRC/recloss" && cp -r "$REPO/backends" "$SRC/recloss/backends"
export PYTHONPATH="$SRC:$SITE"
cd /tmp  # keep the repository root (whose recloss/ has no backends/) off sys.path

{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  python3 -c "import jax; print('jax', jax.__version__, jax.devices())"
  python3 -c "import cut_cross_entropy, liger_kernel; print('cce and liger importable')"; } 2>&1 | tee "$OUT/machine.txt"

python3 "$REPO/benchmarks/fused_gpu.py" --out "$OUT" --budget "${BUDGET:-480}" "$@" 2>&1 | tee "$OUT/fused_log.txt"
ls -la "$OUT"
