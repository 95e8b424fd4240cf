"""Camera maths: rays, projection, conventions, look_at."""

from __future__ import annotations

import math

import numpy as np
import pytest

from perfdata import camera

K = camera.intrinsics(50.0, 45.0, 31.0, 23.5)


def test_rays_and_projection_round_trip():
    c2w = camera.look_at(np.array([1.0, -2.0, 0.5]), np.array([0.1, 0.2, 0.0]))
    uv = np.random.default_rng(0).uniform([0, 0], [64, 48], (100, 2))
    t = np.random.default_rng(1).uniform(0.5, 5.0, 100)
    origins, dirs = camera.pixel_rays(K, c2w, uv)
    points = origins + dirs * t[:, None]
    uv_back, z = camera.project(points, K, c2w)
    np.testing.assert_allclose(uv_back, uv, atol=1e-9)
    np.testing.assert_allclose(z, t, atol=1e-9)  # the ray parameter is z-depth
    np.testing.assert_allclose(origins, np.broadcast_to(c2w[:3, 3], origins.shape))


def test_pixel_grid_uses_pixel_centres():
    grid = camera.pixel_grid(3, 2)
    np.testing.assert_array_equal(grid[:4], [[0.5, 0.5], [1.5, 0.5], [2.5, 0.5], [0.5, 1.5]])
    _, dirs = camera.image_rays(camera.intrinsics(1.0, 1.0, 1.5, 1.0), np.eye(4), 3, 2)
    np.testing.assert_allclose(dirs[1], [0.0, -0.5, 1.0])  # pixel (1, 0): centre column, upper row


def test_opengl_opencv_conversion():
    c2w_gl = np.eye(4)
    c2w_gl[:3, 3] = [0.0, 0.0, 5.0]  # an OpenGL camera at z = 5 looking down -z at the origin
    c2w_cv = camera.opengl_to_opencv(c2w_gl)
    K0 = camera.intrinsics(100.0, 100.0, 50.0, 50.0)
    uv, z = camera.project(np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), K0, c2w_cv)
    np.testing.assert_allclose(z, 5.0)  # in front
    np.testing.assert_allclose(uv[0], [50, 50])
    assert uv[1, 0] > 50 and uv[2, 1] < 50  # world right stays right, world up (GL +y) goes up the image
    M = camera.look_at(np.array([1.0, 2.0, 3.0]), np.zeros(3))
    np.testing.assert_allclose(camera.opencv_to_opengl(camera.opengl_to_opencv(M)), M)
    assert camera.is_valid_pose(camera.opengl_to_opencv(M))


def test_look_at():
    eye, target = np.array([3.0, 0.0, 1.0]), np.array([0.0, 0.5, 0.0])
    c2w = camera.look_at(eye, target)
    assert camera.is_valid_pose(c2w)
    forward = (target - eye) / np.linalg.norm(target - eye)
    np.testing.assert_allclose(c2w[:3, 2], forward)
    assert c2w[:3, 1] @ np.array([0.0, 0.0, 1.0]) < 0  # image "down" points away from world up
    uv, z = camera.project(target[None], K, c2w)
    np.testing.assert_allclose(uv[0], K[:2, 2])
    np.testing.assert_allclose(z, np.linalg.norm(target - eye))
    assert camera.is_valid_pose(camera.look_at(np.array([0.0, 0.0, 2.0]), np.zeros(3)))  # looking along up


def test_backproject_then_project():
    c2w = camera.look_at(np.array([0.0, -3.0, 1.0]), np.zeros(3))
    depth = np.random.default_rng(2).uniform(1.0, 4.0, (48, 64))
    depth[::5, ::7] = 0.0  # unknown
    points, flat = camera.backproject(depth, K, c2w)
    assert len(points) == (depth > 0).sum()
    uv, z = camera.project(points, K, c2w)
    np.testing.assert_allclose(z, depth.ravel()[flat], atol=1e-9)
    np.testing.assert_allclose(uv, camera.pixel_grid(64, 48)[flat], atol=1e-9)


def test_intrinsics_from_fov_and_scaling():
    K_lego = camera.intrinsics_from_fov(0.6911112070083618, 800, 800)
    assert K_lego[0, 0] == pytest.approx(1111.111, abs=1e-3) and K_lego[0, 2] == 400
    assert camera.intrinsics_from_fov(math.pi / 2, 64, 48, fov_y=math.pi / 3)[1, 1] == pytest.approx(24 / math.tan(math.pi / 6))
    half = camera.scale_intrinsics(K, 0.5)
    c2w = camera.look_at(np.array([0.0, -3.0, 1.0]), np.zeros(3))
    X = np.random.default_rng(3).uniform(-0.5, 0.5, (10, 3))
    np.testing.assert_allclose(camera.project(X, half, c2w)[0], camera.project(X, K, c2w)[0] / 2, atol=1e-9)


def test_is_valid_pose_rejects():
    bad = np.eye(4)
    bad[0, 0] = np.inf
    assert not camera.is_valid_pose(bad)
    assert not camera.is_valid_pose(np.diag([2.0, 1.0, 1.0, 1.0]))  # scaled
    assert not camera.is_valid_pose(np.diag([-1.0, 1.0, 1.0, 1.0]))  # reflection
