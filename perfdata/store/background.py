"""A scene's background model in the store: its own versioned group `scenes/<id>/background/`.

```
scenes/<id>/background/     attrs {"perfdata_background": {format_version: 1, kind: "msi", n_layers: L,
                                   height: H, value_min: [[4] * L], value_scale: [[4] * L], behind: [3]}}
  data   (M, L, 4) uint8    texel rows x layers x [colour DC coefficient x 3, density] (svox2 / PeRFception's
                            `background_data`); value = q * value_scale[layer] + value_min[layer]
  links  (2H, H) int32      optional: row of each texel (longitude x latitude), -1 = pruned; absent: dense,
                            row = u * H + v (M = 2 H^2)
```
The maths (layer radii, compositing) is `perfdata.models.background`. Our own fits quantise per layer and
channel; PeRFception checkpoints' bytes are kept as released with their `background_data_min` / `_scale`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from perfdata.errors import FormatVersionError, InputError

GROUP = "background"
KEY = "perfdata_background"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class BackgroundArrays:
    """What goes into a scene's background group."""

    data: np.ndarray
    """(M, L, 4) uint8."""
    links: np.ndarray | None
    """(2H, H) int32 or None (dense)."""
    attrs: dict[str, Any]


def quantise(msi: np.ndarray, behind: np.ndarray | None) -> BackgroundArrays:
    """A dense MSI (2H, H, L, 4) float -> uint8 rows with per-(layer, channel) min / scale."""
    w, h, n_layers, _ = msi.shape
    rows = msi.reshape(w * h, n_layers, 4).astype(np.float64)
    lo, hi = rows.min(axis=0), rows.max(axis=0)
    scale = np.where(hi > lo, (hi - lo) / 255.0, 1.0)
    q = np.clip(np.round((rows - lo) / scale), 0, 255).astype(np.uint8)
    return BackgroundArrays(q, None, _attrs(n_layers, h, lo, scale, behind))


def _attrs(n_layers: int, height: int, lo: np.ndarray, scale: np.ndarray, behind: np.ndarray | None) -> dict[str, Any]:
    return {"format_version": FORMAT_VERSION, "kind": "msi", "n_layers": int(n_layers), "height": int(height),
            "value_min": np.broadcast_to(lo, (n_layers, 4)).astype(float).tolist(),
            "value_scale": np.broadcast_to(scale, (n_layers, 4)).astype(float).tolist(),
            "behind": None if behind is None else np.asarray(behind, dtype=float).reshape(3).tolist()}


def from_released(data: np.ndarray, links: np.ndarray | None, value_min: np.ndarray, value_scale: np.ndarray,
                  where: str) -> BackgroundArrays:
    """PeRFception's uint8 `background_data` (M, L, 4), `background_links` (2H, H) and their min / scale
    (anything broadcasting to (L, 4): [4], [1, 4], [L, 4], [1, L, 4]) kept as released."""
    data = np.asarray(data)
    if data.ndim != 3 or data.shape[2] != 4 or data.dtype != np.uint8:
        raise InputError(where, f"background_data must be uint8 (texels, layers, 4), got {data.dtype}{data.shape}")
    n_layers = data.shape[1]
    try:
        lo = np.broadcast_to(np.asarray(value_min, np.float64).reshape(-1, 4)[-n_layers:], (n_layers, 4))
        scale = np.broadcast_to(np.asarray(value_scale, np.float64).reshape(-1, 4)[-n_layers:], (n_layers, 4))
    except ValueError:
        raise InputError(where, f"background_data_min / _scale {np.shape(value_min)} / {np.shape(value_scale)} do "
                         f"not broadcast to ({n_layers}, 4)") from None
    if links is None:
        height = int(round(np.sqrt(len(data) / 2)))
        if 2 * height * height != len(data):
            raise InputError(where, f"background_data has {len(data)} texels, not 2 H^2, and no background_links")
    else:
        links = np.asarray(links).astype(np.int32)
        if links.ndim != 2 or links.shape[0] != 2 * links.shape[1]:
            raise InputError(where, f"background_links must be (2H, H), got {links.shape}")
        if links.size and int(links.max()) >= len(data):
            raise InputError(where, f"background_links point past the {len(data)} rows of background_data")
        height = links.shape[1]
    return BackgroundArrays(np.ascontiguousarray(data), links, _attrs(n_layers, height, lo, scale, None))


def check_attrs(attrs: Any, where: str) -> dict[str, Any]:
    """The group's attrs, checked (version, kind, shapes of min / scale)."""
    if not isinstance(attrs, dict):
        raise InputError(where, f"background group lacks its {KEY!r} attrs")
    version = attrs.get("format_version")
    if version != FORMAT_VERSION:
        raise FormatVersionError(where, version, FORMAT_VERSION)
    if attrs.get("kind") != "msi":
        raise InputError(where, f"background kind {attrs.get('kind')!r} is not known (msi)")
    n_layers = int(attrs.get("n_layers", 0))
    for name in ("value_min", "value_scale"):
        value: Any = attrs.get(name)
        if np.shape(value) != (n_layers, 4):
            raise InputError(where, f"background {name} must be ({n_layers}, 4), got {np.shape(value)}")
    return attrs


def decode(data: np.ndarray, links: np.ndarray | None, attrs: dict[str, Any], where: str) -> np.ndarray:
    """Stored rows -> the dense float32 MSI (2H, H, L, 4) (`perfdata.models.background`)."""
    n_layers, height = int(attrs["n_layers"]), int(attrs["height"])
    if data.shape[1:] != (n_layers, 4):
        raise InputError(where, f"background data is {data.shape}, attrs say (texels, {n_layers}, 4)")
    values = data.astype(np.float32) * np.asarray(attrs["value_scale"], np.float32) + np.asarray(
        attrs["value_min"], np.float32)
    if links is None:
        if len(values) != 2 * height * height:
            raise InputError(where, f"background data has {len(values)} rows, dense H={height} needs "
                             f"{2 * height * height}")
        return values.reshape(2 * height, height, n_layers, 4)
    if links.shape != (2 * height, height) or (links.size and int(links.max()) >= len(values)):
        raise InputError(where, f"background links {links.shape} do not fit H={height} and {len(values)} rows")
    dense = np.zeros((2 * height, height, n_layers, 4), np.float32)
    ok = links >= 0
    dense[ok] = values[links[ok]]
    return dense
