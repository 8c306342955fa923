"""Map records on disk, written chunk by chunk and read back row by row, so memory does not grow with the data.

A record file is an ordinary uncompressed ``.npz`` ("image" (n,), "cls" (n,), one (n, S, S) float16 array per
map kind), readable with ``np.load``. Because its members are stored uncompressed, :class:`RecordFile` can
memory-map a member and copy out only the rows it needs.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from repcam.store.dtypes import _ALLOWED, _MAP_DTYPES, check_dtype  # noqa: F401 - the allow-list, importable from here
from repcam.store.storage import Artefact, ArtefactError, WriteError, read_json, verify


class NpyStream:
    """One ``.npy`` file of known shape written chunk by chunk along its first axis."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path, self.shape, self.dtype = Path(path), tuple(shape), np.dtype(dtype)
        self._f = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
        np.lib.format.write_array_header_2_0(self._f, header)
        self.rows = 0

    def write(self, chunk: np.ndarray) -> None:
        """Append ``chunk``'s rows (its other dimensions must match the array's)."""
        chunk = np.ascontiguousarray(chunk, dtype=self.dtype)
        if chunk.shape[1:] != self.shape[1:]:
            raise ValueError(f"{self.path.name}: chunk of shape {chunk.shape} for an array of shape {self.shape}")
        self._f.write(chunk.tobytes())
        self.rows += len(chunk)

    def close(self) -> None:
        """Close the file; ValueError unless exactly as many rows were written as the shape says."""
        self._f.close()
        if self.rows != self.shape[0]:
            raise ValueError(f"{self.path.name}: {self.rows} rows written, {self.shape[0]} expected")


class NpyRows(NpyStream):
    """One ``.npy`` file of known shape whose rows are written in any order (:meth:`put`), each exactly once; no file
    handle is held between writes, so a pass can fill many files at once (a shared trunk's pair files)."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
        super().__init__(path, shape, dtype)
        self._start = self._f.tell()
        self._row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._f.truncate(self._start + self.shape[0] * self._row_bytes)
        self._f.close()
        self.written = np.zeros(self.shape[0], dtype=bool)

    def write(self, chunk: np.ndarray) -> None:
        raise TypeError(f"{self.path.name}: rows are written with put(rows, chunk)")

    def put(self, rows: Sequence[int], chunk: np.ndarray) -> None:
        """Write ``chunk``'s rows at row positions ``rows``."""
        chunk = np.ascontiguousarray(chunk, dtype=self.dtype)
        rows = np.asarray(rows, dtype=np.int64)
        if chunk.shape[1:] != self.shape[1:] or len(chunk) != len(rows):
            raise ValueError(f"{self.path.name}: chunk of shape {chunk.shape} for rows {len(rows)} of an array of shape {self.shape}")
        if ((rows < 0) | (rows >= self.shape[0])).any() or self.written[rows].any() or len(set(rows.tolist())) != len(rows):
            raise ValueError(f"{self.path.name}: rows {rows.tolist()} out of range or written twice")
        with open(self.path, "r+b") as f:
            for r, row in zip(rows.tolist(), chunk):
                f.seek(self._start + r * self._row_bytes)
                f.write(row.tobytes())
        self.written[rows] = True
        self.rows += len(rows)  # close() (NpyStream's) checks that every row came


class RecordWriter:
    """Collects map chunks into per-kind ``.npy`` streams in a scratch folder, then packs them into an artefact.
    Chunks come in row order (``writer(kind, chunk)``), or, with ``scattered``, at the rows they are for
    (``writer.put(kind, rows, chunk)``): then the file's row order is fixed by ``image``/``cls`` however the maps come."""

    def __init__(self, art: Artefact, image: Sequence[int], cls: Sequence[int], kinds: Sequence[str], map_size: int,
                 scattered: bool = False) -> None:
        self.art = art
        self.tmp: Path | None = None
        self.streams: dict[str, NpyStream] = {}
        try:
            art.path.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = Path(tempfile.mkdtemp(prefix=".records-", dir=art.path.parent))
            n = len(image)
            for k in kinds:
                self.streams[k] = (NpyRows if scattered else NpyStream)(self.tmp / f"{k}.npy", (n, map_size, map_size), np.float16)
            np.save(self.tmp / "image.npy", np.asarray(image, dtype=np.int32))
            np.save(self.tmp / "cls.npy", np.asarray(cls, dtype=np.int16))
        except OSError as e:  # disk full, permission...: the artefact being written is named, the scratch removed
            self.discard()
            raise WriteError(art.path, e) from None

    def __call__(self, kind: str, chunk: np.ndarray) -> None:
        try:
            self.streams[kind].write(chunk)
        except OSError as e:
            self.discard()
            raise WriteError(self.art.path, e) from None

    def put(self, kind: str, rows: Sequence[int], chunk: np.ndarray) -> None:
        """Write ``chunk`` at rows ``rows`` of ``kind`` (a ``scattered`` writer)."""
        try:
            self.streams[kind].put(rows, chunk)  # type: ignore[attr-defined] - NpyRows
        except OSError as e:
            self.discard()
            raise WriteError(self.art.path, e) from None

    def commit(self, **info) -> None:
        """Close the streams (each must be complete), pack them uncompressed into the artefact with
        :meth:`Artefact.save` (``info`` goes into its sidecar), and remove the scratch folder."""
        try:
            try:
                for s in self.streams.values():
                    s.close()
            except OSError as e:  # the last buffered bytes did not fit
                raise WriteError(self.art.path, e) from None
            names = ["image", "cls", *self.streams]

            def pack(p: Path) -> None:
                with zipfile.ZipFile(p, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                    for name in names:
                        zf.write(self.tmp / f"{name}.npy", arcname=f"{name}.npy")

            self.art.save(pack, **info)
        finally:
            self.discard()

    def discard(self) -> None:
        """Close the streams and remove the scratch folder, writing nothing (after an error, or after commit)."""
        for s in self.streams.values():
            if not s._f.closed:
                try:
                    s._f.close()
                except OSError:  # flushing the last bytes onto a full disk: the folder goes anyway
                    pass
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)


