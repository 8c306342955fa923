"""Pair-model training speed: full fine-tuning against partial fine-tuning (``pairs.freeze_until``) at every stage.

In one process, on one binary pair model of ``--backbone`` (ImageNet weights, offline) at ``--size``, times:

* ``full``: :func:`repcam.models.train.fit` on the uint8 images, every layer trained (today's pair training);
* ``freeze <stage>``: building the trunk feature cache (:func:`repcam.models.featcache.build_cache`, each image and its
  flip, one-off and shared by every pair model of a run), then ``fit`` of the rest on the cached features;
* with ``--channels-last``: the same with the model in channels_last memory format.

Reported per configuration: seconds per image-epoch of training (median over ``--repeats``, configurations
interleaved so load drift hits all alike), the speed-up over ``full``, the cache build's seconds per image (both
flips) and its disk size per image, and the trainable parameters. The images are random (speed does not depend
on content); the labels alternate 0/1 as in a pair model. Results go to ``benchmarks/results/freeze.{md,json}``
(atomic writes).

    python benchmarks/bench_freeze.py                      # Lite0, 224 px, 96 images, 2 epochs, 3 repeats, 2 threads
    python benchmarks/bench_freeze.py --quick --points blocks.2   # smoke test (8 images, 1 epoch, 1 repeat, temp dir)
"""

from __future__ import annotations

import argparse
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from repcam.models.backbones import build_classifier
from repcam.models.featcache import FreezeError, PartialModel, build_cache, freeze_points, split_model
from repcam.models.train import fit
from repcam.pipeline.executor import cpu_model
from repcam.store.storage import write_json, write_text

ROOT = Path(__file__).resolve().parent
DEFAULT_OUT = ROOT / "results" / "freeze"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--backbone", default="tf_efficientnet_lite0")
    p.add_argument("--weights", default="imagenet", help="'imagenet' (offline), a state-dict path, or 'none'")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--images", type=int, default=96, help="training images of the pair model")
    p.add_argument("--epochs", type=int, default=2, help="epochs per timed training")
    p.add_argument("--batch", type=int, default=24, help="batch size (pairs.batch_size)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--points", default="all", help="comma-separated freeze points, or 'all' (every stage but the last)")
    p.add_argument("--channels-last", action="store_true", help="also time every configuration in channels_last")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--quick", action="store_true", help="smoke test: 8 images, 1 epoch, 1 repeat; writes to a temp dir unless --out")
    p.add_argument("--out", default=None, help=f"output path without extension (default {DEFAULT_OUT.relative_to(ROOT.parent)})")
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.epochs, args.repeats = 8, 1, 1
    if args.out is None:
        args.out = str(Path(tempfile.gettempdir()) / "freeze_quick") if args.quick else str(DEFAULT_OUT)
    if args.images < 2 or args.epochs < 1 or args.repeats < 1 or args.threads < 1 or args.batch < 2:
        p.error("need --images >= 2, --epochs >= 1, --repeats >= 1, --threads >= 1, --batch >= 2")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


