"""One Lite1 training step of the Table 4 multi-class model (batch 24, 240 px, channels_last, BCE, Adam, one
thread) in three modes, to rank ways of making the run's largest fixed cost cheaper (issue 28):

    python benchmarks/bench_train_step.py eager      # what the pipeline runs
    python benchmarks/bench_train_step.py compile    # torch.compile (inductor, C++ on CPU): the first step compiles
    python benchmarks/bench_train_step.py bf16       # autocast to bfloat16 (changes the numbers beyond rounding)
    THP_MEM_ALLOC_ENABLE=1 python benchmarks/bench_train_step.py eager   # torch's huge-page allocation

Prints the first step (compilation included) and the median of six steps after it. Random weights and inputs: the
speed of a step does not depend on them.
"""

import sys
import time

import timm
import torch
import torch.nn.functional as F

torch.set_num_threads(1)
torch.manual_seed(0)
mode = sys.argv[1] if len(sys.argv) > 1 else "eager"
m = timm.create_model("tf_efficientnet_lite1", pretrained=False, num_classes=12).to(memory_format=torch.channels_last).train()
opt = torch.optim.Adam(m.parameters(), lr=1e-4)
x = torch.randn(24, 3, 240, 240).contiguous(memory_format=torch.channels_last)
y = (torch.rand(24, 12) < 0.2).float()
fm = torch.compile(m) if mode == "compile" else m


def step() -> None:
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
        out = fm(x)
    F.binary_cross_entropy_with_logits(out.float(), y).backward()
    opt.step()


t0 = time.perf_counter()
step()
print(mode, "first step", round(time.perf_counter() - t0, 1), flush=True)
ts = []
for _ in range(6):
    t = time.perf_counter()
    step()
    ts.append(time.perf_counter() - t)
print(mode, "steps", [round(a, 3) for a in ts], "median", round(sorted(ts)[3], 3), flush=True)
