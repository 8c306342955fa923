"""The HTML report on a tiny fake run directory: self-contained, escaped, every image a valid data URI."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from repcam.config import from_dict
from repcam.evaluation.evaluate import evaluate_split, summarize
from repcam.evaluation.metrics import IoUAccumulator
from repcam.models.tinycnn import TinyCNN
from repcam.pipeline.run import Run
from repcam.reporting.report import write_report
from repcam.reporting.tables import write_tables
from repcam.store.storage import sha256
from repcam.store.storage import slug as _slug

EVIL = "<script>alert(1)</script>"
CLASSES = ["cat", EVIL, "dog & $1"]
N_IMAGES = 6
MAP = 16


def _blob(h: int, w: int, box: tuple[int, int, int, int], rng: np.random.Generator, sharp: float) -> np.ndarray:
    """A map in [0, 1] peaking on ``box`` (y0, x0, y1, x1) plus noise, at map resolution."""
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    cy, cx = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    m = np.exp(-(((yy - cy) / (sharp * h)) ** 2 + ((xx - cx) / (sharp * w)) ** 2)) + 0.15 * rng.random((h, w))
    return ((m - m.min()) / (m.max() - m.min())).astype(np.float16)


def _seal(path: Path) -> None:
    """Give ``path`` the checksum sidecar a real run writes (readers refuse artefacts without one)."""
    meta_path = path.with_name(path.name + ".meta.json")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    meta_path.write_text(json.dumps({**meta, "sha256": sha256(path)}))


def make_fake_run(root: Path) -> Path:
    """A finished-looking run directory: folder data set (with a class named ``<script>...``), tiny models,
    stored maps, and the result files written by the project's own evaluate/summarize/write_tables."""
    rng = np.random.default_rng(0)
    data = root / "data"
    for sub in ("images", "masks", "splits"):
        (data / sub).mkdir(parents=True, exist_ok=True)
    (data / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    H, W = 24, 32
    boxes: dict[str, dict[int, tuple[int, int, int, int]]] = {}
    ids = []
    for n in range(N_IMAGES):
        iid = f"img{n}"
        ids.append(iid)
        mask = np.zeros((H, W), np.uint8)
        present = [n % 3, (n + 1) % 3] if n % 2 else [n % 3]
        boxes[iid] = {}
        for k, c in enumerate(present):
            y0, x0 = 2 + 10 * k, 3 + 12 * k + n
            box = (y0, x0, y0 + 9, x0 + 11)
            mask[box[0] : box[2], box[1] : box[3]] = c + 1
            boxes[iid][c] = box
        mask[0, :] = 255
        img = (rng.random((H, W, 3)) * 80).astype(np.uint8)
        img[mask > 0] += 120
        Image.fromarray(img).save(data / "images" / f"{iid}.png")
        Image.fromarray(mask, mode="L").save(data / "masks" / f"{iid}.png")
    (data / "splits" / "val.txt").write_text("\n".join(ids) + "\n")
    (data / "splits" / "train.txt").write_text("\n".join(ids) + "\n")

    run = root / "run"
    cfg = from_dict({
        "name": "fake <b>run</b>",
        "data": {"kind": "folder", "root": str(data), "eval_splits": ["val"]},
        "backbone": {"name": "tiny_cnn", "weights": None, "input_size": 32},
        "evaluation": {"map_size": MAP},
    }, "test")
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    ds = Run(cfg, run, show_progress=False).load_split("val")
    assert list(ds.class_names) == CLASSES
    C = len(CLASSES)

    torch.manual_seed(0)
    (run / "multiclass").mkdir()
    torch.save(TinyCNN(C).state_dict(), run / "multiclass" / "model.pt")
    (run / "multiclass" / "model.pt.meta.json").write_text(json.dumps({"train_accuracy": 0.9, "epochs": 3, "images": 6, "mode": "single", "seconds": 1.5}))
    _seal(run / "multiclass" / "model.pt")

    def box_at_map(iid: str, c: int) -> tuple[int, int, int, int]:
        y0, x0, y1, x1 = boxes[iid][c]
        return (y0 * MAP // H, x0 * MAP // W, y1 * MAP // H, x1 * MAP // W)

    jobs = [(i, c) for i, s in enumerate(ds.samples) for c in sorted(s.labels)]
    mdir = run / "maps" / "val"
    mdir.mkdir(parents=True)
    mc = {"image": np.array([j[0] for j in jobs], np.int32), "cls": np.array([j[1] for j in jobs], np.int16)}
    for kind, sharp in (("last", 0.6), ("fused", 0.3), ("mean", 0.5), ("layercam", 0.45), ("cam", 0.55)):
        mc[kind] = np.stack([_blob(MAP, MAP, box_at_map(ds.samples[i].id, c), rng, sharp) for i, c in jobs])
    np.savez(mdir / "multiclass.npz", **mc)
    _seal(mdir / "multiclass.npz")

    pair_maps: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    (run / "pairs").mkdir()
    for a in range(C):
        for b in range(a + 1, C):
            pj = [(i, c) for i, c in jobs if c in (a, b)]
            rec = {"image": np.array([j[0] for j in pj], np.int32), "cls": np.array([j[1] for j in pj], np.int16)}
            rec["last"] = np.stack([_blob(MAP, MAP, box_at_map(ds.samples[i].id, c), rng, 0.5) for i, c in pj])
            rec["fused"] = np.stack([_blob(MAP, MAP, box_at_map(ds.samples[i].id, c), rng, 0.25 + 0.05 * a) for i, c in pj])
            stem = f"{_slug(CLASSES[a])}__{_slug(CLASSES[b])}"
            np.savez(mdir / f"{stem}.npz", **rec)
            _seal(mdir / f"{stem}.npz")
            pair_maps[(a, b)] = rec
            torch.save(TinyCNN(2).state_dict(), run / "pairs" / f"{stem}.pt")
            (run / "pairs" / f"{stem}.pt.meta.json").write_text(json.dumps(
                {"classes": [CLASSES[a], CLASSES[b]], "images": [3, 3], "epochs": 2, "train_accuracy": 0.95, "seconds": 0.4}))
            _seal(run / "pairs" / f"{stem}.pt")

    selections = {"S-1": {0: [1, 2], 1: [0], 2: [0, 1]}, "Random": {0: [2], 1: [2], 2: [1]}}
    named = {n: {CLASSES[c]: [CLASSES[s] for s in reps] for c, reps in sel.items()} for n, sel in selections.items()}
    (run / "selections.json").write_text(json.dumps({"selections": named, "clusters": [["cat", "dog & $1"], [EVIL]]}))
    B = rng.random((C, C)) * 5
    np.fill_diagonal(B, 20.0)
    (run / "similarity.json").write_text(json.dumps({"classes": CLASSES, "B": B.tolist(), "affinity": (B + B.T).tolist(),
                                                     "multilabel": False, "definition": "B[i,j] = sum of p(j) <over> images"}))

    def pair_records(c: int):
        return {(b if a == c else a): r for (a, b), r in pair_maps.items() if c in (a, b)}

    result = evaluate_split(ds, mc, pair_records, selections, 0.15, "whole", topk=(1,))
    # Chunked evaluation (memory bound) and evaluation on two scoring threads give exactly the same accumulators,
    # record order included, with and without Top-k's extra pass.
    for topk in ((1,), ()):
        whole = result if topk else evaluate_split(ds, mc, pair_records, selections, 0.15, "whole", topk=topk)
        small = evaluate_split(ds, mc, pair_records, selections, 0.15, "whole", topk=topk, chunk_size=1)
        threaded = evaluate_split(ds, mc, pair_records, selections, 0.15, "whole", topk=topk, workers=2)
        for other in (small, threaded):
            assert {k: v.state_dict() for k, v in other.accs.items()} == {k: v.state_dict() for k, v in whole.accs.items()}
            assert other.irn == whole.irn and np.array_equal(other.pairwise, whole.pairwise, equal_nan=True)
            assert list(other.accs) == list(whole.accs) and other.topk == whole.topk
    rows = summarize(result, n_boot=50, seed=0)
    notes = [f"a note about {EVIL} & friends"]
    res = run / "results" / "val"
    write_tables(res, "val", result, rows, notes)
    (res / "accumulators.json").write_text(json.dumps({k: v.state_dict() for k, v in result.accs.items()}))
    (run / "timings.json").write_text(json.dumps({"load data": 0.5, "train pairs": 130.0, "total": 140.2}))
    (run / "environment.json").write_text(json.dumps({"python": "3.11", "torch": torch.__version__, "device": "cpu", "gpu": None}))
    (run / "notes.json").write_text(json.dumps(notes))
    return run


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory) -> Path:
    return make_fake_run(tmp_path_factory.mktemp("fake"))


@pytest.fixture(scope="module")
def report(fake_run) -> tuple[Path, str]:
    path = write_report(fake_run)
    return path, path.read_text()


def img_sources(text: str) -> list[str]:
    return re.findall(r"<img\b[^>]*\bsrc=\"([^\"]*)\"", text)


def decode_data_uri(uri: str) -> Image.Image:
    m = re.fullmatch(r"data:image/png;base64,([A-Za-z0-9+/=]+)", uri)
    assert m, uri[:60]
    im = Image.open(io.BytesIO(base64.b64decode(m.group(1), validate=True)))
    im.load()
    return im


def test_report_is_written_with_tables_and_sections(report, fake_run):
    path, text = report
    assert path == fake_run / "report.html"
    assert text.startswith("<!DOCTYPE html>")
    assert text.count("<table>") >= 6  # ablation, per class, pairwise, sweep, selections, clusters, models, timings, env
    for needle in ("Ablation", "Per class", "Pairwise", "Configuration", "Timings", "Environment", "Notes",
                   "S-1+A+F", "Grad-CAM", "Top-1+F", "train pairs", "2.2 min"):
        assert needle in text, needle
    assert "<pre>" in text and "kind: folder" in text


def test_everything_user_supplied_is_escaped(report):
    _, text = report
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text  # class name as text (tables, config, notes)
    assert "<script" not in text.lower()
    assert "fake &lt;b&gt;run&lt;/b&gt;" in text and "<b>run</b>" not in text
    assert "dog &amp; $1" in text
    assert "&lt;over&gt;" in text  # the similarity definition
    assert "a note about &lt;script&gt;alert(1)&lt;/script&gt; &amp; friends" in text


def test_images_are_valid_data_uris_and_nothing_remote(report, fake_run):
    _, text = report
    srcs = img_sources(text)
    index = json.loads((fake_run / "figures" / "val" / "index.json").read_text())
    assert not index["skipped"], index["skipped"]
    assert index["warnings"] == []  # the reloaded data set reproduces the recorded Grad-CAM IoUs
    expected = {"similarity", "per_class", "thresholds", "pairwise", "example_best", "example_worst", "layers_best"}
    assert expected <= set(index["figures"])
    assert len(srcs) == len(index["figures"])
    for s in srcs:
        im = decode_data_uri(s)
        assert im.format == "PNG" and im.width > 50 and im.height > 50
    assert not re.search(r"https?://", text)
    assert not re.search(r"\b(src|href)=\"(?!data:|#)", text)  # only data URIs and in-page anchors
    assert "Content-Security-Policy" in text


def test_report_without_figures_and_for_an_unfinished_run(tmp_path, fake_run, report):
    # ``report`` drew the figures this call reuses (so the test also passes when run alone)
    out = write_report(fake_run, figures=False, path=tmp_path / "again.html")
    assert out.is_file() and len(img_sources(out.read_text())) >= 4  # reuses the figures already built
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.yaml").write_text("name: x\n")
    text = write_report(bare).read_text()
    assert "No evaluated split found" in text and "timings.json not found" in text
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path / "missing")


