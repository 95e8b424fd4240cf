"""The co3d reader: cameras with known OpenCV truth written as CO3D v1 / v2 annotations and read back, K of both
intrinsics formats against hand-computed values, reader options, and bad annotations through the CLI."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from perfdata import camera, images
from perfdata.errors import InputError
from perfdata.readers import co3d, load_scenes

W, H = 16, 12
K_TRUE = camera.intrinsics(20.0, 18.0, 7.5, 6.5)
F = np.diag([-1.0, -1.0, 1.0])


def _to_pytorch3d(K: np.ndarray, c2w: np.ndarray, fmt: str | None) -> dict:
    """OpenCV K, c2w -> a CO3D viewpoint, by the inverse formulas (written independently of the reader)."""
    w2c = np.linalg.inv(c2w)
    R = w2c[:3, :3].T @ F  # row-vector convention: X_p3d = X @ R + T with X_p3d = F (Rc X + tc)
    T = F @ w2c[:3, 3]
    s = np.full(2, min(W, H) / 2) if fmt == "ndc_isotropic" else np.array([W / 2, H / 2])  # absent: image bounds
    focal = np.array([K[0, 0], K[1, 1]]) / s
    principal = (np.array([W / 2, H / 2]) - K[:2, 2]) / s
    vp = {"R": R.tolist(), "T": T.tolist(), "focal_length": focal.tolist(), "principal_point": principal.tolist()}
    if fmt is not None:
        vp["intrinsics_format"] = fmt
    return vp


def _project_pytorch3d(X: np.ndarray, vp: dict) -> np.ndarray:
    """Pixels (n, 2) of world points (n, 3) by PyTorch3D's own conventions."""
    cam = X @ np.asarray(vp["R"]) + np.asarray(vp["T"])
    ndc = np.asarray(vp["focal_length"]) * cam[:, :2] / cam[:, 2:3] + np.asarray(vp["principal_point"])
    fmt = vp.get("intrinsics_format", "ndc_norm_image_bounds")  # the default of CO3D's annotation types
    s = np.array([W / 2, H / 2]) if fmt == "ndc_norm_image_bounds" else np.full(2, min(W, H) / 2)
    return np.array([W / 2, H / 2]) - ndc * s


def _write_category(root: Path, fmt: str | None, n: int = 4, seq: str = "101_1_2", score: float | None = 0.8) -> list[np.ndarray]:
    """A category folder with sequence `seq` (n frames); a second call adds another sequence."""
    cat = root / "teddybear"
    poses = [camera.look_at(np.array([2 * np.cos(a), 2 * np.sin(a), 1.0]), np.zeros(3)) for a in np.arange(n) * 0.7]
    anns = []
    for i, c2w in enumerate(poses):
        stem = f"frame{i + 1:06d}"
        (cat / seq / "images").mkdir(parents=True, exist_ok=True)
        iio.imwrite(cat / seq / "images" / f"{stem}.jpg", np.full((H, W, 3), 50, np.uint8), extension=".jpg")
        depth16 = np.full((H, W), 1.5 + 0.25 * i, np.float16)
        images.write_png(cat / seq / "depths" / f"{stem}.jpg.geometric.png", depth16.view(np.uint16))
        valid = np.full((H, W), 255, np.uint8)
        valid[:, :4] = 0
        images.write_png(cat / seq / "depth_masks" / f"{stem}.png", valid)
        mask = np.zeros((H, W), np.uint8)
        mask[3:9, 4:12] = 255
        images.write_png(cat / seq / "masks" / f"{stem}.png", mask)
        rel = f"teddybear/{seq}"
        anns.append({
            "sequence_name": seq, "frame_number": i + 1, "frame_timestamp": 0.1 * i,
            "image": {"path": f"{rel}/images/{stem}.jpg", "size": [H, W]},
            "depth": {"path": f"{rel}/depths/{stem}.jpg.geometric.png", "scale_adjustment": 2.0,
                      "mask_path": f"{rel}/depth_masks/{stem}.png"},
            "mask": {"path": f"{rel}/masks/{stem}.png", "mass": 48.0},
            "viewpoint": _to_pytorch3d(K_TRUE, c2w, fmt),
        })
    row = {"sequence_name": seq, "category": "teddybear"} | ({} if score is None else {"viewpoint_quality_score": score})
    for name, rows in (("frame_annotations.jgz", anns[::-1]), ("sequence_annotations.jgz", [row])):
        _append_jgz(cat / name, rows)
    return poses


