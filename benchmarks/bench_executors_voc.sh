#!/usr/bin/env bash
# The VOCdevkit-mini pair stage (pair training + pair maps) in-process vs Ray with WORKERS workers.
#   benchmarks/bench_executors_voc.sh [WORKERS] [SOURCE_RUN]   -> benchmarks/results/executors_voc.md
# SOURCE_RUN: a finished run of benchmarks/configs/voc_mini_lite0.yaml whose multi-class model is reused
# (default runs/voc_mini_lite0), so both runs time only what the executor runs.
set -euo pipefail
cd "$(dirname "$0")/.."
workers=${1:-2}
src=${2:-runs/voc_mini_lite0}
cfg=benchmarks/configs/voc_mini_lite0_executors.yaml
out=benchmarks/results/executors_voc.md
work=runs/bench_executors_voc
[ -f "$src/multiclass/model.pt" ] || { echo "no multi-class model in $src: run benchmarks/run_config.sh benchmarks/configs/voc_mini_lite0.yaml $src first" >&2; exit 2; }
rm -rf "$work"
rows=""
for ex in inprocess ray; do
  w=$([ "$ex" = inprocess ] && echo 1 || echo "$workers")
  mkdir -p "$work/$ex/multiclass"
  cp "$src"/multiclass/model.pt "$src"/multiclass/model.pt.meta.json "$work/$ex/multiclass/"
  start=$(date +%s.%N)
  .venv/bin/repcam run "$cfg" --run-dir "$work/$ex" --executor "$ex" --workers "$w" --no-progress > "$work.$ex.log" 2>&1
  end=$(date +%s.%N)
  stage=$(.venv/bin/python -c "import json;t=json.load(open('$work/$ex/timings.json'));print(round(t['train pairs']), '|', round(t['maps val']))")
  rows="$rows| $ex | $w | $(printf %.0f "$(echo "$end - $start" | bc)") | $stage |\n"
done
same=$(.venv/bin/python - "$work" <<'PY'
import json, sys
t = {ex: {r["method"]: r["miou"] for r in json.load(open(f"{sys.argv[1]}/{ex}/results/val/ablation.json"))["rows"]} for ex in ("inprocess", "ray")}
n = json.load(open(f"{sys.argv[1]}/ray/budget.json"))["pair_models"]
print(f"{n} pair models. Largest mIoU difference between the two tables: {max(abs(t['inprocess'][m] - t['ray'][m]) for m in t['ray']) * 100:.2f} points "
      "(in-process units use all cores' threads, Ray workers cores // workers; different thread counts may change floating-point sums).")
PY
)
{
  echo "# Executors on the VOCdevkit-mini pair stage"
  echo
  echo "Command: \`benchmarks/bench_executors_voc.sh $workers\` on $(nproc) CPU cores, $(date -u +%Y-%m-%d); config \`$cfg\`"
  echo "(EfficientNet-Lite0, 12 classes, S-1's pairs for 1 epoch on at most 20 images per class, maps on 100 val images;"
  echo "the multi-class model is copied from \`$src\`, so each run times B, the pair stage, the baseline check and the evaluation)."
  echo
  echo "| executor | workers | wall s (whole run) | pair training s | pair + multi-class maps s |"
  echo "|---|---:|---:|---:|---:|"
  printf "$rows"
  echo
  echo "$same"
} > "$out"
cat "$out"
