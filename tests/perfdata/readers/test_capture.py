"""Capture kinds guessed from cameras, the reference pose, and the forward-facing normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from perfdata import camera
from perfdata.readers.capture import (
    frustum_corners,
    guess_capture,
    normalisation_from_frustums,
    reference_pose,
)
from perfdata.scene import Frame, decompose_similarity


def _ring(n: int = 12, arc: float = 2 * np.pi) -> np.ndarray:
    return np.stack([camera.look_at(np.array([3 * np.cos(a), 3 * np.sin(a), 1.0]), np.zeros(3))
                     for a in np.linspace(0, arc, n, endpoint=False)])


def _forward(n: int = 9) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.stack([camera.look_at(np.array([x, -5.0, z]), np.array([0.3 * x, 10.0, 0.3 * z]))
                     for x, z in rng.uniform(-1, 1, (n, 2))])


def _room(n: int = 12) -> np.ndarray:  # inside a room, looking out at the walls in every direction
    return np.stack([camera.look_at(np.array([0.2 * np.cos(a), 0.2 * np.sin(a), 1.5]),
                                    np.array([4 * np.cos(a + 0.3), 4 * np.sin(a + 0.3), 1.2]))
                     for a in np.linspace(0, 2 * np.pi, n, endpoint=False)])


@pytest.mark.parametrize(("c2ws", "kind"), [(_ring(), "object"), (_ring(8, np.pi), "object"), (_forward(), "forward_facing"),
                                            (_room(), "room")])
def test_guess_capture(c2ws, kind):
    assert guess_capture(c2ws) == kind


def test_reference_pose_is_the_average_camera():
    c2ws = _forward()
    ref = reference_pose(c2ws)
    assert camera.is_valid_pose(ref)
    np.testing.assert_allclose(ref[:3, 3], c2ws[:, :3, 3].mean(0))
    mean_axis = c2ws[:, :3, 2].mean(0)
    np.testing.assert_allclose(ref[:3, 2], mean_axis / np.linalg.norm(mean_axis))
    assert ref[:3, 1] @ c2ws[:, :3, 1].mean(0) > 0.99  # image-down kept


def test_frustum_cube_is_the_smallest_holding_every_frustum():
    K = camera.intrinsics(50, 50, 32, 24)
    frames = [Frame(str(i), K, c2w, 64, 48, image=np.zeros((48, 64, 3))) for i, c2w in enumerate(_forward())]
    ref = reference_pose(np.stack([f.c2w for f in frames]))
    T = normalisation_from_frustums(frames, 2.0, 12.0, ref)
    scale, rot, _ = decompose_similarity(T)
    np.testing.assert_allclose(rot, ref[:3, :3], atol=1e-12)
    inv = np.linalg.inv(T)
    corners = np.concatenate([frustum_corners(f, (2.0, 12.0)) for f in frames]) @ inv[:3, :3].T + inv[:3, 3]
    assert np.abs(corners).max() == pytest.approx(1.0)  # touches the cube: no smaller cube holds them
    far = frustum_corners(frames[0], (12.0,))  # the far image corners lie at z-depth 12 in front of the camera
    _, z = camera.project(far, K, frames[0].c2w)
    np.testing.assert_allclose(z, 12.0)
    assert scale > 0.5 * 12.0 * 32 / 50  # at least the half-width of one far frustum slice
