"""Apply RULE.md to the best-map cells that exist: benchmarks/results/best_map/summary.md.

    python benchmarks/best_map/summarise.py [--results DIR] [--boot 1000]

The recommended method is the row with the best mean rank of val mIoU over all cells; it is then reported, frozen, on
the confirmation splits (heldout, coco) per cell, pooled over seeds and pooled over all cells, with paired 95%
bootstrap intervals against LayerCAM and CAM (one resample of the image ids per replicate, shared by every cell, as
the cells score the same images; the pooled difference is the mean of the cells' differences).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from best_map import CONFIRMATION, ORDER, RESULTS, read_rows  # noqa: E402

REFERENCES = ("LayerCAM", "CAM")


def mean_ranks(cells: dict[str, dict[str, float]]) -> list[tuple[str, float, float]]:
    """(row, mean rank, mean val mIoU) of the rows present in every cell, best first (RULE.md 1-2)."""
    common = set.intersection(*(set(r) for r in cells.values()))
    ranks: dict[str, list[float]] = {r: [] for r in common}
    for rows in cells.values():
        vals = {r: rows[r] for r in common}
        for r, v in vals.items():  # rank 1 = best; ties share their mean rank
            better = sum(1 for w in vals.values() if w > v)
            equal = sum(1 for w in vals.values() if w == v)
            ranks[r].append(better + (equal + 1) / 2)
    out = [(r, float(np.mean(ranks[r])), float(np.mean([c[r] for c in cells.values()]))) for r in common]
    return sorted(out, key=lambda t: (t[1], -t[2], t[0]))


class CellCounts:
    """One cell's per-image, per-class intersections and unions of some rows on one split (records_<split>.npz)."""

    def __init__(self, path: Path, rows: list[str]) -> None:
        z = np.load(path)
        names = list(z["rows"])
        missing = [r for r in rows if r not in names]
        if missing:
            raise KeyError(missing[0])
        images, img_index = np.unique(z["image"], return_inverse=True)
        C = int(z["num_classes"])
        self.images = images.astype(str)
        self.n_images = len(images)
        self.labels = np.bincount(img_index, minlength=len(images))  # classes scored per image (its labels)
        self.present = np.zeros((len(images), C), bool)
        self.present[img_index, z["cls"]] = True
        self.inter, self.union = {}, {}
        for r in rows:
            k = names.index(r)
            for table, src in ((self.inter, z["inter"][k]), (self.union, z["union"][k])):
                t = np.zeros((len(images), C))
                np.add.at(t, (img_index, z["cls"]), src)
                table[r] = t

    def miou(self, row: str, weights: np.ndarray | None = None) -> float:
        """mIoU from the counts, images weighted by how often a replicate drew them (None: each once)."""
        w = np.ones(self.n_images) if weights is None else weights
        inter, union = w @ self.inter[row], w @ self.union[row]
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, inter / np.where(union > 0, union, 1), np.nan)
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


    def subset(self, keep: np.ndarray) -> "CellCounts":
        """The same counts restricted to the images where ``keep`` is true (a view for per-group intervals)."""
        sub = object.__new__(CellCounts)
        sub.images, sub.labels, sub.present = self.images[keep], self.labels[keep], self.present[keep]
        sub.n_images = int(keep.sum())
        sub.inter = {r: t[keep] for r, t in self.inter.items()}
        sub.union = {r: t[keep] for r, t in self.union.items()}
        return sub

    def class_iou(self, row: str) -> np.ndarray:
        """Per-class IoU over the images (NaN for a class with no union)."""
        inter, union = self.inter[row].sum(0), self.union[row].sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, inter / np.where(union > 0, union, 1), np.nan)


