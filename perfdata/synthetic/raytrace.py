"""Analytic rendering of a list of primitives: exact colour, z-depth, mask and label map per pixel centre.

Shading is view-independent: albedo(p) * (ambient + (1 - ambient) * max(0, n . l) * lit), with a directional
light l, the normal turned towards the viewer (two-sided surfaces), and `lit` = 0 where a shadow ray towards the
light meets another primitive. The colour of a surface point is therefore the same from every camera, which a
degree-2 SH radiance field fits exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from perfdata import camera
from perfdata.synthetic.shapes import Material, Primitive, intersect_candidates, ray_dots


@dataclass(frozen=True)
class Lighting:
    """A directional light.

    Attributes:
        direction: (3,) world direction towards the light (normalised on use).
        ambient: the share of light that reaches every surface, in [0, 1].
        shadows: cast shadow rays (view-independent, so fields can fit them).
    """

    direction: tuple[float, float, float] = (0.4, -0.3, 1.0)
    ambient: float = 0.35
    shadows: bool = True


@dataclass(frozen=True)
class RenderedView:
    """One rendered camera.

    Attributes:
        rgb: (H, W, 3) float32 in [0, 1]. depth: (H, W) float32 z-depth in metres, 0 = nothing hit.
        mask: (H, W) bool, True on foreground primitives. labels: (H, W) int32 class ids, -1 = nothing hit.
    """

    rgb: np.ndarray
    depth: np.ndarray
    mask: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class _Hits:
    t: np.ndarray  # (n,) inf = miss
    index: np.ndarray  # (n,) winning primitive, -1 = miss
    normals: np.ndarray  # (n, 3)
    local: np.ndarray  # (n, 3)


def trace(prims: Sequence[Primitive], origins: np.ndarray, dirs: np.ndarray) -> _Hits:
    """Nearest hit over all primitives for rays origins (n, 3), dirs (n, 3)."""
    n = len(origins)
    best_t = np.full(n, np.inf)
    index = np.full(n, -1)
    normals = np.zeros((n, 3))
    local = np.zeros((n, 3))
    dots = ray_dots(origins, dirs)
    for i, prim in enumerate(prims):
        idx, t, nrm, loc = intersect_candidates(prim, origins, dirs, dots, best_t)
        closer = t < best_t[idx]
        won = idx[closer]
        best_t[won], index[won], normals[won], local[won] = t[closer], i, nrm[closer], loc[closer]
    return _Hits(best_t, index, normals, local)


def albedo(material: Material, local: np.ndarray) -> np.ndarray:
    """Texture colour (n, 3) of a material at local hit points (n, 3)."""
    a = np.asarray(material.color_a)
    b = np.asarray(material.color_b)
    w = 2.0 * np.pi * material.frequency
    if material.texture == "solid":
        m = np.zeros(len(local))
    elif material.texture == "stripes":
        m = 0.5 + 0.5 * np.sin(w * local[:, 2])
    elif material.texture == "checker":
        s = np.sin(w * local[:, 0]) * np.sin(w * local[:, 1]) * np.sin(w * local[:, 2] + 0.7)
        m = 0.5 + 0.5 * np.tanh(6.0 * s)
    elif material.texture == "noise":
        rng = np.random.default_rng(material.noise_seed)
        waves = rng.normal(size=(4, 3))
        waves *= (w * rng.uniform(0.5, 1.5, size=4) / np.linalg.norm(waves, axis=1))[:, None]
        m = 0.5 + 0.5 * np.mean(np.sin(local @ waves.T + rng.uniform(0, 2 * np.pi, size=4)), axis=1) * 1.6
    else:
        raise ValueError(f"unknown texture {material.texture!r}")
    m = np.clip(m, 0.0, 1.0)[:, None]
    return (1.0 - m) * a + m * b


def shade(prims: Sequence[Primitive], hits: _Hits, origins: np.ndarray, dirs: np.ndarray, light: Lighting) -> np.ndarray:
    """Colour (n, 3) of the hit rays (misses get 0)."""
    rgb = np.zeros((len(dirs), 3))
    hit = hits.index >= 0
    if not hit.any():
        return rgb
    to_light = np.asarray(light.direction, dtype=np.float64)
    to_light = to_light / np.linalg.norm(to_light)
    nrm = hits.normals[hit]
    nrm = np.where((np.sum(nrm * dirs[hit], 1) > 0.0)[:, None], -nrm, nrm)  # face the viewer
    lambert = np.clip(nrm @ to_light, 0.0, None)
    casters = [p for p in prims if p.foreground]
    if light.shadows and casters:
        points = origins[hit] + hits.t[hit, None] * dirs[hit] + 1e-5 * nrm
        blocked = trace(casters, points, np.broadcast_to(to_light, points.shape)).index >= 0
        lambert = np.where(blocked, 0.0, lambert)
    intensity = light.ambient + (1.0 - light.ambient) * lambert
    colour = np.zeros((int(hit.sum()), 3))
    for i, prim in enumerate(prims):
        sel = hits.index[hit] == i
        if sel.any():
            colour[sel] = albedo(prim.material, hits.local[hit][sel])
    rgb[hit] = colour * intensity[:, None]
    return rgb


def render_view(
    prims: Sequence[Primitive],
    K: np.ndarray,
    c2w: np.ndarray,
    width: int,
    height: int,
    light: Lighting,
    background: tuple[float, float, float],
) -> RenderedView:
    """Render one camera (K (3, 3), c2w (4, 4) OpenCV) at pixel centres; rays that hit nothing get `background`."""
    return _render_stacked(prims, K, np.asarray(c2w)[None], width, height, light, background)[0]


def render_views(
    prims: Sequence[Primitive],
    K: np.ndarray,
    c2ws: np.ndarray,
    width: int,
    height: int,
    light: Lighting,
    background: tuple[float, float, float],
    max_rays: int = 1 << 17,
) -> list[RenderedView]:
    """`render_view` for cameras c2ws (V, 4, 4) sharing K, batching several views per ray cast (up to
    `max_rays` rays at a time) so small images render fast."""
    per_batch = max(1, max_rays // (width * height))
    views: list[RenderedView] = []
    for start in range(0, len(c2ws), per_batch):
        batch = c2ws[start : start + per_batch]
        stacked = _render_stacked(prims, K, batch, width, height, light, background)
        views.extend(stacked)
    return views


def _render_stacked(
    prims: Sequence[Primitive],
    K: np.ndarray,
    c2ws: np.ndarray,
    width: int,
    height: int,
    light: Lighting,
    background: tuple[float, float, float],
) -> list[RenderedView]:
    """Render several cameras as one tall image: cameras side by side in the ray arrays, then split."""
    rays = [camera.image_rays(K, c2w, width, height) for c2w in c2ws]
    origins = np.concatenate([r[0] for r in rays])
    dirs = np.concatenate([r[1] for r in rays])
    hits = trace(prims, origins, dirs)
    rgb = shade(prims, hits, origins, dirs, light)
    hit = hits.index >= 0
    rgb[~hit] = background
    labels = np.array([p.label for p in prims] + [-1], dtype=np.int32)[hits.index]
    fg = np.array([p.foreground for p in prims] + [False])[hits.index]
    depth = np.where(hit, hits.t, 0.0)
    n = len(c2ws)
    return [
        RenderedView(
            rgb=np.clip(rgb, 0.0, 1.0).reshape(n, height, width, 3)[i].astype(np.float32),
            depth=depth.reshape(n, height, width)[i].astype(np.float32),
            mask=fg.reshape(n, height, width)[i],
            labels=labels.reshape(n, height, width)[i],
        )
        for i in range(n)
    ]
