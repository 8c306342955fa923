"""Run-directory hardening (issue 13, items 1, 2, 3, 5, 14, 15): crafted artefacts, the lock, colliding class
names, stale results, unreadable training images and leftover temp files. CLI cases go through the real
``repcam`` entry point in a subprocess and assert the exit code and the one-line message."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
import torch
from PIL import Image

from repcam.config import RESOLVED_CONFIG
from repcam.store.records import RecordFile
from repcam.store.rundir import LOCK_NAME, ClassFiles, locked, remove_stale_temp
from repcam.store.storage import Artefact, ArtefactError, sha256, slug

REPCAM = Path(sys.executable).with_name("repcam")
SRC = Path(__file__).resolve().parents[1] / "src"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def repcam(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """The installed ``repcam`` console script in a fresh process (so a crash is an exit code, not a dead test)."""
    return subprocess.run([str(REPCAM), *map(str, args)], capture_output=True, text=True, env=_env(), timeout=timeout)


def error_line(res: subprocess.CompletedProcess) -> str:
    """The one ``error:`` line of a failed command (asserting there is exactly one and no traceback)."""
    out = res.stdout + res.stderr
    assert "Traceback" not in out, out
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.stderr
    return lines[0]


def _object_npz(path: Path) -> None:
    """The issue's crafted map file: object arrays, which a memory map would turn into pointers."""
    with open(path, "wb") as f:
        np.savez(f, image=np.array([object()]), cls=np.zeros(1, "int16"), last=np.array([object()]))


def _forge_sidecar(path: Path) -> None:
    meta_path = path.with_name(path.name + ".meta.json")
    meta = json.loads(meta_path.read_text())
    meta["sha256"] = sha256(path)
    meta_path.write_text(json.dumps(meta))


# ---------------------------------------------------------------------------------------------------- item 1


def test_object_dtype_and_foreign_members_are_refused_before_mapping(tmp_path: Path):
    bad = tmp_path / "bad.npz"
    _object_npz(bad)
    with pytest.raises(ArtefactError, match=r"bad\.npz: member 'image' has dtype object"):
        RecordFile(bad)
    for arrays, match in [
        ({"image": np.zeros(2, "int32"), "cls": np.zeros(2, "int16"), "last": np.zeros((2, 4, 4), "complex64")}, "'last' has dtype complex64"),
        ({"image": np.zeros(2, "int32"), "cls": np.zeros(2, [("a", "f4")]), "last": np.zeros((2, 4, 4), "float16")}, "'cls' has dtype"),
        ({"image": np.zeros(2, "int32"), "cls": np.zeros(3, "int16"), "last": np.zeros((2, 4, 4), "float16")}, r"'cls' has shape \(3,\)"),
    ]:
        with open(bad, "wb") as f:
            np.savez(f, **arrays)
        with pytest.raises(ArtefactError, match=match):
            RecordFile(bad)
    good = Artefact(tmp_path / "ok.npz", "k")
    good.save_npz({"image": np.arange(2, dtype="int32"), "cls": np.zeros(2, "int16"), "last": np.ones((2, 4, 4), "float16")})
    assert RecordFile(good.path).rows("last").shape == (2, 4, 4) and good.load_npz()["last"].dtype == np.float16
    _object_npz(good.path)
    with pytest.raises(ArtefactError, match="checksum does not match ok.npz.meta.json"):
        good.load_npz()


def test_an_artefact_is_hashed_once_per_version_and_a_replaced_file_is_not_done(tmp_path: Path, monkeypatch):
    from repcam.store import storage

    calls = []
    real = storage.sha256
    monkeypatch.setattr(storage, "sha256", lambda p: calls.append(p) or real(p))
    art = Artefact(tmp_path / "m.pt", "k")
    art.save_torch({"w": torch.ones(2)})
    assert len(calls) == 1  # the save's own checksum
    assert art.done() and art.done() and torch.equal(art.load_torch()["w"], torch.ones(2))
    assert len(calls) == 1  # done() and the load trust the stamp recorded at save
    assert not Artefact(art.path, "other").done()  # another key: not done, whatever the checksum
    torch.save({"w": torch.zeros(2)}, art.path)  # replaced behind the sidecar's back: new stamp, hashed, refused
    assert not art.done() and len(calls) == 2
    with pytest.raises(ArtefactError, match="checksum does not match m.pt.meta.json"):
        art.load_torch()


