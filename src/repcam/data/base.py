"""The one interface every data set implements: images, image-level labels and segmentation masks."""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np
from PIL import Image

from repcam.errors import DataError  # noqa: F401 - defined in repcam.errors, importable from here

IGNORE_INDEX = 255
"""Mask value that is ignored by every metric (VOC's object borders, COCO crowd regions)."""


@dataclass(frozen=True)
class Sample:
    """One image: its id and the indices (0-based, into ``class_names``) of the classes it contains."""

    id: str
    labels: frozenset[int]


class SegDataset(abc.ABC):
    """A split of a segmentation data set.

    Masks use the VOC convention: 0 is background, ``k + 1`` is class ``k`` of ``class_names``,
    ``IGNORE_INDEX`` (255) is ignored. Pixels of classes outside the data set's class subset are 0.
    """

    class_names: tuple[str, ...]
    samples: list[Sample]

    def __len__(self) -> int:
        return len(self.samples)

    @abc.abstractmethod
    def image(self, i: int) -> Image.Image:
        """The i-th image as an RGB PIL image."""

    @abc.abstractmethod
    def mask(self, i: int) -> np.ndarray:
        """The i-th mask, uint8 (H, W), same size as the image."""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def indices_with(self, c: int) -> list[int]:
        """Indices of the samples that contain class ``c``."""
        return [i for i, s in enumerate(self.samples) if c in s.labels]
