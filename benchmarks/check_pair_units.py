"""Real-data check: the per-model units (batch_by_class) give a shared-trunk run's pair files bit for bit. Usage:
python benchmarks/check_pair_units.py RUN PAIR [PAIR ...] (a pair as its file stem, e.g. bottle__cow)."""
import sys, tempfile

import numpy as np
import torch

torch.set_num_threads(1)
from repcam.config import load_config
from repcam.pipeline.context import RunContext
from repcam.pipeline.stages.maps import map_unit
from repcam.pipeline.units import extract_maps
from repcam.models.train import ImageCache
from repcam.store.storage import Artefact
from repcam.store.records import RecordFile
run = sys.argv[1]
cfg = load_config(f"{run}/config.resolved.yaml")
ctx = RunContext(cfg, tempfile.mkdtemp(), show_progress=False)
ds = ctx.eval_dataset("val"); names = ds.class_names
cache = ImageCache(ds, ctx.preprocess, crop=False)
jobs = [(i, c, c) for i, s in enumerate(ds.samples) for c in sorted(s.labels)]
ok = set(cache.ok(sorted({j[0] for j in jobs}))); jobs = [j for j in jobs if j[0] in ok]
for pair in sys.argv[2:]:
    a, b = (names.index(n) for n in pair.split("__"))
    pj = [(i, c, 0 if c == a else 1) for i, c, _ in jobs if c in (a, b)]
    state = Artefact(f"{run}/pairs/{pair}.pt", None).load_torch()
    rec = extract_maps(map_unit(ctx, 2, state, pj, cache))
    f = RecordFile(f"{run}/maps/val/{pair}.npz")
    same = all(np.array_equal(rec[k], f[k]) for k in ("image", "cls", "last", "fused"))
    print(pair, len(pj), "jobs:", "bit-identical" if same else "DIFFERENT")
