"""Multi-class training of the demo (2 epochs) only, CPU seconds of fit(); usage: mc_only.py OUT THREADS"""
import json, sys, time
from pathlib import Path
import torch
from repcam.config import demo_config, from_dict
try:
    from repcam.pipeline.run import Run
    import repcam.pipeline.stages.multiclass as M
except ImportError:
    from repcam.run import Run
    import repcam.run as M

class Stop(Exception):
    pass

out = Path(sys.argv[1]); threads = int(sys.argv[2])
torch.set_num_threads(threads)
d = demo_config().to_dict()
d["multiclass"]["epochs"] = 2
real = M.fit
info = {}
def wrapped(model, x, *a, **k):
    info.update(stride=list(x.stride()), dtype=str(x.dtype), contiguous=x.is_contiguous(), shape=list(x.shape),
                threads=torch.get_num_threads(), interop=torch.get_num_interop_threads())
    c0, w0 = time.process_time(), time.perf_counter()
    r = real(model, x, *a, **k)
    info.update(cpu=time.process_time() - c0, wall=time.perf_counter() - w0)
    raise Stop
M.fit = wrapped
try:
    Run(from_dict(d, "mc"), out, show_progress=False).run()
except Stop:
    pass
print(json.dumps(info))
