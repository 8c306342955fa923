#!/usr/bin/env bash
# Tables 4 and 5 on VOCdevkit-mini (issue 17): the three backbone runs one after the other (never side by side: two
# torch processes on 2 cores run several times slower than one after the other), then the two tables.
# Resumable: rerun the same command after a kill and every finished model and map is reused.
#   benchmarks/table4.sh [RUNS_DIR]     (default runs/)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-runs}
for b in 0 1 2; do
  benchmarks/run_config.sh "benchmarks/configs/voc_mini_table4_lite$b.yaml" "$runs/voc_mini_table4_lite$b"
done
.venv/bin/repcam tables "$runs"/voc_mini_table4_lite{0,1,2} --table 4 --split val --out benchmarks/results/table4_val.md
.venv/bin/repcam tables "$runs/voc_mini_table4_lite0" --table 5 --split val --out benchmarks/results/table5_val.md