def paired_interval(cells: list[CellCounts], a: str, b: str, n_boot: int, seed: int = 0) -> tuple[float, float, float]:
    """(mean over cells of mIoU(a) - mIoU(b), 95% low, high).

    Each replicate draws ONE resample of the image ids (with replacement, over the union of the cells' ids) and weights
    every cell's images by it: the cells score the same images (the first N of each split), so a hard image is hard in
    every cell, and resampling each cell on its own would treat shared images as independent and understate the
    interval (RULE.md, correction of session 10). With one cell this is the ordinary paired bootstrap over its images.
    """
    point = float(np.mean([c.miou(a) - c.miou(b) for c in cells]))
    ids = np.unique(np.concatenate([c.images for c in cells]))
    where = [np.searchsorted(ids, c.images) for c in cells]
    rng = np.random.default_rng(seed)
    reps = np.empty(n_boot)
    for k in range(n_boot):
        w = np.bincount(rng.integers(0, len(ids), len(ids)), minlength=len(ids)).astype(float)
        reps[k] = np.mean([c.miou(a, w[at]) - c.miou(b, w[at]) for c, at in zip(cells, where)])
    reps = reps[np.isfinite(reps)]
    low, high = np.percentile(reps, [2.5, 97.5]) if reps.size else (float("nan"), float("nan"))
    return point, float(low), float(high)


def why_lines(counts: dict[str, CellCounts], classes: list[str], best: str, ref: str, n_boot: int) -> list[str]:
    """Where the recommended row gains or loses against ``ref``: per class (IoU difference, mean over cells, and in how
    many cells it is positive) and by co-occurrence (images whose only label is the class vs images with others)."""
    cells = list(counts.values())
    lines = [f"Per class, {best} minus {ref} (IoU points; mean over {len(cells)} cell(s); wins: cells where it is above):", "",
             "| class | images | alone | with others | Δ IoU | wins | Δ alone | Δ with others |", "|---|---|---|---|---|---|---|---|"]
    c0 = cells[0]
    for k, name in enumerate(classes):
        has = c0.present[:, k]
        if not has.any():
            continue
        alone, mixed = has & (c0.labels == 1), has & (c0.labels > 1)
        d = [c.class_iou(best)[k] - c.class_iou(ref)[k] for c in cells]

        def sub_diff(keep: np.ndarray) -> str:
            if not keep.any():
                return "-"
            return f"{100 * np.nanmean([c.subset(keep).class_iou(best)[k] - c.subset(keep).class_iou(ref)[k] for c in cells]):+.2f}"
        lines.append(f"| {name} | {int(has.sum())} | {int(alone.sum())} | {int(mixed.sum())} | {100 * np.nanmean(d):+.2f} | "
                     f"{sum(1 for x in d if x > 0)}/{len(d)} | {sub_diff(alone)} | {sub_diff(mixed)} |")
    single = c0.labels == 1
    lines += ["", "| images | count | Δ mIoU vs " + ref + " (pooled over cells) |", "|---|---|---|"]
    for label, keep in (("one label", single), ("two or more labels", ~single)):
        if keep.any():
            lines.append(f"| {label} | {int(keep.sum())} | {_fmt(paired_interval([c.subset(keep) for c in cells], best, ref, n_boot))} |")
    return lines + [""]


TTA_TWINS = {"CAM": "CAM +TTA", "Grad-CAM": "multiclass [gradcam, last] +TTA", "LayerCAM": "multiclass [layercam, mean] +TTA"}
"""A multi-class row and its test-time augmented twin (the grid's multiclass rows are the same maps as Grad-CAM and
LayerCAM: equal mIoU in every cell; their +TTA twins are the augmented LayerCAM and Grad-CAM)."""


