#!/usr/bin/env bash
# COCO results on what is available (issue 25): a finished VOCdevkit-mini run evaluated on COCO-mini's images for the
# 12 shared classes (split "coco-mini"), then Table 5's layout with the COCO column and the split's figures (Fig. 7:
# per-layer maps on COCO images; Fig. 8: per-class IoU) under benchmarks/results/coco_cross_eval/<run name>/.
# Only the new split is computed (models, maps and val's scores are reused); resumable after a kill.
#   benchmarks/coco_cross_eval.sh RUN_DIR [RECOMMENDED_ROW]     e.g. runs/voc_mini_table4_lite0 S-1+A+F
# This differs from the paper's protocol: the classifier trained on VOC (not on COCO train), 12 of COCO's 80 classes,
# 250 COCO train2017 images (not val2017); no COCO training set is available offline.
set -euo pipefail
cd "$(dirname "$0")/.."
run=${1:?usage: benchmarks/coco_cross_eval.sh RUN_DIR [RECOMMENDED_ROW]}
rec=${2:-}
repcam=${REPCAM:-.venv/bin/repcam}
out="benchmarks/results/coco_cross_eval/$(basename "$run")"
mkdir -p "$out"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} MKL_NUM_THREADS=${MKL_NUM_THREADS:-2}
start=$(date +%s)
"$repcam" evaluate "$run" --data benchmarks/configs/coco_mini_voc12.yaml --no-progress
echo "cross evaluation: $(( $(date +%s) - start )) s" > "$out/timing.txt"
splits=()  # every split the run evaluated (val, a held-out split, ...), then COCO-mini
for d in "$run"/results/*/; do
  s=$(basename "$d"); [ "$s" = coco-mini ] || [ ! -f "$d/ablation.json" ] || splits+=(--split "$s")
done
splits+=(--split coco-mini)
"$repcam" tables "$run" --table 5 "${splits[@]}" ${rec:+--recommended "$rec"} --out "$out/table5_coco.md"
"$repcam" report "$run"
cp "$run/results/coco-mini/ablation.md" "$run/results/coco-mini/per_class.md" "$out/"
mkdir -p "$out/figures"
cp "$run"/figures/coco-mini/*.png "$run/figures/coco-mini/index.json" "$out/figures/" 2>/dev/null || true
echo "tables and figures in $out"
