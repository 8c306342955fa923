#!/usr/bin/env bash
# Run a config end to end and record its wall time: benchmarks/run_config.sh CONFIG RUN_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
config=$1; run_dir=$2
start=$(date +%s)
.venv/bin/repcam run "$config" --run-dir "$run_dir" --no-progress
end=$(date +%s)
name=$(basename "$config" .yaml)
mkdir -p benchmarks/results
{
  echo "# $name"
  echo
  echo "Command: \`benchmarks/run_config.sh $config $run_dir\` on $(nproc) CPU cores, $(date -u +%Y-%m-%d), wall time $((end - start)) s."
  echo
  for f in "$run_dir"/results/*/ablation.md; do cat "$f"; echo; done
} > "benchmarks/results/$name.md.tmp"
mv "benchmarks/results/$name.md.tmp" "benchmarks/results/$name.md"
cp "$run_dir/timings.json" "benchmarks/results/$name.timings.json"
