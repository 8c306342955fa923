"""Cross-data-set evaluation (repcam.data.cross, ``repcam evaluate RUN --data OTHER.yaml``): a finished run's models
scored on another data set's images and masks, under the run's class names, as one more split."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from coco_fixture import write_coco
from repcam.cli import app
from repcam.data.base import IGNORE_INDEX, DataError, Sample, SegDataset
from repcam.data.cross import CrossDataset, class_pairs, parse_spec
from repcam.pipeline.context import RunContext
from tiny_run import tiny_config

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# Three of the run's classes go by other names in the COCO-format copy (as COCO's couch is VOC's sofa).
RENAME = {"zorb_block": "zorb block", "plim_ring": "ring of plim", "drel_cross": "cross"}


class _Tiny(SegDataset):
    def __init__(self) -> None:
        self.class_names = ("a", "b", "c")
        self.samples = [Sample("0", frozenset({0, 2})), Sample("1", frozenset({1})), Sample("2", frozenset({2}))]
        self._masks = [np.array([[0, 1, 3, 255]], np.uint8), np.array([[2, 2, 0, 0]], np.uint8), np.array([[3, 0, 0, 0]], np.uint8)]

    def image(self, i):
        raise NotImplementedError

    def mask(self, i):
        return self._masks[i]


def test_other_classes_are_renumbered_left_out_or_missing():
    ds = CrossDataset(_Tiny(), ["x", "y", "A"], {"a": "A", "b": "y"})
    assert ds.class_names == ("x", "y", "A")
    assert [s.labels for s in ds.samples] == [frozenset({2}), frozenset({1})]  # image "2" holds only the unmapped c
    assert ds.dropped == 1 and ds.left_out == ["c"] and ds.missing == ["x"]
    assert ds.mask(0).tolist() == [[0, 3, 0, IGNORE_INDEX]]  # a -> A (3); c -> background; ignore stays
    assert ds.mask(1).tolist() == [[2, 2, 0, 0]]


@pytest.mark.parametrize("cmap,match", [
    ({"couch": "sofa"}, "'couch' is not a class of the other data set"),
    ({"a": "sofa"}, "'sofa' is not a class of this run"),
    ({"a": "b"}, "several classes of the other data set meet run class 'b'"),
])
def test_bad_class_maps_are_one_line_errors(cmap, match):
    with pytest.raises(DataError, match=match):
        class_pairs(["a", "b"], ["a", "b"], cmap, "other.yaml")


def test_a_spec_names_its_bad_key():
    with pytest.raises(DataError, match="other.yaml: unknown key 'clases'"):
        parse_spec({"kind": "coco", "split": "val", "clases": {}}, "other.yaml")
    with pytest.raises(DataError, match=r"other.yaml.split is required"):
        parse_spec({"kind": "coco", "root": "x"}, "other.yaml")
    with pytest.raises(DataError, match="maps several classes onto 'sofa'"):
        parse_spec({"kind": "coco", "split": "val", "class_map": {"a": "sofa", "b": "sofa"}}, "other.yaml")


@pytest.fixture(scope="module")
def coco_copy(tmp_path_factory) -> Path:
    """The tiny run's val split written in COCO format, three classes renamed and one extra category."""
    tmp = tmp_path_factory.mktemp("cross")
    val = RunContext(tiny_config(), tmp / "ctx").eval_dataset("val")
    return write_coco(val, tmp / "coco", "val", RENAME, extra_categories=("unicorn",))


def _spec(root: Path) -> dict:
    return {"name": "coco-val", "kind": "coco", "root": str(root), "split": "val",
            "class_map": {v: k for k, v in RENAME.items()}}


def test_bad_data_file_fails_before_any_work(tiny_run: Path, coco_copy: Path, tmp_path: Path):
    runner = CliRunner()
    bad = _spec(coco_copy)
    bad["class_map"] = {**bad["class_map"], "couch": "sofa"}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    before = (tiny_run / "config.resolved.yaml").read_text()
    res = runner.invoke(app, ["evaluate", str(tiny_run), "--data", str(tmp_path / "bad.yaml")])
    assert res.exit_code == 2 and "'couch' is not a class of the other data set" in res.output
    missing = {**_spec(coco_copy), "root": str(tmp_path / "nowhere")}
    (tmp_path / "missing.yaml").write_text(yaml.safe_dump(missing))
    res = runner.invoke(app, ["evaluate", str(tiny_run), "--data", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 2 and "COCO annotation file not found" in res.output
    res = runner.invoke(app, ["evaluate", str(tiny_run), "--data", str(tmp_path / "bad.yaml"), "--name", "val"])
    assert res.exit_code == 2 and "already a split of the run's own data set" in res.output
    assert (tiny_run / "config.resolved.yaml").read_text() == before


def test_cli_evaluates_a_finished_run_on_a_coco_copy_of_its_val_split(tiny_run: Path, coco_copy: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(_spec(coco_copy)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-m", "repcam.cli", "evaluate", str(run), "--data", str(tmp_path / "other.yaml"),
                          "--no-progress", "--no-report"], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    val = json.loads((run / "results" / "val" / "ablation.json").read_text())
    other = json.loads((run / "results" / "coco-val" / "ablation.json").read_text())
    # The same images, masks and models: every row's mIoU is the val split's, under the run's class names.
    assert {r["method"]: r["miou"] for r in other["rows"]} == {r["method"]: r["miou"] for r in val["rows"]}
    assert other["cross_eval"]["left_out"] == ["unicorn"] and other["cross_eval"]["missing"] == []
    assert other["cross_eval"]["pairs"]["zorb block"] == "zorb_block"
    assert "left out" in (run / "results" / "coco-val" / "ablation.md").read_text()
    cfg = yaml.safe_load((run / "config.resolved.yaml").read_text())
    assert cfg["data"]["eval_splits"] == ["val", "coco-val"] and cfg["cross_eval"]["coco-val"]["kind"] == "coco"
    assert (run / "results" / "val" / "ablation.json").read_bytes() == (tiny_run / "results" / "val" / "ablation.json").read_bytes()
    table = CliRunner().invoke(app, ["tables", str(run), "--table", "5", "--split", "val", "--split", "coco-val"])
    assert table.exit_code == 0 and "coco-val" in table.output
    # The report was left out above (--no-report); written later, it has the new split's section.
    assert not (run / "report.html").exists()
    report = CliRunner().invoke(app, ["report", str(run), "--no-figures"])
    assert report.exit_code == 0, report.output
    assert "coco-val" in (run / "report.html").read_text()