def test_accumulator_records_match_the_example_choice(fake_run):
    from repcam.reporting.run_figures import best_method, pick_examples

    rows = json.loads((fake_run / "results" / "val" / "ablation.json").read_text())["rows"]
    best = best_method(rows)
    assert best is not None and best.endswith("+A+F")
    assert best == max((r for r in rows if r["method"].endswith("+A+F")), key=lambda r: r["miou"])["method"]
    accs = {k: IoUAccumulator.from_state_dict(v) for k, v in json.loads((fake_run / "results" / "val" / "accumulators.json").read_text()).items()}
    picks = pick_examples(accs[best].records, accs["Grad-CAM"].records)
    assert picks["best"]["gain"] >= picks["worst"]["gain"]


def test_missing_data_set_skips_only_the_example_figures(tmp_path):
    import shutil

    run = make_fake_run(tmp_path)
    shutil.rmtree(tmp_path / "data")  # e.g. a run directory copied to another machine
    text = write_report(run).read_text()
    index = json.loads((run / "figures" / "val" / "index.json").read_text())
    assert {"similarity", "per_class", "thresholds", "pairwise"} <= set(index["figures"])
    assert "example_best" in index["skipped"] and "not found" in index["skipped"]["example_best"]
    assert "figures not drawn" in text and len(img_sources(text)) == 4


