"""Every error type repcam raises, in one light module (no torch): catching one needs no heavy import, and no module
imports another only for its exception. Each is still importable from the module that raises it
(``from repcam.config import ConfigError`` keeps working).

All carry a one-line message that names the file, key or argument at fault and says what to change.
"""

from __future__ import annotations

import errno
from pathlib import Path

__all__ = [
    "ArtefactError", "BaselineError", "CAMError", "ConfigError", "DataError", "ExecutorError", "ExplainError",
    "FaithfulnessError", "FreezeError", "LayerError", "PaperTableError", "RunDirLocked", "RunError", "ScoreError",
    "StockError", "WeightsError", "WriteError",
]


def one_line(text: str) -> str:
    """``text`` with every unprintable character escaped as Python writes it (a newline as backslash-n): messages
    quote user-supplied keys, file names and values, and the one-line promise must hold whatever they contain."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class _OneLineError(ValueError):
    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(one_line(str(message)), *args)


class ConfigError(_OneLineError):
    """An invalid configuration: the message names the key and the file."""


class DataError(_OneLineError):
    """Bad input data: the message names the file or argument that is wrong."""


class ArtefactError(ValueError):
    """A stored file that cannot be loaded safely; the message names it and says how to recover."""


class RunDirLocked(RuntimeError):
    """Another process holds the run directory's lock; the message names it (pid, host, start time)."""


class RunError(RuntimeError):
    """A run that cannot proceed; the message says why and what to change."""


class ExecutorError(RuntimeError):
    """An executor that cannot start (e.g. Ray not installed, cluster unreachable)."""


class LayerError(ValueError):
    """A target layer that cannot be found or used."""


class CAMError(ValueError):
    """Bad input to the CAM engine (shapes, targets)."""


class WeightsError(FileNotFoundError):
    """Pretrained weights that cannot be found or do not fit the backbone."""


class FreezeError(ValueError):
    """A freeze point or feature cache that cannot be used; the message is one line and says what to change."""


class BaselineError(ValueError):
    """A backbone a baseline cannot be built on; the message says why."""


class ExplainError(ValueError):
    """An image, class or run directory that cannot be explained; the message names it."""


class StockError(ExplainError):
    """A model name, weights file, image, class or option that cannot be explained; the message names it."""


class ScoreError(ValueError):
    """A method name, model, data set or option that cannot be scored; the message names it."""


class FaithfulnessError(ValueError):
    """Inputs a metric cannot score (shapes, value ranges, a missing optional package); the message says which."""


class PaperTableError(ValueError):
    """A directory that is not a finished run, or a split it has no results for (a one-line message naming it)."""


class WriteError(OSError):
    """A file repcam could not write, in one line: which file and why (disk full, permission, name too long...).

    Raised for every OSError of a write (:func:`atomic_write`, :class:`Artefact`, the record writer): the file is
    never half-written (its temp file is removed, an older complete version stays), so after fixing the cause the
    same command resumes. ``errno`` and ``filename`` are those of the underlying error.
    """

    def __init__(self, path: str | Path, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause), str(path))
        self.message = f"cannot write {path}: {write_cause(cause)}; fix that and rerun the same command to resume (complete files are kept)"

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # picklable across executor processes: rebuilt from its one line
        return (_rebuilt_write_error, (self.errno, self.strerror, self.filename, self.message))


def _rebuilt_write_error(err: int | None, strerror: str | None, filename: str | None, message: str) -> WriteError:
    e = WriteError(filename or "?", OSError(err, strerror))
    e.message = message
    return e


# The causes a user can act on, in words; any other errno is named by its strerror and symbol.
_CAUSES = {
    errno.ENOSPC: "no space left on the device (disk full)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "the file system is read-only",
    errno.ENAMETOOLONG: "the file name is too long for the file system",
    errno.EFBIG: "the file is larger than this process may write (a file-size limit, e.g. ulimit -f)",
    errno.EIO: "input/output error (a failing disk or a lost network mount)",
    errno.ENOENT: "its folder does not exist (removed while the run was writing?)",
}


def write_cause(e: OSError) -> str:
    """The cause of a failed write in words, with the errno symbol (``no space left on the device (disk full), ENOSPC``)."""
    name = errno.errorcode.get(e.errno or 0)
    words = _CAUSES.get(e.errno, " ".join((e.strerror or str(e) or type(e).__name__).split()))
    return f"{words} ({name})" if name else words
