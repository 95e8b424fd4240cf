"""The rgbd reader: the real hololens-000 sequence and tiny fixtures in its layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from perfdata import camera, images
from perfdata.errors import InputError
from perfdata.readers import load_scenes, rgbd

W, H = 16, 12
K = camera.intrinsics(14.0, 14.0, 8.0, 6.0)


def _write_capture(folder: Path, n: int = 3, with_frames_txt: bool = False) -> list[np.ndarray]:
    poses = [camera.look_at(np.array([0.3 * i, 0.0, -2.0]), np.zeros(3), up=np.array([0, -1.0, 0])) for i in range(n)]
    names = [f"{i:05d}.png" for i in range(n)]
    for i, name in enumerate(names):
        images.write_png(folder / "images" / name, np.full((H, W, 3), 20 * i, dtype=np.uint8))
        images.write_png(folder / "depth" / name, images.depth_to_png(np.full((H, W), 1.0 + i)))
    np.savetxt(folder / "K.txt", K)
    order = list(reversed(range(n))) if with_frames_txt else list(range(n))
    np.savetxt(folder / "poses.txt", np.stack([poses[i].ravel() for i in order]))
    if with_frames_txt:
        (folder / "frames.txt").write_text("# index name\n" + "".join(f"{j} {names[i]}\n" for j, i in enumerate(order)))
    return poses


def test_hololens_depth_reprojects_between_frames(shared_data):
    scene = rgbd.load_scene(shared_data / "hololens-000", "hololens-000")
    assert len(scene.frames) == 94 and scene.has_depth
    f0, f1 = scene.frames[:2]
    assert (f0.width, f0.height) == (540, 360) and f0.K[0, 0] == pytest.approx(495.57, abs=0.01)
    assert f0.name == "00003" and f1.name == "00007"
    d0, d1 = f0.load_depth(), f1.load_depth()
    points, _ = camera.backproject(d0, f0.K, f0.c2w)
    uv, z = camera.project(points, f1.K, f1.c2w)
    cols, rows = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
    inside = (cols >= 0) & (cols < 540) & (rows >= 0) & (rows < 360) & (z > 0)
    target = d1[rows[inside], cols[inside]]
    both = target > 0
    assert both.sum() > 50_000
    err = np.abs(target[both] - z[inside][both])
    assert np.median(err) < 0.01  # measured 2.8 mm


def test_fixture_reads_in_frames_txt_order(tmp_path):
    poses = _write_capture(tmp_path / "cap", with_frames_txt=True)
    (scene,) = load_scenes("rgbd", tmp_path)
    assert [f.name for f in scene.frames] == ["00002", "00001", "00000"]
    np.testing.assert_allclose(scene.frames[0].c2w, poses[2])
    np.testing.assert_allclose(scene.frames[0].load_depth(), 3.0)
    np.testing.assert_allclose(scene.frames[0].load_image(), 40 / 255)
    np.testing.assert_allclose(scene.frames[1].K, K)
    assert scene.source == f"rgbd:{tmp_path / 'cap'}"


def test_wrong_pose_count(tmp_path):
    _write_capture(tmp_path / "cap")
    lines = (tmp_path / "cap/poses.txt").read_text().splitlines()
    (tmp_path / "cap/poses.txt").write_text("\n".join(lines[:2]) + "\n")
    with pytest.raises(InputError, match=r"poses\.txt: 2 poses for 3 images"):
        rgbd.load_scene(tmp_path / "cap", "cap")


def test_non_finite_pose_names_line(tmp_path):
    _write_capture(tmp_path / "cap")
    lines = (tmp_path / "cap/poses.txt").read_text().splitlines()
    lines[1] = " ".join(["nan"] + lines[1].split()[1:])
    (tmp_path / "cap/poses.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"poses\.txt: line 2: non-finite pose"):
        rgbd.load_scene(tmp_path / "cap", "cap")


def test_missing_and_unreadable_images(tmp_path):
    _write_capture(tmp_path / "cap")
    (tmp_path / "cap/depth/00001.png").unlink()
    with pytest.raises(InputError, match=r"00001\.png: depth map not found"):
        rgbd.load_scene(tmp_path / "cap", "cap")
    images.write_png(tmp_path / "cap/depth/00001.png", np.zeros((H, W), np.uint16))
    (tmp_path / "cap/images/00002.png").write_bytes(b"\x89PNG garbage")
    frame = rgbd.load_scene(tmp_path / "cap", "cap").frames[2]
    with pytest.raises(InputError, match=r"00002\.png: cannot read image"):
        frame.load_image()
    (tmp_path / "cap/images/00000.png").unlink()  # without frames.txt the listing is short of a pose
    with pytest.raises(InputError, match=r"poses\.txt: 3 poses for 2 images"):
        rgbd.load_scene(tmp_path / "cap", "cap")
    (tmp_path / "cap/frames.txt").write_text("00000.png\n00001.png\n00002.png\n")
    with pytest.raises(InputError, match=r"00000\.png: image not found"):
        rgbd.load_scene(tmp_path / "cap", "cap")


def test_image_size_disagreeing_with_intrinsics(tmp_path):
    _write_capture(tmp_path / "cap")
    np.savetxt(tmp_path / "cap/K.txt", camera.scale_intrinsics(K, 2.0))  # K of a 32x24 image
    with pytest.raises(InputError, match=r"00000\.png: image is 16x12 but the principal point in K\.txt"):
        rgbd.load_scene(tmp_path / "cap", "cap")
    np.savetxt(tmp_path / "cap/K.txt", K)
    images.write_png(tmp_path / "cap/images/00001.png", np.zeros((H // 2, W // 2, 3), np.uint8))
    frame = rgbd.load_scene(tmp_path / "cap", "cap").frames[1]
    with pytest.raises(InputError, match=r"00001\.png: image is 8x6 but the intrinsics are for 16x12"):
        frame.load_image()