def test_report_on_a_crafted_map_file_is_a_one_line_error_not_a_segfault(run_copy: Path):
    target = run_copy / "maps" / "val" / "multiclass.npz"
    _object_npz(target)
    res = repcam("report", run_copy)
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])  # was -11 / 139: a segmentation fault
    line = error_line(res)
    assert str(target) in line and "checksum does not match" in line
    # With the sidecar forged to match, the dtype allow-list still refuses it, in the report and in a rerun.
    _forge_sidecar(target)
    res = repcam("report", run_copy)
    assert res.returncode == 2 and "member 'image' has dtype object" in error_line(res)
    cfg = run_copy.parent / "cfg.yaml"
    shutil.copy(run_copy / RESOLVED_CONFIG, cfg)
    # A rerun reuses val's stored scores and reads no map (issue 28), so it must succeed; once the scores are gone it
    # has to read the maps, and refuses the crafted file in one line.
    res = repcam("run", cfg, "--run-dir", run_copy, "--no-progress", "--device", "cpu")
    assert res.returncode == 0, res.stderr[-2000:]
    shutil.rmtree(run_copy / "results" / "val")
    res = repcam("run", cfg, "--run-dir", run_copy, "--no-progress", "--device", "cpu")
    assert res.returncode == 2 and f"{target}: member 'image' has dtype object" in error_line(res)


def test_explain_refuses_a_model_whose_checksum_does_not_match(run_copy: Path, tmp_path: Path):
    img = tmp_path / "img.png"
    Image.new("RGB", (32, 32), (200, 10, 10)).save(img)
    model = run_copy / "multiclass" / "model.pt"
    meta = json.loads((run_copy / "budget.json").read_text()) if (run_copy / "budget.json").is_file() else {}
    used = run_copy / meta.get("baseline_model", "multiclass/model.pt")
    with open(used, "r+b") as f:  # flip bytes in the middle: torch may still load it, the checksum may not pass
        f.seek(used.stat().st_size // 2)
        f.write(b"\x00\x01\x02\x03")
    res = repcam("explain", img, "--run", run_copy, "--device", "cpu", "--out", tmp_path / "o")
    assert res.returncode == 2 and str(used) in error_line(res) and "checksum" in error_line(res)
    assert model.is_file()


# ---------------------------------------------------------------------------------------------------- item 2 and 15


_HOLDER = textwrap.dedent("""
    import sys, time
    from repcam.store.rundir import locked
    with locked(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(120)
""")


def _hold_lock(run_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True, env=_env())
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_writer_fails_at_once_naming_the_holder_and_a_killed_holder_is_taken_over(run_copy: Path):
    holder = _hold_lock(run_copy)
    temp = run_copy / "results" / "val" / ".ablation.json.k3x_9zqa.tmp"  # as a kill -9 during a write leaves it
    temp.write_text("half a table")
    try:
        cfg = run_copy.parent / "cfg.yaml"
        shutil.copy(run_copy / RESOLVED_CONFIG, cfg)
        t0 = time.monotonic()
        res = repcam("run", cfg, "--run-dir", run_copy, "--no-progress", "--device", "cpu")
        assert time.monotonic() - t0 < 30  # at once: before any data is loaded or model trained
        line = error_line(res)
        assert res.returncode == 2 and f"in use by another repcam process (pid {holder.pid} on host {os.uname().nodename} since" in line
        res = repcam("report", run_copy, "--no-figures")
        assert res.returncode == 2 and f"pid {holder.pid}" in error_line(res)
        assert temp.is_file()  # never cleaned while another process holds the lock
    finally:
        holder.send_signal(signal.SIGKILL)  # a kill -9: the lock file stays behind with its holder's pid
        holder.wait()
    assert json.loads((run_copy / LOCK_NAME).read_text())["pid"] == holder.pid
    res = repcam("report", run_copy, "--no-figures")
    assert res.returncode == 0, res.stderr
    assert f"took over the stale lock of {run_copy} left by pid {holder.pid}" in " ".join(res.stderr.split())
    assert not temp.exists() and not (run_copy / LOCK_NAME).exists()


def test_lock_is_reentrant_in_one_process_and_exclusive_across(tmp_path: Path):
    with locked(tmp_path):
        with locked(tmp_path):
            assert (tmp_path / LOCK_NAME).is_file()
        assert (tmp_path / LOCK_NAME).is_file()  # still held by the outer block
        code = f"from repcam.store.rundir import locked\nwith locked({str(tmp_path)!r}): pass"
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env())
        assert res.returncode != 0 and "RunDirLocked" in res.stderr and f"pid {os.getpid()}" in res.stderr
    assert not (tmp_path / LOCK_NAME).exists()
    with locked(tmp_path):  # free again
        pass


