"""A small ResNet-style image classifier (no torchvision): a conv stem, residual stages, global pooling."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class BasicBlock2d(nn.Module):
    """Two 3x3 conv + batch-norm layers with an identity (or 1x1 strided) shortcut.

    (B, c_in, H, W) -> (B, c_out, H / stride, W / stride).
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class ResNetClassifier(nn.Module):
    """Images (B, in_channels, H, W) -> class logits (B, n_classes).

    A 3x3 stem of widths[0] channels, then one BasicBlock2d per width, global average pooling and a linear head.
    A block halves the resolution where its width differs from the one before it (so every new width is a new
    stage) and keeps it where a width repeats (a deeper stage): (16, 32, 64) is three stages of one block (~75k
    parameters), (16, 32, 32, 64, 64) the same stages with two blocks in the last two.
    """

    def __init__(self, in_channels: int, n_classes: int, widths: Sequence[int] = (16, 32, 64)) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        blocks, c = [], widths[0]
        for i, w in enumerate(widths):
            blocks.append(BasicBlock2d(c, w, stride=1 if i == 0 or w == c else 2))
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(c, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 4, f"expected (B, C, H, W) images, got {tuple(x.shape)}"
        h = self.blocks(self.stem(x))
        return self.head(h.mean(dim=(2, 3)))


def mirror_average(model: nn.Module, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities of views x (B, 3, H, W): the mean of the softmax of `logits` (the model's on x) and of
    the model's on x mirrored left-right (a mirrored object keeps its class; see TrainConfig.eval_mirror)."""
    return (logits.softmax(1) + model(x.flip(-1)).softmax(1)) / 2
