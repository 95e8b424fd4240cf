"""The `llff` reader: forward-facing captures in LLFF's layout (the NeRF release's real scenes, e.g. fern).

A scene folder holds `poses_bounds.npy` (float (N, 17)) and one or more image folders: `images/` (full size)
and `images_K/` (the same images with both sides divided by K, e.g. `images_4/`, `images_8/`); each holds
exactly N images (.png / .jpg, names starting with '.' skipped) whose sorted order is the row order. A row is a
row-major 3x5 matrix [R | t | (h, w, f)] then the near and far z-depth bounds: R's columns are the camera's
(down, right, backwards) axes in the world frame (COLMAP's), t its centre, h x w the full image size and f the
focal length in full-size pixels. In OpenCV axes: c2w = [R[:, 1], R[:, 0], -R[:, 2], t]; K = [[f, 0, w/2],
[0, f, h/2], [0, 0, 1]].

Which folder a fit reads: frames are reported at the full size h x w, and each `images_K/` is a prescaled copy
(`Frame.prescaled`), so `fit --downscale K` reads images_K/ as stored, with K scaled to that folder's real image
size; another factor starts from the largest stored factor below it and resizes. When `images/` is absent (the
public fern), only factors with a folder at or below them work; `--downscale 1` is an InputError naming images/.

Scene.meta: capture "forward_facing"; bounds [min near, max far] and frame_bounds [[near, far], ...] per frame
(COLMAP units); reference_c2w, the average camera LLFF recentres on (OpenCV axes; the frame of an NDC space);
image_folders {name: [width, height]}. Normalisation (`world_from_grid`): the smallest cube, axes of the
reference camera, holding every camera's view frustum between the min near and the max far bound. When the
folder also holds `sparse/0/points3D.bin` (or .txt), its points become `Scene.points`.

Bad input, each an InputError naming the file: a poses_bounds.npy that is not (N, 17), non-finite or with a
bound <= 0 or near >= far; an image folder whose count differs from the rows; no image folder; an image
whose size does not match h x w (images/) or its aspect ratio (images_K/).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from perfdata import camera, images
from perfdata.errors import InputError
from perfdata.readers import scene_dir, scene_dirs
from perfdata.readers.capture import normalisation_from_frustums, reference_pose
from perfdata.readers.colmap_model import model_file, read_points3d
from perfdata.scene import Frame, Prescaled, Scene

POSES = "poses_bounds.npy"
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_FOLDER = re.compile(r"^images(?:_(\d+))?$")


@dataclass(frozen=True)
class _Index:
    """What poses_bounds.npy and the image folders say: c2w (N, 4, 4), hwf (N, 3), bounds (N, 2), and per
    folder factor (1 = images/) its path and sorted image names, and its images' real (width, height)."""

    c2w: np.ndarray
    hwf: np.ndarray
    bounds: np.ndarray
    folders: dict[int, tuple[Path, list[str]]]
    sizes: dict[int, tuple[int, int]]


def _is_scene(folder: Path) -> bool:
    return (folder / POSES).is_file()


def llff_to_opencv(mats: np.ndarray) -> np.ndarray:
    """LLFF [R | t] (N, 3, 4) with columns (down, right, backwards, centre) -> OpenCV c2w (N, 4, 4)."""
    mats = np.asarray(mats, dtype=np.float64)
    c2w = np.tile(np.eye(4), (len(mats), 1, 1))
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2] = mats[:, :, 1], mats[:, :, 0], -mats[:, :, 2]
    c2w[:, :3, 3] = mats[:, :, 3]
    return c2w


