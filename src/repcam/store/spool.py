"""A disk spool for maps scored class by class but needed image by image (the IRN protocol), so that memory
does not grow with the number of images."""

from __future__ import annotations

import shutil
import tempfile
from array import array
from pathlib import Path

import numpy as np


class MapSpool:
    """Fixed-shape float16 maps appended to one file per method; read back grouped by image.

    Plain file reads and writes (no memory mapping), so resident memory holds only the index (12 bytes a map).
    """

    def __init__(self, directory: str | Path | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="repcam-spool-", dir=directory))
        self._files: dict[str, object] = {}
        self._index: dict[str, tuple[array, array]] = {}  # method -> (image, cls); offsets are implicit (append order)
        self.shape: tuple[int, int] | None = None
        self._sorted: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def add(self, method: str, image: int, cls: int, cam: np.ndarray) -> None:
        """Append ``cam`` (as float16; every map must have the first one's shape) as ``method``'s map of class ``cls``
        on ``image``."""
        m = np.ascontiguousarray(cam, dtype=np.float16)
        if self.shape is None:
            self.shape = m.shape
        elif m.shape != self.shape:
            raise ValueError(f"spool holds {self.shape} maps, got {m.shape}")
        if method not in self._files:
            self._files[method] = open(self.dir / f"{len(self._files)}.f16", "w+b")  # noqa: SIM115 - closed in close()
            self._index[method] = (array("i"), array("i"))
        self._files[method].write(m.tobytes())
        self._index[method][0].append(int(image))
        self._index[method][1].append(int(cls))

    @property
    def methods(self) -> list[str]:
        return list(self._index)

    def images(self) -> list[int]:
        """Every image with a map of any method, sorted."""
        return sorted({i for images, _ in self._index.values() for i in images})

    def maps_of(self, method: str, image: int) -> dict[int, np.ndarray]:
        """{class: map} of one image for one method (empty if none)."""
        if method not in self._index:
            return {}
        if method not in self._sorted:  # built on first read: positions in the file, sorted by image
            images = np.frombuffer(self._index[method][0], dtype=np.int32)
            order = np.argsort(images, kind="stable")
            self._sorted[method] = (images[order], order)
        images, order = self._sorted[method]
        lo, hi = np.searchsorted(images, image, "left"), np.searchsorted(images, image, "right")
        f = self._files[method]
        f.flush()
        size = int(np.prod(self.shape)) * 2
        out = {}
        for pos in order[lo:hi].tolist():
            f.seek(pos * size)
            out[self._index[method][1][pos]] = np.frombuffer(f.read(size), dtype=np.float16).reshape(self.shape)
        return out

    def close(self) -> None:
        """Close the files and delete the spool's folder."""
        for f in self._files.values():
            f.close()
        self._files.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "MapSpool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
