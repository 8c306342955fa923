"""Fixtures for the data loader tests: tiny data sets written into tmp_path, and the real VOCdevkit-mini."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# tests/data/conftest.py -> parents[0] tests/data, [1] tests, [2] the repository, [3] its parent (holds shared/)
VOC_MINI = Path(__file__).resolve().parents[3] / "shared" / "data" / "VOCdevkit-mini"


def voc_palette() -> list[int]:
    """The standard 256-colour PASCAL VOC palette (flat RGB list)."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


class Kit:
    """Helpers that write tiny images, masks and VOC layouts."""

    palette = voc_palette()

    @staticmethod
    def write_mask(path: Path, arr: np.ndarray, mode: str = "P") -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        im = Image.fromarray(np.asarray(arr, dtype=np.uint8), mode="L")
        if mode == "P":
            im = im.convert("P")  # keeps the indices
            im.putpalette(Kit.palette)
        elif mode == "RGB":
            im = im.convert("RGB")
        im.save(path)
        return path

    @staticmethod
    def write_image(path: Path, w: int, h: int, seed: int = 0) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, quality=95)
        return path

    @staticmethod
    def truncate(path: Path, keep: float = 0.5) -> Path:
        data = path.read_bytes()
        path.write_bytes(data[: max(10, int(len(data) * keep))])
        return path

    @staticmethod
    def mask_12x10(*regions: tuple[int, int, int, int, int], border: bool = False) -> np.ndarray:
        """A 10 (H) x 12 (W) mask with rectangles (value, y0, y1, x0, x1); optional 255 border on the first."""
        m = np.zeros((10, 12), dtype=np.uint8)
        for v, y0, y1, x0, x1 in regions:
            m[y0:y1, x0:x1] = v
        if border and regions:
            _, y0, y1, x0, x1 = regions[0]
            m[max(y0 - 1, 0), x0:x1] = 255
        return m

    @staticmethod
    def make_voc(
        root: Path,
        masks: dict[str, np.ndarray],
        splits: dict[str, list[str]],
        aug_masks: dict[str, np.ndarray] | None = None,
        xml: dict[str, list[tuple[str, int]]] | None = None,
        manifest: dict[str, int] | None = None,
        mask_mode: str = "P",
    ) -> Path:
        """Write root/VOC2012/... ; ``masks`` ids also get a 12x10 (or mask-sized) JPEG. Returns root."""
        voc = root / "VOC2012"
        for n, (i, m) in enumerate(masks.items()):
            Kit.write_mask(voc / "SegmentationClass" / f"{i}.png", m, mask_mode)
            Kit.write_image(voc / "JPEGImages" / f"{i}.jpg", m.shape[1], m.shape[0], seed=n)
        for n, (i, m) in enumerate((aug_masks or {}).items()):
            Kit.write_mask(voc / "SegmentationClassAug" / f"{i}.png", m, mask_mode)
            if not (voc / "JPEGImages" / f"{i}.jpg").exists():
                Kit.write_image(voc / "JPEGImages" / f"{i}.jpg", m.shape[1], m.shape[0], seed=100 + n)
        (voc / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
        for s, ids in splits.items():
            (voc / "ImageSets" / "Segmentation" / f"{s}.txt").write_text("".join(f"{i}\n" for i in ids))
        for i, objs in (xml or {}).items():
            (voc / "Annotations").mkdir(parents=True, exist_ok=True)
            body = "".join(
                f"<object><name>{name}</name><difficult>{d}</difficult></object>" for name, d in objs
            )
            xml_text = f"<annotation><filename>{i}.jpg</filename>{body}</annotation>"
            (voc / "Annotations" / f"{i}.xml").write_text(xml_text)
        if manifest is not None:
            rows = "".join(f"{i},train,{v},0,\n" for i, v in manifest.items())
            header = "id,split,original_voc_mask,image_resampled_from_640x480,classes\n"
            (root / "manifest.csv").write_text(header + rows)
        return root


@pytest.fixture
def kit() -> type[Kit]:
    return Kit


@pytest.fixture(scope="session")
def voc_mini() -> Path:
    if not (VOC_MINI / "VOC2012" / "ImageSets" / "Segmentation" / "train.txt").is_file():
        pytest.skip(f"real VOC subset not found at {VOC_MINI} (only present in the development workspace)")
    return VOC_MINI


@pytest.fixture(scope="session")
def voc_mini_optional() -> Path | None:
    """The real VOC subset, or None where it is absent (for tests with a synthetic fallback)."""
    return VOC_MINI if (VOC_MINI / "manifest.csv").is_file() else None