def tta_lines(results: Path, done: list[str], best: str, n_boot: int) -> list[str]:
    """What test-time augmentation (flip + scales 1.0, 0.5, 1.5, 2.0) changes, per row: mean over cells of
    mIoU(+TTA) - mIoU(plain) on val, and on the confirmation splits pooled with paired intervals."""
    twins = dict(TTA_TWINS)
    if not best.endswith(" +TTA"):
        twins[best] = best + " +TTA"
    lines = ["## Test-time augmentation (every row has a +TTA twin)", "",
             "mIoU(+TTA) minus mIoU(plain), points; val: mean over cells; confirmation splits: pooled over cells, paired 95% intervals.", "",
             "| row | val | " + " | ".join(CONFIRMATION) + " |", "|---|---|" + "---|" * len(CONFIRMATION)]
    for plain, tta in twins.items():
        val = [read_rows(results / c, "val") for c in done]
        diffs = [v[tta] - v[plain] for v in val if plain in v and tta in v]
        cells = [f"{100 * np.mean(diffs):+.2f} ({len(diffs)} cells)" if diffs else "-"]
        for split in CONFIRMATION:
            counts = []
            for c in done:
                path = results / c / f"records_{split}.npz"
                if path.is_file():
                    try:
                        counts.append(CellCounts(path, [tta, plain]))
                    except KeyError:
                        pass
            cells.append(_fmt(paired_interval(counts, tta, plain, n_boot)) if counts else "-")
        lines.append(f"| {plain} | " + " | ".join(cells) + " |")
    return lines + [""]


def pair_rows_lines(results: Path, done: list[str], info: dict[str, dict], n_boot: int) -> list[str]:
    """The rows only a cell that trains pair models has (the paper's S+A+F and its ablations, issue 24): outside the
    rule (RULE.md item 1 ranks the rows every cell has), reported per split against the budget-matched Grad-CAM and
    against LayerCAM and CAM of the same cell, with paired intervals."""
    refs = ("Grad-CAM", "LayerCAM", "CAM")
    lines: list[str] = []
    short = [c for c in done if info[c]["budget"] != "paper"]
    common = set.union(*(set(read_rows(results / c, "val")) for c in short)) if short else set()
    for c in (c for c in done if info[c]["budget"] == "paper"):
        val = read_rows(results / c, "val")
        own = sorted((r for r in val if r not in common and not r.endswith(" +TTA")), key=lambda r: -val[r])
        if not own:
            continue
        lines += [f"## The paper's rows at the paper's budget ({c}: pair models, outside the rule)", "",
                  "Rows of the pair models (S+A+F, their fusion and layer ablations), which only this cell trains, so the "
                  "rule's ranking (rows every cell has) leaves them out; differences against the same cell's Grad-CAM, "
                  "LayerCAM and CAM.", ""]
        for split in ("val", *CONFIRMATION):
            path = results / c / f"records_{split}.npz"
            if not path.is_file():
                continue
            try:
                cc = CellCounts(path, [*own, *refs])
            except KeyError as e:
                lines += [f"{split}: row {e} not scored; left out", ""]
                continue
            lines += [f"**{split}** ({cc.n_images} images; Grad-CAM {100 * cc.miou('Grad-CAM'):.2f}, "
                      f"LayerCAM {100 * cc.miou('LayerCAM'):.2f}, CAM {100 * cc.miou('CAM'):.2f})", "",
                      "| row | mIoU | vs Grad-CAM | vs LayerCAM | vs CAM |", "|---|---|---|---|---|"]
            for r in own:
                lines.append(f"| {r} | {100 * cc.miou(r):.2f} | " + " | ".join(_fmt(paired_interval([cc], r, ref, n_boot)) for ref in refs) + " |")
            lines.append("")
    return lines


def _fmt(d: tuple[float, float, float]) -> str:
    p, lo, hi = (100 * x for x in d)
    mark = " *" if lo > 0 or hi < 0 else ""
    return f"{p:+.2f} [{lo:+.2f}, {hi:+.2f}]{mark}"


