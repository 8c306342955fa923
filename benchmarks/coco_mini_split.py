"""Write the documented train / held-out split of COCO-mini's 343 images (issue 25's 80-class run):
benchmarks/configs/coco_mini_split/{train,test}.txt (the held-out part is named "test": "heldout" is the split of data.holdout), one COCO image id per line.

Rule: the 340 annotated images in id order; every 4th one (positions 3, 7, 11, ...) is held out, unless holding it
out would leave one of its classes (non-crowd annotations) with no training image; then it stays in train. The 3
images without annotations are in neither list. Deterministic: rerunning writes the same files.
    python benchmarks/coco_mini_split.py [COCO_MINI_ROOT]
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/COCO-mini")
data = json.loads((root / "annotations" / "instances_train2017.json").read_text())
labels: dict[int, set[int]] = {}
for a in data["annotations"]:
    if not a.get("iscrowd", 0):
        labels.setdefault(a["image_id"], set()).add(a["category_id"])
ids = sorted(labels)
train_count = Counter(c for i in ids for c in labels[i])
heldout = []
for pos, i in enumerate(ids):
    if pos % 4 == 3 and all(train_count[c] > 1 for c in labels[i]):
        heldout.append(i)
        train_count.subtract(labels[i])
train = [i for i in ids if i not in set(heldout)]
out = Path(__file__).parent / "configs" / "coco_mini_split"
out.mkdir(parents=True, exist_ok=True)
for name, lst in (("train", train), ("test", heldout)):
    (out / f"{name}.txt").write_text(f"# COCO-mini {name} split (benchmarks/coco_mini_split.py)\n" + "".join(f"{i}\n" for i in lst))
held_classes = {c for i in heldout for c in labels[i]}
print(f"train {len(train)} images, held out {len(heldout)} images with {len(held_classes)} of 80 classes; "
      f"every class has >= {min(train_count.values())} training image(s)")
