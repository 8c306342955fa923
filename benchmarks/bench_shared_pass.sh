#!/bin/bash
# usage: benchmarks/bench_shared_pass.sh RUN TREE OUT  -- a copy of the finished run RUN (in OUT) with its multi-class
# and contrast maps of val and val's stored results removed, resumed with the code of the checkout TREE on one thread:
# the resume extracts exactly those maps again (pair models and their maps are reused) and re-scores val. Prints the
# stage times and whether val's ablation.json is byte-identical to RUN's. Run it for two commits one after the other.
set -eu
RUN=$1; TREE=$2; OUT=$3
PY=${PY:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}
rm -rf "$OUT"; cp -r "$RUN" "$OUT"
rm -f "$OUT"/maps/val/multiclass.npz* "$OUT"/maps/val/contrast__* "$OUT"/results/val/inputs.json
s=$(date +%s.%N)
PYTHONPATH=$TREE/src OMP_NUM_THREADS=1 $PY -m repcam.cli run "$OUT/config.resolved.yaml" --run-dir "$OUT" --no-progress > "$OUT.log" 2>&1
echo "wall $(echo "$(date +%s.%N) - $s" | bc) s"
cat "$OUT/timings.json"
cmp "$RUN/results/val/ablation.json" "$OUT/results/val/ablation.json" && echo "ablation.json identical"
