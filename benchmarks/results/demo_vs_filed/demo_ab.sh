#!/bin/bash
# The demo of the code issue 28 was filed on (56268b9) and of today's code (175e7c1's src = c3da26f's), back to back,
# each from its own source tree on PYTHONPATH with the same venv; 2 threads, nothing else running.
# Session 21: the defaults. Session 22: NEW=/work/main (ce7d91c) WORKDIR=/work/s22 OUT=/work/s22/demo_ab.
set -u
NEW=${NEW:-/work/s20/final}; WORKDIR=${WORKDIR:-/work/s21}
OUT=${OUT:-/tmp/demo_ab}; mkdir -p $OUT
export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
for spec in "filed:/work/wt-filed" "new:$NEW" ; do
  tag=${spec%%:*}; tree=${spec#*:}
  rm -rf $OUT/run_$tag
  s=$(date +%s.%N)
  ( cd $WORKDIR && PYTHONPATH=$tree/src /work/main/.venv/bin/repcam demo --run-dir $OUT/run_$tag --no-progress > $OUT/log_$tag.txt 2>&1 )
  rc=$?
  e=$(date +%s.%N)
  echo "$tag rc=$rc wall=$(echo "$e - $s" | bc) start=$(date -u -d @${s%.*} +%H:%M:%S)" >> $OUT/walls.txt
done
