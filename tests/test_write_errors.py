"""Write errors (issue 26, items 1 and 2): a full disk, a refused permission or a name too long is one line naming
the file and the cause, leaves no temp file, and the run resumes; file names derived from class names are bounded.

A full disk is simulated in-process by making the low-level calls raise ``OSError(ENOSPC)``, and for real in a
subprocess by a file-size limit (``RLIMIT_FSIZE``: every write past it fails with EFBIG, as a full disk fails with
ENOSPC, at whatever point of a file torch or numpy happens to be)."""

from __future__ import annotations

import errno
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import repcam.store.storage as storage
from repcam.store.records import RecordFile, RecordWriter
from repcam.store.rundir import ClassFiles, remove_stale_temp
from repcam.store.storage import Artefact, WriteError, atomic_write, read_json, write_json

SRC = Path(__file__).resolve().parents[1] / "src"
ENV = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _raise(code: int):
    def fail(*_a, **_k):
        raise OSError(code, os.strerror(code))

    return fail


def _no_temp(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".records-")]


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "disk full"), (errno.EACCES, "permission denied"),
                                         (errno.ENAMETOOLONG, "name is too long"), (errno.EROFS, "read-only"),
                                         (errno.EDQUOT, "quota")])
def test_a_failed_write_is_one_line_naming_the_file_and_the_cause(tmp_path: Path, monkeypatch, code: int, words: str):
    target = tmp_path / "results" / "val" / "ablation.json"
    write_json(target, {"old": 1})
    monkeypatch.setattr(storage.os, "replace", _raise(code))
    with pytest.raises(WriteError) as info:
        write_json(target, {"new": 2})
    msg = str(info.value)
    assert "\n" not in msg and str(target) in msg and words in msg and errno.errorcode[code] in msg
    assert "rerun the same command" in msg
    assert info.value.errno == code and isinstance(info.value, OSError)
    assert read_json(target) == {"old": 1}  # the complete older version stays
    assert _no_temp(tmp_path)
    assert str(pickle.loads(pickle.dumps(info.value))) == msg  # crosses an executor's process boundary intact


