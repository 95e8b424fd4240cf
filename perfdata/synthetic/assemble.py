"""Pieces shared by the object and room generators: random materials, posing groups of primitives, bounds, and
turning rendered views into an in-memory `Scene`."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from typing import Any

import numpy as np

from perfdata.scene import Frame, Scene, normalisation_from_bounds
from perfdata.synthetic.raytrace import Lighting, render_views
from perfdata.synthetic.shapes import Material, Primitive, world_bounds

TEXTURES = ("stripes", "checker", "noise")


def random_colour(rng: np.random.Generator, saturation: tuple[float, float] = (0.45, 0.9),
                  value: tuple[float, float] = (0.55, 0.95)) -> tuple[float, float, float]:
    """An RGB colour with a uniform hue and saturation / value drawn from the given ranges."""
    rgb = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(*saturation), rng.uniform(*value))
    return (float(rgb[0]), float(rgb[1]), float(rgb[2]))


def random_material(rng: np.random.Generator, frequency: tuple[float, float] = (2.0, 6.0),
                    textures: Sequence[str] = TEXTURES, contrast: float = 0.55) -> Material:
    """A textured material: a random colour and a second colour that is the first darkened and hue-shifted by
    `contrast` (0: uniform, 1: black / complementary), so the colour always varies over the surface."""
    a = random_colour(rng)
    h, s, v = colorsys.rgb_to_hsv(*a)
    b = colorsys.hsv_to_rgb((h + 0.5 * contrast * rng.uniform(0.3, 1.0)) % 1.0, s, v * (1.0 - contrast))
    return Material(
        color_a=a,
        color_b=(float(b[0]), float(b[1]), float(b[2])),
        texture=str(rng.choice(list(textures))),
        frequency=float(rng.uniform(*frequency)),
        noise_seed=int(rng.integers(2**31)),
    )


def pose_group(parts: Sequence[Primitive], rotation: np.ndarray, translation: np.ndarray) -> list[Primitive]:
    """Apply one rigid motion (rotation (3, 3), translation (3,)) to a group of primitives."""
    return [p.posed(rotation, np.asarray(translation, dtype=np.float64)) for p in parts]


def group_bounds(parts: Sequence[Primitive]) -> tuple[np.ndarray, np.ndarray]:
    """Exact axis-aligned world bounds (lo (3,), hi (3,)) of a group of primitives."""
    boxes = [world_bounds(p) for p in parts]
    return np.min([b[0] for b in boxes], axis=0), np.max([b[1] for b in boxes], axis=0)


def rest_on_floor(parts: Sequence[Primitive], xy: Sequence[float] | np.ndarray, floor_z: float = 0.0) -> list[Primitive]:
    """Translate a group so its lowest point touches z = floor_z and its bounds are centred on `xy`."""
    lo, hi = group_bounds(parts)
    shift = np.array([xy[0] - 0.5 * (lo[0] + hi[0]), xy[1] - 0.5 * (lo[1] + hi[1]), floor_z - lo[2]])
    return pose_group(parts, np.eye(3), shift)


def build_scene(
    scene_id: str,
    prims: Sequence[Primitive],
    K: np.ndarray,
    c2ws: np.ndarray,
    size: int,
    light: Lighting,
    info: dict[str, Any],
    masks: bool = True,
) -> Scene:
    """Render every camera (K (3, 3), c2ws (V, 4, 4) OpenCV) and wrap the views as a Scene (frames without
    masks when `masks` is False).

    `info` holds kind, class_name, label_names, background ("white" / "black" / None), background_color (None:
    every ray hits something), bounds ((2, 3) lo / hi) and seed, optionally capture and backdrop; everything
    but class_name, label_names and background lands in meta.
    """
    r, g, b = (float(c) for c in info["background_color"] or (0.0, 0.0, 0.0))
    colour = (r, g, b)
    views = render_views(prims, K, c2ws, size, size, light, colour)
    frames = tuple(
        Frame(
            name=f"{i:04d}", K=K.copy(), c2w=c2w.copy(), width=size, height=size,
            image=v.rgb, depth=v.depth, mask=v.mask if masks else None, labels=v.labels, split="train",
        )
        for i, (c2w, v) in enumerate(zip(c2ws, views, strict=True))
    )
    lo, hi = np.asarray(info["bounds"][0]), np.asarray(info["bounds"][1])
    meta = {k: v for k, v in info.items() if k not in ("class_name", "label_names", "background")}
    meta["bounds"] = [lo.tolist(), hi.tolist()]
    meta["background_color"] = list(colour) if info["background_color"] is not None else None
    return Scene(
        scene_id=scene_id,
        frames=frames,
        world_from_grid=normalisation_from_bounds(lo, hi),
        class_name=info["class_name"],
        label_names=tuple(info["label_names"]),
        background=info["background"],
        source=f"synthetic:{info['kind']}:seed={info['seed']}",
        meta=meta,
    )