def _append_jgz(path: Path, rows: list) -> None:
    old = json.loads(gzip.decompress(path.read_bytes())) if path.is_file() else []
    with gzip.open(path, "wt") as fh:
        json.dump(old + rows, fh)


@pytest.mark.parametrize("fmt", ["ndc_norm_image_bounds", "ndc_isotropic", None])  # None: v1, no field
def test_cameras_round_trip(tmp_path, fmt):
    poses = _write_category(tmp_path, fmt)
    (scene,) = load_scenes("co3d", tmp_path)
    assert scene.scene_id == "101_1_2" and scene.class_name == "teddybear" and len(scene.frames) == 4
    assert [f.name for f in scene.frames] == [f"frame{i:06d}" for i in range(1, 5)]  # sorted by frame_number
    X = np.random.default_rng(1).uniform(-0.5, 0.5, (20, 3))
    for f, c2w in zip(scene.frames, poses, strict=True):
        np.testing.assert_allclose(f.K, K_TRUE, atol=1e-9)
        np.testing.assert_allclose(f.c2w, c2w, atol=1e-9)
        vp = _to_pytorch3d(K_TRUE, c2w, fmt)
        uv, z = camera.project(X, f.K, f.c2w)
        assert (z > 0).all()
        np.testing.assert_allclose(uv, _project_pytorch3d(X, vp), atol=1e-9)
    assert scene.meta["viewpoint_quality_score"] == 0.8 and scene.meta["capture"] == "object"
    assert scene.meta["intrinsics_format"] == (fmt or "ndc_norm_image_bounds")


def test_depth_and_masks(tmp_path):
    _write_category(tmp_path, "ndc_norm_image_bounds")
    f = co3d.load_scene(tmp_path / "teddybear", "101_1_2").frames[1]
    depth = f.load_depth()
    assert depth.dtype == np.float32 and (depth[:, :4] == 0).all()
    np.testing.assert_allclose(depth[:, 4:], (1.5 + 0.25) * 2.0)  # float16 bits * scale_adjustment
    mask = f.load_mask()
    assert mask.sum() == 48 and mask[3:9, 4:12].all()


def test_bad_input(tmp_path):
    _write_category(tmp_path, "ndc_norm_image_bounds")
    cat = tmp_path / "teddybear"
    (cat / "101_1_2/images/frame000002.jpg").unlink()
    with pytest.raises(InputError, match=r"frame000002\.jpg: image not found"):
        co3d.load_scene(cat, "101_1_2")
    iio.imwrite(cat / "101_1_2/images/frame000002.jpg", np.zeros((H, W, 3), np.uint8), extension=".jpg")
    iio.imwrite(cat / "101_1_2/images/frame000001.jpg", np.zeros((H + 4, W, 3), np.uint8), extension=".jpg")
    with pytest.raises(InputError, match=r"frame000001\.jpg: image is 16x16 but frame_annotations\.jgz says 16x12"):
        co3d.load_scene(cat, "101_1_2")
    with pytest.raises(InputError, match="no CO3D sequence 'nope'"):
        co3d.load_scene(cat, "nope")
    (cat / "frame_annotations.jgz").write_bytes(b"not gzip")
    with pytest.raises(InputError, match=r"frame_annotations\.jgz: not a gzipped JSON"):
        co3d.load_scene(cat, "101_1_2")


def _one_frame(root: Path, size_hw: tuple[int, int], focal, principal, fmt: str | None) -> np.ndarray:
    """K of a one-frame CO3D sequence of an image (h, w) with the given NDC focal / principal point, as read."""
    h, w = size_hw
    (root / "apple/1_2_3/images").mkdir(parents=True)
    iio.imwrite(root / "apple/1_2_3/images/frame000001.jpg", np.zeros((h, w, 3), np.uint8), extension=".jpg")
    vp = {"R": np.eye(3).tolist(), "T": [0.0, 0.0, 2.0], "focal_length": list(focal), "principal_point": list(principal)}
    if fmt is not None:
        vp["intrinsics_format"] = fmt
    ann = {"sequence_name": "1_2_3", "frame_number": 1, "viewpoint": vp,
           "image": {"path": "apple/1_2_3/images/frame000001.jpg", "size": [h, w]}}
    _append_jgz(root / "apple/frame_annotations.jgz", [ann])
    (scene,) = load_scenes("co3d", root / "apple")
    assert scene.frames[0].width == w and scene.frames[0].height == h
    return scene.frames[0].K


