"""channels_last vs contiguous (NCHW) memory format on the CPU: a few training steps (Adam, full fine-tuning) and a
MultiLayerGradCAM pass of ``--model`` at ``--size`` px, timed alternately in one process, one thread; also the
largest difference between the two formats' maps (float tolerance).

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/bench_channels_last.py --out benchmarks/results/channels_last.md
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from repcam.engine.cam import MultiLayerGradCAM
from repcam.models.backbones import build_classifier


def train_steps(model, x, y, steps: int, channels_last: bool) -> float:
    model = copy.deepcopy(model).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    t = time.perf_counter()
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t) / steps


def cam_pass(model, x, targets, channels_last: bool) -> tuple[float, torch.Tensor, torch.Tensor]:
    model = copy.deepcopy(model).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    cam = MultiLayerGradCAM(model, "auto")
    t = time.perf_counter()
    res = cam(x, targets)
    return time.perf_counter() - t, res.layer_maps, res.fused


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tf_efficientnet_lite0")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_classifier(args.model, 2, weights=None, input_size=args.size).model
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = torch.randint(0, 2, (args.batch,))
    targets = y.tolist()
    train_steps(model, x, y, 1, False), train_steps(model, x, y, 1, True)  # warm-up
    times = {("train", False): [], ("train", True): [], ("cam", False): [], ("cam", True): []}
    diff_layers = diff_fused = 0.0
    for r in range(args.reps):
        for cl in ((False, True) if r % 2 == 0 else (True, False)):
            times[("train", cl)].append(train_steps(model, x, y, args.steps, cl))
        outs = {}
        for cl in ((False, True) if r % 2 == 0 else (True, False)):
            t, layers, fused = cam_pass(model, x, targets, cl)
            times[("cam", cl)].append(t)
            outs[cl] = (layers, fused)
        diff_layers = max(diff_layers, float((outs[True][0] - outs[False][0]).abs().max()))
        diff_fused = max(diff_fused, float((outs[True][1] - outs[False][1]).abs().max()))
        print(f"rep {r}: " + ", ".join(f"{k[0]} {'CL' if k[1] else 'NCHW'} {v[-1]:.2f}s" for k, v in times.items()), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    lines = [
        f"# channels_last on the CPU ({args.model}, {args.size} px, batch {args.batch}, issue 28)",
        "",
        f"Command: `OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/bench_channels_last.py --model {args.model} "
        f"--size {args.size} --batch {args.batch} --steps {args.steps} --reps {args.reps}`",
        "",
        f"One thread, torch {torch.__version__}, {platform.machine()} with {os.cpu_count()} cores, shared and loaded: the two "
        f"formats alternate in one process ({args.reps} repetitions, medians); read the ratios, not the seconds.",
        "",
        "| pass | NCHW (s) | channels_last (s) | speed-up |",
        "|---|---:|---:|---:|",
        f"| training step (Adam, full fine-tuning, batch {args.batch}) | {med[('train', False)]:.3f} | {med[('train', True)]:.3f} | "
        f"{med[('train', False)] / med[('train', True)]:.2f}x |",
        f"| MultiLayerGradCAM pass (forward + backward to the hooked layers, batch {args.batch}) | {med[('cam', False)]:.3f} | "
        f"{med[('cam', True)]:.3f} | {med[('cam', False)] / med[('cam', True)]:.2f}x |",
        "",
        f"Largest difference between the formats' maps (values in [0, 1]): per-layer maps {diff_layers:.2e}, fused maps {diff_fused:.2e}.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
