"""Room synthetic scenes (ScanNet-like): a closed box room (floor, four walls, ceiling) with furniture-like
objects, seen by cameras at eye height near the room's centre looking around.

Labels are ids into ROOM_LABEL_NAMES (wall 0, floor 1, ceiling 2, furniture 3+). Every ray hits something, so
z-depth is known at every pixel and no label is -1. Masks are True on furniture (everything that is not wall,
floor or ceiling). Rooms have no object class: `class_name` is "room".
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

ROOM_LABEL_NAMES = ("wall", "floor", "ceiling", "cabinet", "bed", "table", "chair", "lamp", "ball")
STRUCTURE = ("wall", "floor", "ceiling")


@dataclass(frozen=True)
class RoomSceneConfig:
    """How room scenes look (the seed, view count and size are arguments of `make_room_scene`)."""

    width_range: tuple[float, float] = (4.0, 6.0)
    """Room extent along x and along y, metres."""
    height_range: tuple[float, float] = (2.5, 2.9)
    """Floor-to-ceiling height, metres."""
    n_furniture: tuple[int, int] = (5, 8)
    """Number of furniture pieces (inclusive range); placement may fit fewer in a small room."""
    fov_deg: float = 65.0
    """Horizontal (= vertical) field of view."""
    eye_height: tuple[float, float] = (1.35, 1.7)
    """Camera heights, metres."""
    pitch_deg: tuple[float, float] = (-28.0, -5.0)
    """Camera pitch (negative: looking down)."""
    camera_radius: float = 0.5
    """Cameras stand within this distance of the room centre; furniture keeps out of radius + 0.4."""
    shadows: bool = True
    """Furniture casts shadows."""


def make_room_scene(
    seed: int,
    n_views: int = 24,
    size: int = 64,
    config: RoomSceneConfig = RoomSceneConfig(),
    scene_id: str | None = None,
) -> Scene:
    """A room scene rendered from `n_views` cameras of `size` x `size` pixels, all frames "train"; deterministic
    from `numpy.random.default_rng(seed)`. The room spans [-W/2, W/2] x [-D/2, D/2] x [0, H]."""
    if n_views < 1 or size < 1:
        raise ConfigError(f"need at least one view of at least 1 pixel, got n_views={n_views}, size={size}")
    rng = np.random.default_rng(seed)
    half = np.array([rng.uniform(*config.width_range), rng.uniform(*config.width_range)]) / 2.0
    height = rng.uniform(*config.height_range)
    prims = _shell(rng, half, height)
    keep_out = config.camera_radius + 0.4
    prims += _furnish(rng, half, keep_out, int(rng.integers(config.n_furniture[0], config.n_furniture[1] + 1)))
    K = camera.intrinsics_from_fov(math.radians(config.fov_deg), size, size)
    c2ws = _eye_cameras(rng, n_views, config)
    light = Lighting(direction=(rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), 1.0), ambient=0.45,
                     shadows=config.shadows)
    info = {
        "kind": "room",
        "capture": "room",
        "class_name": "room",
        "label_names": ROOM_LABEL_NAMES,
        "background": None,
        "background_color": (0.0, 0.0, 0.0),
        "bounds": group_bounds(prims),
        "seed": int(seed),
    }
    return build_scene(scene_id or f"room_{seed}", prims, K, c2ws, size, light, info)


def _shell(rng: np.random.Generator, half: np.ndarray, height: float) -> list[Primitive]:
    """Floor, ceiling and four walls as rectangles (label ids 1, 2, 0)."""
    e = 1e-4  # rectangles overlap a little at the edges, so no ray slips through a corner
    hx, hy, hz = float(half[0]) + e, float(half[1]) + e, height / 2 + e
    wall = _soft_material(rng, (0.6, 0.9), "noise", 1.5)
    floor = _soft_material(rng, (0.35, 0.6), str(rng.choice(["stripes", "checker"])), 2.0)
    ceiling = _soft_material(rng, (0.85, 0.95), "noise", 1.0)
    wall_x = rotation_z(math.pi / 2) @ rotation_x(math.pi / 2)  # plane normal along x, in-plane axes y and z
    wall_y = rotation_x(math.pi / 2)  # plane normal along y, in-plane axes x and z
    idx = ROOM_LABEL_NAMES.index
    return [
        make_primitive("rect", (hx, hy), floor, idx("floor"), foreground=False),
        make_primitive("rect", (hx, hy), ceiling, idx("ceiling"), (0.0, 0.0, height), foreground=False),
        make_primitive("rect", (hy, hz), wall, idx("wall"), (half[0], 0.0, height / 2), wall_x, False),
        make_primitive("rect", (hy, hz), wall, idx("wall"), (-half[0], 0.0, height / 2), wall_x, False),
        make_primitive("rect", (hx, hz), wall, idx("wall"), (0.0, half[1], height / 2), wall_y, False),
        make_primitive("rect", (hx, hz), wall, idx("wall"), (0.0, -half[1], height / 2), wall_y, False),
    ]


def _soft_material(rng: np.random.Generator, value: tuple[float, float], texture: str, frequency: float) -> Material:
    a = np.asarray(random_colour(rng, saturation=(0.05, 0.3), value=value))
    return Material(tuple(a), tuple(0.75 * a), texture, frequency * rng.uniform(0.8, 1.25), int(rng.integers(2**31)))


def _furnish(rng: np.random.Generator, half: np.ndarray, keep_out: float, n_pieces: int) -> list[Primitive]:
    """Place furniture on the floor by rejection sampling: inside the room, clear of the camera zone around
    the centre and of each other (footprints as axis-aligned rectangles; yaw in quarter turns)."""
    kinds = ["bed", "cabinet", "table", "chair", "lamp", "ball"]
    kinds += [str(k) for k in rng.choice(kinds, size=max(0, n_pieces - len(kinds)))]
    placed: list[Primitive] = []
    footprints: list[tuple[np.ndarray, np.ndarray]] = []
    for kind in kinds[:n_pieces]:
        parts = _FURNITURE[kind](rng, ROOM_LABEL_NAMES.index(kind))
        parts = [p.posed(rotation_z(0.5 * math.pi * int(rng.integers(4))), np.zeros(3)) for p in parts]
        lo, hi = group_bounds(parts)
        foot = 0.5 * (hi[:2] - lo[:2])
        for _ in range(60):
            centre = rng.uniform(-half + foot + 0.05, half - foot - 0.05)
            box = (centre - foot, centre + foot)
            if _clear(box, footprints, keep_out):
                placed += rest_on_floor(parts, centre)
                footprints.append(box)
                break
    return placed


def _clear(box: tuple[np.ndarray, np.ndarray], others: list[tuple[np.ndarray, np.ndarray]], keep_out: float) -> bool:
    nearest = np.clip(0.0, box[0], box[1])  # point of the footprint nearest the room centre
    if np.linalg.norm(nearest) < keep_out:
        return False
    return all(np.any(box[1] + 0.1 < lo) or np.any(hi + 0.1 < box[0]) for lo, hi in others)


def _eye_cameras(rng: np.random.Generator, n_views: int, config: RoomSceneConfig) -> np.ndarray:
    """(V, 4, 4) OpenCV c2w at eye height near the centre, yaws spread around the full circle."""
    start = rng.uniform(0.0, 2.0 * math.pi)
    c2ws = []
    for i in range(n_views):
        r, a = config.camera_radius * math.sqrt(rng.uniform()), rng.uniform(0.0, 2.0 * math.pi)
        eye = np.array([r * math.cos(a), r * math.sin(a), rng.uniform(*config.eye_height)])
        yaw = start + 2.0 * math.pi * (i + rng.uniform(-0.3, 0.3)) / n_views
        pitch = math.radians(rng.uniform(*config.pitch_deg))
        look = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), math.sin(pitch)])
        c2ws.append(camera.look_at(eye, eye + look))
    return np.stack(c2ws)


def _cabinet(rng: np.random.Generator, label: int) -> list[Primitive]:
    half = (rng.uniform(0.25, 0.6), rng.uniform(0.2, 0.3), rng.uniform(0.4, 1.0))
    return [make_primitive("box", half, random_material(rng), label)]


def _bed(rng: np.random.Generator, label: int) -> list[Primitive]:
    """A mattress block, a headboard at -y and a pillow."""
    hx, hy, hz = rng.uniform(0.45, 0.8), rng.uniform(0.9, 1.05), rng.uniform(0.2, 0.3)
    mat = random_material(rng)
    return [
        make_primitive("box", (hx, hy, hz), mat, label, (0.0, 0.0, hz)),
        make_primitive("box", (hx, 0.04, 0.5), random_material(rng), label, (0.0, -hy - 0.04, 0.5)),
        make_primitive("box", (0.7 * hx, 0.15, 0.06), random_material(rng), label, (0.0, -hy + 0.2, 2 * hz + 0.06)),
    ]


def _table(rng: np.random.Generator, label: int) -> list[Primitive]:
    """A top on four cylindrical legs."""
    hx, hy, top = rng.uniform(0.35, 0.7), rng.uniform(0.3, 0.5), rng.uniform(0.7, 0.8)
    mat = random_material(rng)
    legs = [
        make_primitive("cylinder", (0.03, top / 2), mat, label, (sx * (hx - 0.06), sy * (hy - 0.06), top / 2))
        for sx in (-1, 1)
        for sy in (-1, 1)
    ]
    return [make_primitive("box", (hx, hy, 0.025), mat, label, (0.0, 0.0, top + 0.025)), *legs]


def _chair(rng: np.random.Generator, label: int) -> list[Primitive]:
    """A seat on four legs with a backrest at -y."""
    h, seat = rng.uniform(0.2, 0.25), rng.uniform(0.42, 0.48)
    mat = random_material(rng)
    legs = [
        make_primitive("box", (0.02, 0.02, seat / 2), mat, label, (sx * (h - 0.02), sy * (h - 0.02), seat / 2))
        for sx in (-1, 1)
        for sy in (-1, 1)
    ]
    return [
        make_primitive("box", (h, h, 0.02), mat, label, (0.0, 0.0, seat + 0.02)),
        make_primitive("box", (h, 0.02, 0.22), mat, label, (0.0, -h + 0.02, seat + 0.26)),
        *legs,
    ]


def _lamp(rng: np.random.Generator, label: int) -> list[Primitive]:
    """A base disc, a pole and a conical shade."""
    pole = rng.uniform(1.1, 1.5)
    metal, shade = random_material(rng), random_material(rng)
    return [
        make_primitive("cylinder", (0.15, 0.015), metal, label, (0.0, 0.0, 0.015)),
        make_primitive("cylinder", (0.02, pole / 2), metal, label, (0.0, 0.0, pole / 2)),
        make_primitive("cone", (rng.uniform(0.18, 0.25), 0.3), shade, label, (0.0, 0.0, pole - 0.1)),
    ]


def _ball(rng: np.random.Generator, label: int) -> list[Primitive]:
    return [make_primitive("sphere", (rng.uniform(0.1, 0.25),), random_material(rng), label)]


_FURNITURE: dict[str, Callable[[np.random.Generator, int], list[Primitive]]] = {
    "cabinet": _cabinet,
    "bed": _bed,
    "table": _table,
    "chair": _chair,
    "lamp": _lamp,
    "ball": _ball,
}
