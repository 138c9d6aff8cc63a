#!/usr/bin/env bash
# Throughput on a machine with a CUDA GPU: resnet50 at 224 px, fp32 / bf16 /
# channels_last / compile, ftr run against a plain PyTorch loop over the same
# data; then a linear probe with and without the feature cache. Prints markdown
# tables; sized to finish within 8 minutes on one recent GPU (not yet run on one:
# no GPU was lent while it was written).
#
#   bash bench/gpu.sh            # from the repository root, with ftr installed
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device: this script is for a GPU machine"
print("torch", torch.__version__, "on", torch.cuda.get_device_name())
PY
workers=$(( $(nproc) > 8 ? 8 : $(nproc) ))
timeout 330 python bench/throughput.py --device cuda --backbone resnet50 --size 224 \
    --images 4096 --batch 128 --epochs 3 --workers "$workers" \
    --settings fp32,bf16,channels_last,compile
timeout 120 python bench/cache.py --images 256 --size 96 --epochs 10 --device cuda
