"""`perfdata render --cameras FILE`: transforms.json, a render's cameras.json and nerfstudio camera_path.json
read into the same cameras; the views rendered are exactly the file's; bad files are named errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from perfdata.pipelines.camera_files import read_camera_file

from perfdata import camera, images
from perfdata.cli import main
from perfdata.errors import InputError
from perfdata.readers import get_reader
from perfdata.synthetic import make_object_scene, write_scene

LEGO = Path(__file__).resolve().parents[3] / "shared" / "data" / "lego"


def test_transforms_json_cameras_are_the_readers_own(tmp_path: Path) -> None:
    write_scene(make_object_scene(1, n_views=5, size=24, scene_id="obj"), tmp_path / "obj")
    scene = get_reader("synthetic").load_scene(tmp_path, "obj")
    cams = read_camera_file(tmp_path / "obj" / "transforms.json")
    assert len(cams) == len(scene.frames)
    for (_, cam), f in zip(cams, scene.frames, strict=True):
        np.testing.assert_allclose(cam.K, f.K)
        np.testing.assert_allclose(cam.c2w, f.c2w)
        assert (cam.width, cam.height) == (f.width, f.height)


@pytest.mark.skipif(not LEGO.is_dir(), reason="../shared/data/lego is absent")
def test_real_nerf_synthetic_transforms_without_w_h() -> None:
    """lego's transforms_train.json has only camera_angle_x: the size comes from its first image (800x800)."""
    cams = read_camera_file(LEGO / "transforms_train.json")
    assert len(cams) == 100
    name, cam = cams[0]
    assert (cam.width, cam.height) == (800, 800) and cam.K[0, 0] == pytest.approx(1111.111, rel=1e-4)
    assert np.linalg.norm(cam.c2w[:3, 3]) == pytest.approx(4.03, abs=0.05)  # the cameras' sphere
    # OpenCV axes: the optical axis (+z) points at the object near the origin
    to_origin = -cam.c2w[:3, 3] / np.linalg.norm(cam.c2w[:3, 3])
    assert float(cam.c2w[:3, 2] @ to_origin) > 0.9


def test_nerfstudio_camera_path(tmp_path: Path) -> None:
    c2w_gl = np.eye(4)
    c2w_gl[:3, 3] = [0.0, 0.0, 3.0]  # OpenGL: looking down -z, at the origin
    doc = {"render_width": 64, "render_height": 48,
           "camera_path": [{"camera_to_world": c2w_gl.reshape(-1).tolist(), "fov": 60.0, "aspect": 4 / 3}]}
    (tmp_path / "camera_path.json").write_text(json.dumps(doc))
    (_, cam), = read_camera_file(tmp_path / "camera_path.json")
    fy = 24 / math.tan(math.radians(30))
    np.testing.assert_allclose(cam.K, [[fy, 0, 32], [0, fy, 24], [0, 0, 1]])
    np.testing.assert_allclose(cam.c2w[:3, 2], [0, 0, -1])  # OpenCV +z = OpenGL -z
    o, d = camera.pixel_rays(cam.K, cam.c2w, np.array([[32.0, 24.0]]))
    np.testing.assert_allclose(o + d * 3.0, [[0.0, 0.0, 0.0]], atol=1e-9)


@pytest.mark.parametrize("content, problem", [
    ("{", "not a readable JSON camera file"),
    ('{"something": 1}', "neither a transforms.json"),
    ('{"frames": []}', "holds no cameras"),
    ('{"render_width": 8, "render_height": 8, "camera_path": [{"camera_to_world": [1, 2], "fov": 50}]}',
     "malformed camera entry"),
    ('{"render_width": 8, "render_height": 8, "camera_path": [{"camera_to_world": '
     + json.dumps(np.eye(4).reshape(-1).tolist()) + ', "fov": 400}]}', "fov 400.0 must be"),
])
def test_bad_camera_files_are_named(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "cams.json"
    path.write_text(content)
    with pytest.raises(InputError, match=problem) as err:
        read_camera_file(path)
    assert str(path) in str(err.value)


def test_render_cli_renders_exactly_the_files_cameras(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Fit a scene, render it on its own transforms.json cameras, then again on the cameras.json that wrote."""
    write_scene(make_object_scene(2, n_views=8, size=24, scene_id="obj"), tmp_path / "data" / "obj")
    main(["fit", "--reader", "synthetic", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "fits"),
          "--steps", "30", "--resolution", "16", "--device", "cpu"])
    main(["export", "--fits", str(tmp_path / "fits"), "--out", str(tmp_path / "s.zarr")])
    cams_file = tmp_path / "data" / "obj" / "transforms.json"
    main(["render", "--store", str(tmp_path / "s.zarr"), "--out", str(tmp_path / "r1"), "--cameras", str(cams_file),
          "--what", "rgb", "--device", "cpu"])
    meta = json.loads((tmp_path / "r1" / "obj" / "cameras.json").read_text())
    assert meta["poses"] == "file" and len(meta["views"]) == 8
    expected = read_camera_file(cams_file)
    for view, (_, cam) in zip(meta["views"], expected, strict=True):
        np.testing.assert_allclose(view["c2w"], cam.c2w)
        rgb = images.read_rgba(tmp_path / "r1" / "obj" / f"{view['name']}.rgb.png")[0]
        assert rgb.shape == (cam.height, cam.width, 3)
    main(["render", "--store", str(tmp_path / "s.zarr"), "--out", str(tmp_path / "r2"), "--what", "rgb",
          "--cameras", str(tmp_path / "r1" / "obj" / "cameras.json"), "--device", "cpu"])
    again = json.loads((tmp_path / "r2" / "obj" / "cameras.json").read_text())
    assert [v["c2w"] for v in again["views"]] == [v["c2w"] for v in meta["views"]]
    with pytest.raises(SystemExit) as exit_info:
        main(["render", "--store", str(tmp_path / "s.zarr"), "--out", str(tmp_path / "r3"),
              "--cameras", str(tmp_path / "nosuch.json")])
    assert exit_info.value.code == 2 and not (tmp_path / "r3").exists()
    assert "nosuch.json: camera file not found" in capsys.readouterr().err
