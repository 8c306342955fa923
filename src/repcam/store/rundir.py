"""What keeps a run directory consistent: one writer at a time (a lock), no leftover temp files, injective file
names for class names, and the key that says which settings made a split's results.

The lock is an ``fcntl.flock`` on ``RUN_DIR/.repcam.lock``: the kernel releases it when its process dies, so a
``kill -9`` can never leave a directory locked; the file's content (pid, host, start time) only names the holder
for the error message, and a leftover content from a dead process is reported as a stale lock taken over.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from repcam.store.storage import WriteError, config_key, slug
from repcam.errors import RunDirLocked  # noqa: F401 - defined in repcam.errors, importable from here

LOCK_NAME = ".repcam.lock"

# repcam's own temp names: atomic_write's ``.<name>.<8 random>.tmp`` and RecordWriter's ``.records-<8 random>``
# (tempfile's random part is 8 characters of [a-z0-9_]). Nothing else is ever removed.
_TEMP_FILE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
_TEMP_DIR = re.compile(r"^\.records-[a-z0-9_]{8}$")

# Stems used by other files in the same folders (maps/<split>/contrast__<selection>.npz): a class slug equal to one
# of them is treated as a collision, so a pair map can never take a contrast map's name.
_RESERVED = frozenset({"contrast", "multiclass"})


class _Held:
    def __init__(self, fd: int, path: Path) -> None:
        self.fd, self.path, self.depth = fd, path, 1


_held: dict[Path, _Held] = {}  # run directories this process holds (the lock is re-entrant within a process)


def _holder_text(info: dict[str, Any]) -> str:
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')} since {info.get('started', '?')}"


def _read_info(fd: int) -> dict[str, Any]:
    try:
        raw = os.pread(fd, 4096, 0)
        info = json.loads(raw.decode()) if raw.strip() else {}
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True  # exists but not ours, or unreadable: do not assume it is dead
    return True


def _acquire(run_dir: Path, note: Callable[[str], None]) -> _Held:
    path = run_dir / LOCK_NAME
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunDirLocked(f"cannot create the lock file {path}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            info = _read_info(fd)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunDirLocked(f"cannot lock {path}: {e.strerror or e}") from None
            raise RunDirLocked(f"run directory {run_dir} is in use by another repcam process ({_holder_text(info)}); "
                               f"wait for it to finish or use another run directory") from None
        # The holder we waited on may have removed the file after we opened it: lock the file that is there now.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    old = _read_info(fd)
    if old:
        # Holding the flock means the old holder is gone (the kernel drops it with its process); on another host,
        # where flock may not reach, only a dead pid proves it.
        if old.get("host") not in (None, socket.gethostname()):
            os.close(fd)
            raise RunDirLocked(f"run directory {run_dir} holds a lock of another host ({_holder_text(old)}); "
                               f"if no repcam process there uses it, delete {path}")
        if _pid_alive(old.get("pid")) and old.get("pid") != os.getpid():
            note(f"took over the lock of {run_dir} left by {_holder_text(old)} (it no longer holds it; pid reused)")
        else:
            note(f"took over the stale lock of {run_dir} left by {_holder_text(old)} (process no longer running)")
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        os.fsync(fd)
    except OSError as e:  # a full disk fails here first: say so in one line, leave nothing locked
        os.close(fd)
        raise WriteError(path, e) from None
    return _Held(fd, path)


@contextmanager
def locked(run_dir: str | Path, note: Callable[[str], None] = lambda msg: None) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the block (re-entrant within a process); on first acquisition, remove the temp
    files a killed run left behind. Raises :class:`RunDirLocked` at once if another process holds it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    key = run_dir.resolve()
    if key in _held:
        _held[key].depth += 1
        try:
            yield
        finally:
            _held[key].depth -= 1
        return
    held = _acquire(run_dir, note)
    _held[key] = held
    try:
        removed = remove_stale_temp(run_dir)
        if removed:
            note(f"removed {removed} temp file(s) left in {run_dir} by an interrupted run")
        yield
    finally:
        del _held[key]
        # Unlink before unlocking: a process that opened the old file re-checks the path after locking (see _acquire).
        held.path.unlink(missing_ok=True)
        os.close(held.fd)


def remove_stale_temp(run_dir: Path) -> int:
    """Delete repcam's own temp files and record scratch folders under ``run_dir`` (call only with its lock held);
    folders with their own lock file (the seed runs of ``--seeds``) are left to their own runs. Returns the count."""
    removed = 0
    for root, dirs, files in os.walk(run_dir):
        if Path(root) != run_dir and LOCK_NAME in files:
            dirs[:] = []
            continue
        for name in files:
            if _TEMP_FILE.match(name):
                (Path(root) / name).unlink(missing_ok=True)
                removed += 1
        for name in list(dirs):
            if _TEMP_DIR.match(name):
                shutil.rmtree(Path(root) / name, ignore_errors=True)
                dirs.remove(name)
                removed += 1
    return removed


# ---------------------------------------------------------------------------------------------------- file names


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]


STEM_BYTES = 100
"""The longest class stem, in UTF-8 bytes: the longest name derived from a pair (``grid__pair__<a>__<b>-<8 hex>.npz
.meta.json``) is then 237 bytes, under the 255 most file systems allow; shorter names keep their plain slug."""


def _hashed(stem: str, name: str) -> str:
    """``<stem>-<8 hex of sha256(name)>``, ``stem`` cut (on a character boundary) so that it fits :data:`STEM_BYTES`."""
    tail = f"-{_short_hash(name)}"
    while len((stem + tail).encode("utf-8", "surrogatepass")) > STEM_BYTES:
        stem = stem[:-1]
    return stem + tail


class ClassFiles:
    """The one mapping from a run's class names to file-name stems, injective within the run.

    A class keeps its plain :func:`~repcam.store.storage.slug` (the names runs always had, so existing run directories
    resume unchanged) unless that slug, compared case-insensitively (macOS and Windows file systems), is shared with
    another class of the run, is reserved, or is longer than :data:`STEM_BYTES`; then it gets
    ``<slug, cut to fit>-<8 hex of sha256(name)>``. Pair stems join two class stems with ``__``; if a class stem
    itself contains ``__`` and two pairs would meet, those pairs get a hash.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        if len(set(self.names)) != len(self.names):
            dup = next(n for n in self.names if self.names.count(n) > 1)
            raise ValueError(f"class name {dup!r} appears twice")
        slugs = [slug(n) for n in self.names]
        folded = [s.lower() for s in slugs]
        self._stem = {n: (_hashed(s, n) if folded.count(s.lower()) > 1 or s.lower() in _RESERVED
                          or len(s.encode("utf-8", "surrogatepass")) > STEM_BYTES else s)
                      for n, s in zip(self.names, slugs)}
        stems = [v.lower() for v in self._stem.values()]
        if len(set(stems)) != len(stems):  # a hashed stem equal to another class's plain slug: never in practice
            a, b = (n for n in self.names if stems.count(self._stem[n].lower()) > 1)
            raise ValueError(f"classes {a!r} and {b!r} cannot be given distinct file names; rename one of them")
        self._pair_override: dict[tuple[str, str], str] = {}
        if any("__" in s for s in self._stem.values()):
            seen: dict[str, tuple[str, str]] = {}
            for i, a in enumerate(self.names):
                for b in self.names[i + 1:]:
                    plain = f"{self._stem[a]}__{self._stem[b]}".lower()
                    if plain in seen:
                        self._pair_override[(a, b)] = f"{self._stem[a]}__{self._stem[b]}-{_short_hash(a + chr(0) + b)}"
                    else:
                        seen[plain] = (a, b)

    def stem(self, name: str) -> str:
        """The file-name stem of class ``name``."""
        return self._stem[name]

    def pair(self, a: str, b: str) -> str:
        """The stem of the pair model (and its maps) of classes ``a`` and ``b``, in the run's class order."""
        if self.names.index(a) > self.names.index(b):
            a, b = b, a
        return self._pair_override.get((a, b), f"{self._stem[a]}__{self._stem[b]}")