def _model(args: argparse.Namespace, channels_last: bool):
    torch.manual_seed(0)
    bb = build_classifier(args.backbone, 2, weights=None if args.weights == "none" else args.weights, input_size=args.size)
    if channels_last:
        bb.model.to(memory_format=torch.channels_last)
    return bb


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_config(args: argparse.Namespace, point: str | None, channels_last: bool, images: torch.Tensor, labels: torch.Tensor,
               tmp: Path) -> dict:
    """One timed training of one configuration (and its cache build): seconds and sizes."""
    device = torch.device(args.device)
    bb = _model(args, channels_last)
    out: dict = {"point": point or "full", "channels_last": channels_last}
    if point is None:
        model, inputs, data = bb.model, None, images
    else:
        split = split_model(bb.model, point, check_size=args.size)
        path = tmp / f"{point}-{int(channels_last)}.npy"
        path.unlink(missing_ok=True)  # time a build, not a reuse
        _sync(args.device)
        t0 = time.perf_counter()
        fc = build_cache(path, split, bb.preprocess, list(range(len(images))), lambda idx: images[list(idx)], {"bench": True},
                         batch_size=args.batch, device=device, channels_last=channels_last)
        _sync(args.device)
        out["cache_s_per_image"] = (time.perf_counter() - t0) / len(images)
        out["cache_bytes_per_image"] = fc.bytes / len(images)
        if channels_last:  # build_cache hands the model back in the default format
            bb.model.to(memory_format=torch.channels_last)
        model, inputs, data = PartialModel(split, from_features=True), fc.rows(list(range(len(images)))).inputs(), None
    out["trainable_params"] = sum(p.numel() for p in bb.model.parameters() if p.requires_grad)
    _sync(args.device)
    t0 = time.perf_counter()
    fit(model, data, labels, bb.preprocess, loss="ce", epochs=args.epochs, lr=1e-4, batch_size=args.batch, seed=0, device=device,
        inputs=inputs)
    _sync(args.device)
    out["train_s_per_image_epoch"] = (time.perf_counter() - t0) / (len(images) * args.epochs)
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    probe = _model(args, False)
    points = freeze_points(probe.model) if args.points == "all" else [s.strip() for s in args.points.split(",") if s.strip()]
    for pt in points:  # a bad name fails here, in one line, before any timing
        try:
            split_model(_model(args, False).model, pt, check_size=args.size, key="--points")
        except FreezeError as e:
            sys.exit(f"error: {e}")
    configs = [(None, False)] + [(pt, False) for pt in points]
    if args.channels_last:
        configs += [(pt, True) for pt, _ in configs]
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.images, 3, args.size, args.size), generator=gen, dtype=torch.uint8)
    labels = torch.arange(args.images) % 2
    runs: dict[tuple, list[dict]] = {c: [] for c in configs}
    warm = min(args.batch, args.images)  # one untimed batch first: the first call pays one-off start-up costs
    fit(_model(args, False).model, images[:warm], labels[:warm], probe.preprocess, loss="ce", epochs=1, lr=1e-4, batch_size=warm,
        seed=0, device=torch.device(args.device))
    with tempfile.TemporaryDirectory(prefix="bench-freeze-") as tmp:
        for rnd in range(args.repeats):
            k = rnd % len(configs)
            for cfg in configs[k:] + configs[:k]:  # rotated order each round
                r = run_config(args, cfg[0], cfg[1], images, labels, Path(tmp))
                runs[cfg].append(r)
                print(f"round {rnd + 1}: {r['point']}{' channels_last' if cfg[1] else ''}: "
                      f"{r['train_s_per_image_epoch'] * 1e3:.1f} ms/image-epoch", file=sys.stderr, flush=True)
    rows = []
    full = statistics.median(r["train_s_per_image_epoch"] for r in runs[(None, False)])
    for cfg, rs in runs.items():
        train = statistics.median(r["train_s_per_image_epoch"] for r in rs)
        row = {"point": cfg[0] or "full", "channels_last": cfg[1], "train_s_per_image_epoch": train, "speedup": full / train,
               "trainable_params": rs[0]["trainable_params"], "train_s_all": [r["train_s_per_image_epoch"] for r in rs]}
        if cfg[0] is not None:
            row["cache_s_per_image"] = statistics.median(r["cache_s_per_image"] for r in rs)
            row["cache_mib_per_image"] = rs[0]["cache_bytes_per_image"] / 2**20
        rows.append(row)
    env = {"command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0]] + (argv if argv is not None else sys.argv[1:])),
           "backbone": args.backbone, "weights": args.weights, "size": args.size, "images": args.images, "epochs": args.epochs,
           "batch": args.batch, "repeats": args.repeats, "threads": args.threads, "device": args.device,
           "torch": torch.__version__, "python": platform.python_version(), "cpu": cpu_model()}
    write_json(Path(args.out + ".json"), {"environment": env, "rows": rows})
    write_text(Path(args.out + ".md"), _markdown(env, rows))
    print(_markdown(env, rows))


def _markdown(env: dict, rows: list[dict]) -> str:
    lines = [
        f"# Pair training: full vs partial fine-tuning ({env['backbone']}, {env['size']} px)",
        "",
        f"`{env['command']}`: {env['images']} random images, epochs per timing: {env['epochs']}, batch {env['batch']}, "
        f"median of {env['repeats']} interleaved repeats, {env['threads']} threads, {env['device']}, torch {env['torch']}.",
        "",
        "Training time per image-epoch; the cache is built once per run (every image and its flip) and shared by every pair "
        "model, so its cost is per image, not per image-epoch.",
        "",
        "| configuration | train ms / image-epoch | speed-up vs full | cache build ms / image (2 flips) | cache MiB / image | trainable params |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        name = ("full fine-tuning" if r["point"] == "full" else f"freeze until {r['point']}") + (" (channels_last)" if r["channels_last"] else "")
        cache = f"{r['cache_s_per_image'] * 1e3:.1f}" if "cache_s_per_image" in r else "-"
        size = f"{r['cache_mib_per_image']:.3f}" if "cache_mib_per_image" in r else "-"
        lines.append(f"| {name} | {r['train_s_per_image_epoch'] * 1e3:.1f} | {r['speedup']:.2f}x | {cache} | {size} | {r['trainable_params']:,} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
