"""The `scannet` reader: ScanNet scene exports (the SensReader output plus the 2D label export).

Layout of a scene folder `sceneXXXX_YY/`:
    color/N.jpg                    colour, 1296x968
    depth/N.png                    uint16 depth in millimetres, 640x480
    pose/N.txt                     4x4 camera-to-world, OpenCV axes, metres (some are "-inf": dropped)
    intrinsic/intrinsic_color.txt  4x4, colour camera
    intrinsic/intrinsic_depth.txt  4x4, depth camera
    label-filt/N.png               optional uint16 raw ScanNet label ids (colour resolution)
    <scene>_vh_clean_2.ply         optional mesh: its vertices become Scene.points
and `scannetv2-labels.combined.tsv` in the scene folder or its parent, mapping raw ids (`id`) to `nyu40id`.

Resolution: every frame is at the depth resolution (640x480), the cheaper one and the one the depth was
measured at. K is the colour intrinsics scaled by (640 / 1296, 480 / 968), which is exact for the colour image
area-resized to that size. The depth camera shares the colour camera's pose (ScanNet registers them) but has its
own intrinsics, so the depth map is resampled (nearest) through the per-axis affine pixel map
u_depth = fx_d (u - cx) / fx + cx_d (likewise v) onto K; where the two agree this is the identity. Label maps
are resized (nearest) to the frame size, then mapped raw id -> nyu40 -> the 20 benchmark classes (0..19, -1 =
anything else, including unannotated 0). Frames with non-finite poses are dropped with a logged warning.
Scene.meta["capture"] is "room" (cameras inside the space they look at).
"""

from __future__ import annotations

import csv
import functools
import logging
from pathlib import Path

import numpy as np

from perfdata import camera, images
from perfdata.errors import InputError
from perfdata.readers import scene_dir, scene_dirs
from perfdata.readers.rgbd import read_intrinsics
from perfdata.scene import Frame, Scene, normalise, resize

log = logging.getLogger(__name__)

BENCHMARK_NYU40_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)
BENCHMARK_NAMES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
    "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink", "bathtub", "otherfurniture",
)
LABEL_TSV = "scannetv2-labels.combined.tsv"


def _is_scene(folder: Path) -> bool:
    return (folder / "color").is_dir() and (folder / "pose").is_dir() and (folder / "intrinsic").is_dir()


def list_scenes(root: Path) -> list[str]:
    """Ids (sceneXXXX_YY folder names) of the ScanNet scenes at or one level under `root`."""
    return list(scene_dirs(root, _is_scene))


def label_lookup(tsv: Path) -> np.ndarray:
    """int32 (max_raw_id + 1,) table: raw ScanNet label id -> benchmark class 0..19, or -1."""
    nyu_to_class = {nyu: c for c, nyu in enumerate(BENCHMARK_NYU40_IDS)}
    try:
        with open(tsv, newline="") as fh:
            rows = [(int(r["id"]), int(r["nyu40id"] or 0)) for r in csv.DictReader(fh, delimiter="\t")]
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise InputError(tsv, f"cannot read the label table (needs columns id and nyu40id): {exc!r}") from None
    if not rows:
        raise InputError(tsv, "the label table is empty")
    table = np.full(max(raw for raw, _ in rows) + 1, -1, dtype=np.int32)
    for raw, nyu in rows:
        table[raw] = nyu_to_class.get(nyu, -1)
    return table


