#!/usr/bin/env bash
# Train split of session 18's paper-budget eval-share run re-scored, back to back: old code (abe5936, before session
# 19's threads) then today's code (c64aa54; its evaluation code is session 19's 3248805). val's stored results are kept
# (reused by both), results/train removed, so each run scores train from scratch with the maps reused.
cd /work/s20  # the config's data.root is ../shared/data/...
export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
for pair in "old /work/s19/old/src" "new /work/s20/after/src"; do
  set -- $pair
  rm -rf train/run_$1 && cp -al /work/s18/run_evalshare train/run_$1 && rm -rf train/run_$1/results/train
  date -u +%FT%TZ > train/$1.start
  PYTHONPATH=$2 /work/main/.venv/bin/repcam run /work/s19/evalshare.yaml --run-dir train/run_$1 --no-progress > train/$1.log 2>&1
  echo "rc=$?" >> train/$1.log
  date -u +%FT%TZ > train/$1.end
done
touch train/ab.done
