"""Benchmark repcam's multi-layer Grad-CAM engine against pytorch-grad-cam's GradCAM.

Times, in the same process and on the same model / input / per-image targets:

* repcam ``MultiLayerGradCAM(model, "auto")`` (ResNet: layer1..layer4, one forward + one backward);
* pytorch-grad-cam ``GradCAM(model, target_layers=[layer1..layer4])`` (fuses layers by mean);
* both libraries over the single layer ``layer4``;
* for each other weighting (``--weightings``: Grad-CAM++, XGrad-CAM, HiResCAM, EigenGrad-CAM, LayerCAM), repcam's
  ``MultiLayerGradCAM(model, "auto", weighting=w)`` against pytorch-grad-cam's class of the same method over
  layer1..layer4 (a ratio in the same run), and their layer4 maps' agreement.

and checks that the maps agree: repcam's per-layer map vs pytorch-grad-cam's single-layer GradCAM of that
layer (max abs diff must be <= --tol), and repcam's ``fusion="mean"`` fused map vs pytorch-grad-cam's
4-layer output (reported).

Results go to ``benchmarks/results/cam_engine.{md,json}`` (written atomically).

    python benchmarks/bench_cam_engine.py                 # resnet50, batch 16, 224x224, CPU, 2 threads
    python benchmarks/bench_cam_engine.py --quick         # smoke test: batch 2, 64x64, 1 repeat
    python benchmarks/bench_cam_engine.py --weightings    # Grad-CAM only (no weighting rows)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import shlex
import statistics
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torchvision

from repcam.pipeline.executor import cpu_model  # the name runs record too, with family and model

ROOT = Path(__file__).resolve().parent
DEFAULT_OUT = ROOT / "results" / "cam_engine"
LAYERS = ["layer1", "layer2", "layer3", "layer4"]
RESNET_PREFIXES = ("resnet", "resnext", "wide_resnet")
# repcam weighting name -> pytorch-grad-cam class name of the same method
PEER_CLASSES = {
    "gradcampp": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "hirescam": "HiResCAM",
    "eigengradcam": "EigenGradCAM",
    "layercam": "LayerCAM",
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arch", default="resnet50", help="any torchvision ResNet-family builder (resnet18..152, resnext*, wide_resnet*)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=224, help="input height = width")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per method (the median is reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per method before timing")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (and cv2.setNumThreads)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tol", type=float, default=1e-4, help="max abs diff allowed between per-layer maps")
    p.add_argument("--quick", action="store_true", help="smoke test: batch 2, 64x64, 1 repeat (writes to a temp dir unless --out)")
    p.add_argument("--out", default=None, help=f"output path without extension (default {DEFAULT_OUT.relative_to(ROOT.parent)})")
    p.add_argument("--profile", action="store_true", help="also print a torch.profiler op table for one call of each 4-layer method")
    p.add_argument("--weightings", nargs="*", default=list(PEER_CLASSES), choices=list(PEER_CLASSES), help="other weightings to time against pytorch-grad-cam's same method (4 layers)")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.size, args.repeats = 2, 64, 1
    if args.out is None:
        args.out = str(Path(tempfile.gettempdir()) / "cam_engine_quick") if args.quick else str(DEFAULT_OUT)
    if not args.arch.startswith(RESNET_PREFIXES) or not hasattr(torchvision.models, args.arch):
        p.error(f"--arch must be a torchvision ResNet-family model (e.g. resnet18, resnet50, resnext50_32x4d), got {args.arch!r}")
    if args.batch < 1 or args.size < 32 or args.repeats < 1 or args.warmup < 0 or args.threads < 1:
        p.error("need --batch >= 1, --size >= 32, --repeats >= 1, --warmup >= 0, --threads >= 1")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda requested but CUDA is not available")
    return args


# --------------------------------------------------------------------------------------------- environment


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def peak_rss_mib() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kb / 1024.0


# --------------------------------------------------------------------------------------------- methods


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def make_methods(model, x, targets, device, weightings=()):
    """Each method: a (setup -> call, teardown) pair; only ``call`` is timed."""
    import pytorch_grad_cam
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from repcam.engine.cam import MultiLayerGradCAM

    pgc_targets = [ClassifierOutputTarget(t) for t in targets]

    def repcam(layers, weighting="gradcam"):
        def setup():
            cam = MultiLayerGradCAM(model, layers, weighting=weighting)
            return (lambda: cam(x, targets)), (lambda: None)

        return setup

    def pgc(layer_names, cls=GradCAM):
        def setup():
            cam = cls(model, target_layers=[getattr(model, n) for n in layer_names])

            def teardown():
                cam.activations_and_grads.release()  # remove its hooks so they never fire in other methods' calls
                model.zero_grad(set_to_none=True)  # it leaves parameter .grad tensors behind

            return (lambda: cam(x, pgc_targets)), teardown

        return setup

    methods = {
        "repcam_4": repcam("auto"),
        "pgc_4": pgc(LAYERS),
        "repcam_1": repcam(["layer4"]),
        "pgc_1": pgc(["layer4"]),
    }
    for w in weightings:
        methods[f"repcam_4_{w}"] = repcam("auto", w)
        methods[f"pgc_4_{w}"] = pgc(LAYERS, getattr(pytorch_grad_cam, PEER_CLASSES[w]))
    return methods


def method_label(key: str) -> tuple[str, int]:
    """Display label and layer count of a method key (the fixed four, or ``repcam_4_<w>`` / ``pgc_4_<w>``)."""
    if key in LABELS:
        return LABELS[key]
    lib, _, w = key.split("_", 2)
    if lib == "repcam":
        return f"repcam `MultiLayerGradCAM(model, 'auto', weighting='{w}')`", 4
    return f"pytorch-grad-cam `{PEER_CLASSES[w]}(target_layers=[layer1..layer4])`", 4


def time_methods(methods: dict[str, Callable], warmup: int, repeats: int, device: str) -> dict[str, list[float]]:
    """Interleaved rounds (order rotated each round) so drift and order effects hit all methods alike."""
    names = list(methods)
    times: dict[str, list[float]] = {n: [] for n in names}
    for rnd in range(warmup + repeats):
        k = rnd % len(names)
        for name in names[k:] + names[:k]:
            call, teardown = methods[name]()
            gc.collect()
            sync(device)
            t0 = time.perf_counter()
            out = call()
            sync(device)
            dt = time.perf_counter() - t0
            del out
            teardown()
            if rnd >= warmup:
                times[name].append(dt)
    return times


# --------------------------------------------------------------------------------------------- checks


def renorm(a: np.ndarray) -> np.ndarray:
    """Min-max each (H, W) map to [0, 1]; constant maps -> 0 (as repcam does)."""
    flat = a.reshape(a.shape[0], -1)
    lo, hi = flat.min(1, keepdims=True), flat.max(1, keepdims=True)
    span = hi - lo
    out = np.where(span > 1e-7, (flat - lo) / np.maximum(span, 1e-7), 0.0)
    return out.reshape(a.shape).astype(np.float32)


def check_maps(model, x, targets, tol: float, weightings=()) -> dict:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from repcam.engine.cam import MultiLayerGradCAM

    pgc_targets = [ClassifierOutputTarget(t) for t in targets]

    def pgc(layer_names):
        with GradCAM(model, target_layers=[getattr(model, n) for n in layer_names]) as cam:
            out = cam(x, pgc_targets)
        model.zero_grad(set_to_none=True)
        return out

    paper = MultiLayerGradCAM(model, "auto")
    res = paper(x, targets)
    if res.layer_names != LAYERS:
        raise RuntimeError(f"repcam auto layers are {res.layer_names}, expected {LAYERS}")
    maps = res.layer_maps.detach().float().cpu().numpy()
    per_layer = []
    for i, name in enumerate(LAYERS):
        ref = pgc([name])
        ours = maps[:, i]
        diff = float(np.abs(ours - ref).max())
        per_layer.append(
            {
                "layer": name,
                "max_abs_diff": diff,
                "max_abs_diff_after_renorm": float(np.abs(ours - renorm(ref)).max()),
                "constant_maps": int((ours.reshape(len(ours), -1).max(1) == ours.reshape(len(ours), -1).min(1)).sum()),
                "ok": diff <= tol,
            }
        )
    one = MultiLayerGradCAM(model, ["layer4"])(x, targets).layer_maps[:, 0].detach().float().cpu().numpy()
    one_vs_four = float(np.abs(one - maps[:, -1]).max())

    mean_fused = MultiLayerGradCAM(model, "auto", fusion="mean")(x, targets).fused.detach().float().cpu().numpy()
    ref4 = pgc(LAYERS)
    fused_diff = np.abs(mean_fused - ref4)
    weighting_diffs = {w: weighting_layer4_diff(model, x, targets, w) for w in weightings}
    return {
        "tol": tol,
        "per_layer": per_layer,
        "repcam_1layer_vs_4layer_layer4_max_abs_diff": one_vs_four,
        "mean_fusion_vs_pgc_4layer": {"max_abs_diff": float(fused_diff.max()), "mean_abs_diff": float(fused_diff.mean())},
        "per_layer_ok": all(r["ok"] for r in per_layer) and one_vs_four <= tol,
        "weightings_layer4_max_abs_diff_after_renorm": weighting_diffs,
    }


def weighting_layer4_diff(model, x, targets, weighting: str) -> float:
    """Max abs diff between repcam's layer4 map and pytorch-grad-cam's same method (its map min-max re-normalised).

    EigenGrad-CAM: pytorch-grad-cam leaves the SVD's sign to LAPACK and repcam fixes it towards the evidence; the
    peer's projection gets repcam's sign rule here so that the rest of the computation is compared."""
    import pytorch_grad_cam
    import pytorch_grad_cam.eigen_grad_cam as pgc_eigen
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from repcam.engine.cam import MultiLayerGradCAM
    from repcam.engine.weightings import orient_projection

    original = pgc_eigen.get_2d_projection

    def oriented(batch):
        proj = torch.from_numpy(original(batch))
        b = proj.shape[0]
        evidence = torch.from_numpy(np.nan_to_num(batch)).sum(1).reshape(b, -1).to(proj.dtype)
        return orient_projection(proj.reshape(b, -1), evidence).reshape(proj.shape).numpy()

    ours = MultiLayerGradCAM(model, ["layer4"], weighting=weighting)(x, targets).last.detach().float().cpu().numpy()
    pgc_eigen.get_2d_projection = oriented
    try:
        with getattr(pytorch_grad_cam, PEER_CLASSES[weighting])(model, target_layers=[model.layer4]) as cam:
            ref = cam(x, [ClassifierOutputTarget(t) for t in targets])
    finally:
        pgc_eigen.get_2d_projection = original
        model.zero_grad(set_to_none=True)
    return float(np.abs(ours - renorm(ref)).max())


# --------------------------------------------------------------------------------------------- profile


def profile_methods(methods, device: str, row_limit: int = 15) -> None:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    for name in ("repcam_4", "pgc_4"):
        call, teardown = methods[name]()
        with profile(activities=acts) as prof:
            out = call()
            sync(device)
        del out
        teardown()
        key = "cuda_time_total" if device == "cuda" else "cpu_time_total"
        print(f"\n=== profile: {name} ===")
        print(prof.key_averages().table(sort_by=key, row_limit=row_limit))


# --------------------------------------------------------------------------------------------- output


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the result normal file permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


LABELS = {
    "repcam_4": ("repcam `MultiLayerGradCAM(model, 'auto')`", 4),
    "pgc_4": ("pytorch-grad-cam `GradCAM(target_layers=[layer1..layer4])`", 4),
    "repcam_1": ("repcam `MultiLayerGradCAM(model, ['layer4'])`", 1),
    "pgc_1": ("pytorch-grad-cam `GradCAM(target_layers=[layer4])`", 1),
}


def to_markdown(r: dict) -> str:
    cfg, env, ch = r["config"], r["environment"], r["checks"]
    lines = [
        "# CAM engine benchmark: repcam vs pytorch-grad-cam",
        "",
        f"{cfg['arch']} (random weights, seed {cfg['seed']}), batch {cfg['batch']}, {cfg['size']}x{cfg['size']}, "
        f"device {cfg['device']}, {env['torch_threads']} torch thread(s); {cfg['warmup']} warm-up + {cfg['repeats']} timed "
        "calls per method, interleaved; medians. One distinct target class per image.",
        "",
        "| method | layers | median s/call | min s/call | images/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, m in r["methods"].items():
        lines.append(f"| {m['label']} | {m['layers']} | {m['median_s']:.3f} | {m['min_s']:.3f} | {m['images_per_s']:.1f} |")
    sp = r["speedup"]
    lines += [
        "",
        "Speed-up = pytorch-grad-cam median time / repcam median time:",
        "",
        f"- **4 layers: {sp['4_layers']:.2f}x** (target >= {r['target_speedup_4_layers']}x: "
        f"{'met' if sp['4_layers'] >= r['target_speedup_4_layers'] else 'NOT met'})",
        f"- **1 layer (layer4): {sp['1_layer']:.2f}x**",
        "",
    ]
    if sp.get("weightings"):
        wd = ch.get("weightings_layer4_max_abs_diff_after_renorm", {})
        lines += [
            "Other weightings, 4 layers each, in the same run (pytorch-grad-cam's class of the same method):",
            "",
            "| weighting | repcam s | pytorch-grad-cam s | speed-up | layer4 max abs diff |",
            "|---|---:|---:|---:|---:|",
        ]
        for w, ratio in sp["weightings"].items():
            ours, peer = r["methods"][f"repcam_4_{w}"]["median_s"], r["methods"][f"pgc_4_{w}"]["median_s"]
            lines.append(f"| {w} | {ours:.3f} | {peer:.3f} | **{ratio:.2f}x** | {wd.get(w, float('nan')):.1e} |")
        lines.append("")
    lines += [
        "## Map agreement",
        "",
        f"repcam per-layer map (`layer_maps[:, l]`) vs pytorch-grad-cam single-layer GradCAM of that layer "
        f"(tolerance {ch['tol']:g}):",
        "",
        "| layer | max abs diff | max abs diff after min-max re-normalising pgc's map | all-zero maps (of batch) | ok |",
        "|---|---:|---:|---:|:---:|",
    ]
    for p in ch["per_layer"]:
        lines.append(
            f"| {p['layer']} | {p['max_abs_diff']:.2e} | {p['max_abs_diff_after_renorm']:.2e} | "
            f"{p['constant_maps']}/{cfg['batch']} | {'yes' if p['ok'] else 'NO'} |"
        )
    mf = ch["mean_fusion_vs_pgc_4layer"]
    lines += [
        "",
        f"- repcam 1-layer (layer4) map vs layer4 slice of the 4-layer call: max abs diff "
        f"{ch['repcam_1layer_vs_4layer_layer4_max_abs_diff']:.2e}",
        f"- repcam `fusion='mean'` fused map vs pytorch-grad-cam 4-layer output: max abs diff {mf['max_abs_diff']:.2e}, "
        f"mean abs diff {mf['mean_abs_diff']:.2e}. Not expected to be exact: pytorch-grad-cam min-max normalises each "
        "layer's map at feature resolution *before* upsampling, repcam after, so the per-layer weights in the mean differ "
        "slightly.",
        "- Why the per-layer maps can agree: bilinear upsampling commutes with the affine min-max step, so the two "
        "pipelines differ only when the upsampled map misses the feature-resolution extremes (an interior peak falls "
        "between output pixels; e.g. 56->224 can lose ~2% of the range). Then pytorch-grad-cam's map spans slightly "
        "less than [0, 1] and the raw diff grows, while the re-normalised column stays at float error. Check that "
        "column first on trained weights.",
        f"- per-layer check passed: **{'yes' if ch['per_layer_ok'] else 'NO'}**",
        "",
        "## Environment",
        "",
        f"- torch {env['torch']}, torchvision {env['torchvision']}, grad-cam {env['grad_cam']}, numpy {env['numpy']}, "
        f"opencv {env['opencv']}, Python {env['python']}",
        f"- CPU: {env['cpu_model']} ({env['cpu_count']} logical CPUs visible); torch threads {env['torch_threads']}, "
        f"cv2 threads {env['cv2_threads']}" + (f"; GPU: {env['gpu']}" if env.get("gpu") else ""),
        f"- peak RSS of the benchmark process: {r['peak_rss_mib']:.0f} MiB",
        f"- 1-min load average at start / end: {r['loadavg_1min']['start']:.2f} / {r['loadavg_1min']['end']:.2f}"
        + (
            f" (**above the {env['cpu_count']} visible CPUs: other processes competed for the cores, so absolute "
            "times are inflated and noisy; methods were interleaved so the ratios are less affected**)"
            if max(r["loadavg_1min"].values()) > (env["cpu_count"] or 1) + 0.5
            else ""
        ),
        f"- total wall time: {r['wall_s']:.1f} s",
        "",
        "Command:",
        "",
        "```",
        r["command"],
        "```",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- main


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    try:
        import cv2

        cv2.setNumThreads(args.threads)
        cv2_threads, cv2_version = cv2.getNumThreads(), cv2.__version__
    except ImportError:
        cv2_threads, cv2_version = None, "not installed"

    torch.manual_seed(args.seed)
    model = getattr(torchvision.models, args.arch)(weights=None).eval().to(args.device)
    gen = torch.Generator().manual_seed(args.seed + 1)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=gen).to(args.device)
    n_cls = model.fc.out_features
    targets = torch.randperm(n_cls, generator=gen)[: args.batch].tolist()
    if len(targets) < args.batch:  # more images than classes: cycle
        targets = [targets[i % n_cls] for i in range(args.batch)]

    load_start = os.getloadavg()
    print(f"[bench] {args.arch} batch={args.batch} size={args.size} device={args.device} threads={torch.get_num_threads()}", flush=True)
    methods = make_methods(model, x, targets, args.device, args.weightings)
    times = time_methods(methods, args.warmup, args.repeats, args.device)

    results_methods = {}
    for key, ts in times.items():
        med = statistics.median(ts)
        label, n_layers = method_label(key)
        results_methods[key] = {
            "label": label,
            "layers": n_layers,
            "times_s": ts,
            "median_s": med,
            "min_s": min(ts),
            "images_per_s": args.batch / med,
        }
        print(f"[bench] {key:9s} median {med:.3f} s  ({args.batch / med:.1f} img/s)  all: {[round(t, 3) for t in ts]}", flush=True)
    speedup = {
        "4_layers": results_methods["pgc_4"]["median_s"] / results_methods["repcam_4"]["median_s"],
        "1_layer": results_methods["pgc_1"]["median_s"] / results_methods["repcam_1"]["median_s"],
        "weightings": {w: results_methods[f"pgc_4_{w}"]["median_s"] / results_methods[f"repcam_4_{w}"]["median_s"] for w in args.weightings},
    }
    print(f"[bench] speed-up 4 layers {speedup['4_layers']:.2f}x, 1 layer {speedup['1_layer']:.2f}x", flush=True)
    for w, ratio in speedup["weightings"].items():
        print(f"[bench] speed-up {w} (4 layers) {ratio:.2f}x", flush=True)

    checks = check_maps(model, x, targets, args.tol, args.weightings)
    for p in checks["per_layer"]:
        print(f"[check] {p['layer']}: max abs diff {p['max_abs_diff']:.2e} ({'ok' if p['ok'] else 'FAIL'})", flush=True)
    print(f"[check] mean fusion vs pgc 4-layer: max abs diff {checks['mean_fusion_vs_pgc_4layer']['max_abs_diff']:.2e}", flush=True)
    for w, d in checks["weightings_layer4_max_abs_diff_after_renorm"].items():
        print(f"[check] {w} layer4 vs pgc: max abs diff {d:.2e}", flush=True)

    if args.profile:
        profile_methods(methods, args.device)

    env = {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "grad_cam": version("grad-cam"),
        "numpy": np.__version__,
        "opencv": cv2_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cv2_threads": cv2_threads,
        "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
    }
    report = {
        "config": {k: getattr(args, k) for k in ("arch", "batch", "size", "repeats", "warmup", "device", "seed", "quick", "weightings")},
        "targets": targets,
        "environment": env,
        "methods": results_methods,
        "speedup": speedup,
        "target_speedup_4_layers": 1.3,
        "checks": checks,
        "peak_rss_mib": peak_rss_mib(),
        "loadavg_1min": {"start": load_start[0], "end": os.getloadavg()[0]},
        "wall_s": time.perf_counter() - t_start,
        "command": shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv])),
    }
    out = Path(args.out)
    write_atomic(out.with_suffix(".json"), json.dumps(report, indent=2) + "\n")
    write_atomic(out.with_suffix(".md"), to_markdown(report))
    print(f"[bench] wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}", flush=True)
    return 0 if checks["per_layer_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
