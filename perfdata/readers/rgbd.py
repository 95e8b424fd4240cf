"""The `rgbd` reader: a plain RGB-D capture folder.

Layout of a scene folder:
    images/        colour images (PNG / JPEG), all the same size
    depth/         optional uint16 PNG depth in millimetres (0 = unknown), same file names (.png) as images/
    K.txt          3x3 intrinsics in pixels (image centre at w/2)
    poses.txt      one flattened 4x4 camera-to-world per line, OpenCV axes, metres ('#' lines are comments)
    frames.txt     optional: the image file names in pose order, one per line (the last field of each line
                   counts, so "index original_index name" lines work); without it, the sorted images/ names.

A pose count that differs from the image count, or a non-finite pose, is an `InputError` naming poses.txt.
The first image's (and depth map's) size comes from its header and is the size of every frame.
Scene.meta["capture"] is "room" (cameras inside the space they look at).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from perfdata import images
from perfdata.errors import InputError
from perfdata.readers import scene_dir, scene_dirs
from perfdata.scene import Frame, Scene, normalise

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _is_scene(folder: Path) -> bool:
    return (folder / "images").is_dir() and (folder / "poses.txt").is_file() and (folder / "K.txt").is_file()


def list_scenes(root: Path) -> list[str]:
    """Ids (folder names) of the RGB-D scenes at or one level under `root`."""
    return list(scene_dirs(root, _is_scene))


def read_matrix_lines(path: Path, n_values: int = 16) -> list[np.ndarray]:
    """Each non-empty, non-comment line of a text file as a float64 vector of `n_values` numbers; a line with
    another count or a non-finite value is an InputError naming the file and line."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read ({exc})") from None
    rows = []
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            row = np.array([float(v) for v in text.replace(",", " ").split()])
        except ValueError:
            raise InputError(path, f"line {number}: not a list of numbers") from None
        if len(row) != n_values:
            raise InputError(path, f"line {number}: expected {n_values} numbers, got {len(row)}")
        if not np.all(np.isfinite(row)):
            raise InputError(path, f"line {number}: non-finite pose")
        rows.append(row)
    return rows


def read_intrinsics(path: Path) -> np.ndarray:
    """(3, 3) K from a text file with a 3x3 (or 4x4, top-left used) matrix."""
    try:
        K = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read intrinsics ({exc})") from None
    if K.shape not in ((3, 3), (4, 4)) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise InputError(path, f"expected a finite 3x3 intrinsics matrix with positive focal lengths, got {K.shape}")
    return K[:3, :3].copy()


def _frame_names(folder: Path) -> list[str]:
    listing = folder / "frames.txt"
    if listing.is_file():
        names = []
        for line in listing.read_text().splitlines():
            text = line.split("#", 1)[0].split()
            if text:
                names.append(text[-1])
        return names
    return sorted(p.name for p in (folder / "images").iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)


def check_principal_point(K: np.ndarray, size: tuple[int, int], image: Path, K_path: Path) -> None:
    """A cheap size-vs-intrinsics check for sources that give K without an image size: the principal point
    must lie in the middle half of the image (it sits near the centre for real lenses); an image resized
    after calibration by 2x or more fails this."""
    width, height = size
    if abs(K[0, 2] - 0.5 * width) > 0.25 * width or abs(K[1, 2] - 0.5 * height) > 0.25 * height:
        raise InputError(image, f"image is {width}x{height} but the principal point in {K_path.name} is "
                         f"({K[0, 2]:.1f}, {K[1, 2]:.1f}): the intrinsics are for another image size")


def _check_size(path: Path, size: tuple[int, int], K_path: Path) -> None:
    width, height, _ = images.image_header(path)
    if (width, height) != size:
        raise InputError(path, f"image is {width}x{height} but the first image (and {K_path.name}) is {size[0]}x{size[1]}")


def load_scene(root: Path, scene_id: str) -> Scene:
    """The RGB-D scene `scene_id` under `root`; world_from_grid from the depth when present, else the cameras."""
    folder = scene_dir(root, scene_id, _is_scene)
    names = _frame_names(folder)
    poses = read_matrix_lines(folder / "poses.txt")
    if len(poses) != len(names):
        raise InputError(folder / "poses.txt", f"{len(poses)} poses for {len(names)} images")
    if not names:
        raise InputError(folder / "images", "no images")
    K = read_intrinsics(folder / "K.txt")
    missing = [n for n in names if not (folder / "images" / n).is_file()]
    if missing:
        raise InputError(folder / "images" / missing[0], f"image not found ({len(missing)} missing)")
    width, height, _ = images.image_header(folder / "images" / names[0])
    check_principal_point(K, (width, height), folder / "images" / names[0], folder / "K.txt")
    has_depth = (folder / "depth").is_dir()
    depths: list[Path | None] = [None] * len(names)
    if has_depth:
        depth_files = [folder / "depth" / (Path(n).stem + ".png") for n in names]
        missing_depth = [d for d in depth_files if not d.is_file()]
        if missing_depth:
            raise InputError(missing_depth[0], f"depth map not found ({len(missing_depth)} missing)")
        _check_size(depth_files[0], (width, height), folder / "K.txt")
        depths = list(depth_files)
    frames = tuple(
        Frame(name=Path(n).stem, K=K, c2w=pose.reshape(4, 4), width=width, height=height,
              image=folder / "images" / n, depth=depth)
        for n, pose, depth in zip(names, poses, depths, strict=True)
    )
    return Scene(scene_id=scene_id, frames=frames, world_from_grid=normalise(frames), source=f"rgbd:{folder}",
                 meta={"capture": "room"})
