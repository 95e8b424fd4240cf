"""The scannet reader on a tiny scene in ScanNet's export layout (colour 32x24, depth 16x12)."""

from __future__ import annotations

import logging
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from perfdata import camera, images
from perfdata.errors import InputError
from perfdata.readers import load_scenes, scannet

CW, CH, DW, DH = 32, 24, 16, 12
K_COLOR = camera.intrinsics(28.0, 27.0, 16.0, 12.0)
K_DEPTH = camera.intrinsics(14.5, 13.0, 8.25, 6.0)  # a slightly different depth camera, as in ScanNet


def _mat4(K: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = K
    return out


def _write_scene(folder: Path, n: int = 3, bad_pose: int | None = 1) -> None:
    for sub in ("color", "depth", "pose", "intrinsic", "label-filt"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    np.savetxt(folder / "intrinsic/intrinsic_color.txt", _mat4(K_COLOR))
    np.savetxt(folder / "intrinsic/intrinsic_depth.txt", _mat4(K_DEPTH))
    cols = np.arange(DW)[None].repeat(DH, 0)
    raw = np.zeros((CH, CW), np.uint16)
    raw[:, :8], raw[:, 8:16], raw[:, 16:24], raw[:, 24:] = 1, 3, 4, 1000
    raw[:2] = 0
    for i in range(n):
        iio.imwrite(folder / f"color/{i}.jpg", np.full((CH, CW, 3), 30 * i + 20, np.uint8), extension=".jpg")
        images.write_png(folder / f"depth/{i}.png", (1000 + cols).astype(np.uint16))  # 1 m + 1 mm per column
        images.write_png(folder / f"label-filt/{i}.png", raw)
        pose = camera.look_at(np.array([i * 0.1, 0.0, -2.0]), np.zeros(3))
        if i == bad_pose:
            pose[:] = -np.inf
        np.savetxt(folder / f"pose/{i}.txt", pose)
    (folder.parent / scannet.LABEL_TSV).write_text(
        "id\traw_category\tcategory\tcount\tnyu40id\n1\twall\twall\t9\t1\n2\tfloor\tfloor\t9\t2\n"
        "3\tshelf\tshelf\t9\t39\n4\tpillow\tpillow\t9\t18\n")


def test_scene_poses_resolution_and_labels(tmp_path, caplog):
    _write_scene(tmp_path / "scene0000_00")
    with caplog.at_level(logging.WARNING, logger="perfdata.readers.scannet"):
        (scene,) = load_scenes("scannet", tmp_path)
    assert "pose/1.txt: non-finite pose, frame dropped" in caplog.text
    assert [f.name for f in scene.frames] == ["0", "2"] and scene.meta["dropped_frames"] == 1
    f = scene.frames[1]
    assert (f.width, f.height) == (DW, DH)
    np.testing.assert_allclose(f.K, camera.intrinsics(14.0, 13.5, 8.0, 6.0))  # colour K scaled by 1/2
    rgb = f.load_image()
    assert rgb.shape == (DH, DW, 3) and abs(float(rgb.mean()) - 80 / 255) < 0.02
    labels = f.load_labels()
    assert labels.shape == (DH, DW)
    np.testing.assert_array_equal(labels[5], [0] * 4 + [19] * 4 + [-1] * 8)  # wall, shelf -> otherfurniture
    assert (labels[0] == -1).all()  # raw 0 = unannotated
    assert scene.label_names[0] == "wall" and scene.label_names[19] == "otherfurniture"
    assert len(scene.label_names) == 20


def test_depth_is_resampled_into_the_frame_camera(tmp_path):
    _write_scene(tmp_path / "scene0000_00", bad_pose=None)
    f = scannet.load_scene(tmp_path, "scene0000_00").frames[0]
    depth = f.load_depth()
    # the ray through each frame pixel centre, seen by the depth camera: which depth column holds it?
    u = np.arange(DW) + 0.5
    ray_x = (u - f.K[0, 2]) / f.K[0, 0]
    col = np.floor(K_DEPTH[0, 0] * ray_x + K_DEPTH[0, 2]).astype(int)
    expected = np.where((col >= 0) & (col < DW), 1.0 + 0.001 * col, 0.0)
    np.testing.assert_allclose(depth[6], expected, atol=1e-6)
    assert not np.array_equal(col, np.arange(DW))  # the two cameras really differ


def test_mesh_vertices_become_points(tmp_path):
    folder = tmp_path / "scene0001_00"
    _write_scene(folder)
    xyz = np.random.default_rng(0).uniform(-1, 1, (50, 3)).astype(np.float32)
    vertex = np.array(list(map(tuple, xyz)), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    PlyData([PlyElement.describe(vertex, "vertex")]).write(str(folder / "scene0001_00_vh_clean_2.ply"))
    scene = scannet.load_scene(folder, "scene0001_00")
    np.testing.assert_allclose(scene.points, xyz, atol=1e-6)
    assert scene.grid_to_world(np.array([[1.0, 1.0, 1.0]]))[0] == pytest.approx(xyz.max(0), abs=0.3)


def test_bad_input(tmp_path, caplog):
    folder = tmp_path / "scene0002_00"
    _write_scene(folder)
    (folder.parent / scannet.LABEL_TSV).unlink()
    with caplog.at_level(logging.WARNING):
        assert scannet.load_scene(folder, "scene0002_00").label_names is None
    assert "scannetv2-labels.combined.tsv" in caplog.text
    (folder / "depth/2.png").unlink()
    with pytest.raises(InputError, match=r"depth/2\.png: file not found"):
        scannet.load_scene(folder, "scene0002_00")
    images.write_png(folder / "depth/2.png", np.zeros((DH * 2, DW * 2), np.uint16))
    with pytest.raises(InputError, match=r"depth/2\.png: depth map is 32x24, expected 16x12"):
        scannet.load_scene(folder, "scene0002_00")  # normalisation reads the depth
    (folder / "color/0.jpg").write_bytes(b"garbage")
    with pytest.raises(InputError, match=r"color/0\.jpg: cannot read image"):
        scannet.load_scene(folder, "scene0002_00")
    (folder / "pose/0.txt").write_text("1 2 3\n")
    with pytest.raises(InputError, match=r"pose/0\.txt: expected a 4x4 pose"):
        scannet.load_scene(folder, "scene0002_00")
