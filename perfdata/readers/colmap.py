"""The `colmap` reader: a COLMAP sparse model and its images -- where every real capture starts.

A scene folder holds `sparse/0/` (or `sparse/` itself) with cameras, images and optionally points3D, each as
`.bin` or `.txt` (binary preferred when both exist; formats in `perfdata.readers.colmap_model`), and `images/`
with the files images.bin names (paths relative to it). Frames are the registered images sorted by name.

Cameras: SIMPLE_PINHOLE (f, cx, cy), PINHOLE (fx, fy, cx, cy), SIMPLE_RADIAL (f, cx, cy, k), RADIAL (f, cx, cy,
k1, k2) and OPENCV (fx, fy, cx, cy, k1, k2, p1, p2); COLMAP's principal point has the image centre at w/2 as
perfdata's does. Distortion is removed on load the way the blender reader removes OPENCV distortion (resampling
onto the pinhole K of the same size, `perfdata.distortion`). Other models are an InputError naming cameras.bin
(undistort the model with `colmap image_undistorter` first). Poses: c2w = [R(q)^T | -R(q)^T t], OpenCV axes.

Scene.meta: capture (guessed from the cameras, `perfdata.readers.capture.guess_capture`), camera_models, and
with points3D: bounds [min near, max far] and frame_bounds per frame (the 0.1 and 99.9 percentiles of the
z-depths of the points each image sees, as LLFF computes them). Normalisation by capture: "object" -- the
cameras' focus, sized to fill the images (`normalisation_from_cameras`); "forward_facing" -- the cube around the
view frusta between the bounds, in the axes of the average camera (`reference_c2w` in meta, as llff does);
"room" -- the points (trimmed 0.5% per side), else the cameras.

Bad input, each an InputError naming the file: no images.bin / images.txt (e.g. the public fern copy), an
unsupported camera model, an image using an undefined camera, listed images missing from images/, an image
whose size differs from its camera's, truncated or malformed model files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from perfdata import camera, images
from perfdata.distortion import Distortion, lazy_undistorted
from perfdata.errors import InputError
from perfdata.readers import scene_dir, scene_dirs
from perfdata.readers.capture import guess_capture, normalisation_from_frustums, reference_pose
from perfdata.readers.colmap_model import (
    Camera,
    Image,
    Points,
    model_file,
    read_cameras,
    read_images,
    read_points3d,
)
from perfdata.scene import Frame, Scene, normalisation_from_cameras, normalisation_from_points, normalise

SUPPORTED_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")


@dataclass(frozen=True)
class _Model:
    """A checked model: its folder, cameras by id, registered images sorted by name, and the images folder."""

    model_dir: Path
    cameras: dict[int, Camera]
    images: list[Image]
    image_dir: Path


def model_dir(folder: Path) -> Path | None:
    """The sparse model folder of a scene folder: sparse/0/ or sparse/, whichever holds a cameras file."""
    for candidate in (folder / "sparse" / "0", folder / "sparse"):
        if model_file(candidate, "cameras") is not None:
            return candidate
    return None


def _is_scene(folder: Path) -> bool:
    return model_dir(folder) is not None


def pinhole(cam: Camera, where: Path) -> tuple[np.ndarray, Distortion]:
    """K (3, 3) and the distortion of a COLMAP camera; an unsupported model is an InputError naming `where`."""
    p = cam.params
    if cam.model == "SIMPLE_PINHOLE":
        return camera.intrinsics(p[0], p[0], p[1], p[2]), Distortion()
    if cam.model == "PINHOLE":
        return camera.intrinsics(p[0], p[1], p[2], p[3]), Distortion()
    if cam.model == "SIMPLE_RADIAL":
        return camera.intrinsics(p[0], p[0], p[1], p[2]), Distortion(k1=p[3])
    if cam.model == "RADIAL":
        return camera.intrinsics(p[0], p[0], p[1], p[2]), Distortion(k1=p[3], k2=p[4])
    if cam.model == "OPENCV":
        return camera.intrinsics(p[0], p[1], p[2], p[3]), Distortion(k1=p[4], k2=p[5], p1=p[6], p2=p[7])
    raise InputError(where, f"camera {cam.camera_id}: model {cam.model} is not supported (supported: "
                     f"{', '.join(SUPPORTED_MODELS)}); undistort the model first (colmap image_undistorter)")


def _read_model(folder: Path) -> _Model:
    """The model of a scene folder with its index checked: images file present, cameras defined and supported,
    every listed image file present."""
    sparse = model_dir(folder)
    if sparse is None:
        raise InputError(folder, "no sparse/0/cameras.bin or cameras.txt here")
    cameras_file, images_file = model_file(sparse, "cameras"), model_file(sparse, "images")
    assert cameras_file is not None
    if images_file is None:
        raise InputError(sparse / "images.bin", "not found (nor images.txt): the model has no registered images")
    cameras = read_cameras(cameras_file)
    registered = sorted(read_images(images_file).values(), key=lambda im: im.name)
    if not registered:
        raise InputError(images_file, "no registered images")
    for im in registered:
        if im.camera_id not in cameras:
            raise InputError(images_file, f"image {im.name} uses camera {im.camera_id}, not defined in {cameras_file.name}")
        pinhole(cameras[im.camera_id], cameras_file)
    image_dir = folder / "images"
    missing = [im.name for im in registered if not (image_dir / im.name).is_file()]
    if missing:
        raise InputError(image_dir / missing[0], f"image not found ({len(missing)} of the {len(registered)} images "
                         f"in {images_file.name} missing)")
    return _Model(sparse, cameras, registered, image_dir)


def list_scenes(root: Path) -> list[str]:
    """Ids (folder names) of the COLMAP scenes at or one level under `root`, each model's index checked."""
    dirs = scene_dirs(root, _is_scene)
    for folder in dirs.values():
        _read_model(folder)
    return list(dirs)


