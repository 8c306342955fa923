#!/usr/bin/env bash
# Old (abe5936) then new (working tree) code re-evaluating val of session 18's paper-budget eval-share run, one after the other.
cd /work/s19
export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
for v in old new; do
  src=/work/s19/$v/src
  date -u +%FT%TZ > $v.start
  PYTHONPATH=$src /work/main/.venv/bin/repcam run evalshare.yaml --run-dir run_$v --no-progress > $v.log 2>&1
  echo "rc=$?" >> $v.log
  date -u +%FT%TZ > $v.end
done
touch realeval.done
