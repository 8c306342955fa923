"""Issue 13: hostile or malformed configs and data give one-line errors naming the key or file, before any training."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import repcam
from repcam.config import RESOLVED_CONFIG, ConfigError, RunConfig, demo_config, from_dict, load_config, run_config_path, validate
from repcam.data import DataError, load_dataset
from repcam.pipeline.run import Run
from repcam.store.storage import Artefact, ArtefactError, config_key, sha256
from tiny_run import tiny_config

REPO = Path(__file__).resolve().parents[1]
REPCAM = Path(sys.executable).with_name("repcam")  # the installed console script, run on this checkout's sources


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    if not REPCAM.is_file():
        pytest.skip(f"no repcam entry point next to {sys.executable}")
    env = {**os.environ, "PYTHONPATH": str(Path(repcam.__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(REPCAM), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def assert_one_line_error(res: subprocess.CompletedProcess, *parts: str) -> str:
    """Exit code 2, no traceback, and the error is the last line of stderr, whole, containing every part."""
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), res.stderr
    for part in parts:
        assert part in last, (part, res.stderr)
    return last


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ---- pinned keys: existing valid configs normalise exactly as on main, so their run directories resume --------------

@pytest.mark.parametrize("name,key", [
    # The demo's key changed on purpose once, when its pair models moved to partial fine-tuning (issue 28): an old
    # runs/demo resumes with its multi-class model and retrains only pair models and baseline.
    ("demo", "bae300f4ef614459"),
    ("benchmarks/configs/voc_mini_lite0.yaml", "d03c153aeb037b72"),
    ("benchmarks/configs/voc_mini_lite0_executors.yaml", "a077b821f0d93599"),
])
def test_existing_configs_keep_their_key(name, key):
    cfg = demo_config() if name == "demo" else load_config(REPO / name)
    assert config_key(cfg.to_dict()) == key


# ---- item 4: YAML alias bombs --------------------------------------------------------------------------------------

BOMB = "data:\n  options:\n    a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"    {chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8)
)  # 10**9 leaves once expanded


def test_yaml_alias_bomb_is_refused_at_load(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"bomb.yaml: line \d+: YAML aliases \(\*a\) are not allowed"):
        load_config(write(tmp_path / "bomb.yaml", BOMB))


def test_yaml_alias_bomb_cli(tmp_path: Path):
    res = cli("run", str(write(tmp_path / "bomb.yaml", BOMB)), "--run-dir", str(tmp_path / "r"))
    assert_one_line_error(res, "bomb.yaml", "YAML aliases")
    assert not (tmp_path / "r").exists()


def test_deep_nesting_is_one_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="deep.yaml: cannot parse: nested too deeply"):
        load_config(write(tmp_path / "deep.yaml", "name: " + "[" * 5000 + "]" * 5000 + "\n"))


# ---- items 7, 9, 13: ranges ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("values,match", [
    ({"data": {"max_eval_images": 0}}, r"'data.max_eval_images' must be >= 1, got 0"),
    ({"data": {"max_eval_images": -1}}, r"'data.max_eval_images' must be >= 1, got -1"),
    ({"pairs": {"min_images": 0}}, r"'pairs.min_images' must be >= 1, got 0"),
    ({"evaluation": {"batch_size": 0}}, r"'evaluation.batch_size' must be >= 1, got 0"),
    ({"backbone": {"input_size": -32}}, r"'backbone.input_size' must be >= 16 for tiny_cnn .*got -32"),
    ({"backbone": {"input_size": 0}}, r"'backbone.input_size' must be >= 16 for tiny_cnn .*got 0"),
    ({"backbone": {"name": "resnet18", "input_size": 16}}, r"'backbone.input_size' must be >= 32 for resnet18"),
    ({"multiclass": {"lr": -1}}, r"'multiclass.lr' must be > 0, got -1"),
    ({"pairs": {"lr": 0}}, r"'pairs.lr' must be > 0, got 0"),
    ({"multiclass": {"patience": -1}}, r"'multiclass.patience' must be >= 0, got -1"),
    ({"multiclass": {"factor": 0}}, r"'multiclass.factor' must be in \(0, 1\), got 0"),
    ({"multiclass": {"factor": 1}}, r"'multiclass.factor' must be in \(0, 1\), got 1"),
    ({"pairs": {"target_accuracy": 5}}, r"'pairs.target_accuracy' must be in \(0, 1\], got 5"),
    ({"pairs": {"target_accuracy": 0}}, r"'pairs.target_accuracy' must be in \(0, 1\], got 0"),
    ({"multiclass": {"max_images": 0}}, r"'multiclass.max_images' must be >= 1"),
    ({"selection": {"min_cluster_size": 0}}, r"'selection.min_cluster_size' must be >= 1"),
    ({"execution": {"workers": 0}}, r"'execution.workers' must be >= 1"),
    ({"execution": {"threads": 0}}, r"'execution.threads' must be >= 1"),
    ({"seed": -1}, r"'seed' must be >= 0"),
    ({"data": {"kind": "voc", "root": "x", "classes": "red"}}, r"'data.classes' must be a list, got 'red'"),
    ({"data": {"kind": "voc", "root": "x", "classes": ["cat", 3]}}, r"'data.classes\[1\]' must be str, got 3"),
    ({"data": {"options": {"num_images": "abc"}}}, r"'data.options.num_images' must be int, got 'abc'"),
    ({"data": {"eval_options": {"val": {"object_scale": "big"}}}}, r"'data.eval_options.val.object_scale' must be float"),
    ({"data": {"eval_options": {"val": 3}}}, r"'data.eval_options.val' must be a mapping, got 3"),
    ({"data": {"options": {"colour": 1}}}, r"unknown key 'data.options.colour'; the partsworld loader accepts .*hidden_marker_fraction"),
    ({"data": {"kind": "folder", "root": "x", "options": {"colour": 1}}}, r"unknown key 'data.options.colour'; the folder loader takes no options"),
    ({"data": {"kind": "voc", "root": "x", "options": {"only_original_masks": "yes"}}}, r"'data.options.only_original_masks' must be bool"),
    ({"data": {"options": {1: 2}}}, r"'data.options' keys must be strings, got 1"),
    ({1: 2, "zz": 3}, r"unknown key '1'"),
    # a key holding a newline is shown escaped, so the error stays one line (found by test_properties' fuzzing)
    ({"\n": None}, r"^test.yaml: unknown key '\\n'; valid keys here: backbone"),
    ({"data": {"options": {"a\nb": 1}}}, r"^test.yaml: unknown key 'data.options.a\\nb'; the partsworld"),
    ({"data": {"eval_options": {"a\nb": 3}}}, r"^test.yaml: 'data.eval_options.a\\nb' must be a mapping, got 3$"),
])
def test_out_of_range_and_mistyped_values_name_the_key(values, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(values, "test.yaml")


def test_accepted_values_at_the_edges():
    cfg = from_dict({"data": {"max_eval_images": 1, "kind": "voc", "root": "x", "options": {"year": 2012}},
                     "pairs": {"min_images": 1, "target_accuracy": 1}, "multiclass": {"patience": 0},
                     "backbone": {"name": "tiny_cnn_s8", "input_size": 8}})
    assert cfg.pairs.target_accuracy == 1.0 and cfg.backbone.input_size == 8 and cfg.data.options == {"year": 2012}


# ---- item 8: non-finite numbers, for every float setting -----------------------------------------------------------

def float_keys() -> list[str]:
    out = []
    for section, cls in typing.get_type_hints(RunConfig).items():
        hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
        out += [f"{section}.{k}" for k, h in hints.items() if h is float or h == float | None]
    return out


@pytest.mark.parametrize("key", float_keys())
@pytest.mark.parametrize("literal", [".nan", ".inf", "-.inf"])
def test_non_finite_settings_are_refused(tmp_path: Path, key: str, literal: str):
    section, name = key.split(".")
    path = write(tmp_path / "c.yaml", f"{section}:\n  {name}: {literal}\n")
    with pytest.raises(ConfigError, match=rf"c.yaml: '{key}' must be a finite number"):
        load_config(path)


def test_float_keys_cover_the_known_ones():
    assert {"multiclass.lr", "pairs.lr", "evaluation.contrast_gamma", "evaluation.threshold"} <= set(float_keys())


def test_non_finite_set_in_python_is_refused():
    cfg = demo_config()
    cfg.evaluation.contrast_gamma = float("nan")
    with pytest.raises(ConfigError, match="'evaluation.contrast_gamma' must be a finite number, got nan"):
        validate(cfg, "api")


def test_non_finite_data_option_is_refused():
    with pytest.raises(ConfigError, match="'data.options.object_scale' must be a finite number"):
        from_dict({"data": {"options": {"object_scale": float("inf")}}})


# ---- item 11: files that are not UTF-8, wrong option types through the CLI ------------------------------------------

@pytest.mark.parametrize("data", [
    b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01",  # a JPEG's first bytes
    "name: x\n".encode("utf-16"),
    bytes(range(256)),
])
def test_non_utf8_config_is_one_error(tmp_path: Path, data: bytes):
    path = tmp_path / "c.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match=r"c.yaml: not a UTF-8 text file \(byte 0x[0-9a-f]{2} at offset \d+\)"):
        load_config(path)


def test_utf8_with_bom_still_loads(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_bytes('name = "x"\n'.encode("utf-8-sig"))
    assert load_config(path).name == "x"


@pytest.mark.parametrize("text,parts", [
    (None, ["c.yaml: not a UTF-8 text file"]),
    ("data:\n  options: {num_images: abc}\n", ["c.yaml: 'data.options.num_images' must be int, got 'abc'"]),
    ("evaluation:\n  batch_size: 0\n", ["c.yaml: 'evaluation.batch_size' must be >= 1, got 0"]),
    ("data:\n  eval_options: {val: {num_images: .nan}}\n", ["'data.eval_options.val.num_images' must be int, got nan"]),
])
def test_cli_config_errors_are_one_line(tmp_path: Path, text, parts):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage" if text is None else text.encode())
    assert_one_line_error(cli("run", str(path), "--run-dir", str(tmp_path / "r")), *parts)
    assert not (tmp_path / "r").exists()


def test_cli_config_path_that_is_a_directory(tmp_path: Path):
    assert_one_line_error(cli("run", str(tmp_path), "--run-dir", str(tmp_path / "r")), f"config file {tmp_path} is a directory")


def test_folder_loader_without_options_says_so(tmp_path: Path):
    with pytest.raises(DataError, match="not understood by the folder loader; it takes no options"):
        load_dataset("folder", str(tmp_path), "train", None, colour=1)


# ---- item 12: the user's config in the run directory is kept ----------------------------------------------------------

def tiny_yaml() -> str:
    return "# my own notes: keep me\n" + yaml.safe_dump(tiny_config().to_dict(), sort_keys=False)


def test_run_keeps_the_users_config_yaml(tiny_run: Path, tmp_path: Path):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    (run / "config.yaml").unlink(missing_ok=True)
    user = write(run / "config.yaml", tiny_yaml())
    before = user.read_bytes()
    res = cli("run", str(user), "--run-dir", str(run), "--no-progress", "--no-report")  # the report: test_report
    assert res.returncode == 0, res.stderr
    assert user.read_bytes() == before  # comments and all
    assert load_config(run / RESOLVED_CONFIG) == tiny_config()
    assert "multi-class model: reused" in res.stderr  # it resumed


def test_old_run_dirs_are_read_through_config_yaml(tiny_run: Path, tmp_path: Path):
    """Runs from before config.resolved.yaml keep only config.yaml: readers fall back to it."""
    from repcam.explain import Explainer

    run = shutil.copytree(tiny_run, tmp_path / "run")
    (run / RESOLVED_CONFIG).rename(run / "config.yaml")
    assert run_config_path(run) == run / "config.yaml"
    assert Explainer.from_run(run, device="cpu").cfg == tiny_config()
    (run / RESOLVED_CONFIG).write_text((run / "config.yaml").read_text().replace("name: tiny", "name: newer"))
    assert run_config_path(run) == run / RESOLVED_CONFIG  # the normalised copy wins when both exist


# ---- item 11: a refused malicious pickle in `repcam run` -----------------------------------------------------------

class Evil:
    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def forge(path: Path, marker: Path) -> None:
    """Replace a model file by a pickle that would run a command, and forge its sidecar's checksum."""
    evil = Evil()
    evil.marker = str(marker)
    torch.save({"w": evil}, path)
    meta_path = path.with_name(path.name + ".meta.json")
    meta = json.loads(meta_path.read_text())
    meta["sha256"] = sha256(path)
    meta_path.write_text(json.dumps(meta))


