#!/bin/bash
# usage: benchmarks/suite_cov.sh TREE LABEL  -- make test's two parts on the checkout TREE (any commit, imported through
# PYTHONPATH), with line coverage of repcam and the slowest tests; logs, .coverage and coverage.txt in $OUT_ROOT/suite_LABEL
set -u
TREE=$1; LABEL=$2; OUT=${OUT_ROOT:-/tmp}/suite_$LABEL; mkdir -p $OUT
PY=${PY:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}  # this checkout's venv (before the cd)
cd "$TREE"
export PYTHONPATH=$TREE/src COVERAGE_FILE=$OUT/.coverage
date -u +%FT%TZ > $OUT/start
s=$(date +%s)
$PY -m pytest -q -n auto --dist loadscope -m "not claims" -p no:cacheprovider --cov=repcam --cov-report= --durations=40 > $OUT/parallel.log 2>&1; echo "rc=$? secs=$(( $(date +%s) - s ))" > $OUT/parallel.rc
s=$(date +%s)
$PY -m pytest -q -m claims -p no:cacheprovider --cov=repcam --cov-append --cov-report= --durations=20 > $OUT/claims.log 2>&1; echo "rc=$? secs=$(( $(date +%s) - s ))" > $OUT/claims.rc
$PY -m coverage report --data-file=$OUT/.coverage > $OUT/coverage.txt 2>&1
date -u +%FT%TZ > $OUT/end
