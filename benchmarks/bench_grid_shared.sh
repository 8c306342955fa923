#!/bin/bash
# usage: benchmarks/bench_grid_shared.sh RUN CONFIG TREE OUT -- a copy of the finished run RUN (in OUT) with its
# multi-class and contrast maps of val and val's results removed, resumed on one thread with CONFIG plus a grid of the
# multiclass and contrast sources (gradcam, layercam; last, paper fusions) by the code of the checkout TREE: the resume
# makes those maps and the grid's. Before the grid rode on the ablation's pass, the grid ran a second pass over the same
# targets. Prints the stage times. Run it for two commits one after the other, then compare their maps with
# benchmarks/compare_maps.py.
set -eu
RUN=$1; CONFIG=$2; TREE=$3; OUT=$4
PY=${PY:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}
$PY - "$CONFIG" > "$OUT.yaml" <<'PYEOF'
import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
c["evaluation"]["grid"] = {"weightings": ["gradcam", "layercam"], "fusions": ["last", "paper"], "sources": ["multiclass", "contrast"]}
c["execution"] = {"threads": 1}  # the default memory format: the two commits' maps are compared bit for bit
yaml.safe_dump(c, sys.stdout, sort_keys=False)
PYEOF
rm -rf "$OUT"; cp -r "$RUN" "$OUT"
rm -rf "$OUT"/maps/val/multiclass.npz* "$OUT"/maps/val/contrast__* "$OUT"/maps/val/grid__* "$OUT"/results/val
s=$(date +%s.%N)
PYTHONPATH=$TREE/src OMP_NUM_THREADS=1 $PY -m repcam.cli run "$OUT.yaml" --run-dir "$OUT" --no-progress > "$OUT.log" 2>&1
echo "wall $(echo "$(date +%s.%N) - $s" | bc) s"
cat "$OUT/timings.json"