def test_artefact_refuses_a_malicious_pickle_in_one_line(tmp_path: Path):
    art = Artefact(tmp_path / "m.pt", "k")
    art.save_torch({"w": torch.zeros(1)})
    forge(art.path, tmp_path / "pwned")
    assert art.done()  # the forged sidecar vouches for it
    with pytest.raises(ArtefactError, match=r"cannot load .*m.pt: refused by torch.load\(weights_only=True\)") as e:
        art.load_torch()
    assert "\n" not in str(e.value) and not (tmp_path / "pwned").exists()


def test_artefact_load_torch_checks_the_checksum(tmp_path: Path):
    art = Artefact(tmp_path / "m.pt", "k")
    art.save_torch({"w": torch.zeros(1)})
    assert art.load_torch()["w"].shape == (1,)
    torch.save({"w": torch.ones(2)}, art.path)  # replaced after it was written, sidecar untouched
    with pytest.raises(ArtefactError, match=r"m.pt: checksum does not match"):
        art.load_torch()


def test_cli_run_refuses_a_malicious_model_in_one_line(tiny_run: Path, tmp_path: Path):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    forge(run / "multiclass" / "model.pt", tmp_path / "pwned")
    cfg = write(tmp_path / "c.yaml", tiny_yaml())
    res = cli("run", str(cfg), "--run-dir", str(run), "--no-progress")
    assert_one_line_error(res, "multiclass/model.pt", "refused by torch.load(weights_only=True)", "delete it")
    assert not (tmp_path / "pwned").exists()


