"""Object-centric synthetic scenes (CO3D-like): one textured shape resting on a textured ground disc, seen by
cameras on a ring of the upper hemisphere, with a constant background colour where rays hit nothing -- or, with
`backdrop="textured"`, inside a textured dome whose ground reaches its wall, so every ray hits something (exact
depth everywhere) and no masks are made: the closest synthetic stand-in for a CO3D capture, whose fit must
model the surroundings. The same seed gives the same object, cameras and light with either backdrop.

Labels: 0 = "background" (the ground disc), 1 + i = the shape class SHAPE_CLASSES[i] on object pixels, -1 where
rays hit nothing (depth 0 there). Masks are True on the object only (not the ground). The shape class is the
scene's `class_name`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from perfdata import camera
from perfdata.errors import ConfigError
from perfdata.scene import Scene
from perfdata.synthetic.assemble import (
    build_scene,
    group_bounds,
    random_colour,
    random_material,
    rest_on_floor,
)
from perfdata.synthetic.raytrace import Lighting
from perfdata.synthetic.shapes import Material, Primitive, make_primitive, rotation_x, rotation_z

SHAPE_CLASSES = ("sphere", "box", "cylinder", "cone", "torus", "dumbbell", "mushroom")
OBJECT_LABEL_NAMES = ("background", *SHAPE_CLASSES)
BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}
BACKDROPS = ("plain", "textured")


@dataclass(frozen=True)
class ObjectSceneConfig:
    """How object scenes look (the seed, view count and size are arguments of `make_object_scene`)."""

    background: str = "white"
    """Colour of rays that hit nothing: "white" or "black"."""
    fov_deg: float = 40.0
    """Horizontal (= vertical) field of view of the square cameras."""
    elevation_deg: tuple[float, float] = (12.0, 50.0)
    """Camera elevations above the ground plane are drawn from this range."""
    fill: float = 0.75
    """Fraction of the image height the object's bounding sphere spans."""
    ground_radius: float = 1.2
    """Radius of the ground disc in metres."""
    max_tilt_deg: float = 20.0
    """Largest tilt of the object away from upright (a torus may tilt up to three times more)."""
    shadows: bool = True
    """Cast shadows of the object onto the ground and itself."""
    backdrop: str = "plain"
    """"plain": rays that hit nothing get `background`, masks cover the object. "textured": a textured dome of
    radius `dome_radius` over a textured ground of the same radius (labels 0, not foreground); no masks,
    scene.background None."""
    dome_radius: float = 5.0
    """Radius in metres of the textured backdrop's dome (centred on the object's ground point)."""


def make_object_scene(
    seed: int,
    n_views: int = 24,
    size: int = 64,
    shape: str | None = None,
    config: ObjectSceneConfig = ObjectSceneConfig(),
    scene_id: str | None = None,
) -> Scene:
    """An object scene rendered from `n_views` cameras of `size` x `size` pixels, all frames "train".

    `shape` is one of SHAPE_CLASSES (None: drawn from the seed). Everything else is drawn from
    `numpy.random.default_rng(seed)`, so the same arguments give identical arrays.
    """
    _check_args(n_views, size, shape, config)
    rng = np.random.default_rng(seed)
    shape = shape or str(rng.choice(SHAPE_CLASSES))
    label = 1 + SHAPE_CLASSES.index(shape)
    parts = _BUILDERS[shape](rng, label)
    tilt = math.radians(rng.uniform(0.0, config.max_tilt_deg) * (3.0 if shape == "torus" else 1.0))
    pose = rotation_z(rng.uniform(0.0, 2.0 * math.pi)) @ rotation_x(tilt)
    parts = rest_on_floor([p.posed(pose, np.zeros(3)) for p in parts], rng.uniform(-0.05, 0.05, size=2))
    ground = make_primitive("disc", (config.ground_radius,), _ground_material(rng), label=0, foreground=False)
    lo, hi = group_bounds([*parts, ground])  # the fit's cube: the object on its stage, with either backdrop
    K = camera.intrinsics_from_fov(math.radians(config.fov_deg), size, size)
    c2ws = _ring_cameras(rng, parts, n_views, config)
    azimuth = rng.uniform(0.0, 2.0 * math.pi)
    light = Lighting(direction=(math.cos(azimuth), math.sin(azimuth), 1.5), shadows=config.shadows)
    info = {
        "kind": "object",
        "capture": "object",
        "class_name": shape,
        "label_names": OBJECT_LABEL_NAMES,
        "background": config.background,
        "background_color": BACKGROUNDS[config.background],
        "bounds": (lo, hi),
        "seed": int(seed),
    }
    prims = [*parts, ground]
    if config.backdrop == "textured":
        prims = [*parts, *_textured_backdrop(rng, ground, config.dome_radius)]
        info.update(background=None, background_color=None, backdrop="textured")
    return build_scene(scene_id or f"obj_{shape}_{seed}", prims, K, c2ws, size, light, info,
                       masks=config.backdrop != "textured")


