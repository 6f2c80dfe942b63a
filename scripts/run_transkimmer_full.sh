#!/usr/bin/env bash
# The committed CPU run of notebooks/transkimmer_glue.ipynb (issue 5): profile `full`.
# Writes data/results/full/transkimmer_glue.jsonl (resumable: rerunning skips finished points;
# fine-tuned baselines are cached under data/results/checkpoints/, untracked).
#   nice -n 5 scripts/run_transkimmer_full.sh > /tmp/tk_full.log 2>&1 &
# Two workers of one thread each (SST-2 | STS-B, CoLA, then the `paper` variant on SST-2): on a
# shared 2-core machine one process with two threads runs 2-3x slower than this.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
params() {  # the [full] table of the profile file, as YAML (JSON), with optional overrides
  "$PY" - "$@" <<'PY'
import json, sys, tomllib
p = tomllib.load(open("notebooks/profiles/transkimmer_glue.toml", "rb"))["full"]
for kv in sys.argv[1:]:
    k, v = kv.split("=", 1)
    p[k] = json.loads(v)
print(json.dumps(p))
PY
}
run() {  # run NAME [KEY=JSON ...]: one papermill execution of the notebook, profile `full`
  local name=$1; shift
  echo "$(date -u +%FT%TZ) $name: start"
  "$PY" -m papermill notebooks/transkimmer_glue.ipynb "$OUT/$name.ipynb" -p profile full \
    -y "$(params "$@")" --log-output > "$OUT/$name.log" 2>&1
  echo "$(date -u +%FT%TZ) $name: done"
}
OUT=${OUT:-/tmp/transkimmer_full}
mkdir -p "$OUT"
run sst2 tasks='["SST-2"]' &
first=$!
{ run pairs tasks='["STS-B", "CoLA"]' &&
  run paper variant='"paper"' tasks='["SST-2"]' lambdas='[0.5]'; } &
second=$!
wait $first && wait $second
run all    # renders every point together (trains nothing: all points are in the store)