class RecordFile:
    """Read access to a record ``.npz``: "image" and "cls" in memory, map rows copied out on demand."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._members: dict[str, tuple[int, np.dtype, tuple[int, ...]]] = {}
        try:
            zf = zipfile.ZipFile(self.path)
        # A damaged directory can also claim a zip version zipfile does not read (NotImplementedError) or a name
        # that is not UTF-8 (UnicodeDecodeError, a ValueError): refused like any other damage.
        except (zipfile.BadZipFile, OSError, NotImplementedError, ValueError, EOFError) as e:
            raise ArtefactError(f"{self.path}: not a readable record file ({type(e).__name__}: {e})") from None
        size = self.path.stat().st_size
        with zf, open(self.path, "rb") as f:
            for info in zf.infolist():
                name = info.filename.removesuffix(".npy")
                if info.compress_type != zipfile.ZIP_STORED:
                    raise ArtefactError(f"{self.path}: member {name} is compressed; record files must be stored uncompressed")
                # zipfile shifts every offset by the gap it infers before the central directory: a damaged end
                # record can put a member before the file's start (seek would raise OSError) or past its end.
                if not 0 <= info.header_offset <= size - 30:
                    raise ArtefactError(f"{self.path}: member {name} starts outside the file")
                f.seek(info.header_offset)
                local = f.read(30)
                data = info.header_offset + 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")
                f.seek(data)
                try:
                    version = np.lib.format.read_magic(f)
                    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                    shape, fortran, dtype = read_header(f)
                except Exception as e:  # noqa: BLE001 - a damaged header raises ValueError, SyntaxError, TokenError...
                    raise ArtefactError(f"{self.path}: member {name} is not a valid .npy array "
                                        f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
                if fortran:
                    raise ArtefactError(f"{self.path}: member {name} is Fortran-ordered")
                check_dtype(self.path, name, dtype)
                end = f.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                if end > data + info.file_size or end > size:
                    raise ArtefactError(f"{self.path}: member {name} claims more data than the file holds")
                self._members[name] = (f.tell(), dtype, shape)
        self._check_shapes()
        self.image = self.rows("image")
        self.cls = self.rows("cls")

    def _check_shapes(self) -> None:
        """"image" and "cls" (n,), every map (n, S, S): a file that says otherwise is refused, not misread."""
        for name in ("image", "cls"):
            if name not in self._members or len(self._members[name][2]) != 1:
                raise ArtefactError(f"{self.path}: member {name!r} is missing or not one-dimensional")
        n = self._members["image"][2][0]
        for name, (_, _, shape) in self._members.items():
            if shape[:1] != (n,) or (name not in ("image", "cls") and len(shape) != 3):
                want = f"({n},)" if name in ("image", "cls") else f"({n}, S, S)"
                raise ArtefactError(f"{self.path}: member {name!r} has shape {shape}, expected {want}")

    def __getitem__(self, key: str) -> np.ndarray:
        """``"image"``, ``"cls"``, or a whole map array (prefer :meth:`rows`)."""
        return self.image if key == "image" else self.cls if key == "cls" else self.rows(key)

    def __contains__(self, kind: str) -> bool:
        return kind in self._members

    @property
    def kinds(self) -> list[str]:
        return [k for k in self._members if k not in ("image", "cls")]

    def checksum(self) -> str | None:
        """The file's SHA-256 as its artefact sidecar vouches for it (verified), or None for a file without one: the
        identity of its maps that stored scores are keyed by (issue 28: results keyed per row)."""
        try:
            return str(read_json(verify(self.path).with_name(self.path.name + ".meta.json"))["sha256"])
        except (ArtefactError, OSError, ValueError, KeyError, TypeError):
            return None

    def rows(self, kind: str, idx: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """A copy of ``kind``'s rows ``idx`` (all rows if None); the mapping is closed before returning."""
        offset, dtype, shape = self._members[kind]
        if shape[0] == 0:
            return np.zeros(shape, dtype)
        mm = np.memmap(self.path, dtype=dtype, mode="r", offset=offset, shape=shape)
        try:
            return np.array(mm if idx is None else mm[np.asarray(idx, dtype=np.int64)])
        finally:
            del mm


def record_rows(records, kind: str, idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` of ``kind`` from a :class:`RecordFile` (copied from disk) or an in-memory dict of arrays."""
    return records.rows(kind, idx) if isinstance(records, RecordFile) else np.asarray(records[kind])[idx]
