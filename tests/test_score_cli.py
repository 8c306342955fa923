"""`repcam score --run RUN_DIR` and `repcam score --config CONFIG` on the shared tiny run (tests/tiny_run.py).

`--folder` is tested in test_faithfulness.py. Every call goes through the real typer app (CliRunner, in process).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from repcam.cli import app

FAST = ["--max-images", "4", "--steps", "4", "--road-percentile", "50", "--batch-size", "4", "--no-progress"]
RANGES = {  # metric -> the interval its value must lie in
    "miou": (0, 1), "pxap": (0, 1), "deletion": (0, 1), "insertion": (0, 1), "road_morf": (-1, 1), "road_lerf": (-1, 1),
    "avg_drop": (0, 100), "avg_increase": (0, 100), "maxboxacc_v2": (0, 100),
}


def _score(*args: str):
    return CliRunner().invoke(app, ["score", *args])


def _rows(path: Path) -> dict[str, dict[str, dict]]:
    """method -> metric -> row of a `--out x.json` table."""
    out: dict[str, dict[str, dict]] = {}
    for r in json.loads(path.read_text())["rows"]:
        out.setdefault(r["method"], {})[r["metric"]] = r
    return out


def _check_table(res, out: Path, methods: list[str]) -> dict[str, dict[str, dict]]:
    assert res.exit_code == 0, res.output
    for m in methods:
        assert f"| {m} |" in res.stdout
    assert "records ((image, class) pairs) on 4 images" in res.stdout
    rows = _rows(out)
    assert list(rows) == methods
    for m in methods:
        assert set(rows[m]) == set(RANGES)
        for metric, (lo, hi) in RANGES.items():
            v = rows[m][metric]["value"]
            assert v is not None and math.isfinite(v) and lo <= v <= hi, (m, metric, v)
    for metric in RANGES:  # the second method: a difference to the first, with an interval around it (PxAP: none)
        r = rows[methods[1]][metric]
        assert r["diff"] == pytest.approx(r["value"] - rows[methods[0]][metric]["value"], abs=1e-9)
        if metric != "pxap":
            assert r["low"] <= r["diff"] <= r["high"]
    return rows


def _one_line_error(res, *needles: str) -> str:
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def test_score_run_uses_the_runs_data_and_model(tiny_run: Path, tmp_path: Path):
    res = _score("--run", str(tiny_run), "--method", "gradcam", "--method", "layercam", "--out", str(tmp_path / "t.json"), *FAST)
    rows = _check_table(res, tmp_path / "t.json", ["gradcam", "layercam"])
    # The run's own config and split, given explicitly, is the same scoring: the same table, number for number.
    res2 = _score("--run", str(tiny_run), "--config", str(tiny_run / "config.resolved.yaml"), "--split", "val",
                  "--method", "gradcam", "--method", "layercam", "--out", str(tmp_path / "t2.json"), *FAST)
    assert _check_table(res2, tmp_path / "t2.json", ["gradcam", "layercam"]) == rows
    assert res2.stdout == res.stdout


def test_score_config_with_a_stock_model(tiny_run: Path, tmp_path: Path):
    """--config without --run: the config's data set and a stock model (here tiny_cnn with a 12-class state dict,
    an unnamed head of the data set's size, so output k is class k)."""
    from repcam.backbones import build_classifier

    torch.manual_seed(0)
    torch.save(build_classifier("tiny_cnn", 12, None).model.state_dict(), tmp_path / "tiny.pt")
    res = _score("--config", str(tiny_run / "config.resolved.yaml"), "--model", "tiny_cnn", "--weights", str(tmp_path / "tiny.pt"),
                 "--input-size", "32", "--method", "gradcam", "--method", "paper", "--out", str(tmp_path / "t.json"), *FAST)
    _check_table(res, tmp_path / "t.json", ["gradcam", "paper"])


def test_score_run_and_config_errors_are_one_line(tiny_run: Path, tmp_path: Path):
    m = ["--method", "gradcam", *FAST]
    _one_line_error(_score("--run", str(tmp_path / "nope"), *m), "run directory", "nope", "does not exist")
    (tmp_path / "empty").mkdir()
    _one_line_error(_score("--run", str(tmp_path / "empty"), *m), "empty", "not a run directory")
    half = tmp_path / "half"  # a config but no trained model
    half.mkdir()
    shutil.copyfile(tiny_run / "config.resolved.yaml", half / "config.resolved.yaml")
    _one_line_error(_score("--run", str(half), *m), "half", "multi-class model")

    _one_line_error(_score("--run", str(tiny_run), "--config", str(tmp_path / "missing.yaml"), *m), "missing.yaml")
    cfg = yaml.safe_load((tiny_run / "config.resolved.yaml").read_text())
    cfg["data"]["bogus"] = 1
    (tmp_path / "bad_key.yaml").write_text(yaml.safe_dump(cfg))
    _one_line_error(_score("--run", str(tiny_run), "--config", str(tmp_path / "bad_key.yaml"), *m), "bad_key.yaml", "data.bogus")
    (tmp_path / "broken.yaml").write_text("name: x\ndata: [1, 2\n")
    _one_line_error(_score("--config", str(tmp_path / "broken.yaml"), "--model", "tiny_cnn", *m), "broken.yaml")

    cfg = {"name": "gone", "data": {"kind": "folder", "root": str(tmp_path / "no_such_folder")}}
    (tmp_path / "gone.yaml").write_text(yaml.safe_dump(cfg))
    _one_line_error(_score("--run", str(tiny_run), "--config", str(tmp_path / "gone.yaml"), *m), "gone.yaml", "no_such_folder")
    _one_line_error(_score("--run", str(tiny_run), "--split", "nosuch", *m), "split", "nosuch")

    # a data set whose classes the run's model does not have
    folder = tmp_path / "data"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    (folder / "classes.txt").write_text("zebra\n")
    from PIL import Image

    Image.new("RGB", (32, 32)).save(folder / "images" / "a.png")
    Image.new("L", (32, 32), 1).save(folder / "masks" / "a.png")
    cfg = {"name": "mine", "data": {"kind": "folder", "root": str(folder)}}
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(cfg))
    _one_line_error(_score("--run", str(tiny_run), "--folder", str(folder), *m), "zebra", str(tiny_run))
    _one_line_error(_score("--run", str(tiny_run), "--config", str(tmp_path / "mine.yaml"), "--folder", str(folder), *m),
                    "--config", "--folder")
