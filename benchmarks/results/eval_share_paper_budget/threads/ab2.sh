#!/usr/bin/env bash
# Second pair, back to back: old code (abe5936) then new code (working tree of 04:19) re-evaluating val.
cd /work/s19
export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
for pair in "old2 old" "new3 new2"; do
  set -- $pair
  date -u +%FT%TZ > $1.start
  PYTHONPATH=/work/s19/$2/src /work/main/.venv/bin/repcam run evalshare.yaml --run-dir run_$1 --no-progress > $1.log 2>&1
  echo "rc=$?" >> $1.log
  date -u +%FT%TZ > $1.end
done
touch ab2.done
