"""The one image reader of repcam: every loader and ``repcam explain`` read pixels through :func:`read_image`.

Any PIL mode becomes 8-bit RGB by scaling, never by clipping (``Image.convert("RGB")`` clips 16-bit and float
images to white):

- ``I;16`` / ``I;16L`` / ``I;16B`` / ``I;16N`` (16-bit grey): divided by 257, so 65535 -> 255 and an 8-bit
  image widened by ``x * 257`` comes back exactly;
- ``I`` (32-bit int): values within 0..65535 are 16-bit samples (how PIL and most tools store 16-bit data in
  ``I``) and are divided by 257; any wider range is min-max scaled to 0..255;
- ``F`` (32-bit float): values within [0, 1] are multiplied by 255; any other range is min-max scaled; NaN and
  infinities become the minimum (black);
- transparency (``RGBA``, ``LA``, ``PA``, ``La``, ``RGBa``, palette images with a transparent colour) is
  composited over white, as a viewer shows it (the colour under a transparent pixel is arbitrary);
- ``CMYK``, ``YCbCr``, palette, ``1``, ``L`` go through PIL's own conversions.

PIL's decompression-bomb guard (``Image.MAX_IMAGE_PIXELS``) is left on; every PIL failure (missing, truncated or
unidentified file, a bomb, an unsupported mode) is a one-line :class:`DataError` naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .base import DataError

DISPLAY_SIDE = 1024
"""Longest side of an image drawn in a figure: a figure never needs more pixels, and an 8000 x 8000 photo drawn
at full size costs gigabytes."""

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA = ("RGBA", "LA", "PA", "La", "RGBa")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _grey8(a: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(a, dtype=np.uint8)).convert("RGB")  # 2-D uint8: mode L


def _minmax8(a: np.ndarray) -> np.ndarray:
    """Min-max scaling of the finite values to 0..255; non-finite values become 0, a constant image 0."""
    a = a.astype(np.float64)
    finite = np.isfinite(a)
    if not finite.any():
        return np.zeros(a.shape, np.uint8)
    lo, hi = float(a[finite].min()), float(a[finite].max())
    a = np.where(finite, a, lo)
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.rint((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def to_rgb8(image: Image.Image) -> Image.Image:
    """``image`` in any PIL mode as RGB with 8 bits per channel, scaled as the module docstring says (the same
    object when it is already RGB: a photo's pixels are not copied)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT:
        a = np.asarray(image).astype(np.uint32)
        return _grey8((a + 128) // 257)  # round(x / 257): the exact inverse of 8 -> 16-bit widening (x * 257)
    if mode == "I":
        a = np.asarray(image, dtype=np.int64)
        if a.size and a.min() >= 0 and a.max() <= 65535:
            return _grey8((a + 128) // 257)
        return _grey8(_minmax8(a))
    if mode == "F":
        a = np.asarray(image, dtype=np.float64)
        finite = np.isfinite(a)
        if finite.all() and a.size and a.min() >= 0.0 and a.max() <= 1.0:
            return _grey8(np.rint(a * 255.0))
        return _grey8(_minmax8(a))
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in _ALPHA:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError as e:  # e.g. LAB, HSV in some PIL versions: no conversion to RGB
        raise DataError(f"PIL mode {mode!r} cannot be converted to RGB ({_one_line(e)})") from None


ORIENTATION_TAG = 0x0112
_TURNS = {2: "mirrored", 3: "rotated 180°", 4: "flipped", 5: "mirrored and rotated 90°", 6: "rotated 90°",
          7: "mirrored and rotated 270°", 8: "rotated 270°"}


def exif_orientation(im: Image.Image) -> int:
    """The EXIF Orientation tag of an opened image (1, upright, when absent or unreadable)."""
    try:
        value = int(im.getexif().get(ORIENTATION_TAG, 1))
    except (TypeError, ValueError, OSError, SyntaxError):
        return 1
    return value if value in _TURNS else 1


def orientation_text(orientation: int) -> str:
    """``EXIF Orientation=6 (rotated 90°)``: how an error names the tag."""
    return f"EXIF Orientation={orientation} ({_TURNS.get(orientation, 'upright')})"


def displayed_size(im: Image.Image) -> tuple[int, int]:
    """(width, height) of an opened image as viewers show it: width and height swapped for a 90° EXIF turn."""
    w, h = im.size
    return (h, w) if exif_orientation(im) in (5, 6, 7, 8) else (w, h)


def read_image(path: str | Path, what: str = "image", *, exif: bool = True) -> Image.Image:
    """Open, fully decode and convert ``path`` to 8-bit RGB (:func:`to_rgb8`), turned as its EXIF orientation says.

    One rule for all of repcam (data set loaders, ``repcam score``, ``repcam explain``): an image is what a photo
    viewer shows, so a mask drawn on the displayed picture is aligned with it, and every command sees the same
    picture. Masks (PNG, usually without the tag) are read as stored; the size checks compare with the displayed
    size and name the tag when it is the cause of a mismatch. ``exif=False`` (the stored pixels) is for tests.
    Raises :class:`DataError` (one line, naming ``what`` and the file) for anything PIL cannot read.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} file not found: {path}")
    im = out = None
    try:
        im = Image.open(path)
        im.load()  # decode now: a truncated file fails here, inside this try
        # exif_transpose copies even an upright image; call it only when the tag asks for a turn or flip.
        turn = exif and exif_orientation(im) != 1
        out = to_rgb8(ImageOps.exif_transpose(im) if turn else im)
        if out is im and im.fp is not None:  # a file still open (multi-frame): keep a copy, close the file
            out = im.copy()
        return out
    except DataError as e:
        raise DataError(f"cannot read {what} {path}: {e}") from None
    except Image.DecompressionBombError as e:
        raise DataError(f"{what} {path} is too large to read safely ({_one_line(e)}); "
                        "downscale it first (PIL's Image.MAX_IMAGE_PIXELS limit stays on in repcam)") from None
    except UnidentifiedImageError as e:
        raise DataError(f"{what} {path} is not an image PIL can read ({_one_line(e)})") from None
    except (OSError, SyntaxError, ValueError, TypeError, MemoryError) as e:
        raise DataError(f"cannot read {what} {path}: {_one_line(e)}") from None
    finally:
        # The opened image is returned as is only when it is already RGB and its file is closed (no pixel copy).
        if im is not None and out is not im:
            im.close()


def display_size(size: tuple[int, int], max_side: int = DISPLAY_SIDE) -> tuple[int, int]:
    """``(width, height)`` scaled down, aspect kept, so that the longest side is at most ``max_side``."""
    w, h = size
    if max(w, h) <= max_side:
        return w, h
    s = max_side / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


def for_display(image: Any, max_side: int = DISPLAY_SIDE) -> Any:
    """``image`` (PIL image or (H, W[, C]) array) downscaled so its longest side is at most ``max_side``;
    returned unchanged (same object) when it already fits. Arrays keep their dtype."""
    if isinstance(image, Image.Image):
        size = display_size(image.size, max_side)
        # reducing_gap: a fast box reduction first, then the (antialiased) bicubic filter on a small image.
        return image if size == image.size else image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)
    a = np.asarray(image)
    if a.ndim not in (2, 3):
        return image
    if a.ndim == 3 and a.shape[-1] not in (3, 4) and a.shape[0] in (3, 4):  # (C, H, W) tensor layout
        a = np.moveaxis(a, 0, -1)
    h, w = a.shape[:2]
    size = display_size((w, h), max_side)
    if size == (w, h):
        return image
    if a.dtype == np.uint8:
        return np.asarray(Image.fromarray(np.ascontiguousarray(a)).resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0))
    # Any other dtype: one float32 channel at a time (PIL mode "F" keeps the values).
    chans = [a] if a.ndim == 2 else [a[..., k] for k in range(a.shape[-1])]
    out = [np.asarray(Image.fromarray(np.ascontiguousarray(c, dtype=np.float32)).resize(size, Image.Resampling.BILINEAR))
           for c in chans]
    return (out[0] if a.ndim == 2 else np.stack(out, -1)).astype(a.dtype)
