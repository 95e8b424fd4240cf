"""Novel cameras: interpolation rule, valid rotations, determinism, orbits."""

from __future__ import annotations

import math

import numpy as np
import pytest
from perfdata.pipelines.poses import (
    Camera,
    grid_centres,
    interpolate_cameras,
    make_cameras,
    nearby_pairs,
    orbit_cameras,
    rotation_angle_deg,
    slerp,
)

from perfdata import camera
from perfdata.errors import ConfigError
from perfdata.scene import similarity

# metric world: grid cube of half-size 2 m centred at (1, 2, 3)
WFG = similarity(2.0, np.array([1.0, 2.0, 3.0]))


def ring_cameras(n: int = 24, radius_m: float = 6.0) -> list[Camera]:
    """Cameras on a ring around the grid centre (consecutive ones ~0.26 grid units / 15 degrees apart)."""
    K = camera.intrinsics_from_fov(0.8, 80, 60)
    cams = []
    for k in range(n):
        a = 2 * math.pi * k / n
        eye = WFG[:3, 3] + radius_m * np.array([math.cos(a), math.sin(a), 0.3])
        cams.append(Camera(K, camera.look_at(eye, WFG[:3, 3]), 80, 60))
    return cams


def segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    t = np.clip(np.dot(p - a, b - a) / np.dot(b - a, b - a), 0, 1)
    return float(np.linalg.norm(a + t * (b - a) - p))


def test_interpolated_cameras_obey_rule() -> None:
    cams = ring_cameras()
    pairs = nearby_pairs(cams, WFG)
    centres = grid_centres(cams, WFG)
    for i, j in pairs:
        assert np.linalg.norm(centres[i] - centres[j]) < 0.5
        assert rotation_angle_deg(cams[i].c2w[:3, :3], cams[j].c2w[:3, :3]) < 40.0
    # ring spacing 15 deg, 3.0 grid units radius: neighbours 0.78 apart -> too far; use a closer ring
    close = ring_cameras(n=72)
    pairs = nearby_pairs(close, WFG)
    assert len(pairs) == 72  # each camera with its next (5 deg, 0.26 units); next-but-one is 0.52 units away
    out = interpolate_cameras(close, WFG, n_views=40, size=64, seed=1)
    cc = grid_centres(close, WFG)
    for cam in out:
        assert camera.is_valid_pose(cam.c2w)
        assert max(cam.width, cam.height) == 64 and (cam.width, cam.height) == (64, 48)
        g = grid_centres([cam], WFG)[0]
        # the centre lies on the segment of some nearby pair, and the rotation between that pair's
        best = min(pairs, key=lambda p: segment_distance(g, cc[p[0]], cc[p[1]]))
        assert segment_distance(g, cc[best[0]], cc[best[1]]) < 1e-9
        Ra, Rb, R = close[best[0]].c2w[:3, :3], close[best[1]].c2w[:3, :3], cam.c2w[:3, :3]
        assert rotation_angle_deg(Ra, R) + rotation_angle_deg(R, Rb) == pytest.approx(rotation_angle_deg(Ra, Rb))
        assert cam.K[0, 0] == pytest.approx(close[0].K[0, 0] * 0.8)


def test_interpolation_deterministic_from_seed() -> None:
    cams = ring_cameras(n=72)
    a = interpolate_cameras(cams, WFG, 10, 32, seed=5)
    b = interpolate_cameras(cams, WFG, 10, 32, seed=5)
    c = interpolate_cameras(cams, WFG, 10, 32, seed=6)
    assert all(np.array_equal(x.c2w, y.c2w) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x.c2w, y.c2w) for x, y in zip(a, c, strict=True))


def test_no_nearby_pair_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="--poses orbit"):
        interpolate_cameras(ring_cameras(n=6), WFG, 4, 32, seed=0)
    with pytest.raises(ConfigError, match="at least 1"):
        make_cameras("orbit", [], WFG, 0, 32, 0)


def test_slerp_endpoints_and_midpoint() -> None:
    Ra = camera.look_at(np.array([3.0, 0, 0]), np.zeros(3))[:3, :3]
    Rb = camera.look_at(np.array([0, 3.0, 0]), np.zeros(3))[:3, :3]
    assert np.allclose(slerp(Ra, Rb, 0.0), Ra) and np.allclose(slerp(Ra, Rb, 1.0), Rb)
    mid = slerp(Ra, Rb, 0.5)
    assert rotation_angle_deg(Ra, mid) == pytest.approx(45.0) == pytest.approx(rotation_angle_deg(mid, Rb))


def test_orbit_looks_at_centre() -> None:
    cams = orbit_cameras(WFG, n_views=8, size=40, cams=ring_cameras())
    for cam in cams:
        assert camera.is_valid_pose(cam.c2w)
        uv, z = camera.project(WFG[:3, 3][None], cam.K, cam.c2w)
        assert z[0] > 0 and np.allclose(uv[0], [20.0, 20.0])
        assert np.linalg.norm(grid_centres([cam], WFG)[0]) == pytest.approx(np.linalg.norm([6, 1.8]) / 2.0)
    train = make_cameras("train", ring_cameras(), WFG, 3, 40, 0)
    assert len(train) == 3 and (train[0].width, train[0].height) == (40, 30)
