"""The blender (transforms.json) reader: real lego, and tiny fixtures in NeRF-synthetic / instant-ngp /
nerfstudio / perfdata form."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from perfdata import camera, distortion, images
from perfdata.errors import FormatVersionError, InputError
from perfdata.readers import blender, load_scenes
from perfdata.scene import normalisation_from_bounds

W, H = 16, 12


def _ring(n: int, radius: float = 3.0) -> list[np.ndarray]:
    """OpenGL c2w matrices of cameras on a ring looking at the origin."""
    out = []
    for i in range(n):
        a = 2 * math.pi * i / n
        c2w_cv = camera.look_at(np.array([radius * math.cos(a), radius * math.sin(a), 1.0]), np.zeros(3))
        out.append(camera.opencv_to_opengl(c2w_cv))
    return out


def _write(folder: Path, name: str, meta: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(meta))


def _rgba(folder: Path, rel: str, seed: int, size: tuple[int, int] = (H, W)) -> np.ndarray:
    img = np.random.default_rng(seed).integers(0, 256, (*size, 4), dtype=np.uint8)
    images.write_png(folder / rel, img)
    return img


def _synthetic_scene(folder: Path, n_train: int = 3, n_test: int = 2) -> None:
    """NeRF-synthetic layout: split files, camera_angle_x, file_path without extension, RGBA."""
    poses = _ring(n_train + n_test)
    for split, idx in (("train", range(n_train)), ("test", range(n_train, n_train + n_test))):
        frames = []
        for j, i in enumerate(idx):
            _rgba(folder, f"{split}/r_{j}.png", i)
            frames.append({"file_path": f"./{split}/r_{j}", "transform_matrix": poses[i].tolist()})
        _write(folder, f"transforms_{split}.json", {"camera_angle_x": 0.8, "frames": frames})


def test_lego_numbers(shared_data):
    scene = blender.load_scene(shared_data / "lego", "lego")
    assert len(scene.frames) == 100 and len(scene.train_frames) == 100
    assert {(f.width, f.height) for f in scene.frames} == {(800, 800)}
    for f in scene.frames:
        assert f.K[0, 0] == pytest.approx(1111.111, abs=0.01) and f.K[1, 1] == pytest.approx(1111.111, abs=0.01)
        assert f.K[0, 2] == 400 and f.K[1, 2] == 400
        centre, axis = f.c2w[:3, 3], f.c2w[:3, 2]
        t = -centre @ axis  # the origin lies t metres in front of the camera along its optical axis
        assert 3.9 < t < 4.2
        assert np.linalg.norm(centre + t * axis) < 0.05  # the axis passes within 5 cm of the origin
        assert camera.is_valid_pose(f.c2w)
    assert scene.background == "white" and scene.has_masks and not scene.has_depth
    s = scene.summary()
    assert s["grid_scale"] == pytest.approx(1.45, abs=0.02) and np.allclose(s["grid_center"], 0, atol=0.05)


def test_lego_image_and_alpha_mask(shared_data):
    frame = blender.load_scene(shared_data / "lego", "lego").frames[0]
    rgb, mask = frame.load_image(), frame.load_mask()
    assert rgb.shape == (800, 800, 3) and rgb.dtype == np.float32 and mask.shape == (800, 800)
    assert 0.1 < mask.mean() < 0.5  # the bulldozer covers part of the view, corners are background
    assert not mask[0, 0] and not mask[-1, -1]


def test_split_files_merge_and_size_from_header(tmp_path):
    _synthetic_scene(tmp_path / "toy")
    (scene,) = load_scenes("synthetic", tmp_path)
    assert scene.scene_id == "toy" and len(scene.frames) == 5
    assert [f.split for f in scene.frames] == ["train"] * 3 + ["test"] * 2
    assert [f.name for f in scene.frames][:1] == ["train/r_0"] and scene.frames[3].name == "test/r_0"
    f = scene.frames[0]
    assert (f.width, f.height) == (W, H)
    assert f.K[0, 0] == pytest.approx(0.5 * W / math.tan(0.4))
    assert scene.background == "white"
    alpha = images.read_array(tmp_path / "toy/train/r_0.png")[..., 3]
    np.testing.assert_array_equal(f.load_mask(), alpha > 127.5)
    np.testing.assert_allclose(f.load_image(), images.read_array(tmp_path / "toy/train/r_0.png")[..., :3] / 255)
    # OpenGL -> OpenCV: every camera looks at the origin
    for fr in scene.frames:
        c, d = fr.c2w[:3, 3], fr.c2w[:3, 2]
        assert np.linalg.norm(c - (c @ d) * d) < 1e-9 and c @ d < 0


def test_nerfstudio_fields_overrides_and_perfdata_block(tmp_path):
    folder = tmp_path / "room"
    poses = _ring(2)
    depth = np.full((H, W), 2.5, dtype=np.float32)
    images.write_png(folder / "depth/0.png", images.depth_to_png(depth, 1000.0))
    np.save(folder / "depth_1.npy", depth * 2)  # 5.0 units * 0.5 factor -> 2.5 m
    images.write_png(folder / "mask/0.png", np.where(np.arange(W) < 5, 255, 0).astype(np.uint8)[None].repeat(H, 0))
    labels = np.arange(H * W).reshape(H, W) % 7
    labels[0, 0] = -1
    images.write_png(folder / "labels/0.png", images.labels_to_png(labels))
    frames = []
    for i in range(2):
        images.write_png(folder / f"images/{i}.png", np.full((H, W, 3), 40 * i, dtype=np.uint8))
        frames.append({"file_path": f"images/{i}.png", "transform_matrix": poses[i].tolist()})
    frames[0].update(depth_file_path="depth/0.png", mask_path="mask/0.png", label_path="labels/0.png")
    frames[1].update(depth_file_path="depth_1.npy", fl_x=30.0, cx=7.0)
    block = {"format_version": 1, "kind": "room", "class_name": "room", "label_names": list("abcdefg"),
             "bounds": [[-1, -2, 0], [1, 2, 3]], "background": None, "seed": 7}
    meta = {"fl_x": 20.0, "fl_y": 21.0, "cx": 8.5, "cy": 6.0, "w": W, "h": H, "depth_unit_scale_factor": 1e-3,
            "perfdata": block, "frames": frames}
    _write(folder, "transforms.json", meta)
    scene = blender.load_scene(folder, "room")
    f0, f1 = scene.frames
    np.testing.assert_allclose(f0.K, camera.intrinsics(20.0, 21.0, 8.5, 6.0))
    np.testing.assert_allclose(f1.K, camera.intrinsics(30.0, 21.0, 7.0, 6.0))
    np.testing.assert_allclose(f0.load_depth(), 2.5)
    assert f0.load_mask()[:, :5].all() and not f0.load_mask()[:, 5:].any()
    np.testing.assert_array_equal(f0.load_labels(), labels)
    np.testing.assert_allclose(scene.world_from_grid, normalisation_from_bounds([-1, -2, 0], [1, 2, 3]))
    assert scene.class_name == "room" and scene.label_names == tuple("abcdefg") and scene.background is None
    assert scene.meta["seed"] == 7 and scene.meta["kind"] == "room"
    meta["depth_unit_scale_factor"] = 0.5
    _write(folder, "transforms.json", meta)
    np.testing.assert_allclose(blender.load_scene(folder, "room").frames[1].load_depth(), 2.5)


def _pattern(xy: np.ndarray) -> np.ndarray:
    """A smooth colour pattern of undistorted normalised coordinates (n, 2) -> (n, 3) in [0.1, 0.9]."""
    x, y = xy[:, 0], xy[:, 1]
    return np.stack([0.5 + 0.4 * np.sin(9 * x), 0.5 + 0.4 * np.cos(8 * y), 0.5 + 0.4 * np.sin(6 * x + 7 * y)], -1)


def _newton_undistort(xy_d: np.ndarray, d: distortion.Distortion) -> np.ndarray:
    """An independent inverse of the distortion (Newton's method with a numerical Jacobian)."""
    xy = xy_d.copy()
    eps = 1e-7
    for _ in range(20):
        r = distortion.distort(xy, d) - xy_d
        jx = (distortion.distort(xy + [eps, 0], d) - distortion.distort(xy, d)) / eps
        jy = (distortion.distort(xy + [0, eps], d) - distortion.distort(xy, d)) / eps
        J = np.stack([jx, jy], axis=-1)  # (n, 2 outputs, 2 inputs)
        xy = xy - np.linalg.solve(J, r[..., None])[..., 0]
    return xy


def test_instant_ngp_distortion_is_removed(tmp_path):
    w, h, fx, fy, cx, cy = 64, 48, 50.0, 52.0, 33.0, 23.5
    d = distortion.Distortion(k1=-0.25, k2=0.06, p1=0.01, p2=-0.008)
    uv = camera.pixel_grid(w, h)
    xy_d = np.stack([(uv[:, 0] - cx) / fx, (uv[:, 1] - cy) / fy], -1)
    distorted = _pattern(_newton_undistort(xy_d, d)).reshape(h, w, 3)
    images.write_png(tmp_path / "cap/images/0.png", distorted)
    meta = {"fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy, "w": w, "h": h, "camera_model": "OPENCV",
            **{k: getattr(d, k) for k in ("k1", "k2", "p1", "p2")},
            "frames": [{"file_path": "images/0.png", "transform_matrix": np.eye(4).tolist()}]}
    _write(tmp_path / "cap", "transforms.json", meta)
    frame = blender.load_scene(tmp_path / "cap", "cap").frames[0]
    got = frame.load_image()
    truth = _pattern(np.stack([(uv[:, 0] - cx) / fx, (uv[:, 1] - cy) / fy], -1)).reshape(h, w, 3)
    inner = np.s_[6:-6, 6:-6]  # away from the border, where undistorted pixels see the capture
    err = np.abs(got[inner] - truth[inner])
    assert err.max() < 0.01 and err.mean() < 0.002  # measured: 0.0039 and 0.0010 (8-bit PNG, bilinear)
    raw = np.abs(distorted[inner] - truth[inner])  # without undistortion: 0.020 mean, 0.2 max
    assert raw.mean() > 0.01 and raw.max() > 0.1


def test_undistort_inverts_distort():
    d = distortion.Distortion(k1=-0.2, k2=0.05, k3=0.01, p1=0.003, p2=-0.004)
    xy = np.random.default_rng(0).uniform(-0.6, 0.6, (200, 2))
    np.testing.assert_allclose(distortion.undistort(distortion.distort(xy, d), d), xy, atol=1e-9)


def test_unknown_perfdata_version(tmp_path):
    _synthetic_scene(tmp_path / "s", n_test=0)
    meta = json.loads((tmp_path / "s/transforms_train.json").read_text())
    meta["perfdata"] = {"format_version": 99}
    _write(tmp_path / "s", "transforms_train.json", meta)
    with pytest.raises(FormatVersionError, match="99"):
        blender.load_scene(tmp_path / "s", "s")


def _edit_first_frame(folder: Path, **changes) -> None:
    meta = json.loads((folder / "transforms_train.json").read_text())
    meta["frames"][1].update(changes)
    _write(folder, "transforms_train.json", meta)


def test_bad_input(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        list(load_scenes("blender", tmp_path / "absent"))
    _synthetic_scene(tmp_path / "s", n_test=0)
    (tmp_path / "s/train/r_1.png").unlink()
    with pytest.raises(InputError, match=r"r_1\.png: image not found"):
        blender.load_scene(tmp_path / "s", "s")
    (tmp_path / "s/train/r_1.png").write_bytes(b"not a png at all")
    frame = blender.load_scene(tmp_path / "s", "s").frames[1]  # lazily loaded: fails on load
    with pytest.raises(InputError, match=r"r_1\.png: cannot read image"):
        frame.load_image()
    _rgba(tmp_path / "s", "train/r_1.png", 0, size=(H + 2, W))
    frame = blender.load_scene(tmp_path / "s", "s").frames[1]
    with pytest.raises(InputError, match=r"r_1\.png: image is 16x14 but the intrinsics are for 16x12"):
        frame.load_image()
    _edit_first_frame(tmp_path / "s", transform_matrix=np.full((4, 4), np.nan).tolist())
    with pytest.raises(InputError, match="transforms_train.json: frame 1.*non-finite"):
        blender.load_scene(tmp_path / "s", "s")


def test_size_disagreeing_with_wh_is_caught_at_scene_load(tmp_path):
    _synthetic_scene(tmp_path / "s", n_test=0)
    meta = json.loads((tmp_path / "s/transforms_train.json").read_text())
    meta.update(w=32, h=24)
    _write(tmp_path / "s", "transforms_train.json", meta)
    with pytest.raises(InputError, match=r"r_0\.png: image is 16x12 but transforms_train.json says 32x24"):
        blender.load_scene(tmp_path / "s", "s")
