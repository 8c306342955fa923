"""The Least selection (method/selections/least.py): its choice on a hand-made B, and its rows in a tiny run."""

from pathlib import Path

import numpy as np

from repcam.config import SELECTION_METHODS
from repcam.method.methods import SELECTIONS, SelectionInput
from repcam.pipeline.run import Run
from repcam.store.storage import read_json
from tiny_run import small_tiny_config


def test_least_picks_the_tail_of_each_row_least_similar_first():
    B = np.array(
        [
            [9.0, 5.0, 1.0, 3.0, 1.0],
            [4.0, 9.0, 2.0, 0.0, 7.0],
            [1.0, 1.0, 9.0, 1.0, 1.0],
            [2.0, 6.0, 8.0, 9.0, 4.0],
            [0.5, 0.1, 0.3, 0.2, 9.0],
        ]
    )
    inp = SelectionInput(B=B, n=2, min_cluster_size=1, seed=lambda purpose: 0)
    sel = SELECTIONS["least"].select(inp)
    # Row 0: others by B desc 1 (5), 3 (3), 2 (1), 4 (1; tie, larger index last) -> least first: 4, 2.
    assert sel == {0: [4, 2], 1: [3, 2], 2: [4, 3], 3: [0, 4], 4: [1, 3]}
    assert all(i not in reps for i, reps in sel.items())


def test_least_is_a_config_choice_and_gives_its_rows_in_a_run(tmp_path: Path):
    assert "least" in SELECTION_METHODS
    cfg = small_tiny_config(selection__methods=["least", "s1"], evaluation__variants=[])  # six classes, n = 2
    Run(cfg, tmp_path, show_progress=False).run()
    rows = {r["method"]: r for r in read_json(tmp_path / "results" / "val" / "ablation.json")["rows"]}
    assert {"Least+F", "Least+A+F", "S-1+F", "S-1+A+F"} <= set(rows)
    assert 0.0 <= rows["Least+A+F"]["miou"] <= 100.0
    # The stored choice is the tail of each row of the run's own B, least similar first.
    sim = read_json(tmp_path / "similarity.json")
    names, B = sim["classes"], np.asarray(sim["B"])
    stored = read_json(tmp_path / "selections.json")["selections"]["Least"]
    for i, name in enumerate(names):
        tail = [names[j] for j in np.argsort(B[i], kind="stable") if j != i][: cfg.selection.n]
        assert set(stored[name]) == set(tail) or sorted(B[i, [names.index(n) for n in stored[name]]]) == sorted(B[i, [names.index(n) for n in tail]])
