"""Short demo-shaped run under cProfile: same world and model as `repcam demo`, fewer epochs/images.
usage: PYTHONPATH=<tree>/src python short_demo.py OUT_DIR"""
import cProfile, json, pstats, sys, time, os
WALL = time.perf_counter
time.perf_counter = time.process_time  # stage timings in CPU seconds: the machine is shared
from pathlib import Path
import torch
from repcam.config import demo_config, from_dict
try:
    from repcam.pipeline.run import Run
except ImportError:
    from repcam.run import Run

out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
d = demo_config().to_dict()
d["multiclass"]["epochs"] = 2
d["pairs"]["epochs"] = 1
d["pairs"]["max_images_per_class"] = 25
d["data"]["eval_options"]["val"]["num_images"] = 50
d["selection"]["methods"] = ["random", "s1"]
d["execution"]["threads"] = 1
cfg = from_dict(d, "short")
torch.set_num_threads(1)
prof = cProfile.Profile(time.process_time)
t0 = WALL()
prof.enable()
Run(cfg, out / "run", show_progress=False).run()
prof.disable()
wall = WALL() - t0
prof.dump_stats(str(out / "prof.out"))
tim = json.loads((out / "run" / "timings.json").read_text())
tim["wall"] = wall
(out / "timings.json").write_text(json.dumps(tim, indent=1))
print(json.dumps(tim, indent=1))
