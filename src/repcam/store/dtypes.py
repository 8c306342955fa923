"""The allow-list of array dtypes repcam writes into ``.npz`` files, checked by every reader (records and artefacts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from repcam.errors import ArtefactError

# The dtypes repcam writes, per member (older runs: the wider integer and float32 forms). Anything else, above all
# ``object`` (memory-mapped, its bytes would become object pointers), is refused before a byte is mapped.
_ALLOWED = {"image": ("int32", "int64"), "cls": ("int16", "int32", "int64")}
_MAP_DTYPES = ("float16", "float32")


def check_dtype(path: Path, name: str, dtype: np.dtype) -> None:
    """Raise :class:`ArtefactError` unless ``dtype`` is one repcam writes for member ``name`` of a record file."""
    allowed = _ALLOWED.get(name, _MAP_DTYPES)
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None or dtype not in [np.dtype(a) for a in allowed]:
        raise ArtefactError(f"{path}: member {name!r} has dtype {dtype}, not one repcam writes ({', '.join(allowed)}); "
                            "the file is damaged or not repcam's")
