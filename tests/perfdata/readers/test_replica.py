"""The replica reader on a tiny sequence in Semantic-NeRF's layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from perfdata import camera, images
from perfdata.errors import InputError
from perfdata.readers import load_scenes, replica

W, H = 16, 12


def _write_sequence(folder: Path, n: int = 12) -> list[np.ndarray]:
    poses = [camera.look_at(np.array([np.cos(a), np.sin(a), 0.5]) * 2, np.zeros(3)) for a in np.arange(n) * 0.5]
    for i in range(n):
        images.write_png(folder / f"rgb/rgb_{i}.png", np.full((H, W, 3), 10 * i, np.uint8))
        images.write_png(folder / f"depth/depth_{i}.png", images.depth_to_png(np.full((H, W), 2.0 + 0.1 * i)))
        labels = np.full((H, W), 3, np.uint8)
        labels[0] = 255
        images.write_png(folder / f"semantic_class/semantic_class_{i}.png", labels)
    np.savetxt(folder / "traj_w_c.txt", np.stack([p.ravel() for p in poses]))
    return poses


def test_sequence(tmp_path):
    poses = _write_sequence(tmp_path / "room_0" / "Sequence_1")
    (tmp_path / "room_0/info_semantic.json").write_text(json.dumps({"classes": [{"id": 1, "name": "chair"},
                                                                                 {"id": 3, "name": "wall"}]}))
    (scene,) = load_scenes("replica", tmp_path / "room_0")
    assert scene.scene_id == "Sequence_1" and len(scene.frames) == 12
    assert [f.name for f in scene.frames[:3]] == ["0", "1", "2"] and scene.frames[10].name == "10"  # numeric order
    f = scene.frames[10]
    np.testing.assert_allclose(f.K, camera.intrinsics(8.0, 8.0, 8.0, 6.0))  # hfov 90 at 16 px: fx = 8
    np.testing.assert_allclose(f.c2w, poses[10])
    np.testing.assert_allclose(f.load_depth(), 3.0, atol=1e-6)
    assert f.load_image()[0, 0, 0] == pytest.approx(100 / 255)
    labels = f.load_labels()
    assert (labels[0] == -1).all() and (labels[1:] == 3).all()
    assert scene.label_names == ("class_0", "chair", "class_2", "wall")


def test_pose_count_and_missing_files(tmp_path):
    folder = tmp_path / "Sequence_1"
    _write_sequence(folder, n=3)
    np.savetxt(folder / "traj_w_c.txt", np.loadtxt(folder / "traj_w_c.txt")[:2])
    with pytest.raises(InputError, match=r"traj_w_c\.txt: 2 poses for 3 images"):
        replica.load_scene(folder, "Sequence_1")
    _write_sequence(folder, n=3)
    (folder / "depth/depth_1.png").unlink()
    with pytest.raises(InputError, match=r"depth_1\.png: file not found"):
        replica.load_scene(folder, "Sequence_1")
    with pytest.raises(InputError, match="no scene 'nope'"):
        replica.load_scene(folder, "nope")
