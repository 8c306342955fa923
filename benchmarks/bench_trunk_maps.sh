#!/bin/bash
# usage: benchmarks/bench_trunk_maps.sh RUN CONFIG OUT OLD_REPCAM NEW_TREE -- the maps of val made again, by two
# versions of the code at the same time, one thread each: copies OUT_old and OUT_new of the finished run RUN without
# maps/, results/ and figures, resumed with CONFIG by the `repcam` executable OLD_REPCAM (its own venv) and by the
# checkout NEW_TREE (this venv, PYTHONPATH). The resume reuses the models and recomputes every map and the
# evaluation. Then compare: benchmarks/compare_maps.py OUT_old OUT_new; benchmarks/compare_runs.py OUT_old OUT_new.
set -eu
RUN=$1; CONFIG=$2; OUT=$3; OLD=$4; NEW=$5
PY=${PY:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}
for v in old new; do
  rm -rf "${OUT}_$v"; mkdir -p "${OUT}_$v"
  (cd "$RUN" && tar cf - --exclude=./maps --exclude=./results --exclude=./figures --exclude=./report.html .) | (cd "${OUT}_$v" && tar xf -)
done
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "$OLD" run "$CONFIG" --run-dir "${OUT}_old" --no-progress > "${OUT}_old.log" 2>&1 &
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=$NEW/src "$PY" -m repcam.cli run "$CONFIG" --run-dir "${OUT}_new" --no-progress > "${OUT}_new.log" 2>&1 &
wait
for v in old new; do echo "$v: $(cat "${OUT}_$v/timings.json" | tr -d '\n ')"; done
