#!/bin/bash
# usage: benchmarks/bench_trunk_resume.sh RUN CONFIG OUT TREE [PARTS] -- a kill in the shared trunk pass, then a
# resume: a copy OUT of the finished frozen-trunk run RUN without maps/, results/ and figures is resumed with CONFIG
# by the checkout TREE (this venv, PYTHONPATH, one thread), killed with SIGKILL once PARTS (default 30) class parts
# are on disk, and resumed again to the end. Prints what the kill left and the resume's timings; then compare with
# benchmarks/compare_runs.py RUN OUT (the table) and benchmarks/compare_maps.py RUN OUT (every map file).
set -eu
RUN=$1; CONFIG=$2; OUT=$3; TREE=$4; PARTS=${5:-30}
PY=${PY:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}
rm -rf "$OUT"; mkdir -p "$OUT"
(cd "$RUN" && tar cf - --exclude=./maps --exclude=./results --exclude=./figures --exclude=./report.html .) | (cd "$OUT" && tar xf -)
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=$TREE/src
"$PY" -m repcam.cli run "$CONFIG" --run-dir "$OUT" --no-progress > "$OUT.first.log" 2>&1 &
pid=$!
count() { find "$OUT"/maps/*/.parts -maxdepth 1 -name '*.npz' 2>/dev/null | wc -l; }
while kill -0 $pid 2>/dev/null && [ "$(count)" -lt "$PARTS" ]; do sleep 2; done
kill -9 $pid 2>/dev/null || { echo "the run ended before $PARTS parts were on disk"; exit 1; }
wait $pid 2>/dev/null || true
echo "killed with $(count) class parts and $(ls "$OUT"/maps/*/*__*.npz 2>/dev/null | wc -l) merged pair files on disk"
"$PY" -m repcam.cli run "$CONFIG" --run-dir "$OUT" --no-progress > "$OUT.resume.log" 2>&1
echo "resume: $(tr -d '\n ' < "$OUT/timings.json")"
