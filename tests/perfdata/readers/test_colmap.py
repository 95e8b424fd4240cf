"""The colmap reader: binary and text models written here from COLMAP's format description (independently of the
reader) must read the same; cameras, poses, distortion removal and bounds against the truth they were written
from; fern's real cameras.bin / points3D.bin; bad input through the CLI."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from perfdata import camera, images
from perfdata.errors import InputError
from perfdata.readers import colmap, load_scenes
from perfdata.readers.colmap_model import read_cameras, read_images, read_points3d

MODEL_IDS = {"SIMPLE_PINHOLE": 0, "PINHOLE": 1, "SIMPLE_RADIAL": 2, "RADIAL": 3, "OPENCV": 4, "OPENCV_FISHEYE": 5}
CAMERAS = {  # id: (model, width, height, params)
    1: ("PINHOLE", 64, 48, (60.0, 62.0, 32.5, 23.5)),
    2: ("SIMPLE_RADIAL", 40, 30, (35.0, 20.2, 14.9, 0.15)),
    3: ("OPENCV", 40, 30, (36.0, 35.0, 19.8, 15.1, -0.15, 0.02, 0.006, -0.004)),
}


def _quaternion(R: np.ndarray) -> np.ndarray:
    """(w, x, y, z) of a rotation matrix (Shepperd's method, largest diagonal term first)."""
    t = np.trace(R)
    if t > 0:
        s = 2 * np.sqrt(1 + t)
        return np.array([s / 4, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s])
    i = int(np.argmax(np.diag(R)))
    j, k = (i + 1) % 3, (i + 2) % 3
    s = 2 * np.sqrt(1 + R[i, i] - R[j, j] - R[k, k])
    q = np.zeros(4)
    q[0], q[1 + i] = (R[k, j] - R[j, k]) / s, s / 4
    q[1 + j], q[1 + k] = (R[j, i] + R[i, j]) / s, (R[k, i] + R[i, k]) / s
    return q


def _K(model: str, p: tuple[float, ...]) -> np.ndarray:
    if model in ("PINHOLE", "OPENCV"):
        return camera.intrinsics(*p[:4])
    return camera.intrinsics(p[0], p[0], p[1], p[2])  # SIMPLE_PINHOLE, SIMPLE_RADIAL, RADIAL: f, cx, cy


def _model(layout: str = "ring", n: int = 6, seed: int = 0, no_points: tuple[int, ...] = ()) -> dict:
    """Truth: c2w per image (OpenCV), cameras, names, points with tracks, the 2D observations (none for the
    images of `no_points`)."""
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(-0.6, 0.6, (40, 3))
    if layout == "ring":
        c2ws = [camera.look_at(np.array([3 * np.cos(a), 3 * np.sin(a), 1.0]), np.zeros(3)) for a in np.arange(n) * 1.1]
    else:  # forward-facing: all look along +y at the points, from a small patch 4 m away
        c2ws = [camera.look_at(np.array([0.2 * i - 0.5, -4.0, 0.1 * i]), np.array([0.0, 0.0, 0.1 * i])) for i in range(n)]
    names = [f"img_{i}.png" if i != 4 else "sub/img_4.png" for i in range(n)]
    cam_ids = [1 + i % 3 for i in range(n)]
    obs = []  # per image: list of (x, y, point3D_id)
    for i, (c2w, cid) in enumerate(zip(c2ws, cam_ids, strict=True)):
        model, w, h, p = CAMERAS[cid]
        uv, z = camera.project(xyz, _K(model, p), c2w)
        seen = np.flatnonzero((z > 0) & (uv[:, 0] > 0) & (uv[:, 0] < w) & (uv[:, 1] > 0) & (uv[:, 1] < h))
        points = [(float(uv[j, 0]), float(uv[j, 1]), 100 + int(j)) for j in seen[::2]] + [(1.5, 2.5, -1)]
        obs.append([] if i in no_points else points)
    tracks = {100 + j: [(i + 1, k) for i, o in enumerate(obs) for k, (_, _, pid) in enumerate(o) if pid == 100 + j]
              for j in range(len(xyz))}
    rgb = rng.integers(0, 256, (len(xyz), 3))
    return {"c2ws": c2ws, "names": names, "cam_ids": cam_ids, "obs": obs, "xyz": xyz, "rgb": rgb,
            "error": rng.uniform(0, 2, len(xyz)), "tracks": tracks}


def _pose(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    R = c2w[:3, :3].T
    return _quaternion(R), -R @ c2w[:3, 3]


def _write_bin(folder: Path, m: dict, cameras: dict = CAMERAS) -> None:
    with open(folder / "cameras.bin", "wb") as fh:
        fh.write(struct.pack("<Q", len(cameras)))
        for cid, (model, w, h, params) in cameras.items():
            fh.write(struct.pack("<iiQQ", cid, MODEL_IDS[model], w, h) + struct.pack(f"<{len(params)}d", *params))
    with open(folder / "images.bin", "wb") as fh:
        fh.write(struct.pack("<Q", len(m["names"])))
        for i, (c2w, name, cid, obs) in enumerate(zip(m["c2ws"], m["names"], m["cam_ids"], m["obs"], strict=True)):
            q, t = _pose(c2w)
            fh.write(struct.pack("<i4d3di", i + 1, *q, *t, cid) + name.encode() + b"\0" + struct.pack("<Q", len(obs)))
            for x, y, pid in obs:
                fh.write(struct.pack("<ddq", x, y, pid))
    with open(folder / "points3D.bin", "wb") as fh:
        fh.write(struct.pack("<Q", len(m["xyz"])))
        for j, (p, c, e) in enumerate(zip(m["xyz"], m["rgb"], m["error"], strict=True)):
            track = m["tracks"][100 + j]
            fh.write(struct.pack("<Q3d3BdQ", 100 + j, *p, *c, e, len(track)))
            fh.write(b"".join(struct.pack("<ii", *t) for t in track))


def _write_txt(folder: Path, m: dict, cameras: dict = CAMERAS) -> None:
    lines = ["# Camera list with one line of data per camera:", "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]"]
    lines += [f"{cid} {model} {w} {h} " + " ".join(map(repr, params)) for cid, (model, w, h, params) in cameras.items()]
    (folder / "cameras.txt").write_text("\n".join(lines) + "\n")
    lines = ["# Image list with two lines of data per image:"]
    for i, (c2w, name, cid, obs) in enumerate(zip(m["c2ws"], m["names"], m["cam_ids"], m["obs"], strict=True)):
        q, t = _pose(c2w)
        lines.append(" ".join([str(i + 1), *map(repr, map(float, [*q, *t])), str(cid), name]))
        lines.append(" ".join(f"{x!r} {y!r} {pid}" for x, y, pid in obs))  # empty for an image without points
    (folder / "images.txt").write_text("\n".join(lines) + "\n")
    lines = ["# 3D point list with one line of data per point:"]
    for j, (p, c, e) in enumerate(zip(m["xyz"], m["rgb"], m["error"], strict=True)):
        track = " ".join(f"{a} {b}" for a, b in m["tracks"][100 + j])
        lines.append(f"{100 + j} " + " ".join(map(repr, map(float, p))) + f" {c[0]} {c[1]} {c[2]} {float(e)!r} {track}".rstrip())
    (folder / "points3D.txt").write_text("\n".join(lines) + "\n")


def _scene_folder(root: Path, layout: str, kind: str, m: dict | None = None, cameras: dict = CAMERAS) -> Path:
    m = m or _model(layout)
    sparse = root / "sparse" / "0"
    sparse.mkdir(parents=True)
    (_write_bin if kind == "bin" else _write_txt)(sparse, m, cameras)
    for name, cid in zip(m["names"], m["cam_ids"], strict=True):
        _, w, h, _ = cameras[cid]
        u, v = np.meshgrid((np.arange(w) + 0.5) / w, (np.arange(h) + 0.5) / h)  # ramps in u (red), v (green)
        (root / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        images.write_png(root / "images" / name, np.stack([u, v, np.full_like(u, 0.5)], axis=-1))
    return root


def test_binary_and_text_models_read_the_same(tmp_path):
    m = _model(no_points=(2,))  # image 3's points line in images.txt is empty
    b = _scene_folder(tmp_path / "b", "ring", "bin", m) / "sparse/0"
    t = _scene_folder(tmp_path / "t", "ring", "txt", m) / "sparse/0"
    assert read_cameras(b / "cameras.bin") == read_cameras(t / "cameras.txt")
    assert read_cameras(b / "cameras.bin")[3].params == CAMERAS[3][3]
    ib, it = read_images(b / "images.bin"), read_images(t / "images.txt")
    assert sorted(ib) == sorted(it) == [1, 2, 3, 4, 5, 6]
    for k in ib:
        assert (ib[k].name, ib[k].camera_id) == (it[k].name, it[k].camera_id)
        np.testing.assert_array_equal(ib[k].qvec, it[k].qvec)
        np.testing.assert_array_equal(ib[k].tvec, it[k].tvec)
        np.testing.assert_array_equal(ib[k].point3d_ids, it[k].point3d_ids)
    assert len(ib[3].point3d_ids) == 0 and ib[1].point3d_ids[-1] == -1
    pb, pt = read_points3d(b / "points3D.bin"), read_points3d(t / "points3D.txt")
    for name in ("ids", "xyz", "rgb", "error", "track_length"):
        np.testing.assert_array_equal(getattr(pb, name), getattr(pt, name))
    np.testing.assert_array_equal(pb.xyz, m["xyz"])
    (sb,), (st,) = load_scenes("colmap", tmp_path / "b"), load_scenes("colmap", tmp_path / "t")
    for fb, ft in zip(sb.frames, st.frames, strict=True):
        assert fb.name == ft.name and np.array_equal(fb.K, ft.K) and np.array_equal(fb.c2w, ft.c2w)
    np.testing.assert_array_equal(sb.world_from_grid, st.world_from_grid)


def test_cameras_poses_and_points_against_the_truth(tmp_path):
    m = _model()
    (scene,) = load_scenes("colmap", _scene_folder(tmp_path / "cap", "ring", "bin", m))
    by_name = dict(zip(m["names"], zip(m["c2ws"], m["cam_ids"], strict=True), strict=True))
    assert [f.name for f in scene.frames] == ["img_0", "img_1", "img_2", "img_3", "img_5", "sub/img_4"]
    for f in scene.frames:
        c2w, cid = by_name[f.name + ".png"]
        np.testing.assert_allclose(f.c2w, c2w, atol=1e-12)
        assert (f.width, f.height) == CAMERAS[cid][1:3]
    K = {f.name: f.K for f in scene.frames}
    np.testing.assert_array_equal(K["img_0"], camera.intrinsics(60, 62, 32.5, 23.5))  # PINHOLE
    np.testing.assert_array_equal(K["img_1"], camera.intrinsics(35, 35, 20.2, 14.9))  # SIMPLE_RADIAL
    np.testing.assert_array_equal(K["img_2"], camera.intrinsics(36, 35, 19.8, 15.1))  # OPENCV
    np.testing.assert_array_equal(scene.points, m["xyz"])
    assert scene.meta["capture"] == "object" and scene.meta["camera_models"] == ["OPENCV", "PINHOLE", "SIMPLE_RADIAL"]
    for f, (near, far) in zip(scene.frames, scene.meta["frame_bounds"], strict=True):  # LLFF-style, from tracks
        idx = next(i for i, name in enumerate(m["names"]) if name == f.name + ".png")
        seen = [pid - 100 for _, _, pid in m["obs"][idx] if pid >= 0]
        _, z = camera.project(m["xyz"][seen], f.K, f.c2w)
        np.testing.assert_allclose([near, far], np.percentile(z, [0.1, 99.9]))
    assert np.all(np.abs(scene.world_to_grid(m["xyz"])) < 1)


def _distorted(xy: np.ndarray, k1=0.0, k2=0.0, p1=0.0, p2=0.0) -> np.ndarray:
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 * r2
    return np.stack([x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x), y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y], -1)


@pytest.mark.parametrize("name", ["img_1", "img_2"])  # SIMPLE_RADIAL, OPENCV
def test_distortion_is_removed_on_load(tmp_path, name):
    (scene,) = load_scenes("colmap", _scene_folder(tmp_path / "cap", "ring", "bin"))
    f = next(f for f in scene.frames if f.name == name)
    model, w, h, p = CAMERAS[2 if name == "img_1" else 3]
    coeffs = {"k1": p[3]} if model == "SIMPLE_RADIAL" else dict(zip(("k1", "k2", "p1", "p2"), p[4:], strict=True))
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    xy = np.stack([(u - f.K[0, 2]) / f.K[0, 0], (v - f.K[1, 2]) / f.K[1, 1]], -1)
    src = _distorted(xy, **coeffs) * [f.K[0, 0], f.K[1, 1]] + f.K[:2, 2]  # where each pinhole pixel looks
    inner = (src[..., 0] > 1) & (src[..., 0] < w - 1) & (src[..., 1] > 1) & (src[..., 1] < h - 1)
    img = f.load_image()  # the ramps are linear in the captured pixel position: bilinear sampling is exact
    tol = 1.0 / 255  # 8-bit ramps
    np.testing.assert_allclose(img[..., 0][inner], src[..., 0][inner] / w, atol=tol)
    np.testing.assert_allclose(img[..., 1][inner], src[..., 1][inner] / h, atol=tol)
    raw = images.read_rgba(tmp_path / "cap/images" / f"{name}.png")[0]  # without the undistortion: far off
    assert np.abs(raw[..., :2] - np.stack([src[..., 0] / w, src[..., 1] / h], -1))[inner].max() > 5 * tol


def test_forward_facing_model_gets_bounds_and_a_frustum_cube(tmp_path):
    m = _model("forward")
    (scene,) = load_scenes("colmap", _scene_folder(tmp_path / "ff", "forward", "txt", m))
    assert scene.meta["capture"] == "forward_facing"
    near, far = scene.meta["bounds"]
    assert 2.5 < near < far < 5.5 and "reference_c2w" in scene.meta
    assert np.mean(np.all(np.abs(scene.world_to_grid(m["xyz"])) <= 1, axis=1)) == 1.0


def test_fern_cameras_and_points(shared_data):
    sparse = shared_data / "fern" / "sparse" / "0"
    (cam,) = read_cameras(sparse / "cameras.bin").values()
    assert (cam.model, cam.width, cam.height) == ("SIMPLE_RADIAL", 4032, 3024)
    np.testing.assert_allclose(cam.params, (3260.5263328805895, 2016.0, 1512.0, 0.019750463822896944))
    K, d = colmap.pinhole(cam, sparse / "cameras.bin")
    assert K[0, 0] == K[1, 1] == cam.params[0] and d.k1 == cam.params[3] and d.k2 == 0
    pts = read_points3d(sparse / "points3D.bin")
    assert len(pts.ids) == 10091 == len(np.unique(pts.ids)) and np.all(np.isfinite(pts.xyz))
    assert pts.track_length.min() >= 2 and np.all(pts.error >= 0) and pts.rgb.dtype == np.uint8
    with pytest.raises(InputError, match=r"fern/sparse/0/images\.bin: not found \(nor images\.txt\)"):
        colmap.list_scenes(shared_data / "fern")


def _fisheye(root: Path) -> None:
    cams = {**CAMERAS, 2: ("OPENCV_FISHEYE", 40, 30, (35.0, 35.0, 20.0, 15.0, 0.1, 0.0, 0.0, 0.0))}
    _scene_folder(root, "ring", "bin", cameras=cams)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_fisheye, "sparse/0/cameras.bin: camera 2: model OPENCV_FISHEYE is not supported (supported: SIMPLE_PINHOLE"),
        (lambda r: (_scene_folder(r, "ring", "txt"), (r / "images/img_3.png").unlink()),
         "images/img_3.png: image not found (1 of the 6 images in images.txt missing)"),
        (lambda r: (_scene_folder(r, "ring", "bin"), (r / "sparse/0/images.bin").unlink()),
         "sparse/0/images.bin: not found (nor images.txt)"),
        (lambda r: (_scene_folder(r, "ring", "bin"),
                    (r / "sparse/0/cameras.bin").write_bytes((r / "sparse/0/cameras.bin").read_bytes()[:-5])),
         "sparse/0/cameras.bin: truncated at byte"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, cli, make, message):
    make(tmp_path / "cap")
    for args in (["scenes", "inspect"], ["fit", "--out", str(tmp_path / "fits"), "--steps", "1"]):
        code, out, err = cli(*args, "--reader", "colmap", "--data", str(tmp_path / "cap"))
        assert code == 2 and not out.strip() and err.startswith(f"error: {tmp_path / 'cap'}/") and message in err, err
        assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "fits").exists()


def test_inspect_fern_as_colmap_names_the_missing_file(shared_data, cli):
    code, out, err = cli("scenes", "inspect", "--reader", "colmap", "--data", str(shared_data / "fern"))
    assert code == 2 and out == "" and "fern/sparse/0/images.bin: not found" in err and err.count("\n") == 1
