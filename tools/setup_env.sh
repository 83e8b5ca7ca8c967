#!/usr/bin/env bash
# Create .venv (if missing), install the package with its test and foundation extras, register the kernel.
# torch: a torch already in the venv is kept (a GPU user's own build); otherwise torch==2.13.0 is installed,
# which on our CPU machines is the local CPU wheel (a bare `torch` would pull a multi-GB CUDA build there).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
if ! "$VPY" -c "import torch" 2>/dev/null; then
  "$VPY" -m pip install -q --upgrade pip
  "$VPY" -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
fi
"$VPY" -m pip install -q -e ".[test,foundation]"
"$VPY" -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (diffusion-classifier)" >/dev/null
echo "environment ready: $("$VPY" -c 'import torch, diffusers; print("torch", torch.__version__, "| diffusers", diffusers.__version__, "| cuda", torch.cuda.is_available())')"
