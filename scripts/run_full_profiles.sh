#!/usr/bin/env bash
# The committed CPU reference runs (profile `full`), in plain Python (no notebooks):
#   bash scripts/run_full_profiles.sh timing      # attention_scaling, tipping_points, cost_breakdown
#                                                 # (STUDIES="tipping_points" for some of them)
#   bash scripts/run_full_profiles.sh training    # transkimmer_glue (training only) and spion
#   bash scripts/run_full_profiles.sh wallclock   # transkimmer_glue's wall-clock units
#   bash scripts/run_full_profiles.sh search      # transkimmer_glue's predictor-rate search (profile search)
#   bash scripts/run_full_profiles.sh recovery    # transkimmer_glue's distillation / frozen-decision runs
#                                                 # (profile recovery: two one-thread chains, then the wall clock alone)
# Timing runs need an idle machine: run nothing beside them (the machine's load is recorded with
# every unit, and the chapters warn when it was high). Training runs resume where they stopped
# (checkpoints under data/results/checkpoints/); run them as `nohup ... &` and come back.
# Afterwards commit data/results/<profile>/: every later `make book` shows these runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
measure() { echo "$(date -u +%FT%TZ) load $(cut -d' ' -f1 /proc/loadavg): $*"; "$PY" -m effx.pipeline measure --profile full "$@"; }
case "${1:-timing}" in
  timing)
    for study in ${STUDIES:-attention_scaling tipping_points cost_breakdown}; do measure --only "$study"; done ;;
  training)   # two one-thread workers: the long SST-2 chain beside everything else
    measure --only transkimmer_glue -p tasks '["SST-2"]' -p wall_clock False &
    { measure --only transkimmer_glue -p tasks '["CoLA", "STS-B", "MRPC", "RTE"]' -p wall_clock False &&
      measure --only spion; } &
    wait ;;
  wallclock)  # alone on the machine
    measure --only transkimmer_glue ;;
  search)     # needs the full profile's SST-2 baseline checkpoint (trained first if missing)
    echo "$(date -u +%FT%TZ): search"; "$PY" -m effx.pipeline measure --profile search --only transkimmer_glue ;;
  recovery)   # the plain setting beside the full recipe first, then the two halves; wall clock alone
    rec() { echo "$(date -u +%FT%TZ): recovery $*"; "$PY" -m effx.pipeline measure --profile recovery \
              --only transkimmer_glue -p wall_clock False "$@"; }
    { rec -p distills '[0.0]' -p frozen_epochs '[0.0]' && rec -p distills '[0.5]' -p frozen_epochs '[0.0]'; } &
    first=$!
    { rec -p distills '[0.5]' -p frozen_epochs '[0.5]' && rec -p distills '[0.0]' -p frozen_epochs '[0.5]'; } &
    second=$!
    rc=0; wait "$first" || rc=$?; wait "$second" || rc=$?   # both chains end before a verdict
    [ "$rc" -eq 0 ] || { echo "a training chain failed (exit $rc): no wall clock" >&2; exit "$rc"; }
    echo "$(date -u +%FT%TZ): recovery wall clock"
    "$PY" -m effx.pipeline measure --profile recovery --only transkimmer_glue ;;
  *) echo "usage: $0 timing|training|wallclock|search|recovery" >&2; exit 2 ;;
esac
