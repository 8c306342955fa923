"""Class names that are not plain text (issue 26, item 9): classes.txt is split on line ends only (``\\n``, ``\\r\\n``),
never on U+0085 / U+2028 as ``str.splitlines`` does; a name with a control character is refused in one line naming
the line (folder) or the category (COCO), the same from the Python API as from the CLI; Markdown tables never let a
cell break a row."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from repcam.data import DataError, load_dataset
from repcam.data.coco import COCOSegmentation
from repcam.data.folder import FolderSegmentation
from repcam.reporting.tables import csv_text, markdown_table


def _folder(root: Path, classes_txt: str, n_classes: int = 3) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text(classes_txt, encoding="utf-8", newline="")
    for c in range(n_classes):
        mask = np.zeros((8, 8), np.uint8)
        mask[2:6, 2:6] = c + 1
        Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(root / "images" / f"i{c}.png")
        Image.fromarray(mask, mode="L").save(root / "masks" / f"i{c}.png")
    return root


def test_nel_inside_a_class_name_no_longer_splits_it_and_every_later_class_keeps_its_index(tmp_path: Path):
    root = _folder(tmp_path / "d", "red\nbig\x85green\nblue\n")
    with pytest.raises(DataError) as info:
        FolderSegmentation(root)
    msg = str(info.value)
    assert "line 2" in msg and "U+0085" in msg and "\n" not in msg and "blue" not in msg.split("line 2")[0]
    with pytest.raises(DataError, match="line 2"):  # the config path refuses exactly the same
        load_dataset("folder", str(root), None)


@pytest.mark.parametrize("bad, code", [("a\x00b", "U+0000"), ("a\u2028b", "U+2028"), ("a\x1bb", "U+001B"), ("a\tb", "U+0009")])
def test_control_characters_in_class_names_are_refused_naming_the_line(tmp_path: Path, bad: str, code: str):
    root = _folder(tmp_path / "d", f"red\n{bad}\nblue\n")
    with pytest.raises(DataError, match=rf"classes.txt line 2: .*{re.escape(code)}"):
        FolderSegmentation(root)


def test_windows_line_ends_and_non_ascii_names_still_read(tmp_path: Path):
    root = _folder(tmp_path / "d", "rød\r\nخضراء\r\n🙂 blue\r\n")
    assert FolderSegmentation(root).class_names == ("rød", "خضراء", "🙂 blue")


def _coco(root: Path, name: str) -> Path:
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "val2017" / "a.png")
    ann = {"images": [{"id": 1, "file_name": "a.png", "width": 8, "height": 8}],
           "categories": [{"id": 1, "name": "cat"}, {"id": 7, "name": name}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 4, "bbox": [1, 1, 2, 2],
                            "segmentation": [[1, 1, 3, 1, 3, 3, 1, 3]]}]}
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(ann))
    return root


def test_a_coco_category_with_a_newline_is_refused_naming_the_category(tmp_path: Path):
    root = _coco(tmp_path / "c", "hot\ndog")
    with pytest.raises(DataError) as info:
        COCOSegmentation(root, "val")
    assert "category 7" in str(info.value) and "U+000A" in str(info.value) and "\n" not in str(info.value)


def test_markdown_cells_never_break_a_row():
    header = ["Method", "a|b", "hot\ndog", "nul\x00here", "nel\x85x", "ok"]
    md = markdown_table(header, [["m", "1", "2", "3", "4", "5"]])
    lines = md.splitlines()
    assert len(lines) == 3 and "\x00" not in md and "\x85" not in md and "\n" not in lines[0]
    assert all(line.count("|") - line.count("\\|") == 7 for line in lines if not line.startswith("|-"))
    assert "a\\|b" in lines[0] and "hot\\ndog" in lines[0]
    # CSV quotes what it must: a newline stays inside its field
    import csv
    import io

    assert next(csv.reader(io.StringIO(csv_text(header, [])))) == header


def test_rank_selection_on_few_classes_says_n_does_not_apply_and_fails_before_training():
    from types import SimpleNamespace

    from repcam.config import from_dict
    from repcam.pipeline.context import RunError
    from repcam.pipeline.stages.pairs import PairStage

    cfg = from_dict({"selection": {"methods": ["rank-a"], "n": 2}, "pairs": {"min_images": 1}}, "test")

    class Four:
        num_classes = 4
        class_names = ("a", "b", "c", "d")

        def indices_with(self, c):
            return [c]

    with pytest.raises(RunError) as info:
        PairStage(SimpleNamespace(cfg=cfg)).check_classes(Four())
    msg = str(info.value)
    assert "Rank-a picks 4 classes" in msg and "selection.n does not apply" in msg and "only 3 other classes" in msg
    Four.num_classes, Four.class_names = 6, tuple("abcdef")
    PairStage(SimpleNamespace(cfg=cfg)).check_classes(Four())  # 6 classes: 5 others, the 4 positions scaled to fit


@pytest.mark.parametrize("splits, words", [(["val", "Val"], "share the results folder"), (["a b", "a_b"], "share the results folder"),
                                           (["v\nal"], "printable"), (["x" * 101], "at most 100 bytes")])
def test_eval_split_names_that_would_share_or_break_a_folder_are_refused(splits, words):
    from repcam.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match=words):
        from_dict({"data": {"eval_splits": splits}}, "test.yaml")
