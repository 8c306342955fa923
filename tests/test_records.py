"""Record files: streamed writes, row reads through a memory map, and plain np.load compatibility."""

import numpy as np
import pytest
import torch

from repcam.models.backbones import Preprocess
from repcam.models.tinycnn import TinyCNN
from repcam.pipeline.maps import extract
from repcam.pipeline.units import StackedImages
from repcam.store.records import RecordFile, RecordWriter
from repcam.store.storage import Artefact, ArtefactError


def test_streamed_records_equal_in_memory_ones_and_rows_read_back(tmp_path):
    torch.manual_seed(0)
    model = TinyCNN(num_classes=3).eval()
    images = torch.randint(0, 255, (7, 3, 32, 32), dtype=torch.uint8)
    cache = StackedImages(range(7), images)
    pre = Preprocess(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    jobs = [(i, c, c) for i in range(7) for c in range(3) if (i + c) % 2]
    kinds = ["last", "fused", "mean"]
    in_memory = extract(model, cache, pre, jobs, torch.device("cpu"), 16, 4, kinds)
    art = Artefact(tmp_path / "maps.npz", "k")
    writer = RecordWriter(art, [j[0] for j in jobs], [j[1] for j in jobs], kinds, 16)
    returned = extract(model, cache, pre, jobs, torch.device("cpu"), 16, 4, kinds, sink=writer)
    writer.commit()
    assert set(returned) == {"image", "cls"} and art.done()
    assert not list(tmp_path.glob(".records-*"))  # scratch folder removed
    rec = RecordFile(art.path)
    with np.load(art.path) as z:  # still an ordinary npz
        for k in kinds:
            np.testing.assert_array_equal(z[k], in_memory[k])
    np.testing.assert_array_equal(rec.image, in_memory["image"])
    np.testing.assert_array_equal(rec.cls, in_memory["cls"])
    idx = np.array([5, 0, 3])
    for k in kinds:
        np.testing.assert_array_equal(rec.rows(k, idx), in_memory[k][idx])
    assert rec.kinds == kinds and "cam" not in rec


def test_wrong_row_count_and_compressed_files_are_errors(tmp_path):
    art = Artefact(tmp_path / "m.npz", "k")
    writer = RecordWriter(art, [0, 1], [0, 0], ["last"], 4)
    writer("last", np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="1 rows written, 2 expected"):
        writer.commit()
    assert not art.done() and not list(tmp_path.glob(".records-*"))
    np.savez_compressed(tmp_path / "c.npz", image=np.zeros(2, np.int32), cls=np.zeros(2, np.int16), last=np.zeros((2, 4, 4), np.float16))
    with pytest.raises(ValueError, match="compressed"):
        RecordFile(tmp_path / "c.npz")


def test_json_mapping_is_written_member_by_member(tmp_path):
    import json

    from repcam.store.storage import write_json_mapping

    made = []

    def member(k):
        made.append(k)
        return {"values": np.arange(3), "k": k}

    write_json_mapping(tmp_path / "m.json", ((k, lambda k=k: member(k)) for k in ("a", "b<c>")))
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": {"values": [0, 1, 2], "k": "a"}, "b<c>": {"values": [0, 1, 2], "k": "b<c>"}}
    assert made == ["a", "b<c>"]
    write_json_mapping(tmp_path / "empty.json", [])
    assert json.loads((tmp_path / "empty.json").read_text()) == {}


def test_a_scattered_writer_puts_rows_where_they_belong_once_each(tmp_path):
    """The shared trunk pass fills a pair file class by class: rows arrive out of order and the file is the one an
    in-order writer makes; a row written twice, a row out of range and a missing row are errors, and nothing is kept."""
    maps = np.random.default_rng(0).random((5, 4, 4)).astype(np.float16)
    art = Artefact(tmp_path / "m.npz", "k")
    writer = RecordWriter(art, [3, 3, 4, 7, 9], [0, 1, 1, 0, 1], ["last"], 4, scattered=True)
    writer.put("last", [1, 2, 4], maps[[1, 2, 4]])  # class 1's rows first
    writer.put("last", [3, 0], maps[[3, 0]])
    writer.commit()
    rec = RecordFile(art.path)
    np.testing.assert_array_equal(rec.rows("last"), maps)
    assert rec.image.tolist() == [3, 3, 4, 7, 9] and rec.cls.tolist() == [0, 1, 1, 0, 1]
    for bad_rows, match in [([0, 0], "written twice"), ([5], "out of range")]:
        w = RecordWriter(Artefact(tmp_path / "b.npz", "k"), [0, 1, 2, 3, 4], [0] * 5, ["last"], 4, scattered=True)
        with pytest.raises(ValueError, match=match):
            w.put("last", bad_rows, maps[: len(bad_rows)])
        w.discard()
    w = RecordWriter(Artefact(tmp_path / "c.npz", "k"), [0, 1], [0, 0], ["last"], 4, scattered=True)
    w.put("last", [1], maps[:1])
    with pytest.raises(ValueError, match="1 rows written, 2 expected"):
        w.commit()
    d = RecordWriter(Artefact(tmp_path / "d.npz", "k"), [0], [0], ["last"], 4, scattered=True)
    with pytest.raises(TypeError, match="put"):
        d("last", maps[:1])
    d.discard()
    assert not (tmp_path / "c.npz").exists() and not list(tmp_path.glob(".records-*"))


def test_a_record_file_claiming_a_zip_version_zipfile_cannot_read_is_refused_by_name(tmp_path):
    # Found by test_properties' fuzzing: zipfile raises NotImplementedError ("zip file version 6.4") for such a
    # central directory, which escaped as a traceback instead of the one-line ArtefactError naming the file.
    path = tmp_path / "m.npz"
    np.savez(path, image=np.zeros(2, np.int32), cls=np.zeros(2, np.int16), last=np.zeros((2, 4, 4), np.float16))
    data = bytearray(path.read_bytes())
    directory = data.index(b"PK\x01\x02")  # the first central directory entry: "version needed" at byte 6
    data[directory + 6 : directory + 8] = (64).to_bytes(2, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(ArtefactError, match=r"m\.npz: not a readable record file \(NotImplementedError"):
        RecordFile(path)
