"""A small ResNet-shaped CNN for the built-in demo: trains in seconds on 2 CPU cores."""

from __future__ import annotations

import torch
from torch import nn


def _stage(cin: int, cout: int, stride: int = 2) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class TinyCNN(nn.Module):
    """Stem + four stages named ``layer1..layer4`` (so "auto" layers pick them, as for ResNet) + GAP + FC.

    Every stage halves the resolution, except the last with ``last_stride=1`` (output stride 8 instead of 16:
    an 8 x 8 last-layer map at 64 px, as fine relative to the image as ResNet's 7 x 7 at 224 px).
    """

    def __init__(self, num_classes: int, widths: tuple[int, int, int, int] = (16, 32, 48, 64), last_stride: int = 2) -> None:
        super().__init__()
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        chans = (widths[0],) + tuple(widths)
        for i in range(4):
            self.add_module(f"layer{i + 1}", _stage(chans[i], chans[i + 1], last_stride if i == 3 else 2))
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 3, H, W) images -> (n, widths[-1], H/16, W/16) layer4 features (H/8 with ``last_stride=1``)."""
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 3, H, W) images -> (n, num_classes) logits: global average pooling of the layer4 features, then fc."""
        return self.fc(self.forward_features(x).mean((2, 3)))
