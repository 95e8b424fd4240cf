"""Lens distortion (OpenCV / COLMAP radial-tangential model) and its removal from images.

Readers whose source gives a distorted camera (transforms.json `camera_model: OPENCV`, COLMAP SIMPLE_RADIAL /
RADIAL / OPENCV) keep the pinhole K and resample every map onto it on load: `lazy_undistorted` wraps a frame's
source so the pixels are remapped only when the frame is decoded (bilinear for colour, nearest for depth, masks
and labels; pixels that fall outside the captured image get a fill value).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from perfdata import camera


@dataclass(frozen=True)
class Distortion:
    """OpenCV / COLMAP radial-tangential distortion of normalised image coordinates."""

    k1: float = 0.0
    k2: float = 0.0
    k3: float = 0.0
    p1: float = 0.0
    p2: float = 0.0

    @property
    def is_zero(self) -> bool:
        return not any((self.k1, self.k2, self.k3, self.p1, self.p2))


def distort(xy: np.ndarray, d: Distortion) -> np.ndarray:
    """Undistorted normalised coordinates (n, 2) -> distorted (n, 2):
    x_d = x (1 + k1 r^2 + k2 r^4 + k3 r^6) + 2 p1 x y + p2 (r^2 + 2 x^2), and likewise for y."""
    x, y = xy[:, 0], xy[:, 1]
    r2 = x * x + y * y
    radial = 1.0 + r2 * (d.k1 + r2 * (d.k2 + r2 * d.k3))
    xd = x * radial + 2.0 * d.p1 * x * y + d.p2 * (r2 + 2.0 * x * x)
    yd = y * radial + d.p1 * (r2 + 2.0 * y * y) + 2.0 * d.p2 * x * y
    return np.stack([xd, yd], axis=-1)


def undistort(xy_d: np.ndarray, d: Distortion, n_iter: int = 30) -> np.ndarray:
    """Inverse of `distort` by fixed-point iteration x <- (x_d - tangential(x)) / radial(x): distorted
    normalised coordinates (n, 2) -> undistorted (n, 2). Maps measured (distorted) pixel positions to the
    pinhole camera; converges for the mild distortion of real lenses (|k1| r^2 well below 1)."""
    xy = np.array(xy_d, dtype=np.float64)
    for _ in range(n_iter):
        x, y = xy[:, 0], xy[:, 1]
        r2 = x * x + y * y
        radial = 1.0 + r2 * (d.k1 + r2 * (d.k2 + r2 * d.k3))
        tx = 2.0 * d.p1 * x * y + d.p2 * (r2 + 2.0 * x * x)
        ty = d.p1 * (r2 + 2.0 * y * y) + 2.0 * d.p2 * x * y
        xy = np.stack([(xy_d[:, 0] - tx) / radial, (xy_d[:, 1] - ty) / radial], axis=-1)
    return xy


def undistortion_map(K: np.ndarray, d: Distortion, width: int, height: int) -> np.ndarray:
    """(H, W, 2) pixel positions (u, v) in the distorted capture that each pixel centre of the undistorted
    pinhole image (same K, same size) comes from."""
    uv = camera.pixel_grid(width, height)
    xy = np.stack([(uv[:, 0] - K[0, 2]) / K[0, 0], (uv[:, 1] - K[1, 2]) / K[1, 1]], axis=-1)
    xy_d = distort(xy, d)
    src = np.stack([xy_d[:, 0] * K[0, 0] + K[0, 2], xy_d[:, 1] * K[1, 1] + K[1, 2]], axis=-1)
    return src.reshape(height, width, 2)


def remap(arr: np.ndarray, src: np.ndarray, mode: str, fill: float = 0) -> np.ndarray:
    """Sample arr (H, W[, C]) at pixel positions src (h, w, 2) -> (h, w[, C]). mode "bilinear" (float result)
    or "nearest" (dtype kept). Positions outside the image area [0, W] x [0, H] get `fill`."""
    H, W = arr.shape[:2]
    x, y = src[..., 0] - 0.5, src[..., 1] - 0.5  # array index coordinates
    inside = (src[..., 0] >= 0) & (src[..., 0] <= W) & (src[..., 1] >= 0) & (src[..., 1] <= H)
    if mode == "nearest":
        out = arr[np.clip(np.round(y).astype(int), 0, H - 1), np.clip(np.round(x).astype(int), 0, W - 1)]
    else:
        x0, y0 = np.floor(x), np.floor(y)
        ax, ay = x - x0, y - y0
        x0, y0 = x0.astype(int), y0.astype(int)
        data = arr.astype(np.float32)
        out = np.zeros(src.shape[:2] + arr.shape[2:], dtype=np.float32)
        for dy, wy in ((0, 1.0 - ay), (1, ay)):
            for dx, wx in ((0, 1.0 - ax), (1, ax)):
                w = (wy * wx).astype(np.float32)
                sample = data[np.clip(y0 + dy, 0, H - 1), np.clip(x0 + dx, 0, W - 1)]
                out += w.reshape(w.shape + (1,) * (arr.ndim - 2)) * sample
    out[~inside] = fill
    return out


def undistorted(load: Callable[[], np.ndarray | None], K: np.ndarray, d: Distortion, mode: str, fill: float) -> np.ndarray:
    arr = load()
    assert arr is not None
    return remap(arr, undistortion_map(K, d, arr.shape[1], arr.shape[0]), mode, fill).astype(arr.dtype)


def lazy_undistorted(source: Any, read: Callable[[Path], np.ndarray], K: np.ndarray, d: Distortion, mode: str,
                     fill: float) -> Any:
    """A frame source (path or callable; None stays None) whose array is undistorted when loaded: `read` decodes
    a path source, then `undistorted` resamples it with `mode` ("bilinear" or "nearest") and `fill`."""
    if source is None:
        return None
    load = source if callable(source) else functools.partial(read, source)
    return functools.partial(undistorted, load, K, d, mode, fill)
