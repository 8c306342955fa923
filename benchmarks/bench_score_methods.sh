#!/usr/bin/env bash
# Every method of `repcam explain --model` on a finished run's multi-class model, scored with `repcam score`
# (mIoU@0.15 and PxAP, paired 95% intervals against LayerCAM, the stock default) on VOCdevkit-mini val, where a method
# would be chosen, and on the 360 train images with original masks (Table 3's split), where the choice is checked.
# Note: the run's multi-class model trained on (a sample of) the train split's images, as the paper's Table 3 setting.
#   benchmarks/bench_score_methods.sh RUN_DIR NAME      -> benchmarks/results/score_methods_NAME_{val,train}.md
set -euo pipefail
cd "$(dirname "$0")/.."
run=$1; name=$2
config=benchmarks/configs/voc_mini_lite0_paper_budget.yaml  # its data section: val, and train with original masks only
args=()
for m in layercam gradcam gradcampp xgradcam hirescam eigengradcam paper contrast contrast-layercam cam; do
  args+=(--method "$m")
done
mkdir -p benchmarks/results
for split in val train; do
  out=benchmarks/results/score_methods_${name}_$split.md
  start=$(date +%s)
  .venv/bin/repcam score --run "$run" --config "$config" --split "$split" "${args[@]}" --metric miou --metric pxap \
    --no-progress > "$out.tmp"
  end=$(date +%s)
  {
    echo "# Stock methods on $run's multi-class model, VOCdevkit-mini $split"
    echo
    echo "Command: \`benchmarks/bench_score_methods.sh $run $name\` on $(nproc) CPU cores, $(date -u +%Y-%m-%d), wall time $((end - start)) s."
    echo
    cat "$out.tmp"
  } > "$out.tmp2"
  mv "$out.tmp2" "$out" && rm -f "$out.tmp"
done
