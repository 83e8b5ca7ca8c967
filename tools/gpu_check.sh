#!/usr/bin/env bash
# GPU check, at most about 8 minutes on one H200-class GPU: both benchmarks at the `paper` profile's model sizes
# (training: the authors' cross-attention UNet and DiT-B/4 on the Haar input of 256 px images, and the ResNet-18
# at 256 px; scoring: the profile's UNet; task pneumonia:
# the other tasks differ only in input channels), bf16 with and without torch.compile, with peak GPU memory.
# Writes results/benchmarks/training_gpu.csv (+ training_gpu_loss_curves.csv), scoring_gpu.csv and
# gpu_device.txt (the device name).
#
#   bash tools/gpu_check.sh             # on the GPU machine
#   bash tools/gpu_check.sh --dry-run   # anywhere, no GPU: smoke-size models on the CPU, outputs in a temp folder
#
# Python: .venv if present. If it is missing, tools/setup_env.sh makes it (this needs the package index); if that
# fails (an offline machine), python3 is used as it is, with src/ on PYTHONPATH, when it has the dependencies.
# A failing configuration is reported inside its benchmark's table and the rest still run; a failing or
# timed-out benchmark is reported here and the other one still runs. Exit status 1 if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
case "${1:-}" in
  --dry-run) DRY=1 ;;
  "") ;;
  *) echo "usage: bash tools/gpu_check.sh [--dry-run]" >&2; exit 2 ;;
esac

if [ ! -x .venv/bin/python ]; then
  if ! bash tools/setup_env.sh; then
    echo "gpu_check: tools/setup_env.sh failed (offline?); removing the partial .venv, trying python3" >&2
    rm -rf .venv  # it did not exist before: a half-made one would be taken for a working one next time
  fi
fi
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import torch, diffusers, accelerate, monai, pandas" 2>/dev/null; then
  echo "gpu_check: $PY cannot import torch, diffusers, accelerate, monai and pandas; nothing was run" >&2
  exit 1
fi

if [ "$DRY" = 1 ]; then
  TMP=$(mktemp -d)
  export DC_RESULTS_DIR=$TMP DC_RUNS_DIR=$TMP/runs DC_CACHE_DIR=$TMP/cache
  # every backbone at smoke size (--quick), so the backbone path runs before a GPU session does
  TRAIN=(--quick --device cpu --backbones unet unet_cond dit)
  SCORE=(--quick --device cpu)
  LIMIT_TRAIN=120 LIMIT_SCORE=120
else
  if ! "$PY" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
    echo "gpu_check: torch $("$PY" -c 'import torch; print(torch.__version__)') sees no CUDA GPU (--dry-run runs without one)" >&2
    exit 1
  fi
  # bf16 is the paper profile's precision. Scoring runs batches of 256; the profile's 1024 (about 0.5 TFLOP of
  # UNet per image evaluation at 256 px) is tried in the batch-size sweep, where running out of memory is a row.
  # the paper profile's two backbones at full size (the authors' cross-attention UNet and DiT-B/4, both on the
  # 12 x 128 x 128 Haar input) and the ResNet-18
  TRAIN=(--profile paper --tasks pneumonia --backbones unet_cond dit --configs bf16 bf16+compile --rounds 2 --seconds 1
         --loss-steps 10 --device cuda)
  SCORE=(--profile paper --task pneumonia --images 16 --draws 16 --naive-evals 32 --rounds 2 --batch-size 256
         --batch-sizes 16 64 256 1024 --device cuda)
  LIMIT_TRAIN=330 LIMIT_SCORE=150
fi
OUT=${DC_RESULTS_DIR:-$PWD/results}/benchmarks
mkdir -p "$OUT"

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not available"
  "$PY" -c "import torch; print('torch', torch.__version__, '| CUDA', torch.version.cuda, '|',
            torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA device')"
} | tee "$OUT/gpu_device.txt"

status=0
run() {  # name, seconds allowed, command...
  local name=$1 limit=$2
  shift 2
  echo "=== $name (at most ${limit} s)"
  timeout -k 10 "$limit" "$PY" "$@"
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "gpu_check: $name failed (exit $rc$([ "$rc" -eq 124 ] && echo ', timed out'))" >&2
    status=1
  fi
}
run "training benchmark" "$LIMIT_TRAIN" benchmarks/training.py "${TRAIN[@]}" --out training_gpu.csv
run "scoring benchmark" "$LIMIT_SCORE" benchmarks/scoring.py "${SCORE[@]}" --out scoring_gpu.csv
ls -l "$OUT"
exit $status
