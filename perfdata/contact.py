"""Contact sheets: a PNG grid of views (colour, depth, mask, labels), for reports and for eyeballing renders.

Colour maps are plain numpy: `turbo` (a smooth blue-green-yellow-red ramp for depth), a fixed label palette
(ignore = black), and masks as grey levels. A sheet is rows of equally sized tiles with a `pad`-pixel gutter:
(rows * h + (rows + 1) * pad) x (cols * w + (cols + 1) * pad) pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from perfdata import images
from perfdata.scene import Frame

# Control points of a turbo-like ramp (dark blue -> cyan -> green -> yellow -> red -> dark red).
_TURBO = np.array(
    [
        [0.19, 0.07, 0.23],
        [0.27, 0.42, 0.93],
        [0.11, 0.81, 0.84],
        [0.39, 0.99, 0.37],
        [0.85, 0.92, 0.21],
        [0.99, 0.57, 0.15],
        [0.86, 0.22, 0.04],
        [0.48, 0.02, 0.01],
    ]
)


def turbo(x: np.ndarray) -> np.ndarray:
    """Values (...) in [0, 1] (clipped) -> RGB (..., 3) float32 by piecewise-linear turbo-like ramp."""
    x = np.clip(np.nan_to_num(np.asarray(x, dtype=np.float64)), 0.0, 1.0) * (len(_TURBO) - 1)
    i = np.minimum(np.floor(x).astype(int), len(_TURBO) - 2)
    f = (x - i)[..., None]
    return ((1.0 - f) * _TURBO[i] + f * _TURBO[i + 1]).astype(np.float32)


def colorize_depth(depth: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Depth (H, W) metres (0 = unknown) -> RGB (H, W, 3) float32: near = blue, far = red, unknown = black.
    The range defaults to the 1st..99th percentile of the known values."""
    known = depth > 0
    if not known.any():
        return np.zeros((*depth.shape, 3), np.float32)
    lo = float(np.percentile(depth[known], 1)) if lo is None else lo
    hi = float(np.percentile(depth[known], 99)) if hi is None else hi
    rgb = turbo((depth - lo) / max(hi - lo, 1e-6))
    rgb[~known] = 0.0
    return rgb


def label_palette(n: int) -> np.ndarray:
    """(n, 3) float32 distinct colours: hues spaced by the golden ratio, alternating brightness."""
    hue = (np.arange(n) * 0.618034) % 1.0
    value = np.where(np.arange(n) % 2 == 0, 0.95, 0.7)
    k = (np.array([5.0, 3.0, 1.0])[None] + hue[:, None] * 6.0) % 6.0
    rgb = value[:, None] * (1.0 - 0.75 * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0))
    return rgb.astype(np.float32)


def colorize_labels(labels: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """Labels (H, W) int, -1 = ignore -> RGB (H, W, 3) float32 (ignore = black)."""
    n = int(labels.max()) + 1 if n_classes is None else n_classes
    palette = np.concatenate([label_palette(max(n, 1)), np.zeros((1, 3), np.float32)])
    return palette[np.where((labels < 0) | (labels >= n), n, labels)]


def frame_panels(frame: Frame, n_classes: int | None = None) -> list[np.ndarray]:
    """A frame as RGB tiles (H, W, 3) float32: colour, then depth, mask and labels where the frame has them."""
    tiles = [frame.load_image()]
    depth, mask, labels = frame.load_depth(), frame.load_mask(), frame.load_labels()
    if depth is not None:
        tiles.append(colorize_depth(depth))
    if mask is not None:
        tiles.append(np.repeat(mask.astype(np.float32)[..., None], 3, axis=-1))
    if labels is not None:
        tiles.append(colorize_labels(labels, n_classes))
    return tiles


def contact_sheet(rows: Sequence[Sequence[np.ndarray]], pad: int = 2, fill: float = 0.15) -> np.ndarray:
    """Tile rows of RGB images (h, w, 3) float in [0, 1], all the same size, into one uint8 image of
    (R * h + (R + 1) * pad, C * w + (C + 1) * pad, 3); short rows leave the gutter colour `fill`."""
    if not rows or not any(rows):
        raise ValueError("a contact sheet needs at least one image")
    h, w = next(t for r in rows for t in r).shape[:2]
    n_cols = max(len(r) for r in rows)
    sheet = np.full((len(rows) * h + (len(rows) + 1) * pad, n_cols * w + (n_cols + 1) * pad, 3), fill, np.float32)
    for ri, row in enumerate(rows):
        for ci, tile in enumerate(row):
            if tile.shape[:2] != (h, w):
                raise ValueError(f"tile ({ri}, {ci}) is {tile.shape[:2]}, expected {(h, w)}")
            y, x = pad + ri * (h + pad), pad + ci * (w + pad)
            sheet[y : y + h, x : x + w] = tile[..., :3]
    return (np.clip(sheet, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_contact_sheet(path: str | Path, rows: Sequence[Sequence[np.ndarray]], pad: int = 2) -> np.ndarray:
    """`contact_sheet` written to a PNG atomically; returns the uint8 image."""
    sheet = contact_sheet(rows, pad)
    images.write_png(path, sheet)
    return sheet
