"""Every error type repcam raises, in one light module (no torch): catching one needs no heavy import, and no module
imports another only for its exception. Each is still importable from the module that raises it
(``from repcam.config import ConfigError`` keeps working).

All carry a one-line message that names the file, key or argument at fault and says what to change.
"""

from __future__ import annotations

__all__ = [
    "ArtefactError", "BaselineError", "CAMError", "ConfigError", "DataError", "ExecutorError", "ExplainError",
    "FaithfulnessError", "FreezeError", "LayerError", "PaperTableError", "RunDirLocked", "RunError", "ScoreError",
    "StockError", "WeightsError",
]


class ConfigError(ValueError):
    """An invalid configuration: the message names the key and the file."""


class DataError(ValueError):
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