def _check_args(n_views: int, size: int, shape: str | None, config: ObjectSceneConfig) -> None:
    if n_views < 1 or size < 1:
        raise ConfigError(f"need at least one view of at least 1 pixel, got n_views={n_views}, size={size}")
    if shape is not None and shape not in SHAPE_CLASSES:
        raise ConfigError(f"unknown shape {shape!r}; known: {', '.join(SHAPE_CLASSES)}")
    if config.background not in BACKGROUNDS:
        raise ConfigError(f"unknown background {config.background!r}; use one of {', '.join(BACKGROUNDS)}")
    if config.backdrop not in BACKDROPS:
        raise ConfigError(f"unknown backdrop {config.backdrop!r}; use one of {', '.join(BACKDROPS)}")


def _ring_cameras(rng: np.random.Generator, parts: list[Primitive], n_views: int, config: ObjectSceneConfig) -> np.ndarray:
    """(V, 4, 4) OpenCV c2w on a ring around the object: even azimuths (random start), random elevations, all
    looking at the centre of the object's bounds, at the distance where its bounding sphere fills `fill`."""
    lo, hi = group_bounds(parts)
    target = 0.5 * (lo + hi)
    radius = 0.5 * float(np.linalg.norm(hi - lo))
    distance = radius / math.sin(math.atan(config.fill * math.tan(0.5 * math.radians(config.fov_deg))))
    start = rng.uniform(0.0, 2.0 * math.pi)
    c2ws = []
    for i in range(n_views):
        az = start + 2.0 * math.pi * i / n_views
        el = math.radians(rng.uniform(*config.elevation_deg))
        offset = distance * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        c2ws.append(camera.look_at(target + offset, target))
    return np.stack(c2ws)


def _textured_backdrop(rng: np.random.Generator, ground: Primitive, radius: float) -> list[Primitive]:
    """The ground disc widened to `radius` (same material) and a textured dome of that radius over it, both
    label 0 and not foreground. Coarse patterns (0.3-0.8 cycles per metre), so they resolve metres away."""
    wall = random_material(rng, frequency=(0.3, 0.8), textures=("checker", "noise"), contrast=0.6)
    floor = make_primitive("disc", (radius,), ground.material, label=0, foreground=False)
    return [floor, make_primitive("sphere", (radius,), wall, label=0, foreground=False)]


def _ground_material(rng: np.random.Generator) -> Material:
    grey = rng.uniform(0.45, 0.75)
    tint = np.asarray(random_colour(rng, saturation=(0.05, 0.25), value=(grey, grey)))
    return Material(tuple(tint), tuple(0.6 * tint), texture="checker", frequency=float(rng.uniform(1.5, 3.0)),
                    noise_seed=int(rng.integers(2**31)))


def _sphere(rng: np.random.Generator, label: int) -> list[Primitive]:
    return [make_primitive("sphere", (rng.uniform(0.25, 0.45),), random_material(rng), label)]


def _box(rng: np.random.Generator, label: int) -> list[Primitive]:
    return [make_primitive("box", tuple(rng.uniform(0.12, 0.4, size=3)), random_material(rng), label)]


def _cylinder(rng: np.random.Generator, label: int) -> list[Primitive]:
    params = (rng.uniform(0.12, 0.3), rng.uniform(0.2, 0.45))
    return [make_primitive("cylinder", params, random_material(rng), label)]


def _cone(rng: np.random.Generator, label: int) -> list[Primitive]:
    params = (rng.uniform(0.2, 0.4), rng.uniform(0.45, 0.9))
    return [make_primitive("cone", params, random_material(rng), label)]


def _torus(rng: np.random.Generator, label: int) -> list[Primitive]:
    params = (rng.uniform(0.25, 0.4), rng.uniform(0.07, 0.14))
    return [make_primitive("torus", params, random_material(rng), label)]


def _dumbbell(rng: np.random.Generator, label: int) -> list[Primitive]:
    """A bar along x with a ball at each end."""
    half, ball = rng.uniform(0.25, 0.4), rng.uniform(0.12, 0.2)
    bar_mat, ball_mat = random_material(rng), random_material(rng)
    along_x = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # local z -> world x
    return [
        make_primitive("cylinder", (0.35 * ball, half), bar_mat, label, rotation=along_x),
        make_primitive("sphere", (ball,), ball_mat, label, translation=(-half, 0.0, 0.0)),
        make_primitive("sphere", (ball,), ball_mat, label, translation=(half, 0.0, 0.0)),
    ]


def _mushroom(rng: np.random.Generator, label: int) -> list[Primitive]:
    """A cylindrical stem under a wide conical cap."""
    stem_r, stem_h = rng.uniform(0.06, 0.12), rng.uniform(0.15, 0.3)
    cap_r, cap_h = rng.uniform(0.28, 0.42), rng.uniform(0.15, 0.3)
    return [
        make_primitive("cylinder", (stem_r, stem_h), random_material(rng), label, translation=(0.0, 0.0, stem_h)),
        make_primitive("cone", (cap_r, cap_h), random_material(rng), label, translation=(0.0, 0.0, 2.0 * stem_h)),
    ]


_BUILDERS: dict[str, Callable[[np.random.Generator, int], list[Primitive]]] = {
    "sphere": _sphere,
    "box": _box,
    "cylinder": _cylinder,
    "cone": _cone,
    "torus": _torus,
    "dumbbell": _dumbbell,
    "mushroom": _mushroom,
}