PORTRAIT, LANDSCAPE = (1896, 1066), (1066, 1896)  # (h, w) of a 1066 x 1896 phone frame, and turned


@pytest.mark.parametrize(
    ("size_hw", "focal", "principal", "fmt", "fx", "fy", "cx", "cy"),
    [  # by hand: s = (w/2, h/2) = (533, 948) for image bounds, min(w, h)/2 = 533 for isotropic (portrait)
        (PORTRAIT, (3.5, 2.0), (0.1, -0.05), "ndc_norm_image_bounds", 1865.5, 1896.0, 479.7, 995.4),
        (PORTRAIT, (3.5, 2.0), (0.1, -0.05), "ndc_isotropic", 1865.5, 1066.0, 479.7, 974.65),
        (LANDSCAPE, (2.0, 3.5), (-0.05, 0.1), "ndc_norm_image_bounds", 1896.0, 1865.5, 995.4, 479.7),
        (LANDSCAPE, (2.0, 3.5), (-0.05, 0.1), "ndc_isotropic", 1066.0, 1865.5, 974.65, 479.7),
        # v1 (no intrinsics_format): image bounds, so a square-pixel 1875 px camera reads as 1875, not 1054
        (PORTRAIT, (1875 / 533, 1875 / 948), (0.0, 0.0), None, 1875.0, 1875.0, 533.0, 948.0),
    ],
)
def test_intrinsics_against_hand_computed_k(tmp_path, size_hw, focal, principal, fmt, fx, fy, cx, cy):
    K = _one_frame(tmp_path, size_hw, focal, principal, fmt)
    np.testing.assert_allclose(K, [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], rtol=1e-9, atol=1e-9)


def test_reader_options_filter_quality_and_drop_depth_and_masks(tmp_path):
    _write_category(tmp_path, None, n=2, seq="1_1_1", score=0.8)
    _write_category(tmp_path, None, n=2, seq="2_2_2", score=0.3)
    _write_category(tmp_path, None, n=2, seq="3_3_3", score=None)
    assert [s.scene_id for s in load_scenes("co3d", tmp_path)] == ["1_1_1", "2_2_2", "3_3_3"]
    assert [s.scene_id for s in load_scenes("co3d:min_quality=0.5", tmp_path)] == ["1_1_1"]
    with pytest.raises(InputError, match=r"no CO3D sequence '2_2_2' here with viewpoint_quality_score >= 0.5"):
        co3d.load_scene(tmp_path, "2_2_2", co3d.Options(min_quality=0.5))
    full = co3d.load_scene(tmp_path, "1_1_1")
    assert full.has_depth and full.has_masks
    bare = next(load_scenes("co3d:depth=off,masks=off", tmp_path, ["1_1_1"]))
    assert not bare.has_depth and not bare.has_masks and len(bare.frames) == 2
    np.testing.assert_array_equal(bare.frames[0].K, full.frames[0].K)


def test_unknown_intrinsics_format_is_one_line_exit_2_nothing_written(tmp_path, cli):
    _write_category(tmp_path, "ndc_weird", n=2)
    where = tmp_path / "teddybear" / "frame_annotations.jgz"
    message = f"error: {where}: frame 2 of '101_1_2': unknown intrinsics_format 'ndc_weird' (known: "
    for args in (["scenes", "inspect"], ["fit", "--out", str(tmp_path / "fits"), "--steps", "1"]):
        code, out, err = cli(*args, "--reader", "co3d", "--data", str(tmp_path))
        assert code == 2 and err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "fits").exists()


def test_unsafe_sequence_name_is_refused(tmp_path):
    _write_category(tmp_path, None, n=1, seq="../escaped")
    with pytest.raises(InputError, match=r"frame_annotations\.jgz: scene id '\.\./escaped' "):
        co3d.list_scenes(tmp_path)
