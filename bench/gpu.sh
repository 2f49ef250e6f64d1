#!/bin/bash
# The GPU checks in one go, for a lent GPU machine (about 10 minutes on one H100/H200):
#   bash bench/gpu.sh            (from the repository root, after `bash setup.sh --dev`, or with torch for CUDA)
# 1. the GPU tests (tests/test_gpu.py: CUDA fp32 against the CPU, bf16, --compile, channels-last, torchrun+NCCL);
# 2. training throughput and MFU at 224 px, ResNet-50, batch 128, fp32 / bf16 / bf16+compile (bench/gpu.py).
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || exit 1
"$PY" -c "import torch; assert torch.cuda.is_available(), 'this torch has no CUDA'; print('torch', torch.__version__, 'cuda', torch.version.cuda)" || exit 1
rc=0
timeout 240 "$PY" -m pytest -q -m gpu tests/test_gpu.py || rc=$?
(cd bench && timeout 330 "../$PY" gpu.py --steps 20 --warmup 5) || rc=$?
exit $rc
