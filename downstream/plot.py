"""A tiny line-plot rasteriser (numpy only) for training curves, written as PNG with imageio (no matplotlib).

`curve_image` draws series into panels side by side; each panel is scaled to its own series' range and has a
frame and light horizontal grid lines at quarters of that range. No text: the colours are documented by the
caller (train.py: train loss blue, train accuracy green, val metric orange).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from perfdata.atomic import atomic_path

COLOURS = {"blue": (31, 119, 180), "orange": (255, 127, 14), "green": (44, 160, 44), "red": (214, 39, 40)}


def draw_line(img: np.ndarray, p0: tuple[float, float], p1: tuple[float, float], colour: Sequence[int],
              width: int = 2) -> None:
    """Draw a segment from p0 to p1 ((x, y) pixels) into img (H, W, 3) uint8 in place, `width` px thick."""
    n = int(max(abs(p1[0] - p0[0]), abs(p1[1] - p0[1]))) * 2 + 1
    xs = np.linspace(p0[0], p1[0], n)
    ys = np.linspace(p0[1], p1[1], n)
    h, w = img.shape[:2]
    for dx in range(width):
        for dy in range(width):
            xi = np.clip(np.round(xs).astype(int) + dx - width // 2, 0, w - 1)
            yi = np.clip(np.round(ys).astype(int) + dy - width // 2, 0, h - 1)
            img[yi, xi] = colour


def draw_panel(img: np.ndarray, box: tuple[int, int, int, int], series: Sequence[tuple[Sequence[float], str]],
               y_range: tuple[float, float] | None = None) -> None:
    """Plot series [(values, colour name)] into box (x0, y0, x1, y1) of img (H, W, 3) uint8, in place.

    x spans the values' indices; y spans y_range (default: min..max of all finite values). nan values break
    the line.
    """
    x0, y0, x1, y1 = box
    for frac in (0.25, 0.5, 0.75):
        y = int(round(y1 - frac * (y1 - y0)))
        img[y, x0:x1] = (225, 225, 225)
    img[y0, x0:x1 + 1] = img[y1, x0:x1 + 1] = 0
    img[y0:y1 + 1, x0] = img[y0:y1 + 1, x1] = 0
    finite = [v for vals, _ in series for v in vals if np.isfinite(v)]
    if not finite:
        return
    lo, hi = y_range if y_range is not None else (min(finite), max(finite))
    hi = hi if hi > lo else lo + 1.0
    pad = 4
    for vals, colour in series:
        n = len(vals)
        pts = [(x0 + pad + (x1 - x0 - 2 * pad) * (i / max(n - 1, 1)),
                y1 - pad - (y1 - y0 - 2 * pad) * (float(v) - lo) / (hi - lo)) for i, v in enumerate(vals)]
        for i, v in enumerate(vals):
            if not np.isfinite(v):
                continue
            nxt = i + 1 < n and np.isfinite(vals[i + 1])
            draw_line(img, pts[i], pts[i + 1] if nxt else pts[i], COLOURS[colour])


def curve_image(panels: Sequence[tuple[Sequence[tuple[Sequence[float], str]], tuple[float, float] | None]],
                height: int = 200, panel_width: int = 260) -> np.ndarray:
    """(height, n_panels * panel_width, 3) uint8 white image with one panel per (series, y_range)."""
    img = np.full((height, panel_width * len(panels), 3), 255, dtype=np.uint8)
    for i, (series, y_range) in enumerate(panels):
        draw_panel(img, (i * panel_width + 10, 10, (i + 1) * panel_width - 10, height - 10), series, y_range)
    return img


def write_png(path: str | Path, img: np.ndarray) -> None:
    """Write img (H, W, 3) uint8 as PNG, atomically."""
    import imageio.v3 as iio

    with atomic_path(path) as tmp:
        iio.imwrite(tmp, img, extension=".png")