def test_only_repcams_own_temp_names_are_removed(tmp_path: Path):
    own = [tmp_path / ".config.yaml.ab_d1234.tmp", tmp_path / "maps" / "val" / ".x__y.npz.zzzzzzzz.tmp"]
    scratch = tmp_path / "maps" / "val" / ".records-q1w2e3r4"
    keep = [tmp_path / "notes.tmp", tmp_path / ".mine.tmp", tmp_path / "a.b.ab_d1234.tmp", tmp_path / "seed-1" / ".t.ab_d1234.tmp"]
    for p in own + keep:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    (scratch).mkdir(parents=True)
    (scratch / "last.npy").write_text("x")
    (tmp_path / "seed-1" / LOCK_NAME).write_text("")  # its own run directory: its own run cleans it
    assert remove_stale_temp(tmp_path) == 3
    assert not any(p.exists() for p in own) and not scratch.exists()
    assert all(p.exists() for p in keep)


# ---------------------------------------------------------------------------------------------------- item 3


def test_class_file_names_are_injective_and_unchanged_without_collisions():
    names = ["aeroplane", "x y", "x_y", "dining table", "Cat", "cat", "contrast"]
    files = ClassFiles(names)
    stems = [files.stem(n) for n in names]
    assert len({s.lower() for s in stems}) == len(names)
    assert files.stem("aeroplane") == "aeroplane" and files.stem("dining table") == slug("dining table")  # as before
    assert (slug(".hidden"), slug(".."), slug("")) == ("_hidden", "_.", "_")  # never hidden, never a folder, never empty
    assert files.stem("x y").startswith("x_y-") and files.stem("x_y").startswith("x_y-")
    assert files.pair("dining table", "aeroplane") == "aeroplane__dining_table"  # run order, old form
    pairs = {files.pair(a, b).lower() for i, a in enumerate(names) for b in names[i + 1:]}
    assert len(pairs) == len(names) * (len(names) - 1) // 2
    tricky = ClassFiles(["a__b", "c", "a", "b__c"])  # "a__b" + "c" and "a" + "b__c" would both be a__b__c
    pairs = [tricky.pair(a, b) for a, b in [("a__b", "c"), ("a", "b__c"), ("a__b", "a"), ("c", "b__c")]]
    assert len(set(pairs)) == 4
    with pytest.raises(ValueError, match="class name 'x' appears twice"):
        ClassFiles(["x", "x"])


