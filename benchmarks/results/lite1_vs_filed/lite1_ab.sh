#!/bin/bash
# Table 4's Lite1 run: today's code, then the code issue 28 was filed on (56268b9), each alone on the idle 2-core
# machine, one thread each (the config's execution.threads; the filed code has no execution section, so the thread
# environment pins it), one after the other; the same venv, each code from its own source tree on PYTHONPATH.
set -u
B=/work/main/benchmarks/results/lite1_vs_filed
OUT=${OUT:-/work/s22/lite1}; NEW=${NEW:-/work/main}; FILED=${FILED:-/work/wt-filed}; WORKDIR=${WORKDIR:-/work/s22/fresh}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for spec in "new:$NEW:head_cl.yaml" "filed:$FILED:filed.yaml"; do
  IFS=: read tag tree cfg <<< "$spec"
  rm -rf $OUT/run_$tag
  s=$(date +%s.%N)
  ( cd $WORKDIR && PYTHONPATH=$tree/src /work/main/.venv/bin/repcam run $B/$cfg --run-dir $OUT/run_$tag --no-progress > $OUT/log_$tag.txt 2>&1 )
  rc=$?
  e=$(date +%s.%N)
  echo "$tag rc=$rc wall=$(echo "$e - $s" | bc) start=$(date -u -d @${s%.*} +%H:%M:%S)" >> $OUT/walls.txt
done