def test_cli_run_refuses_malicious_backbone_weights_in_one_line(tmp_path: Path):
    weights = tmp_path / "w.pt"
    evil = Evil()
    evil.marker = str(tmp_path / "pwned")
    torch.save({"w": evil}, weights)
    text = tiny_yaml().replace("weights: null", f"weights: {weights}")
    assert f"weights: {weights}" in text
    res = cli("run", str(write(tmp_path / "c.yaml", text)), "--run-dir", str(tmp_path / "r"), "--no-progress")
    assert_one_line_error(res, f"cannot read weights from {weights}: refused by torch.load(weights_only=True)")
    assert not (tmp_path / "pwned").exists()


# ---- item 13: evaluation data checked before the first model trains --------------------------------------------------

def folder_data(root: Path, val_ids: list[str] | None = None) -> Path:
    """Two classes, three 32 px images each; splits/train.txt and splits/val.txt (val_ids: None = all images)."""
    rng = np.random.default_rng(0)
    for d in ("images", "masks", "splits"):
        (root / d).mkdir(parents=True)
    (root / "classes.txt").write_text("a\nb\n")
    ids = []
    for c in (1, 2):
        for k in range(3):
            sid = f"img{c}{k}"
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / "images" / f"{sid}.png")
            mask = np.zeros((32, 32), np.uint8)
            mask[8:24, 8:24] = c
            Image.fromarray(mask, mode="L").save(root / "masks" / f"{sid}.png")
            ids.append(sid)
    (root / "splits" / "train.txt").write_text("\n".join(ids) + "\n")
    (root / "splits" / "val.txt").write_text("\n".join(ids if val_ids is None else val_ids) + "\n")
    return root