def _folder_data(root: Path, classes: list[str], n_train: int = 10, n_val: int = 3, corrupt: str | None = None) -> None:
    """A plain-folder data set: each image one coloured square of one class on grey, with its mask."""
    rng = np.random.default_rng(0)
    colours = [(230, 30, 30), (30, 200, 40), (40, 60, 230), (220, 200, 20)]
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "splits").mkdir()
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    for split, n in (("train", n_train), ("val", n_val)):
        ids = []
        for c in range(len(classes)):
            for k in range(n):
                i = f"{split}{c}_{k}"
                img = np.full((32, 32, 3), 128, np.uint8)
                mask = np.zeros((32, 32), np.uint8)
                y, x = rng.integers(0, 16, 2)
                img[y:y + 14, x:x + 14] = colours[c]
                mask[y:y + 14, x:x + 14] = c + 1
                Image.fromarray(img).save(root / "images" / f"{i}.png")
                Image.fromarray(mask, mode="L").save(root / "masks" / f"{i}.png")
                ids.append(i)
        (root / "splits" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    if corrupt:
        (root / "images" / f"{corrupt}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")


@pytest.fixture(scope="module")
def collide_run(tmp_path_factory) -> tuple[Path, Path]:
    """A finished run whose classes 'x y' and 'x_y' share a slug, with one unreadable training image."""
    base = tmp_path_factory.mktemp("collide")
    _folder_data(base / "data", ["x y", "x_y", "z"], corrupt="train2_3")
    cfg = base / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "collide", "seed": 0,
        "data": {"kind": "folder", "root": str(base / "data"), "eval_splits": ["val"]},
        "backbone": {"name": "tiny_cnn", "input_size": 32},
        "multiclass": {"epochs": 2, "lr": 0.003, "batch_size": 32},
        "pairs": {"epochs": 1, "lr": 0.003, "batch_size": 32, "min_images": 3},
        "selection": {"n": 2, "methods": ["random"], "pairwise": True},
        "evaluation": {"map_size": 16, "variants": []},
    }))
    res = repcam("run", cfg, "--run-dir", base / "run", "--no-progress", "--device", "cpu", timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return base / "run", cfg


@pytest.fixture
def run_copy(collide_run: tuple[Path, Path], tmp_path: Path) -> Path:
    """A private copy of this module's finished run (see ``collide_run``), free to damage."""
    return Path(shutil.copytree(collide_run[0], tmp_path / "run"))



def test_colliding_class_slugs_get_their_own_models_maps_and_figures(collide_run, tmp_path: Path):
    run_dir, cfg = collide_run
    pairs = sorted(p.name for p in (run_dir / "pairs").glob("*.pt"))
    assert len(pairs) == 3, pairs  # was 2: 'x y' and 'x_y' wrote the same x_y__z.pt
    metas = [json.loads((run_dir / "pairs" / f"{p}.meta.json").read_text())["classes"] for p in pairs]
    assert sorted(map(sorted, metas)) == sorted([sorted(["x y", "x_y"]), sorted(["x y", "z"]), sorted(["x_y", "z"])])
    assert len(list((run_dir / "maps" / "val").glob("*__*.npz"))) == 3
    shas = {json.loads((run_dir / "pairs" / f"{p}.meta.json").read_text())["sha256"] for p in pairs}
    assert len(shas) == 3  # three trained models, none overwritten by another
    # A rerun retrains and re-extracts nothing (was: 2 pairs every time).
    before = {p: p.stat().st_mtime_ns for p in [*(run_dir / "pairs").glob("*.pt"), *(run_dir / "maps" / "val").glob("*.npz")]}
    res = repcam("run", cfg, "--run-dir", run_dir, "--no-progress", "--device", "cpu")
    assert res.returncode == 0, res.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in before} == before
    img = tmp_path / "img.png"
    Image.new("RGB", (32, 32), (230, 30, 30)).save(img)
    res = repcam("explain", img, "--run", run_dir, "--class", "x y", "--class", "x_y", "--device", "cpu", "--out", tmp_path / "o")
    assert res.returncode == 0, res.stderr
    assert len(list((tmp_path / "o").glob("*.png"))) == 2  # was 1: both figures went to img_x_y.png


# ---------------------------------------------------------------------------------------------------- item 14


def test_unreadable_training_images_are_counted_in_notes_tables_and_report(collide_run):
    run_dir, _ = collide_run
    abl = json.loads((run_dir / "results" / "val" / "ablation.json").read_text())
    assert abl["skipped_train_images"] == 1
    msg = "1 training images could not be read and were skipped (train2_3"
    assert any(msg in n for n in json.loads((run_dir / "notes.json").read_text()))
    assert msg in (run_dir / "results" / "val" / "ablation.md").read_text()
    assert msg in (run_dir / "report.html").read_text()
    assert "train2_3" in json.loads((run_dir / "train_skipped.json").read_text())["images"]


# ---------------------------------------------------------------------------------------------------- item 5


def test_results_of_an_earlier_config_are_left_out_of_the_report(run_copy: Path):
    res = repcam("report", run_copy, "--no-figures")
    assert res.returncode == 0 and "Stale results" not in (run_copy / "report.html").read_text()  # its own results are current
    # An earlier config evaluated train too; this one does not.
    shutil.copytree(run_copy / "results" / "val", run_copy / "results" / "train")
    abl = json.loads((run_copy / "results" / "train" / "ablation.json").read_text())
    (run_copy / "results" / "train" / "ablation.json").write_text(json.dumps({**abl, "split": "train"}))
    res = repcam("report", run_copy, "--no-figures")
    page = (run_copy / "report.html").read_text()
    assert res.returncode == 0 and "Results: train" not in page
    assert "Stale results left out" in page and "results/train/: split &#x27;train&#x27; is not in this config" in page
    # The config now asks for another threshold: val's numbers are from the earlier one.
    cfg = yaml.safe_load((run_copy / RESOLVED_CONFIG).read_text())
    cfg["evaluation"]["threshold"] = 0.3
    (run_copy / RESOLVED_CONFIG).write_text(yaml.safe_dump(cfg, sort_keys=False))
    res = repcam("report", run_copy, "--no-figures")
    page = (run_copy / "report.html").read_text()
    assert res.returncode == 0 and "Results: val" not in page and "results/val/: made with other settings" in page
