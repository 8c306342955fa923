#!/bin/bash
# usage: benchmarks/bench_row_keys.sh RUN CONFIG OUT  -- results keyed per row (issue 28). A copy of the finished run RUN
# (in OUT) is resumed with CONFIG plus a one-row grid (multiclass source, gradcam, paper fusion): a run of the code
# before row groups has no row_groups.json, so this scores every row. Then the grid gets a second weighting (layercam):
# only that row is scored. Then a second copy of that result without its stored keys is scored from scratch, and its
# result files are compared with the resumed one's. One thread; prints each step's timings.
set -eu
RUN=$1; CONFIG=$2; OUT=$3
PY=${PY:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}
grid() {  # CONFIG with evaluation.grid = {weightings: $1, fusions: [paper], sources: [multiclass]}, one thread
  $PY - "$CONFIG" "$1" <<'PYEOF'
import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
c["evaluation"]["grid"] = {"weightings": sys.argv[2].split(","), "fusions": ["paper"], "sources": ["multiclass"]}
c["execution"] = {**(c.get("execution") or {}), "threads": 1}
yaml.safe_dump(c, sys.stdout, sort_keys=False)
PYEOF
}
grid gradcam > "$OUT.rows1.yaml"; grid gradcam,layercam > "$OUT.rows2.yaml"
rm -rf "$OUT" "$OUT.fresh"; cp -r "$RUN" "$OUT"
for step in rows1 rows2; do
  OMP_NUM_THREADS=1 $PY -m repcam.cli run "$OUT.$step.yaml" --run-dir "$OUT" --no-progress > "$OUT.$step.log" 2>&1
  echo "$step: $(cat "$OUT/timings.json" | tr -d '\n ')"; grep "results on" "$OUT.$step.log" || true
done
cp -r "$OUT" "$OUT.fresh"; rm "$OUT.fresh"/results/val/row_groups.json "$OUT.fresh"/results/val/inputs.json
OMP_NUM_THREADS=1 $PY -m repcam.cli run "$OUT.rows2.yaml" --run-dir "$OUT.fresh" --no-progress > "$OUT.fresh.log" 2>&1
echo "fresh: $(cat "$OUT.fresh/timings.json" | tr -d '\n ')"
for f in ablation.json accumulators.json grid_accumulators.json per_class.csv sweep.csv pairwise.json; do
  cmp "$OUT/results/val/$f" "$OUT.fresh/results/val/$f" && echo "$f identical"
done
