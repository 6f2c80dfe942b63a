#!/usr/bin/env bash
# What a session with a lent GPU runs there (device tool, from the repo root), in one call:
#   bash scripts/gpu_session.sh [SECONDS]        (default 540: one 9-minute call)
# Most important first, results written as they come (a call cut short keeps what it measured):
#   1. the compiled Triton kernels against the dense float64 reference, on the GPU;
#   2. the kernel benchmarks (Triton vs FlexAttention vs dense SDPA), JSON per kernel;
#   3. every study's `gpu` profile, in the registry's GPU order (effx.study.Study.gpu_priority),
#      until the time is up: `python -m effx.pipeline plan --profile gpu` estimates it beforehand.
# Results go straight to $OUT/gpu/ (the device tool brings $OUT back; without it data/results/gpu/).
# Copy them into data/results/gpu/ and commit them: every later `make book` shows them.
set -uo pipefail
budget=${1:-540}
start=$(date +%s)
left() { echo $(( budget - ($(date +%s) - start) )); }
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export EFFX_RESULTS_DIR="${OUT:-$PWD/data/results}"
mkdir -p "$EFFX_RESULTS_DIR/gpu"
log="$EFFX_RESULTS_DIR/gpu/session.log"
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU here'" || exit 2
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
} | tee "$log"
timeout 120 python3 -m pytest -q -rs tests/test_sliding_window_kernel.py tests/test_block_sparse.py \
  -k "gpu or compiled" 2>&1 | tail -25 | tee -a "$log"
for bench in benchmarks/*_kernel.py; do
  name=$(basename "$bench" .py)
  timeout $(( $(left) < 150 ? $(left) : 150 )) python3 "$bench" --out "$EFFX_RESULTS_DIR/gpu/$name.json" 2>&1 \
    | tail -30 | tee -a "$log"
done
echo "== studies, $(left) s left" | tee -a "$log"
timeout "$(left)" python3 -m effx.pipeline measure --profile gpu 2>&1 | tail -60 | tee -a "$log"
echo "== done in $(( $(date +%s) - start )) s" | tee -a "$log"
