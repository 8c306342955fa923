#!/bin/bash
# A no-op resume: `repcam demo` again on a finished demo run directory, old code vs this code, alternated, on copies
# of the same run directory (issue 28's "a finished run resumed with the same config does no work").
#   benchmarks/bench_resume.sh FINISHED_RUN_DIR OLD_TREE [REPS]   (OLD_TREE: a worktree of the old commit)
# Prints one line per resume: code, repetition, wall seconds, the run's own "total" from timings.json.
set -euo pipefail
RUN=$1; OLD=$2; REPS=${3:-3}
NEW=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$NEW/.venv/bin/python}
WORK=$(mktemp -d)
cp -r "$RUN" "$WORK/old"; cp -r "$RUN" "$WORK/new"
resume() {  # tree run_dir
  local s e
  s=$(date +%s.%N)
  PYTHONPATH=$1/src "$PY" -m repcam.cli demo --run-dir "$2" > /dev/null 2>&1
  e=$(date +%s.%N)
  echo "$(echo "$e - $s" | bc) $("$PY" -c "import json,sys; print(round(json.load(open(sys.argv[1]))['total'], 2))" "$2/timings.json")"
}
resume "$NEW" "$WORK/new" > /dev/null  # the first resume by this code draws the figures once (the old index has no key)
for r in $(seq 1 "$REPS"); do
  echo "old $r $(resume "$OLD" "$WORK/old")"
  echo "new $r $(resume "$NEW" "$WORK/new")"
done
rm -rf "$WORK"
