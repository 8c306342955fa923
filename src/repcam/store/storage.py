"""Atomic, verifiable artefacts: a run directory never holds a half-written file, and a damaged one is detected."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from repcam.errors import ArtefactError, WriteError, write_cause  # noqa: F401 - defined in repcam.errors, importable from here
from repcam.store.dtypes import check_dtype  # the allow-list of what repcam writes


def load_error_message(error: Exception) -> str:
    """One line for why ``torch.load(..., weights_only=True)`` failed (torch's own refusal message spans many lines)."""
    if isinstance(error, pickle.UnpicklingError):
        return "refused by torch.load(weights_only=True): it holds objects other than tensors (unpickling it could run code)"
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


# Longest file name (bytes) most file systems take is 255; a temp name adds a dot, 8 random characters and ".tmp".
_TEMP_NAME_BYTES = 120


def temp_prefix(path: Path) -> str:
    """The prefix of :func:`atomic_write`'s temp files for ``path``: ``.<name>.``, the name cut to a bounded length
    (on a character boundary) so that a temp file name fits wherever ``path``'s own name does."""
    name = path.name
    while len(name.encode("utf-8", "surrogatepass")) > _TEMP_NAME_BYTES:
        name = name[:-1]
    return f".{name}."


_UMASK_LOCK = threading.Lock()


def file_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file under the process's current umask (0o644 under 022,
    0o600 under 077): repcam's files are as readable by colleagues as any file the user writes, no more, no less."""
    with _UMASK_LOCK:  # os.umask can only be read by setting it: set and restore under a lock
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write via ``write(tmp)`` into a temp file in the same folder, fsync, then rename over ``path``; any OSError on
    the way (disk full, permission, name too long) is a one-line :class:`WriteError` naming ``path``, and no temp
    file stays behind."""
    path = Path(path)
    tmp_path: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=".tmp")
        tmp_path = Path(tmp)
        try:  # mkstemp creates 0600; the renamed file gets the mode a plain open() would (0644 under umask 022)
            os.fchmod(fd, file_mode())
        finally:
            os.close(fd)
        write(tmp_path)
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except WriteError:
        raise
    except OSError as e:
        raise WriteError(path, e) from None
    finally:
        if tmp_path is not None:
            try:
                tmp_path.unlink(missing_ok=True)
            except OSError:  # a folder that became unreadable: the next run's lock removes the temp file
                pass


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`atomic_write`)."""
    atomic_write(path, lambda p: p.write_text(text))


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` to ``path`` atomically as indented JSON (numpy scalars and arrays as numbers and lists)."""
    write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def write_json_mapping(path: Path, items: Iterable[tuple[str, Callable[[], Any]]]) -> None:
    """A JSON object written one member at a time (each value built by its callable just before it is written),
    so a large mapping never exists in memory as a whole."""

    def write(p: Path) -> None:
        with open(p, "w") as f:
            f.write("{")
            for n, (key, make) in enumerate(items):
                f.write(("," if n else "") + "\n" + json.dumps(key) + ": " + json.dumps(make(), default=_json_default))
            f.write("\n}\n")

    atomic_write(path, write)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"cannot serialise {type(o).__name__}")


def read_json(path: Path) -> Any:
    """The parsed JSON of ``path`` (no checksum check: see :func:`verify`)."""
    return json.loads(path.read_text())


def slug(name: str) -> str:
    """A file-name-safe form of a class or split name (used for artefact paths): letters, digits, ``-_.`` kept, any
    other character ``_``; never empty and never starting with a dot (``.`` and ``..`` are folders, and a hidden
    name could pass for one of repcam's temp files, which a rerun removes). Not injective and not bounded: file names
    of classes come from :class:`repcam.store.rundir.ClassFiles`, which is both."""
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    if keep.startswith("."):
        keep = "_" + keep[1:]
    return keep or "_"


def bounded_slug(name: str, max_bytes: int = 100) -> str:
    """:func:`slug` of ``name``, at most ``max_bytes`` UTF-8 bytes: a longer one is cut (on a character boundary) and
    ends in ``-<8 hex of sha256(name)>``, so different long names stay different (for image stems in figure names;
    class names use :class:`repcam.store.rundir.ClassFiles`)."""
    s = slug(name)
    if len(s.encode("utf-8", "surrogatepass")) <= max_bytes:
        return s
    tail = "-" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    while len((s + tail).encode("utf-8", "surrogatepass")) > max_bytes:
        s = s[:-1]
    return s + tail


def sha256(path: Path) -> str:
    """The hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def config_key(obj: Any) -> str:
    """A short stable hash of the settings an artefact depends on."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_writable(folder: Path) -> None:
    """Prove a file can be written in ``folder`` (or, if it does not exist yet, in its nearest existing parent,
    where it would be created), creating nothing that stays: a read-only run directory fails here, before any work,
    with the OSError naming the path."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".write-test.", suffix=".tmp")
    os.close(fd)
    os.unlink(tmp)


_verified: dict[Path, tuple[int, int, int]] = {}  # path -> (inode, size, mtime_ns) at its last successful check


def _stamp(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def _remember(path: Path) -> None:
    _verified[path] = _stamp(path)


def verify(path: Path) -> Path:
    """``path`` if its ``.meta.json`` sidecar exists and holds its SHA-256, else :class:`ArtefactError`.

    Readers of run-directory artefacts call this before trusting a file (a run directory may come from someone
    else); a file checked once is not hashed again while its inode, size and mtime are unchanged.
    """
    path = Path(path)
    try:
        stamp = _stamp(path)
    except OSError as e:
        raise ArtefactError(f"{path}: cannot read it ({e.strerror or e})") from None
    if _verified.get(path) == stamp:
        return path
    meta_path = path.with_name(path.name + ".meta.json")
    try:
        meta = read_json(meta_path)
    except (OSError, ValueError) as e:
        raise ArtefactError(f"{path}: its checksum sidecar {meta_path.name} is missing or unreadable ({type(e).__name__}); "
                            "rerun `repcam run` on this directory to recompute it") from None
    if not isinstance(meta, dict) or meta.get("sha256") != sha256(path):
        raise ArtefactError(f"{path}: checksum does not match {meta_path.name} (damaged or replaced file); "
                            "rerun `repcam run` on this directory to recompute it")
    _verified[path] = stamp
    return path


class _KeepsWriteError:
    """A binary file for ``torch.save`` that remembers the first OSError of a write: torch's zip writer swallows it
    and reports only "RuntimeError: [enforce fail at inline_container.cc] unexpected pos", which says nothing of a
    full disk."""

    def __init__(self, f: Any) -> None:
        self.f, self.error = f, None

    def write(self, data: Any) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        self.f.flush()


def _torch_save(obj: Any, path: Path) -> None:
    """``torch.save(obj, path)``, a failed write raised as the OSError that caused it."""
    import torch  # lazy: a config check or a report needs this module, not torch (seconds to import)

    with open(path, "wb") as f:
        out = _KeepsWriteError(f)
        try:
            torch.save(obj, out)
        except RuntimeError:
            if out.error is not None:
                raise out.error from None
            raise
        if out.error is not None:  # swallowed without a RuntimeError: the file is incomplete all the same
            raise out.error


class Artefact:
    """A data file plus a ``.meta.json`` sidecar holding its key and checksum; the sidecar is written last,
    so an artefact is complete exactly when its sidecar exists, matches the key and the file's checksum."""

    def __init__(self, path: Path, key: str) -> None:
        self.path = Path(path)
        self.key = key
        self.meta_path = self.path.with_name(self.path.name + ".meta.json")

    def done(self) -> bool:
        """Whether the artefact is complete and current: file and sidecar exist, and the sidecar holds this key and the
        file's checksum."""
        if not (self.path.is_file() and self.meta_path.is_file()):
            return False
        try:
            meta = read_json(self.meta_path)
        except (OSError, json.JSONDecodeError):
            return False
        if meta.get("key") != self.key:
            return False
        try:
            verify(self.path)  # hashes through verify's cache, so the load that usually follows does not hash again
        except ArtefactError:
            return False
        return True

    def meta(self) -> dict[str, Any]:
        """The sidecar's contents: key, sha256 and whatever ``info`` :meth:`save` was given."""
        return read_json(self.meta_path)

    def save(self, write: Callable[[Path], None], **info: Any) -> None:
        """Write the file atomically through ``write(tmp_path)``, then the sidecar (key, checksum, ``info``); the old
        sidecar goes first, so it never vouches for a new file."""
        self.meta_path.unlink(missing_ok=True)  # a stale sidecar must never vouch for a new file
        atomic_write(self.path, write)
        write_json(self.meta_path, {"key": self.key, "sha256": sha256(self.path), **info})
        _remember(self.path)  # just hashed: a load in the same process need not hash it again

    def save_torch(self, obj: Any, **info: Any) -> None:
        """Save ``obj`` with ``torch.save`` (see :meth:`save`)."""
        self.save(lambda p: _torch_save(obj, p), **info)

    def load_torch(self) -> Any:
        """The file through ``torch.load(weights_only=True)`` onto the CPU, its checksum verified first (as
        :meth:`load_npz`: a model file replaced after :meth:`done` was asked is caught); ArtefactError if it does not
        match or cannot be loaded."""
        import torch  # lazy, as in _torch_save

        path = verify(self.path)
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - a crafted or damaged file whose sidecar still matches: the file's problem
            raise ArtefactError(f"cannot load {self.path}: {load_error_message(e)}; delete it and its .meta.json "
                                "to compute it again") from None

    def save_npz(self, arrays: dict[str, np.ndarray], **info: Any) -> None:
        """Save ``arrays`` as an uncompressed ``.npz`` (see :meth:`save`)."""
        def write(p: Path) -> None:
            with open(p, "wb") as f:
                np.savez(f, **arrays)

        self.save(write, **info)

    def load_npz(self) -> dict[str, np.ndarray]:
        """The arrays of the ``.npz``, its checksum verified first and every dtype one repcam writes (no pickles)."""
        with np.load(verify(self.path), allow_pickle=False) as z:
            out = {}
            for k in z.files:
                arr = z[k]
                check_dtype(self.path, k, arr.dtype)
                out[k] = arr
            return out
