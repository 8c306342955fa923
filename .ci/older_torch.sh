#!/usr/bin/env bash
# `pip install .` (not editable) into a fresh venv beside an older torch than constraints.txt pins, then the engine,
# weighting, transformer, stock-model and faithfulness tests against the installed package (issue 16: installable
# beside the user's own torch). The older pair is the one this machine can install offline: torch 2.13.0+cpu with
# torchvision 0.28.0 (wheels in the local index); older torch releases on PyPI are CUDA builds of several GB.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3.11 -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install -q --upgrade pip
grep -v -E '^(torch|torchvision)==' constraints.txt > "$work/constraints.txt"
"$py" -m pip install -q -c "$work/constraints.txt" "torch==2.13.0+cpu" "torchvision==0.28.0" "$repo[test]"
# Run from outside the checkout, so the tests import the installed package, not src/.
cp -r tests "$work/tests"
cd "$work"
"$py" - <<'PY'
import repcam, torch, torchvision
assert "site-packages" in repcam.__file__, repcam.__file__
assert torch.__version__.startswith("2.13."), torch.__version__
print(f"repcam from {repcam.__file__}; torch {torch.__version__}, torchvision {torchvision.__version__}")
PY
"$py" -m pytest -q -p no:cacheprovider tests/test_cam.py tests/test_layers.py tests/test_fusion.py \
  tests/test_weightings.py tests/test_stock.py tests/test_faithfulness.py tests/test_methods.py