def test_changed_data_set_is_flagged(tmp_path):
    run = make_fake_run(tmp_path)
    for p in (tmp_path / "data" / "masks").glob("*.png"):  # the data changed after the run
        m = np.asarray(Image.open(p)).copy()
        shifted = np.roll(m, 5, axis=1)
        grown = np.where((m == 0) & (shifted != 255), shifted, m)  # every object grows to the right
        Image.fromarray(grown.astype(np.uint8), mode="L").save(p)
    text = write_report(run).read_text()
    index = json.loads((run / "figures" / "val" / "index.json").read_text())
    assert index["warnings"] and "changed since the run" in index["warnings"][0]
    assert "changed since the run" in text and "example_best" in index["figures"]


def test_a_large_png_is_embedded_as_a_smaller_palette_png(tmp_path):
    """Map overlays are 1-1.5 MB as drawn: the report embeds such PNGs with a 256-colour palette (smaller page, same
    picture to the eye); the file on disk is untouched, and a small PNG is embedded byte for byte."""
    from repcam.reporting.report_html import PALETTE_ABOVE, data_uri

    rng = np.random.default_rng(0)
    big = tmp_path / "big.png"
    Image.fromarray(rng.integers(0, 255, (700, 700, 3), dtype=np.uint8)).save(big)
    assert big.stat().st_size > PALETTE_ABOVE
    before = big.read_bytes()
    im = decode_data_uri(data_uri(big))
    assert im.mode == "P" and im.size == (700, 700) and len(data_uri(big)) < len(base64.b64encode(before))
    assert big.read_bytes() == before
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(small)
    assert data_uri(small) == "data:image/png;base64," + base64.b64encode(small.read_bytes()).decode("ascii")


