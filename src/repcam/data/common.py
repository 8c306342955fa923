"""Helpers shared by the VOC, COCO and folder loaders: class subsets, image and index-PNG mask reading, split
files, and the skip bookkeeping with ``report()`` and ``validate()`` (:class:`ReportMixin`)."""

from __future__ import annotations

import collections
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .base import IGNORE_INDEX, DataError, Sample, SegDataset
from .images import displayed_size, exif_orientation, orientation_text, read_image

NO_CHOSEN_CLASS = "no chosen class"


_NOT_TEXT = ("Cc", "Zl", "Zp")  # control characters (NUL, tab, newline, ESC, U+0085 NEL...) and line/paragraph separators


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a class name (it would split a line of a table or a file, or print invisibly), or None.

    Control characters and line separators are refused (Unicode categories Cc, Zl, Zp); any other character, emoji
    with their joiners included, is allowed (file names come from :class:`repcam.store.rundir.ClassFiles`).
    """
    bad = next((ch for ch in name if unicodedata.category(ch) in _NOT_TEXT), None)
    if bad is not None:
        return f"class name {name!r} contains the control character U+{ord(bad):04X}; class names must be printable text"
    return None


MAX_LISTED = 20  # problems spelled out in a one-line error; the rest are counted


def raise_problems(problems: list[str]) -> None:
    """One :class:`DataError` (one line) listing ``problems``, up to :data:`MAX_LISTED` of them; nothing if empty:
    a user fixes every problem of the data in one go, not one per attempt."""
    if not problems:
        return
    if len(problems) == 1:
        raise DataError(problems[0])
    shown = "; ".join(f"({k + 1}) {p}" for k, p in enumerate(problems[:MAX_LISTED]))
    more = f"; and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    raise DataError(f"{len(problems)} data problems found before training: {shown}{more}")


def split_lines(text: str) -> list[str]:
    """``text``'s lines, split on ``\n`` only (a ``\r`` before it dropped): not ``str.splitlines``, which also splits
    on U+0085, U+2028, form feeds and more, so that a character inside a name would shift every later line."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def select_classes(all_names: Sequence[str], classes: Sequence[str] | None, source: str) -> list[int]:
    """Indices (into ``all_names``) of the chosen classes, in the order given.

    Names match exactly, or case-insensitively when that is unambiguous. ``source`` names where the valid
    names come from (for the error message).
    """
    if classes is None:
        return list(range(len(all_names)))
    if isinstance(classes, (str, bytes)):
        raise DataError(f"classes must be a list of class names, got the string {classes!r}")
    exact = {n: i for i, n in enumerate(all_names)}
    lower: dict[str, list[int]] = collections.defaultdict(list)
    for i, n in enumerate(all_names):
        lower[n.lower()].append(i)
    chosen: list[int] = []
    unknown: list[str] = []
    for name in classes:
        key = str(name).strip()
        if key in exact:
            idx = exact[key]
        elif len(lower.get(key.lower(), [])) == 1:
            idx = lower[key.lower()][0]
        else:
            unknown.append(str(name))
            continue
        if idx in chosen:
            raise DataError(f"class {all_names[idx]!r} is given twice in classes")
        chosen.append(idx)
    if unknown:
        raise DataError(
            f"unknown class name(s) {', '.join(map(repr, unknown))} for {source}; "
            f"valid names: {', '.join(all_names)}"
        )
    if not chosen:
        raise DataError("classes is empty: choose at least one class")
    return chosen


def subset_lut(chosen: Sequence[int], n_all: int) -> np.ndarray:
    """uint8 lookup table from full-set mask values to subset mask values (255 stays 255, unchosen -> 0)."""
    lut = np.zeros(256, dtype=np.uint8)
    lut[IGNORE_INDEX] = IGNORE_INDEX
    for new, old in enumerate(chosen):
        lut[old + 1] = new + 1
    return lut