# ---------------------------------------------------------------------------------------------------- results key


def _split_view(config: dict[str, Any], split: str) -> dict[str, Any]:
    """The config as it bears on ``split``'s results: without the run's name, device, execution (its thread count
    and memory format move only the rounding; environment.json records them), which other splits are evaluated and
    their ``data.eval_options`` or ``cross_eval`` entries."""
    relevant = {k: v for k, v in config.items() if k not in ("name", "device", "execution")}
    data = dict(relevant.get("data") or {})
    data.pop("eval_splits", None)
    if isinstance(data.get("eval_options"), dict):
        data["eval_options"] = {k: v for k, v in data["eval_options"].items() if k == split}
    relevant["data"] = data
    if relevant.get("cross_eval"):  # only this split's other data set, if it is one
        cross = {k: v for k, v in relevant["cross_eval"].items() if k == split}
        if cross:
            relevant["cross_eval"] = cross
        else:
            del relevant["cross_eval"]
    return relevant


def results_key(config: dict[str, Any], split: str) -> str:
    """The key of the settings that made ``results/<split>/`` from a config as written to ``config.yaml``.

    Leaves out what cannot change a split's numbers beyond float rounding (:func:`_split_view`), so adding an
    evaluation split never invalidates another's results; a run with options for this split only keeps the key it
    had before options of other splits were left out.
    """
    return config_key({"split": split, "config": _split_view(config, split)})


def scoring_key(config: dict[str, Any], split: str) -> str:
    """The key of what decides how a stored map is scored on ``split``: the data section and seed (which images and
    masks), the other data set of ``cross_eval``, the threshold and the protocol. Every row group's key contains it
    (:func:`repcam.evaluation.evaluate.row_group_keys`); what decides the maps themselves is in their files' checksums."""
    view = _split_view(config, split)
    ev = view.get("evaluation") or {}
    return config_key({"split": split, "data": view.get("data"), "seed": view.get("seed"), "cross_eval": view.get("cross_eval"),
                       "threshold": ev.get("threshold"), "protocol": ev.get("protocol")})


def stale_reason(config: dict[str, Any] | None, split: str, ablation: dict[str, Any]) -> str | None:
    """Why ``results/<split>/`` (its ``ablation.json`` content) is not the current config's, or None if it is.

    Results from before the key was recorded count as current when their split is still evaluated.
    """
    if not config:
        return None
    splits = [str(s) for s in ((config.get("data") or {}).get("eval_splits") or [])]
    if split not in splits:
        return f"split {split!r} is not in this config's data.eval_splits ({', '.join(splits)})"
    key = ablation.get("settings_key")
    if key is not None and key != results_key(config, split):
        return "made with other settings than the current config.yaml (an earlier run's)"
    return None