def summarise(results: Path, n_boot: int) -> str:
    done = [c for c in ORDER if (results / c / "cell.json").is_file()]
    extra = sorted(p.name for p in results.iterdir() if (p / "cell.json").is_file() and p.name not in ORDER) if results.is_dir() else []
    done += extra
    lines = ["# Best-map benchmark: summary (RULE.md applied)", ""]
    if not done:
        return "\n".join(lines + ["No cell has finished yet.", ""])
    info = {c: json.loads((results / c / "cell.json").read_text()) for c in done}
    val = {c: read_rows(results / c, "val") for c in done}
    lines += ["## Cells", "", "| cell | backbone | seed | budget | code commit | torch threads | wall min | CPU min |", "|---|---|---|---|---|---|---|---|"]
    for c in done:
        i = info[c]
        lines.append(f"| {c} | {i['backbone']} | {i['seed']} | {i['budget']} | {i['code_commit']} | {i['torch_threads']} | "
                     f"{i['wall_seconds'] / 60:.1f} | {i.get('cpu_seconds', float('nan')) / 60:.1f} |")
    missing = [c for c in ORDER if c not in done]
    lines += ["", f"Matrix cells not yet run: {', '.join(missing) if missing else 'none'}.", ""]
    ranked = mean_ranks(val)
    best = ranked[0][0]
    lines += ["## The choice (val only)", "",
              f"Recommended method over {len(done)} cell(s): **{best}** (mean rank {ranked[0][1]:.2f} of {len(ranked)} rows).", "",
              "| row | mean rank | mean val mIoU | " + " | ".join(done) + " |", "|---|---|---|" + "---|" * len(done)]
    shown = ranked[:15] + [t for t in ranked[15:] if t[0] in REFERENCES]
    for r, rank, m in shown:
        lines.append(f"| {r} | {rank:.2f} | {100 * m:.2f} | " + " | ".join(f"{100 * val[c][r]:.2f}" for c in done) + " |")
    lines.append("")
    for split in CONFIRMATION:
        have = [c for c in done if (results / c / f"records_{split}.npz").is_file()]
        lines += [f"## Confirmation on {split} (frozen: {best})", ""]
        if not have:
            lines += [f"No cell scored on {split} yet" + (" (the COCO-mini hook in run.sh)" if split == "coco" else "") + ".", ""]
            continue
        counts = {}
        for c in have:
            try:
                counts[c] = CellCounts(results / c / f"records_{split}.npz", [best, *REFERENCES])
            except KeyError as e:
                lines.append(f"- {c}: row {e} not scored on {split}; left out")
        lines += ["| cell | images | " + best + " | LayerCAM | CAM | vs LayerCAM | vs CAM |", "|---|---|---|---|---|---|---|"]
        for c, cc in counts.items():
            lines.append(f"| {c} | {cc.n_images} | {100 * cc.miou(best):.2f} | {100 * cc.miou('LayerCAM'):.2f} | {100 * cc.miou('CAM'):.2f} | "
                         + " | ".join(_fmt(paired_interval([cc], best, ref, n_boot)) for ref in REFERENCES) + " |")
        groups: dict[str, list[str]] = {}
        for c in counts:
            groups.setdefault(f"{info[c]['backbone']}, {info[c]['budget']} (seeds pooled)", []).append(c)
        groups["all cells pooled"] = list(counts)
        lines += ["", "| pooled | cells | vs LayerCAM | vs CAM |", "|---|---|---|---|"]
        for g, cs in groups.items():
            lines.append(f"| {g} | {len(cs)} | " + " | ".join(_fmt(paired_interval([counts[c] for c in cs], best, ref, n_boot))
                                                         for ref in REFERENCES) + " |")
        lines.append("")
        same = [c for c in counts if np.array_equal(counts[c].images, next(iter(counts.values())).images)]
        classes = info[same[0]]["config"]["data"]["classes"]
        lines += [f"### Why: where {best} gains and loses against LayerCAM on {split}", ""]
        lines += why_lines({c: counts[c] for c in same}, classes, best, "LayerCAM", n_boot)
    lines += tta_lines(results, done, best, n_boot)
    lines += pair_rows_lines(results, done, info, n_boot)
    lines += ["Differences in mIoU points, paired 95% bootstrap intervals over images (pooled: one resample of the image ids "
              "per replicate, shared by the cells, which score the same images; the mean of the cells' differences); * marks an interval that excludes zero.", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--boot", type=int, default=1000)
    a = ap.parse_args()
    md = summarise(a.results, a.boot)
    out = a.results / "summary.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(".summary.md.tmp")
    tmp.write_text(md)
    tmp.replace(out)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
