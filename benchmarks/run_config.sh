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
# What `repcam tables` reads, kept so that Tables 4 and 5 can be rebuilt from the repository without the run directory:
#   repcam tables benchmarks/results/runs/NAME ... --table 4
keep="benchmarks/results/runs/$name"
rm -rf "$keep" && mkdir -p "$keep"
cp "$run_dir/config.resolved.yaml" "$run_dir/timings.json" "$keep/"
for f in "$run_dir"/results/*/ablation.json; do
  split=$(basename "$(dirname "$f")")
  mkdir -p "$keep/results/$split" && cp "$f" "$keep/results/$split/"
done