def _load_labels(path: Path, table: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    raw = images.read_array(path)
    if raw.ndim != 2:
        raise InputError(path, f"expected a single-channel label image, got shape {raw.shape}")
    raw = resize(raw.astype(np.int64), size, "nearest")
    out = np.full(raw.shape, -1, dtype=np.int32)
    known = raw < len(table)
    out[known] = table[raw[known]]
    return out


def _load_color(path: Path, size: tuple[int, int], expected: tuple[int, int]) -> np.ndarray:
    rgb = images.read_rgba(path)[0]
    if rgb.shape[:2] != expected:
        raise InputError(path, f"colour image is {rgb.shape[1]}x{rgb.shape[0]}, expected {expected[1]}x{expected[0]}")
    return resize(rgb, size, "area")


def _load_depth(path: Path, K: np.ndarray, K_depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Depth (H, W) of the frame camera K from the depth camera K_depth (same pose) by nearest sampling."""
    depth = images.read_depth(path)
    h, w = size
    if depth.shape != size:
        raise InputError(path, f"depth map is {depth.shape[1]}x{depth.shape[0]}, expected {w}x{h}")
    u = (np.arange(w) + 0.5 - K[0, 2]) / K[0, 0] * K_depth[0, 0] + K_depth[0, 2]
    v = (np.arange(h) + 0.5 - K[1, 2]) / K[1, 1] * K_depth[1, 1] + K_depth[1, 2]
    cols, rows = np.floor(u).astype(int), np.floor(v).astype(int)
    out = depth[np.clip(rows, 0, depth.shape[0] - 1)][:, np.clip(cols, 0, depth.shape[1] - 1)]
    out[:, (cols < 0) | (cols >= depth.shape[1])] = 0.0
    out[(rows < 0) | (rows >= depth.shape[0]), :] = 0.0
    return out


def _read_pose(path: Path) -> np.ndarray:
    try:
        pose = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read pose ({exc})") from None
    if pose.shape != (4, 4):
        raise InputError(path, f"expected a 4x4 pose, got {pose.shape}")
    return pose


def _find_tsv(folder: Path) -> Path | None:
    for candidate in (folder / LABEL_TSV, folder.parent / LABEL_TSV):
        if candidate.is_file():
            return candidate
    return None


def read_ply_points(path: Path) -> np.ndarray:
    """(n, 3) float64 vertex positions of a PLY file."""
    from plyfile import PlyData

    try:
        vertex = PlyData.read(str(path))["vertex"]
        return np.stack([np.asarray(vertex[k], dtype=np.float64) for k in ("x", "y", "z")], axis=-1)
    except Exception as exc:  # plyfile raises many types for bad files
        raise InputError(path, f"cannot read the mesh vertices ({type(exc).__name__}: {exc})") from None


def _sizes(folder: Path, first: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """(colour (H, W), depth (H, W)) from the first frame's headers."""
    cw, ch, _ = images.image_header(folder / "color" / f"{first}.jpg")
    dw, dh, _ = images.image_header(folder / "depth" / f"{first}.png")
    return (ch, cw), (dh, dw)


def _frame_ids(folder: Path) -> list[str]:
    stems = [p.stem for p in (folder / "color").iterdir() if p.suffix == ".jpg"]
    if not stems:
        raise InputError(folder / "color", "no .jpg colour images")
    return sorted(stems, key=lambda s: (int(s) if s.isdigit() else -1, s))


def _kept_poses(folder: Path, ids: list[str]) -> list[tuple[str, np.ndarray]]:
    kept = []
    for i in ids:
        pose = _read_pose(folder / "pose" / f"{i}.txt")
        if np.all(np.isfinite(pose)):
            kept.append((i, pose))
        else:
            log.warning("%s: non-finite pose, frame dropped", folder / "pose" / f"{i}.txt")
    if not kept:
        raise InputError(folder / "pose", "every pose is non-finite")
    return kept


def load_scene(root: Path, scene_id: str) -> Scene:
    """The ScanNet scene `scene_id` under `root` (frames at the depth resolution; see the module docstring)."""
    folder = scene_dir(root, scene_id, _is_scene)
    ids = _frame_ids(folder)
    kept = _kept_poses(folder, ids)
    color_size, depth_size = _sizes(folder, kept[0][0])
    K_color = read_intrinsics(folder / "intrinsic" / "intrinsic_color.txt")
    K_depth = read_intrinsics(folder / "intrinsic" / "intrinsic_depth.txt")
    K = camera.scale_intrinsics(K_color, depth_size[1] / color_size[1], depth_size[0] / color_size[0])
    tsv = _find_tsv(folder)
    has_labels = (folder / "label-filt").is_dir()
    if has_labels and tsv is None:
        log.warning("%s: no %s here or in the parent folder, labels not loaded", folder, LABEL_TSV)
    table = label_lookup(tsv) if has_labels and tsv is not None else None
    frames = []
    for i, pose in kept:
        for sub, suffix in (("color", ".jpg"), ("depth", ".png")):
            if not (folder / sub / f"{i}{suffix}").is_file():
                raise InputError(folder / sub / f"{i}{suffix}", "file not found")
        labels = None
        if table is not None:
            labels = functools.partial(_load_labels, folder / "label-filt" / f"{i}.png", table, depth_size)
        frames.append(Frame(
            name=i, K=K, c2w=pose, width=depth_size[1], height=depth_size[0],
            image=functools.partial(_load_color, folder / "color" / f"{i}.jpg", depth_size, color_size),
            depth=functools.partial(_load_depth, folder / "depth" / f"{i}.png", K, K_depth, depth_size),
            labels=labels,
        ))
    ply = folder / f"{folder.name}_vh_clean_2.ply"
    points = read_ply_points(ply) if ply.is_file() else None
    return Scene(
        scene_id=scene_id, frames=tuple(frames), world_from_grid=normalise(frames, points),
        label_names=BENCHMARK_NAMES if table is not None else None, points=points,
        source=f"scannet:{folder}", meta={"capture": "room", "dropped_frames": len(ids) - len(kept)},
    )
