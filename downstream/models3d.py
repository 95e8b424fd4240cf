"""3D models on dense grids (B, C, D, D, D): a small 3D CNN classifier and a small 3D U-Net segmenter.

Why dense 3D convolutions: the loaders give grids of a few dozen cells a side (32^3 = 32k cells), where a
dense conv costs milliseconds on a CPU and needs no sparse-conv library (spconv / MinkowskiEngine do not build
everywhere). Empty cells are cheap to carry at this size, and the segmenter's loss ignores them (label -1). A
point-based model would need neighbour search per batch and gains nothing at these resolutions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn3d(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """3x3x3 conv + batch norm + ReLU: (B, c_in, D, D, D) -> (B, c_out, D / stride, ...)."""
    return nn.Sequential(nn.Conv3d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm3d(c_out), nn.ReLU())


class Grid3dClassifier(nn.Module):
    """Grids (B, in_channels, D, D, D) -> class logits (B, n_classes).

    Per width: a strided conv (stride 1 for the first) and a conv; then global average and max pooling
    concatenated and a linear head.
    """

    def __init__(self, in_channels: int, n_classes: int, widths: Sequence[int] = (16, 32, 64)) -> None:
        super().__init__()
        layers, c = [], in_channels
        for i, w in enumerate(widths):
            layers += [conv_bn3d(c, w, stride=1 if i == 0 else 2), conv_bn3d(w, w)]
            c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(2 * c, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 5, f"expected (B, C, D, D, D) grids, got {tuple(x.shape)}"
        h = self.features(x)
        return self.head(torch.cat([h.mean(dim=(2, 3, 4)), h.amax(dim=(2, 3, 4))], dim=1))


class UNet3d(nn.Module):
    """Grids (B, in_channels, D, D, D) -> per-cell logits (B, n_classes, D, D, D); D divisible by
    2 ** (len(widths) - 1).

    Encoder: per width two convs, downsampling by a strided conv between levels. Decoder: trilinear upsampling,
    concatenation with the encoder's skip at that level, two convs; a 1x1x1 conv head.
    """

    def __init__(self, in_channels: int, n_classes: int, widths: Sequence[int] = (16, 32, 64)) -> None:
        super().__init__()
        self.down = nn.ModuleList()
        c = in_channels
        for i, w in enumerate(widths):
            self.down.append(nn.Sequential(conv_bn3d(c, w, stride=1 if i == 0 else 2), conv_bn3d(w, w)))
            c = w
        self.up = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.up.append(nn.Sequential(conv_bn3d(c + w, w), conv_bn3d(w, w)))
            c = w
        self.head = nn.Conv3d(c, n_classes, 1)
        self.factor = 2 ** (len(widths) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 5 and all(s % self.factor == 0 for s in x.shape[2:]), (
            f"expected (B, C, D, D, D) grids with D divisible by {self.factor}, got {tuple(x.shape)}"
        )
        skips = []
        for level in self.down:
            x = level(x)
            skips.append(x)
        for level, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False)
            x = level(torch.cat([x, skip], dim=1))
        return self.head(x)
