"""The Scene format: normalisation, hold-out, downscaling, errors; and SparseGrid files."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from perfdata import camera, scene
from perfdata.errors import FormatVersionError, InputError
from perfdata.grid import SparseGrid
from perfdata.scene import Frame, Prescaled, Scene

W, H = 16, 12


def _ring_frames(n: int, centre: np.ndarray, radius: float = 4.03, fov: float = 0.6911, size: int = 800) -> list[Frame]:
    """Cameras on a sphere around `centre` looking at it, like NeRF-synthetic's."""
    rng = np.random.default_rng(0)
    K = camera.intrinsics_from_fov(fov, size, size)
    frames = []
    for i in range(n):
        d = rng.normal(size=3)
        d[2] = abs(d[2]) + 0.2  # upper hemisphere
        eye = centre + radius * d / np.linalg.norm(d)
        frames.append(Frame(f"{i}", K, camera.look_at(eye, centre), size, size, np.zeros((1, 1, 3))))
    return frames


def test_normalisation_from_cameras_on_a_lego_like_ring():
    centre = np.array([0.2, -0.1, 0.3])
    T = scene.normalisation_from_cameras(_ring_frames(40, centre))
    s, R, t = scene.decompose_similarity(T)
    np.testing.assert_allclose(t, centre, atol=1e-9)
    np.testing.assert_allclose(R, np.eye(3))
    assert s == pytest.approx(4.03 * np.tan(0.5 * 0.6911), rel=1e-6)  # 1.45: what fills the view


def test_normalisation_from_points_and_bounds():
    pts = np.random.default_rng(0).uniform([-1, 0, 2], [3, 1, 3], (5000, 3))
    T = scene.normalisation_from_points(pts, margin=1.0, percentile=0.0)
    grid = scene.apply_transform(np.linalg.inv(T), pts)
    assert np.abs(grid).max() <= 1.0 + 1e-9 and np.abs(grid[:, 0]).max() > 0.99  # the longest axis fills the cube
    T2 = scene.normalisation_from_bounds([-1, 0, 2], [3, 1, 3])
    np.testing.assert_allclose(scene.apply_transform(T2, [[1, 1, 1]]), [[1 + 2.2, 0.5 + 2.2, 2.5 + 2.2]])


def test_normalise_prefers_points_then_depth():
    frames = [dataclasses.replace(f, depth=np.full((800, 800), 2.0, np.float32)) for f in _ring_frames(6, np.zeros(3))]
    from_depth = scene.normalise(frames)
    K_small = camera.scale_intrinsics(frames[0].K, 1 / 50)
    pts = np.concatenate([camera.backproject(f.load_depth()[::50, ::50], K_small, f.c2w)[0] for f in frames])
    assert np.abs(scene.apply_transform(np.linalg.inv(from_depth), pts)).max() < 1.1
    np.testing.assert_allclose(scene.normalise(frames, points=pts), scene.normalisation_from_points(pts))


def _tiny_scene(n: int = 10) -> Scene:
    K = camera.intrinsics(10.0, 10.0, 8.0, 6.0)
    img = np.random.default_rng(0).uniform(0, 1, (H, W, 3)).astype(np.float32)
    depth = np.full((H, W), 2.0, np.float32)
    depth[:, :2] = 0.0
    labels = np.arange(H * W, dtype=np.int32).reshape(H, W) % 5
    frames = tuple(
        Frame(f"{i}", K, camera.look_at(np.array([i, -3.0, 0.0]), np.zeros(3)), W, H, img,
              depth=lambda d=depth: d, labels=labels)
        for i in range(n)
    )
    return Scene("tiny", frames, scene.similarity(2.0, np.zeros(3)))


def test_with_holdout():
    s = _tiny_scene(20).with_holdout(8)
    assert [f.name for f in s.heldout_frames] == ["0", "8", "16"] and len(s.train_frames) == 17
    assert len(s.with_holdout(0).heldout_frames) == 0


def test_downscaled_is_lazy_and_scales_K():
    calls = []
    s = _tiny_scene(2)
    f = dataclasses.replace(s.frames[0], image=lambda: calls.append(1) or s.frames[0].load_image())
    small = f.downscaled(2)
    assert calls == [] and callable(small.image)
    assert (small.width, small.height) == (8, 6)
    np.testing.assert_allclose(small.K, camera.intrinsics(5.0, 5.0, 4.0, 3.0))
    img = small.load_image()
    assert calls == [1] and img.shape == (6, 8, 3)
    np.testing.assert_allclose(img[0, 0], s.frames[0].load_image()[:2, :2].mean(axis=(0, 1)), atol=1e-6)
    depth = small.load_depth()
    np.testing.assert_allclose(depth[:, 0], 0.0)  # unknown zeros are not averaged in
    np.testing.assert_allclose(depth[:, 1:], 2.0)
    labels = small.load_labels()
    np.testing.assert_array_equal(labels, s.frames[0].load_labels()[1::2, 1::2])  # nearest pixel centre
    assert labels.dtype == np.int32