def folder_config(root: Path) -> dict:
    return {"name": "f", "data": {"kind": "folder", "root": str(root)}, "backbone": {"name": "tiny_cnn", "input_size": 32},
            "multiclass": {"epochs": 1}, "pairs": {"epochs": 1, "min_images": 1},
            "selection": {"n": 1, "methods": ["rank-a"]}, "evaluation": {"variants": []}}


def break_val(root: Path, how: str) -> str:
    """Damage the evaluation data one way; returns a part of the expected message."""
    if how == "missing split":
        (root / "splits" / "val.txt").unlink()
        return f"split file not found: {root / 'splits' / 'val.txt'}"
    if how == "empty split":
        (root / "splits" / "val.txt").write_text("\n")
        return f"split file is empty: {root / 'splits' / 'val.txt'}"
    if how == "mask size":
        mask = np.zeros((16, 16), np.uint8)
        mask[4:8, 4:8] = 1
        Image.fromarray(mask, mode="L").save(root / "masks" / "img11.png")
        return f"mask {root / 'masks' / 'img11.png'} is 16x16 (WxH) but image"
    if how == "mask missing":  # labels from labels.csv, so only evaluation reads the mask
        (root / "labels.csv").write_text("id,labels\n" + "".join(f"img{c}{k},{'ab'[c - 1]}\n" for c in (1, 2) for k in range(3)))
        (root / "masks" / "img21.png").unlink()
        return f"mask file not found: {root / 'masks' / 'img21.png'}"
    raise ValueError(how)


