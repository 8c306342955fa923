"""Compare the map files of two run directories' split (default val): for every .npz both have, whether each array is
equal, else the largest absolute difference. Usage: python benchmarks/compare_maps.py RUN_A RUN_B [SPLIT]"""

import sys
from pathlib import Path

import numpy as np

a, b = Path(sys.argv[1]), Path(sys.argv[2])
split = sys.argv[3] if len(sys.argv) > 3 else "val"
names = sorted(p.name for p in (a / "maps" / split).glob("*.npz") if (b / "maps" / split / p.name).is_file())
equal = 0
for name in names:
    with np.load(a / "maps" / split / name) as za, np.load(b / "maps" / split / name) as zb:
        if sorted(za.files) != sorted(zb.files):
            print(f"{name}: members differ ({sorted(za.files)} vs {sorted(zb.files)})")
            continue
        diffs = {k: float(np.abs(za[k].astype(np.float64) - zb[k].astype(np.float64)).max(initial=0)) for k in za.files}
        if any(diffs.values()):
            print(f"{name}: largest difference {max(diffs.values()):.3g} ({max(diffs, key=diffs.get)})")
        else:
            equal += 1
print(f"{equal} of {len(names)} map files equal in every array")
