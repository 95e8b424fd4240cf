"""Image and depth metrics: PSNR, SSIM (gaussian window, in torch), depth abs-rel."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB of images in [0, 1] (any matching shapes)."""
    assert pred.shape == target.shape, f"shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}"
    mse = float(torch.mean((pred.float() - target.float()) ** 2))
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(pred: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5) -> float:
    """Mean SSIM (Wang et al. 2004; gaussian window 11 / 1.5, K1 0.01, K2 0.03, data range 1, valid region).

    Args:
        pred, target: (H, W, 3) or (H, W) images in [0, 1].
    """
    assert pred.shape == target.shape, f"shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}"
    x = pred.float().reshape(*pred.shape[:2], -1).permute(2, 0, 1)[:, None]  # (C, 1, H, W)
    y = target.float().reshape(*target.shape[:2], -1).permute(2, 0, 1)[:, None]
    window = min(window, x.shape[-1], x.shape[-2])
    g = _gaussian_window(window, sigma, x.dtype, x.device)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def depth_abs_rel(pred: torch.Tensor, target: torch.Tensor) -> float:
    """mean |pred - target| / target over pixels with known depth (target > 0); nan when there are none."""
    valid = target > 0
    if not bool(valid.any()):
        return float("nan")
    return float(((pred[valid] - target[valid]).abs() / target[valid]).mean())
