#!/usr/bin/env bash
# The best-map benchmark (issue 24): benchmarks/best_map/run.sh [CELL...]
#   CELL: BACKBONE_sSEED_BUDGET, e.g. lite0_s0_short; none: the whole matrix (python best_map.py list), in order.
# A cell whose results are in benchmarks/results/best_map/<cell>/ is skipped (delete that folder, or --force, to redo it).
# Run directories: $BEST_MAP_RUNS (default /work/runs/best_map). Threads: OMP_NUM_THREADS (default 1; the results name it).
# The rule that picks the recommended map is fixed in RULE.md before any confirmation number is read;
# benchmarks/best_map/summarise.py applies it to the cells that exist.
#
# COCO-mini hook: with BEST_MAP_COCO_DATA=<data yaml> set, each finished cell is also scored on COCO-mini with the
# cross-data-set command (repcam evaluate RUN --data FILE --name coco) and exported as split "coco".
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-${OMP_NUM_THREADS:-1}}
PY=${PYTHON:-.venv/bin/python}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
cells=("$@")
[ ${#cells[@]} -gt 0 ] || mapfile -t cells < <("$PY" benchmarks/best_map/best_map.py list | cut -d' ' -f1)
for cell in "${cells[@]}"; do
  "$PY" benchmarks/best_map/best_map.py run "$cell"
  if [ -n "${BEST_MAP_COCO_DATA:-}" ] && [ ! -f "benchmarks/results/best_map/$cell/rows_coco.csv" ]; then
    "$PY" -m repcam.cli evaluate "${BEST_MAP_RUNS:-/work/runs/best_map}/$cell" --data "$BEST_MAP_COCO_DATA" --name coco --no-progress
    "$PY" benchmarks/best_map/best_map.py export "$cell" --split coco
  fi
done
"$PY" benchmarks/best_map/summarise.py
