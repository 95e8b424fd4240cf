"""Cameras to render: interpolations between nearby training cameras (PeRFception's rule), orbits, or the
training cameras themselves. All cameras are in the metric world frame (c2w OpenCV axes); distances of the
interpolation rule are measured in the scene's normalised grid frame (`world_from_grid`).

Interpolation: pick a random pair (i, j) of training cameras whose centres are within `max_dist` normalised
units and whose rotations differ by less than `max_angle_deg`; a random t in [0, 1) gives the rotation
slerp(R_i, R_j, t), the centre lerp(c_i, c_j, t) and intrinsics lerp(K_i, K_j', t) (K_j' = K_j resized to
camera i's image size); the image is then resized so its longer side is `size`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from perfdata import camera
from perfdata.errors import ConfigError
from perfdata.scene import apply_transform, decompose_similarity


@dataclass(frozen=True)
class Camera:
    """A pinhole camera: K (3, 3) pixels, c2w (4, 4) metric world frame, OpenCV axes, image width x height."""

    K: np.ndarray
    c2w: np.ndarray
    width: int
    height: int

    def to_json(self, name: str) -> dict:
        return {"name": name, "K": self.K.tolist(), "c2w": self.c2w.tolist(), "width": self.width,
                "height": self.height}


def resized(cam: Camera, size: int) -> Camera:
    """The same camera with the image resized so its longer side is `size` pixels."""
    f = size / max(cam.width, cam.height)
    w, h = max(1, round(cam.width * f)), max(1, round(cam.height * f))
    return Camera(camera.scale_intrinsics(cam.K, w / cam.width, h / cam.height), cam.c2w, w, h)


def rotation_angle_deg(Ra: np.ndarray, Rb: np.ndarray) -> float:
    """Angle (degrees) of the relative rotation Ra^T Rb; Ra, Rb (3, 3)."""
    c = (np.trace(Ra.T @ Rb) - 1.0) / 2.0
    return math.degrees(math.acos(float(np.clip(c, -1.0, 1.0))))


def slerp(Ra: np.ndarray, Rb: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation of rotations (3, 3): Ra at t=0, Rb at t=1, along the shortest arc."""
    from scipy.spatial.transform import Rotation

    rel = Rotation.from_matrix(Ra.T @ Rb).as_rotvec()
    return Ra @ Rotation.from_rotvec(t * rel).as_matrix()


def grid_centres(cams: Sequence[Camera], world_from_grid: np.ndarray) -> np.ndarray:
    """(n, 3) camera centres in the normalised grid frame."""
    centres = np.stack([c.c2w[:3, 3] for c in cams])
    return apply_transform(np.linalg.inv(world_from_grid), centres)


def nearby_pairs(
    cams: Sequence[Camera], world_from_grid: np.ndarray, max_dist: float = 0.5, max_angle_deg: float = 40.0
) -> np.ndarray:
    """(m, 2) index pairs i < j of cameras within `max_dist` grid units and `max_angle_deg` of each other."""
    centres = grid_centres(cams, world_from_grid)
    dist = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    rots = np.stack([c.c2w[:3, :3] for c in cams])
    cos = (np.einsum("iab,jab->ij", rots, rots) - 1.0) / 2.0  # trace(Ri^T Rj) = sum Ri * Rj
    close = (dist < max_dist) & (cos > math.cos(math.radians(max_angle_deg)))
    i, j = np.nonzero(np.triu(close, k=1))
    return np.stack([i, j], axis=-1)


def interpolate_cameras(
    cams: Sequence[Camera], world_from_grid: np.ndarray, n_views: int, size: int, seed: int,
    max_dist: float = 0.5, max_angle_deg: float = 40.0,
) -> list[Camera]:
    """`n_views` cameras interpolated between random nearby pairs of `cams` (module docstring).

    Raises ConfigError when no pair satisfies the rule (fewer than two cameras, or all too far apart).
    """
    pairs = nearby_pairs(cams, world_from_grid, max_dist, max_angle_deg)
    if len(pairs) == 0:
        raise ConfigError(
            f"no pair of the {len(cams)} training cameras lies within {max_dist} normalised units and "
            f"{max_angle_deg} degrees of each other; use --poses orbit or --poses train"
        )
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_views):
        i, j = pairs[rng.integers(len(pairs))]
        t = float(rng.random())
        a, b = cams[i], cams[j]
        Kb = camera.scale_intrinsics(b.K, a.width / b.width, a.height / b.height)
        c2w = np.eye(4)
        c2w[:3, :3] = slerp(a.c2w[:3, :3], b.c2w[:3, :3], t)
        c2w[:3, 3] = (1.0 - t) * a.c2w[:3, 3] + t * b.c2w[:3, 3]
        out.append(resized(Camera((1.0 - t) * a.K + t * Kb, c2w, a.width, a.height), size))
    return out


def mean_up(cams: Sequence[Camera], world_from_grid: np.ndarray) -> np.ndarray:
    """Unit 'up' direction (3,) in the grid frame: the mean image-up (-y) axis of `cams`, else +z."""
    _, rot, _ = decompose_similarity(world_from_grid)
    if not cams:
        return np.array([0.0, 0.0, 1.0])
    up = rot.T @ -np.mean([c.c2w[:3, 1] for c in cams], axis=0)
    n = np.linalg.norm(up)
    return up / n if n > 1e-6 else np.array([0.0, 0.0, 1.0])


def orbit_cameras(
    world_from_grid: np.ndarray, n_views: int, size: int, cams: Sequence[Camera] = (),
    radius: float | None = None, elevation_deg: float = 20.0, fov_deg: float = 50.0,
) -> list[Camera]:
    """`n_views` square cameras evenly spaced on a circle around the grid centre, looking at it.

    The circle lies at `elevation_deg` above the plane normal to the training cameras' mean up direction, with
    `radius` grid units (default: median distance of the training cameras from the centre, else 3).
    """
    if radius is None:
        radius = float(np.median(np.linalg.norm(grid_centres(cams, world_from_grid), axis=1))) if cams else 3.0
    up = mean_up(cams, world_from_grid)
    e1 = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(up, e1)
    scale, rot, _ = decompose_similarity(world_from_grid)
    K = camera.intrinsics_from_fov(math.radians(fov_deg), size, size)
    el = math.radians(elevation_deg)
    out = []
    for k in range(n_views):
        az = 2.0 * math.pi * k / n_views
        eye = radius * (math.cos(el) * (math.cos(az) * e1 + math.sin(az) * e2) + math.sin(el) * up)
        g = camera.look_at(eye, np.zeros(3), up)
        c2w = np.eye(4)
        c2w[:3, :3] = rot @ g[:3, :3]
        c2w[:3, 3] = apply_transform(world_from_grid, eye[None])[0]
        out.append(Camera(K, c2w, size, size))
    return out


def make_cameras(
    kind: str, cams: Sequence[Camera], world_from_grid: np.ndarray, n_views: int, size: int, seed: int
) -> list[Camera]:
    """Cameras to render: kind "interpolate", "orbit" or "train" (the first `n_views` training cameras)."""
    if n_views < 1:
        raise ConfigError(f"--views must be at least 1, got {n_views}")
    if kind == "interpolate":
        return interpolate_cameras(cams, world_from_grid, n_views, size, seed)
    if kind == "orbit":
        return orbit_cameras(world_from_grid, n_views, size, cams)
    if kind == "train":
        if not cams:
            raise ConfigError("--poses train: the scene records no training cameras")
        return [resized(c, size) for c in cams[:n_views]]
    raise ConfigError(f"--poses {kind!r}: choose interpolate, orbit or train")