def load_rgb(path: Path, what: str = "image") -> Image.Image:
    """Open and fully decode an image as 8-bit RGB (16-bit and float images scaled, see :mod:`repcam.data.images`);
    any missing/corrupt/truncated file raises DataError naming it."""
    return read_image(path, what)


def image_size(path: Path, what: str = "image") -> tuple[int, int]:
    """(width, height) as displayed (EXIF orientation applied, as :func:`load_rgb` reads it), from the file header,
    without decoding the pixels."""
    if not path.is_file():
        raise DataError(f"{what} file not found: {path}")
    try:
        with Image.open(path) as im:
            return displayed_size(im)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read {what} {path}: {e}") from e


def read_index_png(path: Path, n_classes: int) -> np.ndarray:
    """Read an index mask (palette 'P' or grey 'L' PNG) as uint8 (H, W) and check its values.

    Valid values are 0..n_classes and 255; anything else raises DataError naming the file and the values.
    """
    if not path.is_file():
        raise DataError(f"mask file not found: {path}")
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in ("P", "L"):
                arr = np.array(im)
            elif mode in ("I", "I;16", "I;16B", "I;16L"):
                arr = np.array(im).astype(np.int64)
            else:
                raise DataError(
                    f"mask {path} has PIL mode {mode!r}; expected a palette ('P') or greyscale ('L') index PNG "
                    "whose pixel values are class indices (colour-coded RGB masks are not supported)"
                )
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot read mask {path}: {e}") from e
    if arr.ndim != 2:
        raise DataError(f"mask {path} has shape {arr.shape}; expected (H, W)")
    values = np.unique(arr) if arr.dtype != np.uint8 else np.flatnonzero(np.bincount(arr.ravel(), minlength=256))
    bad = [v for v in values if not (0 <= v <= n_classes or v == IGNORE_INDEX)]
    if bad:
        shown = ", ".join(str(int(v)) for v in bad[:10]) + (" ..." if len(bad) > 10 else "")
        raise DataError(
            f"mask {path} has values outside 0..{n_classes} and {IGNORE_INDEX}: {shown}"
        )
    return arr.astype(np.uint8, copy=False)


_MASK_VALUE_CACHE: dict[tuple[str, int, int, int], frozenset[int]] = {}


def mask_class_indices(path: Path, n_classes: int) -> frozenset[int]:
    """0-based class indices present in an index mask (values other than 0 and 255), cached per file."""
    try:
        st = path.stat()
    except OSError:
        raise DataError(f"mask file not found: {path}") from None
    key = (str(path), st.st_mtime_ns, st.st_size, n_classes)
    hit = _MASK_VALUE_CACHE.get(key)
    if hit is None:
        arr = read_index_png(path, n_classes)
        values = np.flatnonzero(np.bincount(arr.ravel(), minlength=256))
        hit = frozenset(int(v) - 1 for v in values if 0 < v <= n_classes)
        _MASK_VALUE_CACHE[key] = hit
    return hit


def read_id_list(path: Path, what: str = "split file") -> list[str]:
    """Ids of a split file (first token of each non-blank line), duplicates removed in order."""
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {what} {path}: {e}") from e
    ids = list(dict.fromkeys(line.split()[0] for line in text.splitlines() if line.strip()))
    if not ids:
        raise DataError(f"{what} is empty: {path}")
    return ids


