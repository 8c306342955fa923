"""Images for the stock explainer: one image from a path, PIL image or array, and command-line specs (files, folders,
globs) expanded and checked before any model is loaded."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Sequence, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from repcam.data.base import DataError
from repcam.data.images import read_image, to_rgb8
from repcam.errors import StockError

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")



def load_image(image: ImageInput) -> np.ndarray:
    """A path, PIL image or array -> (H, W, 3) uint8 RGB array; a bad file is a one-line :class:`StockError`."""
    if isinstance(image, np.ndarray):
        a = image
        if a.ndim == 2:
            a = np.stack([a] * 3, -1)
        if a.ndim != 3 or a.shape[-1] not in (3, 4):
            raise StockError(f"an image array must be (H, W), (H, W, 3) or (H, W, 4), got shape {a.shape}")
        if a.dtype != np.uint8:
            if np.issubdtype(a.dtype, np.floating) and a.size and a.min() >= 0 and a.max() <= 1:
                a = a * 255.0  # float images in [0, 1], as skimage returns them
            a = np.clip(a, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(a[..., :3])
    # The one image reader (repcam.data.images): 16-bit and float images are scaled, not clipped to white.
    if isinstance(image, Image.Image):
        return np.asarray(to_rgb8(image))
    if not isinstance(image, (str, os.PathLike)):
        raise StockError(f"an image must be a path, a PIL image or an array, got {type(image).__name__}")
    path = Path(image)
    if not path.is_file():
        raise StockError(f"image {path} does not exist")
    try:
        return np.asarray(read_image(path, exif=True))
    except DataError as e:
        raise StockError(f"{path} is not an image PIL can read: {e}") from None


def expand_images(specs: Sequence[str | os.PathLike]) -> list[Path]:
    """Files, folders (their image files, sorted, not recursive) and glob patterns -> image paths, in order.

    Every path is checked here, before any model is loaded: a missing file, an empty folder or glob, or a file
    whose header PIL cannot read is a one-line :class:`StockError` naming it.
    """
    out: list[Path] = []
    for spec in specs:
        text = str(spec)
        p = Path(text)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise StockError(f"folder {p} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            out += found
        elif p.is_file():
            out.append(p)
        elif glob.has_magic(text):
            found = sorted(Path(q) for q in glob.glob(text) if Path(q).is_file())
            if not found:
                raise StockError(f"no file matches {text!r}")
            out += found
        else:
            raise StockError(f"image {p} does not exist")
    for p in out:
        try:
            with Image.open(p):  # reads the header only: cheap, and catches non-images before hours of work
                pass
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise StockError(f"{p} is not an image PIL can read: {e}") from None
    return out



def figure_stem(image: ImageInput, pixels: np.ndarray | None = None) -> str:
    """The file-name stem of an image's figures: ``<file stem>-<8 hex digits>`` for a file (a digest of its bytes), or
    ``image-<8 hex digits>`` (a digest of the pixels) for an array or PIL image. Two different images never share a
    stem, so their figures in one folder never overwrite each other; the same image saved again gets the same names."""
    import hashlib

    from repcam.store.storage import bounded_slug

    if isinstance(image, (str, os.PathLike)) and Path(image).is_file():
        digest = hashlib.sha1(Path(image).read_bytes()).hexdigest()[:8]
        return f"{bounded_slug(Path(image).stem)}-{digest}"
    a = np.ascontiguousarray(pixels if pixels is not None else load_image(image))
    digest = hashlib.sha1(str(a.shape).encode() + a.tobytes()).hexdigest()[:8]
    return f"image-{digest}"
