"""The co3d reader: cameras with known OpenCV truth written as CO3D v1 / v2 annotations and read back."""

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
    s = np.array([W / 2, H / 2]) if fmt == "ndc_norm_image_bounds" else np.full(2, min(W, H) / 2)
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
    fmt = vp.get("intrinsics_format", "ndc_isotropic")
    s = np.array([W / 2, H / 2]) if fmt == "ndc_norm_image_bounds" else np.full(2, min(W, H) / 2)
    return np.array([W / 2, H / 2]) - ndc * s


def _write_category(root: Path, fmt: str | None, n: int = 4, seq: str = "101_1_2") -> list[np.ndarray]:
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
    for name, rows in (("frame_annotations.jgz", anns[::-1]),
                       ("sequence_annotations.jgz", [{"sequence_name": seq, "category": "teddybear",
                                                      "viewpoint_quality_score": 0.8}])):
        with gzip.open(cat / name, "wt") as fh:
            json.dump(rows, fh)
    return poses


@pytest.mark.parametrize("fmt", ["ndc_norm_image_bounds", None])  # v2, and v1 (isotropic, no field)
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
    assert scene.meta["viewpoint_quality_score"] == 0.8


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
    (cat / "frame_annotations.jgz").write_bytes(b"not gzip")
    with pytest.raises(InputError, match=r"frame_annotations\.jgz: not a gzipped JSON"):
        co3d.load_scene(cat, "101_1_2")
    with pytest.raises(InputError, match="no CO3D sequence 'nope'"):
        co3d.load_scene(cat, "nope")