class SkipLog:
    """Counts of skipped samples by reason, plus the (id, reason) list."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.items: list[tuple[str, str]] = []

    def add(self, sample_id: str, reason: str) -> None:
        """Record one skipped sample and its reason."""
        self.counts[reason] += 1
        self.items.append((sample_id, reason))

    def summary(self) -> str:
        """One line for a report: the total skipped and the count per reason, most common first."""
        if not self.counts:
            return "none skipped"
        total = sum(self.counts.values())
        parts = ", ".join(f"{r}: {n}" for r, n in self.counts.most_common())
        return f"{total} skipped ({parts})"


class ReportMixin(SegDataset):
    """Skip bookkeeping, ``report()`` and ``validate()`` shared by the loaders."""

    _skips: SkipLog
    _all_class_names: tuple[str, ...]
    _n_candidates: int
    _title: str

    def _keep_chosen(self, samples: list[Sample], sample_id: str, full: Iterable[int], old_to_new: Mapping[int, int]) -> None:
        """Append the sample with its labels among the chosen classes, or count it as skipped if it has none."""
        labels = frozenset(old_to_new[k] for k in full if k in old_to_new)
        if labels:
            samples.append(Sample(sample_id, labels))
        else:
            self._skips.add(sample_id, NO_CHOSEN_CLASS)

    @property
    def skipped(self) -> dict[str, int]:
        """Number of skipped samples per reason."""
        return dict(self._skips.counts)

    @property
    def skipped_ids(self) -> list[tuple[str, str]]:
        """(id, reason) of every skipped sample."""
        return list(self._skips.items)

    def class_counts(self) -> dict[str, int]:
        """Images per class (an image counts for every class it contains)."""
        counts = collections.Counter(c for s in self.samples for c in s.labels)
        return {name: counts.get(k, 0) for k, name in enumerate(self.class_names)}

    def report(self) -> str:
        """A human-readable summary: candidate and kept images, skips by reason, dropped classes, images per class."""
        lines = [f"{self._title}: {self._n_candidates} candidate images, {len(self.samples)} kept, "
                 f"{self._skips.summary()}"]
        dropped = [n for n in self._all_class_names if n not in self.class_names]
        if dropped:
            lines.append(f"classes: {len(self.class_names)} of {len(self._all_class_names)} "
                         f"(not chosen: {', '.join(dropped)})")
        counts = self.class_counts()
        lines.append("images per class: " + ", ".join(f"{n} {c}" for n, c in counts.items()))
        empty = [n for n, c in counts.items() if c == 0]
        if empty:
            lines.append(f"WARNING: no images for class(es): {', '.join(empty)}")
        lines.extend(self._extra_report())
        return "\n".join(lines)

    def _extra_report(self) -> list[str]:
        return []

    def validate(self, drop: bool = True) -> list[tuple[str, str]]:
        """Load every image and mask; return (id, error message) for each bad sample.

        With ``drop`` the bad samples are removed from ``samples`` and counted in ``skipped`` (reason
        "invalid image" or "invalid mask") instead of raising later.
        """
        bad: list[tuple[str, str]] = []
        keep: list[Sample] = []
        for i, s in enumerate(self.samples):
            for what, load in (("image", self.image), ("mask", self.mask)):
                try:
                    load(i)
                except DataError as e:
                    bad.append((s.id, str(e)))
                    if drop:
                        self._skips.add(s.id, f"invalid {what}")
                    break
            else:
                keep.append(s)
        if drop:
            self.samples = keep
        return bad


def check_mask_size(mask: np.ndarray, mask_path: Path | str, img_path: Path) -> None:
    """Raise DataError unless ``mask`` has the image's size (read from its header), naming both files."""
    w, h = image_size(img_path)
    if mask.shape != (h, w):
        raise DataError(
            f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} (WxH) but image {img_path} is {w}x{h}{exif_hint(img_path)}"
        )


def exif_hint(img_path: Path) -> str:
    """For a size mismatch: the image's EXIF orientation, if it has one, and what repcam does with it ('' if none)."""
    try:
        with Image.open(img_path) as im:
            orientation = exif_orientation(im)
            stored = im.size
    except (OSError, SyntaxError, ValueError):
        return ""
    if orientation == 1:
        return ""
    return (f" as displayed ({orientation_text(orientation)}; stored {stored[0]}x{stored[1]}): repcam applies the EXIF "
            "orientation as viewers do, so the mask must match the displayed picture (or remove the tag from the image)")