def read_poses_bounds(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """poses_bounds.npy -> OpenCV c2w (N, 4, 4), hwf (N, 3) and near / far bounds (N, 2)."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not a numpy array file ({exc})") from None
    if arr.ndim != 2 or arr.shape[1] != 17 or arr.shape[0] == 0 or arr.dtype.kind != "f":
        raise InputError(path, f"expected a float (N, 17) array (3x5 pose + near, far per image), got {arr.dtype} {arr.shape}")
    if not np.all(np.isfinite(arr)):
        rows = np.flatnonzero(~np.all(np.isfinite(arr), axis=1))
        raise InputError(path, f"non-finite values in row(s) {', '.join(map(str, rows[:5]))}")
    mats, bounds = arr[:, :15].reshape(-1, 3, 5), arr[:, 15:].astype(np.float64)
    if np.any(bounds[:, 0] <= 0) or np.any(bounds[:, 1] <= bounds[:, 0]):
        raise InputError(path, "near / far bounds must satisfy 0 < near < far in every row")
    hwf = mats[:, :, 4].astype(np.float64)
    if np.any(hwf <= 0) or np.any(hwf[:, :2] != hwf[0, :2]):
        raise InputError(path, "image sizes (h, w) must be positive and the same in every row")
    return llff_to_opencv(mats[:, :, :4]), hwf, bounds


def _image_folders(folder: Path) -> dict[int, tuple[Path, list[str]]]:
    found = {}
    for sub in sorted(folder.iterdir()):
        match = _FOLDER.match(sub.name)
        if match and sub.is_dir():
            names = sorted(p.name for p in sub.iterdir()
                           if p.suffix.lower() in _IMAGE_SUFFIXES and not p.name.startswith("."))
            found[int(match.group(1) or 1)] = (sub, names)
    return found


def _folder_sizes(folders: dict[int, tuple[Path, list[str]]], width: int, height: int) -> dict[int, tuple[int, int]]:
    """Real (width, height) of each image folder (its first image), checked against the full size of
    poses_bounds.npy: equal for images/, the same aspect ratio (within 1%) for images_K/."""
    sizes = {}
    for factor, (sub, names) in folders.items():
        w, h, _ = images.image_header(sub / names[0])
        if factor == 1 and (w, h) != (width, height):
            raise InputError(sub / names[0], f"image is {w}x{h} but {POSES} says {width}x{height}")
        if abs(w * height - h * width) > 0.01 * width * height:
            raise InputError(sub / names[0], f"image is {w}x{h}: not the aspect ratio of {POSES}'s {width}x{height}")
        sizes[factor] = (w, h)
    return sizes


def _read_index(folder: Path) -> _Index:
    """poses_bounds.npy and the image folders, checked against each other (row count = image count, image
    sizes)."""
    c2w, hwf, bounds = read_poses_bounds(folder / POSES)
    folders = _image_folders(folder)
    if not folders:
        raise InputError(folder, "no images/ or images_K/ folder next to poses_bounds.npy")
    for sub, names in folders.values():
        if len(names) != len(c2w):
            raise InputError(folder / POSES, f"{len(c2w)} poses but {sub.name}/ holds {len(names)} images")
    height, width = (int(v) for v in hwf[0, :2])
    return _Index(c2w, hwf, bounds, folders, _folder_sizes(folders, width, height))


def list_scenes(root: Path) -> list[str]:
    """Ids (folder names) of the LLFF scenes at or one level under `root`, each index checked."""
    dirs = scene_dirs(root, _is_scene)
    for folder in dirs.values():
        _read_index(folder)
    return list(dirs)


def _missing_full_size(folder: Path, factors: list[int]) -> np.ndarray:
    raise InputError(folder / "images", "full-size images are not here; fit with --downscale F where F >= "
                     f"{min(factors)} ({', '.join(f'images_{k}/' for k in factors)} present)")


def _frames(index: _Index, folder: Path) -> tuple[Frame, ...]:
    height, width = (int(v) for v in index.hwf[0, :2])
    scaled = sorted(k for k in index.folders if k > 1)
    names = index.folders[min(index.folders)][1]
    frames = []
    for i, c2w in enumerate(index.c2w):
        f = float(index.hwf[i, 2])
        image = (index.folders[1][0] / index.folders[1][1][i] if 1 in index.folders
                 else functools.partial(_missing_full_size, folder, scaled))
        pre = tuple(Prescaled(k, *index.sizes[k], index.folders[k][0] / index.folders[k][1][i]) for k in scaled)
        frames.append(Frame(name=Path(names[i]).stem, K=camera.intrinsics(f, f, width / 2, height / 2), c2w=c2w,
                            width=width, height=height, image=image, prescaled=pre))
    return tuple(frames)


def load_scene(root: Path, scene_id: str) -> Scene:
    """The LLFF scene `scene_id` under `root` (see the module docstring)."""
    folder = scene_dir(root, scene_id, _is_scene)
    index = _read_index(folder)
    frames = _frames(index, folder)
    near, far = float(index.bounds[:, 0].min()), float(index.bounds[:, 1].max())
    reference = reference_pose(index.c2w)
    points_file = model_file(folder / "sparse" / "0", "points3D")
    meta = {
        "capture": "forward_facing",
        "bounds": [near, far],
        "frame_bounds": index.bounds.tolist(),
        "reference_c2w": reference.tolist(),
        "image_folders": {sub.name: list(index.sizes[k]) for k, (sub, _) in index.folders.items()},
    }
    return Scene(scene_id=scene_id, frames=frames,
                 world_from_grid=normalisation_from_frustums(frames, near, far, reference),
                 points=None if points_file is None else read_points3d(points_file).xyz,
                 source=f"llff:{folder}", meta=meta)