def test_downscaled_starts_from_a_prescaled_copy():
    """A stored 1/4 copy (LLFF's images_4/) is read as it is for factor 4, with its real size for K; factor 8
    halves it; factor 2 (no copy at or below it) resamples the full image."""
    s = _tiny_scene(1)
    full = s.frames[0]
    quarter = np.full((3, 4, 3), 0.25, np.float32)  # a 16x12 frame's 1/4 copy, 4x3
    f = dataclasses.replace(full, prescaled=(Prescaled(4, 4, 3, quarter),))
    q = f.downscaled(4)
    assert (q.width, q.height) == (4, 3) and q.prescaled == ()
    np.testing.assert_allclose(q.K, camera.scale_intrinsics(full.K, 0.25))
    np.testing.assert_array_equal(q.load_image(), quarter)
    e = f.downscaled(8)
    assert (e.width, e.height) == (2, 2) and np.allclose(e.load_image(), 0.25)  # round(12 / 8) = 2 rows
    np.testing.assert_allclose(f.downscaled(2).load_image(), full.downscaled(2).load_image())
    odd = dataclasses.replace(full, prescaled=(Prescaled(4, 5, 3, np.zeros((3, 5, 3), np.float32)),))
    assert odd.downscaled(4).width == 5  # the copy's real size wins over round(16 / 4)
    bad = dataclasses.replace(full, prescaled=(Prescaled(4, 4, 3, np.zeros((2, 4, 3), np.float32)),))
    with pytest.raises(InputError, match=r"image is 4x2, expected 4x3 \(1/4 of the full size\)"):
        bad.downscaled(4).load_image()


def test_grid_world_round_trip_and_summary():
    s = _tiny_scene(3)
    x = np.random.default_rng(0).uniform(-1, 1, (7, 3))
    np.testing.assert_allclose(s.world_to_grid(s.grid_to_world(x)), x)
    summary = s.summary()
    assert summary["frames"] == 3 and summary["resolution"] == [[W, H]] and summary["grid_scale"] == pytest.approx(2.0)
    assert summary["depth"] and summary["labels"] and not summary["masks"]
    with pytest.raises(ValueError, match="not a similarity"):
        scene.decompose_similarity(np.diag([1.0, 2.0, 1.0, 1.0]))


def test_scene_errors():
    with pytest.raises(InputError, match="no frames"):
        Scene("empty", (), np.eye(4))
    with pytest.raises(FormatVersionError, match="format_version 9"):
        dataclasses.replace(_tiny_scene(1), format_version=9)
    frame = dataclasses.replace(_tiny_scene(1).frames[0], width=W + 1)
    with pytest.raises(InputError, match="image is 16x12 but the intrinsics are for 17x12"):
        frame.load_image()


def test_sparse_grid_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    n = 50
    grid = SparseGrid(
        coords=rng.integers(0, 32, (n, 3)).astype(np.int32), density=rng.normal(size=n).astype(np.float32),
        sh=rng.normal(size=(n, 27)).astype(np.float32), reso=(32, 32, 32),
        world_from_grid=scene.similarity(1.5, np.array([0.1, 0.2, 0.3])),
        labels=rng.integers(-1, 5, n).astype(np.int16), background=np.array([1.0, 1.0, 1.0], np.float32),
    )
    grid.save(tmp_path / "grid.npz")
    back = SparseGrid.load(tmp_path / "grid.npz")
    for name in ("coords", "density", "sh", "world_from_grid", "labels", "background"):
        np.testing.assert_array_equal(getattr(back, name), getattr(grid, name))
    assert back.reso == (32, 32, 32) and back.logits is None
    np.testing.assert_allclose(back.world_centers(), grid.world_centers())
    order = back.sorted().linear_index()
    assert (np.diff(order) >= 0).all()
    with pytest.raises(InputError, match="file not found"):
        SparseGrid.load(tmp_path / "absent.npz")
    np.savez(tmp_path / "old.npz", format_version=np.array(0))
    with pytest.raises(FormatVersionError):
        SparseGrid.load(tmp_path / "old.npz")
