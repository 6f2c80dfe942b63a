#!/usr/bin/env bash
# The committed CPU run of notebooks/transkimmer_glue.ipynb (issue 5): profile `full`.
# Writes data/results/full/transkimmer_glue.jsonl (resumable: rerunning skips finished points).
#   nice -n 10 scripts/run_transkimmer_full.sh > /tmp/tk_full.log 2>&1 &
# One thread: on a shared 2-core machine two threads fighting other jobs run 2-3x slower.
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
OUT=${OUT:-/tmp/transkimmer_full}
mkdir -p "$OUT"
echo "$(date -u +%FT%TZ) fixed variant, all tasks"
"$PY" -m papermill notebooks/transkimmer_glue.ipynb "$OUT/fixed.ipynb" -p profile full -y "$(params)" --log-output
echo "$(date -u +%FT%TZ) paper variant, SST-2, one lambda"
"$PY" -m papermill notebooks/transkimmer_glue.ipynb "$OUT/paper.ipynb" -p profile full \
  -y "$(params variant='"paper"' tasks='["SST-2"]' lambdas='[2.0]' epochs='{"SST-2": 0.12}')" --log-output
echo "$(date -u +%FT%TZ) done"