def _read_rgb(path: Path) -> np.ndarray:
    return images.read_rgba(path)[0]


def _frames(model: _Model) -> tuple[Frame, ...]:
    cameras_file = model_file(model.model_dir, "cameras")
    assert cameras_file is not None
    checked: set[int] = set()
    frames = []
    for im in model.images:
        cam = model.cameras[im.camera_id]
        K, dist = pinhole(cam, cameras_file)
        path = model.image_dir / im.name
        if cam.camera_id not in checked:
            w, h, _ = images.image_header(path)
            if (w, h) != (cam.width, cam.height):
                raise InputError(path, f"image is {w}x{h} but camera {cam.camera_id} in {cameras_file.name} is {cam.width}x{cam.height}")
            checked.add(cam.camera_id)
        c2w = im.c2w()
        if not camera.is_valid_pose(c2w):
            raise InputError(model_file(model.model_dir, "images"), f"image {im.name}: invalid pose")
        image: Any = path if dist.is_zero else lazy_undistorted(path, _read_rgb, K, dist, "bilinear", 0)
        frames.append(Frame(name=Path(im.name).with_suffix("").as_posix(), K=K, c2w=c2w, width=cam.width,
                            height=cam.height, image=image))
    return tuple(frames)


def frame_bounds(frames: tuple[Frame, ...], model: _Model, points: Points) -> np.ndarray:
    """(n_frames, 2) near / far: 0.1 and 99.9 percentiles of the z-depths of the points each image sees
    (its track), or of all points projecting into it when it has none."""
    order = np.argsort(points.ids)
    bounds = []
    for f, im in zip(frames, model.images, strict=True):
        ids = im.point3d_ids[im.point3d_ids >= 0]
        pos = np.clip(np.searchsorted(points.ids[order], ids), 0, len(order) - 1)
        seen = order[pos][points.ids[order[pos]] == ids]
        uv, z = camera.project(points.xyz if len(seen) == 0 else points.xyz[seen], f.K, f.c2w)
        keep = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] <= f.width) & (uv[:, 1] >= 0) & (uv[:, 1] <= f.height)
        z = z[keep] if keep.any() else np.array([np.nan, np.nan])
        bounds.append(np.percentile(z, [0.1, 99.9]))
    return np.array(bounds)


def load_scene(root: Path, scene_id: str) -> Scene:
    """The COLMAP scene `scene_id` under `root` (see the module docstring)."""
    folder = scene_dir(root, scene_id, _is_scene)
    model = _read_model(folder)
    frames = _frames(model)
    points_file = model_file(model.model_dir, "points3D")
    points = read_points3d(points_file) if points_file is not None else None
    c2ws = np.stack([f.c2w for f in frames])
    capture = guess_capture(c2ws)
    meta: dict[str, Any] = {"capture": capture, "camera_models": sorted({c.model for c in model.cameras.values()})}
    bounds = frame_bounds(frames, model, points) if points is not None and len(points.ids) else None
    if bounds is not None and np.all(np.isfinite(bounds)):
        meta["bounds"] = [float(bounds[:, 0].min()), float(bounds[:, 1].max())]
        meta["frame_bounds"] = bounds.tolist()
    if capture == "forward_facing" and "bounds" in meta:
        reference = reference_pose(c2ws)
        meta["reference_c2w"] = reference.tolist()
        near, far = meta["bounds"]
        world_from_grid = normalisation_from_frustums(frames, near, far, reference)
    elif capture == "object" or points is None or not len(points.ids):
        world_from_grid = normalisation_from_cameras(frames) if capture == "object" else normalise(frames)
    else:
        world_from_grid = normalisation_from_points(points.xyz)
    return Scene(scene_id=scene_id, frames=frames, world_from_grid=world_from_grid,
                 points=None if points is None else points.xyz, source=f"colmap:{folder}", meta=meta)
