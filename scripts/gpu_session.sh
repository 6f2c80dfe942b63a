#!/usr/bin/env bash
# What a session with a lent GPU runs there (device tool, from the repo root), in one call or more:
#   bash scripts/gpu_session.sh [SECONDS] [STEP ...]        (default: 540 s, every step below)
# Steps, in the order given (default: kernels, studies, benchmarks), until the time is up:
#   kernels       the compiled Triton kernels (and Transkimmer's model on CUDA) against float64
#                 references, on the GPU;
#   studies       every study's `gpu` profile, in the pipeline's GPU order (Study.gpu_priority);
#   STUDY         one study's `gpu` profile (`python -m effx.pipeline plan --profile gpu`
#                 estimates them beforehand); units already recorded are skipped, so a second call
#                 resumes;
#   benchmarks    the kernel benchmarks (Triton vs FlexAttention vs dense SDPA), JSON per kernel;
#   smoke:STUDY   the study at its `tiny` profile on CUDA (extra `-p` options: $EFFX_SMOKE_ARGS),
#                 a minute's check that its GPU path runs before the long call.
# Results are written as they come: to $EFFX_RESULTS_DIR (default /tmp/effx_gpu under the device
# tool, else data/results). Every 15 s, and after each step, the profile's result files go back as
# one archive, $OUT/gpu/results.tar (replaced whole: the tool brings back 8 files at most), beside
# $OUT/gpu/session.log, so that a call cut short keeps what it measured. Checkpoints stay out of
# $OUT. Unpack the archive into data/results/gpu/ and commit it: every later `make book` shows it.
set -uo pipefail
budget=${1:-540}
shift $(( $# > 0 ? 1 : 0 ))
steps=("$@")
start=$(date +%s)
left() { echo $(( budget - ($(date +%s) - start) )); }
cap() { local l; l=$(left); echo $(( l < $1 ? l : $1 )); }      # a step's limit: at most $1 s
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if [ -n "${OUT:-}" ]; then
  export EFFX_RESULTS_DIR="${EFFX_RESULTS_DIR:-/tmp/effx_gpu}"
  back="$OUT/gpu"
else
  export EFFX_RESULTS_DIR="${EFFX_RESULTS_DIR:-$PWD/data/results}"
  back=""
fi
export EFFX_CHECKPOINT_DIR="${EFFX_CHECKPOINT_DIR:-$EFFX_RESULTS_DIR/checkpoints}"
results="$EFFX_RESULTS_DIR/gpu"
mkdir -p "$results" ${back:+"$back"}
log="$results/session.log"
sync_back() {   # the profile's result files, as one archive replaced whole, and the log
  [ -n "$back" ] || return 0
  local files
  files=$(cd "$results" && ls -- *.jsonl *.json 2>/dev/null)
  if [ -n "$files" ]; then
    # shellcheck disable=SC2086
    tar -C "$results" -cf "$back/results.tar.part" $files \
      && mv -f "$back/results.tar.part" "$back/results.tar"
  fi
  cp -f "$log" "$back/" 2>/dev/null
  return 0
}
if [ -n "$back" ]; then   # its own output to /dev/null: a sleeping child must not hold the call's
  ( exec >/dev/null 2>&1; while sleep 15; do sync_back; done ) & syncer=$!
fi
trap 'sync_back; [ -n "${syncer:-}" ] && kill "$syncer" 2>/dev/null' EXIT
[ ${#steps[@]} -gt 0 ] || steps=(kernels studies benchmarks)
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU here'" || exit 2
{ date -u +"%F %T UTC"
  nvidia-smi --query-gpu=name,driver_version,memory.total,utilization.gpu --format=csv
  python3 -c "import torch, triton, transformers as t
print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', t.__version__)"
  echo "steps: ${steps[*]}; budget ${budget} s"
} 2>&1 | tee "$log"
for step in "${steps[@]}"; do
  [ "$(left)" -gt 20 ] || { echo "== out of time before: $step" | tee -a "$log"; break; }
  echo "== $step ($(left) s left)" | tee -a "$log"
  case "$step" in
    kernels)
      # one configuration per kernel: autotuned, a compiled case took ~45 s on an H200
      EFFX_TRITON_AUTOTUNE=0 timeout "$(cap 240)" python3 -m pytest -v -rs -p no:cacheprovider \
        tests/test_transkimmer_model.py tests/test_sliding_window_kernel.py \
        tests/test_block_sparse.py \
        -k "gpu or compiled or cuda" 2>&1 | grep -E "PASS|FAIL|ERROR|SKIP|passed|failed|Error" \
        | tail -60 | tee -a "$log" ;;
    benchmarks)
      for bench in benchmarks/*_kernel.py; do
        name=$(basename "$bench" .py)
        timeout "$(cap 150)" python3 "$bench" --out "$results/$name.json" 2>&1 | tail -30 \
          | tee -a "$log"
      done ;;
    smoke:*)
      # shellcheck disable=SC2086
      timeout "$(cap 180)" python3 -m effx.pipeline measure --profile tiny --only "${step#smoke:}" \
        -p device cuda ${EFFX_SMOKE_ARGS:-} 2>&1 | tail -40 | tee -a "$log" ;;
    *)  # `studies`: all of them, in the pipeline's order
      only=(--only "$step"); [ "$step" = studies ] && only=()
      timeout "$(left)" python3 -m effx.pipeline measure --profile gpu "${only[@]}" 2>&1 \
        | tail -60 | tee -a "$log" ;;
  esac
  sync_back
done
echo "== done in $(( $(date +%s) - start )) s" | tee -a "$log"
