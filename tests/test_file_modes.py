"""Files repcam writes honour the user's umask (issue 27 item 7): mkstemp's 0600 must not leak into run directories,
reports and maps, so a colleague on a shared machine can read them (0644 under umask 022), and a private umask
(077) keeps them private (0600)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from repcam.store.records import RecordWriter
from repcam.store.storage import Artefact, atomic_write, file_mode, write_json, write_text


@pytest.fixture
def umask():
    old = os.umask(0o022)
    try:
        yield lambda m: os.umask(m)
    finally:
        os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.parametrize("mask, want", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_every_writer_gives_the_mode_a_plain_open_would(tmp_path, umask, mask, want):
    umask(mask)
    plain = tmp_path / "touched"
    plain.write_text("x")  # what `touch` / open() gives under this umask: the reference
    assert _mode(plain) == want == file_mode()

    write_text(tmp_path / "a.md", "table")
    write_json(tmp_path / "b.json", {"k": 1})
    atomic_write(tmp_path / "c.bin", lambda p: p.write_bytes(b"\0"))
    art = Artefact(tmp_path / "m.npz", "key")
    art.save_npz({"x": np.zeros(3, np.float32)})
    rec = RecordWriter(Artefact(tmp_path / "maps.npz", "key"), [0, 1], [0, 0], ["last"], 4)
    rec("last", np.zeros((2, 4, 4), np.float16))
    rec.commit()
    written = ["a.md", "b.json", "c.bin", "m.npz", "m.npz.meta.json", "maps.npz", "maps.npz.meta.json"]
    assert {n: oct(_mode(tmp_path / n)) for n in written} == {n: oct(want) for n in written}
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")], "no temp file or scratch folder left"


def test_figures_honour_the_umask(tmp_path, umask):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from repcam.reporting.figure_base import finish_figure

    umask(0o022)
    fig = Figure(figsize=(1, 1))
    fig.add_subplot().plot([0, 1])
    out = finish_figure(fig, tmp_path / "f.png", None, 50)
    assert _mode(Path(out)) == 0o644