@pytest.mark.parametrize("how", ["missing split", "empty split", "mask size", "mask missing"])
def test_bad_evaluation_data_fails_before_training(tmp_path: Path, how: str):
    root = folder_data(tmp_path / "data")
    expected = break_val(root, how)
    load_dataset("folder", str(root), "train")  # the training data stays valid
    with pytest.raises(DataError, match="evaluation split 'val': ") as e:
        Run(from_dict(folder_config(root)), tmp_path / "run", show_progress=False).run()
    assert expected in str(e.value)
    assert not (tmp_path / "run" / "multiclass").exists()  # no model was trained


def test_cli_bad_evaluation_mask_fails_before_training(tmp_path: Path):
    root = folder_data(tmp_path / "data")
    expected = break_val(root, "mask size")
    cfg = write(tmp_path / "c.yaml", yaml.safe_dump(folder_config(root)))
    res = cli("run", str(cfg), "--run-dir", str(tmp_path / "run"), "--no-progress")
    assert_one_line_error(res, "evaluation split 'val': ", expected)
    assert not (tmp_path / "run" / "multiclass").exists()


def test_empty_evaluation_split_is_refused(tmp_path: Path):
    from repcam.pipeline.preflight import check_eval_split

    root = folder_data(tmp_path / "data", val_ids=["img10"])
    ds = load_dataset("folder", str(root), "val", ["b"])  # val's one image shows class a only
    assert len(ds) == 0
    with pytest.raises(DataError, match="evaluation split 'val' has no images"):
        check_eval_split(ds, "val")
    check_eval_split(load_dataset("folder", str(root), "val", ["a"]), "val")  # one good image: fine


RUN_CONFIGS = sorted(p for p in (REPO / "benchmarks" / "configs").glob("*.yaml") if "class_map" not in p.read_text())


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.name)
def test_every_committed_run_config_is_valid(path):
    """Every run config the benchmarks and docs name must load: a feature that reserves a name or tightens a check
    must not silently break one (the 80-class COCO config's split 'heldout' did, once data.holdout claimed it)."""
    cfg = load_config(path)
    assert cfg.data.eval_splits


# ---- control characters in free text (names, classes, paths, options) ----------------------------------------------

@pytest.mark.parametrize("values,key,code", [
    ({"name": "demo\x1b[2J"}, "name", "U+001B"),  # an escape sequence would clear the user's terminal
    ({"data": {"kind": "voc", "root": "x", "classes": ["cat", "dog\nerror: forged"]}}, "data.classes", "U+000A"),
    ({"cross_eval": {"c": {"kind": "coco", "root": "x\x00", "split": "train2017"}}}, "cross_eval.c.root", "U+0000"),
    ({"data": {"kind": "voc", "root": "data\x07"}}, "data.root", "U+0007"),
])
def test_control_characters_in_text_settings_are_refused(values, key, code):
    with pytest.raises(ConfigError, match=re.escape(f"'{key}' contains the control character {code}; use printable text")):
        from_dict(values)


def test_printable_unicode_text_is_accepted():
    cfg = from_dict({"name": "démo ✓ 猫", "data": {"kind": "voc", "root": "data/VOC 2012", "classes": ["cat", "dog"]}})
    assert cfg.name == "démo ✓ 猫"


def test_control_character_in_a_config_file_is_one_line_on_the_cli(tmp_path: Path):
    path = write(tmp_path / "c.yaml", 'name: "run\\e[31mred"\n')
    res = cli("run", str(path), "--run-dir", str(tmp_path / "r"))
    assert_one_line_error(res, "c.yaml", "'name' contains the control character U+001B")
    assert "\x1b" not in res.stderr and not (tmp_path / "r").exists()