def test_a_resumed_run_reuses_figures_drawn_from_the_same_inputs(tmp_path, monkeypatch):
    """The pipeline's report (``reuse_figures``) redraws nothing when the split's inputs are unchanged (a no-op demo
    resume spent 12 of its 16 s redrawing figures), redraws when a score file changed or a figure was skipped, and
    ``repcam report``'s plain call always redraws. (The later steps skip the example figures: they are the slow ones.)"""
    import repcam.reporting.run_figures as rf

    run = make_fake_run(tmp_path)
    write_report(run, reuse_figures=True)
    fig_dir = run / "figures" / "val"
    before = {p.name: p.stat().st_mtime_ns for p in fig_dir.glob("*.png")}
    assert {"similarity.png", "per_class.png", "example_best.png"} <= set(before)

    def refuse(*a, **k):
        raise AssertionError("drawn again")

    monkeypatch.setattr(rf, "similarity_heatmap", refuse)
    text = write_report(run, reuse_figures=True).read_text()
    assert {p.name: p.stat().st_mtime_ns for p in fig_dir.glob("*.png")} == before
    assert len(img_sources(text)) == len(before) and "drawn again" not in text

    def skipped(**kw) -> dict:
        rf.run_figures(run, "val", examples=False, **kw)
        return json.loads((fig_dir / "index.json").read_text())["skipped"]

    assert "drawn again" in skipped()["similarity"]  # no reuse asked (repcam report): drawn, so refused and skipped
    monkeypatch.undo()
    assert skipped(reuse=True) == {}  # same inputs, but a figure was skipped last time: drawn again
    monkeypatch.setattr(rf, "similarity_heatmap", refuse)
    assert skipped(reuse=True) == {}  # same inputs, nothing skipped: reused, the refusing heatmap never called
    abl = run / "results" / "val" / "ablation.json"
    data = json.loads(abl.read_text())
    data["rows"] = data["rows"][::-1]  # a changed score file changes the key: drawn again
    abl.write_text(json.dumps(data))
    assert "drawn again" in skipped(reuse=True)["similarity"]


def test_figures_drawn_by_other_drawing_code_are_drawn_again(tmp_path, monkeypatch):
    """The figures' key covers the drawing code: after a change to it (a development install, one version) a resume
    redraws instead of showing figures the current code would not draw."""
    import repcam.reporting.run_figures as rf
    from repcam import overlay  # noqa: F401 - once shadowed the module repcam.overlay that the digest imported

    assert len(rf.drawing_code_digest()) == 16
    run = make_fake_run(tmp_path)
    rf.run_figures(run, "val", examples=False, reuse=True)

    def refuse(*a, **k):
        raise AssertionError("drawn again")

    monkeypatch.setattr(rf, "similarity_heatmap", refuse)

    def skipped() -> dict:
        rf.run_figures(run, "val", examples=False, reuse=True)
        return json.loads((run / "figures" / "val" / "index.json").read_text())["skipped"]

    assert skipped() == {}  # same code, same inputs: reused
    digest = rf.drawing_code_digest()
    monkeypatch.setattr(rf, "drawing_code_digest", lambda: "0" * 16 if digest != "0" * 16 else "1" * 16)
    assert "drawn again" in skipped()["similarity"]
