"""The best-map benchmark's rule (benchmarks/best_map/summarise.py): mean ranks over cells, paired pooled intervals."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "best_map"))
from best_map import ORDER, cell_config, parse_cell  # noqa: E402
from summarise import CellCounts, mean_ranks, paired_interval  # noqa: E402


def test_mean_rank_over_cells_not_mean_miou_and_ties_share_ranks():
    cells = {"a": {"X": 0.30, "Y": 0.29, "Z": 0.10}, "b": {"X": 0.20, "Y": 0.40, "Z": 0.20}, "c": {"X": 0.5, "Y": 0.1, "Z": 0.0, "W": 1.0}}
    ranked = mean_ranks(cells)
    # X: ranks 1, 2.5, 1 -> 1.5; Y: 2, 1, 2 -> 1.67 although Y has the higher mean mIoU; W is not in every cell
    assert [r for r, _, _ in ranked] == ["X", "Y", "Z"]
    assert ranked[0][1] == pytest.approx(1.5) and ranked[1][1] == pytest.approx(5 / 3)


def _cell(tmp_path: Path, name: str, gain: float, seed: int) -> CellCounts:
    rng = np.random.default_rng(seed)
    n = 40
    union = rng.integers(50, 100, size=(3, n))
    base = rng.uniform(0.2, 0.6, n)
    inter = np.stack([np.clip(base + gain + rng.normal(0, 0.05, n), 0, 1), base, base - 0.01]) * union
    np.savez(tmp_path / name, rows=np.array(["best", "LayerCAM", "CAM"]), image=np.array([f"i{k}" for k in range(n)]),
             cls=np.arange(n) % 3, inter=inter.astype(np.int64), union=union, num_classes=np.array(3))
    return CellCounts(tmp_path / name, ["best", "LayerCAM", "CAM"])


def test_pooled_interval_is_the_mean_of_cell_differences_and_narrows(tmp_path: Path):
    cells = [_cell(tmp_path, f"c{k}.npz", 0.02, k) for k in range(3)]
    p, lo, hi = paired_interval(cells, "best", "LayerCAM", 300)
    assert p == pytest.approx(np.mean([c.miou("best") - c.miou("LayerCAM") for c in cells]))
    assert lo < p < hi and lo > 0
    _, lo1, hi1 = paired_interval(cells[:1], "best", "LayerCAM", 300)
    assert hi - lo < hi1 - lo1
    none = [_cell(tmp_path, f"n{k}.npz", 0.0, 10 + k) for k in range(3)]
    _, lo0, hi0 = paired_interval(none, "best", "LayerCAM", 300)
    assert lo0 < 0 < hi0


def test_cells_and_their_configs():
    assert ORDER[:3] == ["lite0_s0_short", "lite1_s0_short", "lite2_s0_short"] and ORDER[-1] == "lite0_s0_paper"
    cfg = cell_config("lite2_s1_short")
    assert cfg["seed"] == 1 and cfg["backbone"]["name"] == "tf_efficientnet_lite2" and cfg["pairs"]["train"] is False
    paper = cell_config("lite0_s0_paper")
    assert paper["multiclass"]["max_images"] is None and paper["multiclass"]["epochs"] == 6
    assert paper["pairs"]["train"] is True and paper["pairs"]["freeze_until"] == "blocks.5"  # the paper's S+A+F rows
    from repcam.config import from_dict

    assert from_dict(paper, "paper cell").pairs.epochs == 10

    run = from_dict(cfg, "cell")  # every cell is a valid run config
    assert run.data.holdout == "original_masks" and "heldout" in run.data.eval_splits and run.evaluation.tta
    with pytest.raises(SystemExit, match="unknown cell"):
        parse_cell("lite3_s0_short")


def test_pooling_cells_that_score_the_same_images_does_not_shrink_the_interval(tmp_path: Path):
    """Cells score the same images, so a replicate resamples image ids once for all of them: pooling a cell with an
    exact copy of itself adds no information and must give the single cell's interval (independent resampling per
    cell would narrow it by about 1/sqrt(2))."""
    one = _cell(tmp_path, "a.npz", 0.01, 3)
    same = _cell(tmp_path, "a.npz", 0.01, 3)
    single = paired_interval([one], "best", "LayerCAM", 300)
    pooled = paired_interval([one, same], "best", "LayerCAM", 300)
    assert pooled == pytest.approx(single)


def test_pair_rows_are_reported_against_the_cells_own_baselines(tmp_path: Path):
    """Rows only the paper-budget cell has (pair models: S-1+A+F, ...) are outside the rule's ranking and get their
    own table: each against the same cell's Grad-CAM, LayerCAM and CAM, +TTA twins and shared rows left out."""
    from summarise import pair_rows_lines

    rows = ["S-1+A+F", "Grad-CAM", "LayerCAM", "CAM"]
    for cell, names in (("short", rows[1:]), ("paper", rows + ["S-1+A+F +TTA"])):
        d = tmp_path / cell
        d.mkdir()
        (d / "rows_val.csv").write_text("method,miou\n" + "".join(f"{r},0.{20 + k}\n" for k, r in enumerate(names)))
    rng = np.random.default_rng(0)
    n = 30
    union = rng.integers(50, 100, size=(4, n))
    inter = np.stack([rng.uniform(0.3, 0.6, n) for _ in rows]) * union
    np.savez(tmp_path / "paper" / "records_val.npz", rows=np.array(rows), image=np.array([f"i{k}" for k in range(n)]),
             cls=np.arange(n) % 2, inter=inter.astype(np.int64), union=union, num_classes=np.array(2))
    info = {"short": {"budget": "short"}, "paper": {"budget": "paper"}}
    text = "\n".join(pair_rows_lines(tmp_path, ["short", "paper"], info, 200))
    table = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| row")]
    assert [line.split(" | ")[0] for line in table] == ["| S-1+A+F"]  # not its +TTA twin, not the shared rows
    cc = CellCounts(tmp_path / "paper" / "records_val.npz", rows)
    diff = 100 * (cc.miou("S-1+A+F") - cc.miou("Grad-CAM"))
    assert f"{diff:+.2f} [" in table[0].split(" | ")[2]
    assert pair_rows_lines(tmp_path, ["short"], {"short": {"budget": "short"}}, 200) == []