def test_a_model_on_a_full_disk_says_so_instead_of_torchs_inline_container_error(tmp_path: Path):
    """The issue's first traceback: torch.save onto a full disk ended in ``RuntimeError: [enforce fail at
    inline_container.cc:672] . unexpected pos``. A real write failure (file-size limit) in a fresh process."""
    code = textwrap.dedent(f"""
        import resource, signal, torch
        from repcam.store.storage import Artefact
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
        try:
            Artefact({str(tmp_path / "pairs" / "a__b.pt")!r}, "k").save_torch({{"w": torch.zeros(100000)}})
        except Exception as e:
            print(type(e).__name__, "|", e)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    kind, _, msg = res.stdout.strip().partition(" | ")
    assert kind == "WriteError", res.stdout + res.stderr
    assert f"{tmp_path / 'pairs' / 'a__b.pt'}" in msg and "EFBIG" in msg and "\n" not in msg
    assert not (tmp_path / "pairs" / "a__b.pt").exists() and not (tmp_path / "pairs" / "a__b.pt.meta.json").exists()
    assert _no_temp(tmp_path)


def test_the_sidecar_failing_leaves_the_artefact_not_done(tmp_path: Path, monkeypatch):
    art = Artefact(tmp_path / "m.pt", "key")
    real = storage.os.replace
    calls = []

    def second_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the model lands, its sidecar does not
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(storage.os, "replace", second_fails)
    with pytest.raises(WriteError, match=r"m\.pt\.meta\.json: no space left"):
        art.save_torch({"w": torch.ones(3)})
    monkeypatch.setattr(storage.os, "replace", real)
    assert not art.done()  # a rerun recomputes it
    art.save_torch({"w": torch.ones(3)})
    assert art.done()


def test_map_records_on_a_full_disk_name_the_map_file_and_remove_their_scratch(tmp_path: Path, monkeypatch):
    art = Artefact(tmp_path / "maps" / "val" / "multiclass.npz", "k")
    writer = RecordWriter(art, [0, 1], [0, 0], ["last"], 4)
    writer("last", np.zeros((1, 4, 4)))
    stream = writer.streams["last"]

    class Full:
        closed = False

        def write(self, _b):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            self.closed = True

    stream._f.close()
    stream._f = Full()
    with pytest.raises(WriteError, match=r"multiclass\.npz: no space left on the device \(disk full\) \(ENOSPC\)"):
        writer("last", np.zeros((1, 4, 4)))
    assert _no_temp(tmp_path) and not art.path.exists()
    import repcam.store.records as records

    monkeypatch.setattr(records.tempfile, "mkdtemp", _raise(errno.EACCES))
    with pytest.raises(WriteError, match="permission denied"):
        RecordWriter(art, [0], [0], ["last"], 4)


def test_temp_names_fit_wherever_the_file_name_fits(tmp_path: Path):
    name = "é" * 120 + ".npz"  # 244 bytes: a legal name whose old temp name (.<name>.<8>.tmp) was 258 bytes
    atomic_write(tmp_path / name, lambda p: p.write_bytes(b"x"))
    assert (tmp_path / name).read_bytes() == b"x"
    # and the run directory's cleaner still recognises a bounded temp name as repcam's own
    prefix = storage.temp_prefix(tmp_path / name)
    (tmp_path / f"{prefix}abcd1234.tmp").write_bytes(b"")
    assert len(f"{prefix}abcd1234.tmp".encode()) <= 255
    assert remove_stale_temp(tmp_path) == 1


def test_class_stems_are_bounded_injective_and_keep_short_names():
    long_a = "a" * 300
    long_b = "a" * 299 + "b"
    arabic = "ب" * 200
    names = [long_a, long_b, arabic, "cat", "x y"]
    files = ClassFiles(names)
    stems = [files.stem(n) for n in names]
    assert len({s.lower() for s in stems}) == len(names)
    assert files.stem("cat") == "cat" and files.stem("x y") == "x_y"  # unchanged for ordinary names
    for a in names:
        for b in names:
            if a != b:
                # the longest name derived from a pair: grid__pair__<pair>.npz.meta.json, and its temp file
                longest = f"grid__pair__{files.pair(a, b)}.npz.meta.json"
                assert len(longest.encode()) <= 255, longest
                assert len((storage.temp_prefix(Path(longest)) + "abcdefgh.tmp").encode()) <= 255
    pairs = {files.pair(a, b).lower() for i, a in enumerate(names) for b in names[i + 1:]}
    assert len(pairs) == len(names) * (len(names) - 1) // 2


# ---------------------------------------------------------------------------------------------------- through a run


@pytest.fixture
def resumable_copy(tiny_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the finished tiny run without one pair model (and what depends on it): a rerun must train it."""
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    pair = sorted((run / "pairs").glob("*.pt"))[0]
    pair.unlink()
    (run / "pairs" / (pair.name + ".meta.json")).unlink()
    shutil.rmtree(run / "results")
    return run, pair


def test_a_run_that_hits_a_full_disk_stops_in_one_line_and_resumes_to_the_same_results(tiny_run: Path, resumable_copy,
                                                                                       monkeypatch):
    from repcam.pipeline.run import Run
    from tiny_run import tiny_config

    run, pair = resumable_copy
    real = storage.atomic_write

    def full_at_pairs(path, write):
        if Path(path).parent.name == "pairs":
            real(path, lambda p: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
        return real(path, write)

    monkeypatch.setattr(storage, "atomic_write", full_at_pairs)
    with pytest.raises(WriteError) as info:
        Run(tiny_config(), run, show_progress=False).run()
    assert str(pair) in str(info.value) and "ENOSPC" in str(info.value)
    assert _no_temp(run) and not pair.exists()
    monkeypatch.setattr(storage, "atomic_write", real)
    Run(tiny_config(), run, show_progress=False).run()
    assert pair.exists()
    assert read_json(run / "results" / "val" / "ablation.json")["rows"] == read_json(tiny_run / "results" / "val" / "ablation.json")["rows"]


@pytest.mark.slow
def test_the_cli_on_a_disk_that_fills_up_prints_one_line_and_no_traceback(tmp_path: Path):
    """The real ``repcam run`` with every write past 40 kB failing (the multi-class model is the first file that big)."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "tiny", "data": {"kind": "partsworld", "options": {"num_images": 96, "image_size": 32},
                                 "eval_options": {"val": {"num_images": 12}}},
        "backbone": {"name": "tiny_cnn", "input_size": 32}, "multiclass": {"epochs": 1, "batch_size": 32},
        "pairs": {"epochs": 1, "min_images": 2}, "evaluation": {"map_size": 16}}))
    code = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (40000, 40000)); from repcam.cli import app; "
            "sys.argv = ['repcam'] + sys.argv[1:]; app()")
    run = tmp_path / "run"
    res = subprocess.run([sys.executable, "-c", code, "run", str(cfg), "--run-dir", str(run), "--no-progress", "--device", "cpu"],
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Traceback" not in res.stdout + res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and f"cannot write {run / 'multiclass' / 'model.pt'}: " in errors[0] and "EFBIG" in errors[0], res.stderr
    assert _no_temp(run) and not (run / ".repcam.lock").exists()


def test_figure_names_from_long_image_stems_are_bounded_and_distinct():
    from repcam.store.storage import bounded_slug

    a, b = "photo" * 60, "photo" * 59 + "photx"  # 300 characters each: a legal file stem, no longer once a class is added
    assert bounded_slug("cat.jpg") == "cat.jpg"
    assert bounded_slug(a) != bounded_slug(b)
    assert all(len(bounded_slug(s).encode()) <= 100 for s in (a, b, "é" * 200))
