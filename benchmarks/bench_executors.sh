#!/usr/bin/env bash
# The demo end to end under each executor on this machine: wall time and whether the tables agree.
#   benchmarks/bench_executors.sh [WORKERS]   -> benchmarks/results/executors.md
set -euo pipefail
cd "$(dirname "$0")/.."
workers=${1:-2}
out=benchmarks/results/executors.md
work=runs/bench_executors
rm -rf "$work"
rows=""
for ex in inprocess process ray; do
  w=$([ "$ex" = inprocess ] && echo 1 || echo "$workers")
  start=$(date +%s.%N)
  .venv/bin/repcam demo --run-dir "$work/$ex" --executor "$ex" --workers "$w" --no-progress > "$work.$ex.log" 2>&1
  end=$(date +%s.%N)
  pairs=$(.venv/bin/python -c "import json;print(round(json.load(open('$work/$ex/timings.json'))['train pairs']))")
  rows="$rows| $ex | $w | $(printf %.0f "$(echo "$end - $start" | bc)") | $pairs |\n"
done
same=$(.venv/bin/python - "$work" <<'PY'
import json, sys
t = {ex: {r["method"]: r["miou"] for r in json.load(open(f"{sys.argv[1]}/{ex}/results/val/ablation.json"))["rows"]} for ex in ("inprocess", "process", "ray")}
print("process and ray tables identical:", t["process"] == t["ray"], "; in-process (2 threads per unit) vs process, largest mIoU difference:",
      f'{max(abs(t["inprocess"][m] - t["process"][m]) for m in t["inprocess"]) * 100:.2f} points')
PY
)
{
  echo "# Executors on the demo"
  echo
  echo "Command: \`benchmarks/bench_executors.sh $workers\` on $(nproc) CPU cores, $(date -u +%Y-%m-%d). Each run trains everything from scratch."
  echo "Workers get cores // workers torch threads each; in-process uses all cores."
  echo
  echo "| executor | workers | wall s (whole demo) | pair training s |"
  echo "|---|---:|---:|---:|"
  printf "$rows"
  echo
  echo "$same"
} > "$out"
cat "$out"
