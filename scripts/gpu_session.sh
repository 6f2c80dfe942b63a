#!/usr/bin/env bash
# What a session with a lent GPU runs there (through the device tool, from the repo root):
#   bash scripts/gpu_session.sh
# 1. the compiled Triton kernels against the dense reference, on the GPU;
# 2. the kernel benchmark (Triton vs FlexAttention vs dense SDPA);
# 3. the GPU profile of every measuring study, in plain Python (the GPU image has no Jupyter).
# Results land in data/results/gpu/ (and a copy under $OUT when the device tool sets it): commit
# them, and the next `make book` on any machine shows them beside the CPU results.
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU here'" || exit 2
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
python3 -m pytest -q tests/test_sliding_window_kernel.py tests/test_attention.py
mkdir -p data/results/gpu
python3 benchmarks/sliding_window_kernel.py --out data/results/gpu/sliding_window_kernel.json
python3 -m effx.pipeline measure --profile gpu "$@"
if [ -n "${OUT:-}" ]; then mkdir -p "$OUT/gpu" && cp data/results/gpu/* "$OUT/gpu/"; fi
