"""The `co3d` reader: Common Objects in 3D, v1 and v2.

A category folder holds `frame_annotations.jgz` and `sequence_annotations.jgz` (gzipped JSON lists) and one
folder per sequence: `<seq>/images/frameNNNNNN.jpg`, `<seq>/depths/frameNNNNNN.jpg.geometric.png` (16-bit PNG
whose bits are float16 depth), `<seq>/depth_masks/frameNNNNNN.png`, `<seq>/masks/frameNNNNNN.png` and optionally
`<seq>/pointcloud.ply`. Annotation paths are relative to the category folder's parent. A dataset root is a
category folder or a folder of them; scene ids are sequence names (checked by `check_scene_id`: they come from
the annotations), class_name is the category.

Cameras (PyTorch3D convention): a world point X (row vector) maps to camera coordinates X_cam = X @ R + T,
with camera axes +X left, +Y up, +Z forward; the NDC projection is ndc = f * X_cam[:2] / X_cam[2] + p, with
+x left and +y up in NDC. NDC -> pixels: u = w/2 - s_x ndc_x, v = h/2 - s_y ndc_y, where (s_x, s_y) =
(w/2, h/2) for "ndc_norm_image_bounds" -- the default of CO3D's and implicitron's annotation types, so what an
annotation without `intrinsics_format` means (CO3D v1 data) -- and min(w, h)/2 on both axes for
"ndc_isotropic" (what CO3D v2 writes). Any other value is an InputError naming frame_annotations.jgz. On a
portrait 1066 x 1896 frame, an NDC focal of (3.518, 1.978) is fx = fy = 1875 px under ndc_norm_image_bounds.
With F = diag(-1, -1, 1) (PyTorch3D camera axes -> OpenCV):
    K   = [[s_x f_x, 0, w/2 - s_x p_x], [0, s_y f_y, h/2 - s_y p_y], [0, 0, 1]]   (pixels, centre at w/2)
    c2w = [[R F, -R T], [0, 0, 0, 1]]                                              (OpenCV axes)
since X_cv = F X_cam = F R^T X + F T, so X = R F X_cv - R T.
Depth in metres = float16 value * depth.scale_adjustment, zeroed where the depth mask is 0 (when given) and
where it is not finite; a depth map of another size than the image is resized (nearest). It is CO3D's COLMAP
MVS depth: incomplete, optional supervision (reader option depth=off drops it). The foreground mask (grey,
0..255, a probability) is True above 127 and separates the object from its surroundings (masks=off drops it).
Normalisation: from `pointcloud.ply` when present (the object's points), else from the cameras (an
object-centric capture looks at its object). Scene.meta: capture "object" (the frames show the surroundings),
intrinsics_format, viewpoint_quality_score (from sequence_annotations.jgz).

Reader options (`--reader co3d:KEY=VALUE,...`): see `Options`.
"""

from __future__ import annotations

import functools
import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from perfdata import images
from perfdata.errors import InputError
from perfdata.readers import check_scene_id
from perfdata.readers.scannet import read_ply_points
from perfdata.scene import Frame, Scene, normalisation_from_cameras, normalise, resize

FRAME_ANNOTATIONS = "frame_annotations.jgz"
SEQUENCE_ANNOTATIONS = "sequence_annotations.jgz"
DEFAULT_FORMAT = "ndc_norm_image_bounds"
INTRINSICS_FORMATS = ("ndc_norm_image_bounds", "ndc_isotropic")
_FLIP = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class Options:
    """Options of the co3d reader (`--reader co3d:min_quality=0.5,depth=off`)."""

    min_quality: float | None = None
    """Keep only sequences whose viewpoint_quality_score (sequence_annotations.jgz) is at least this; sequences
    without a score are dropped too. None: keep all."""
    depth: bool = True
    """Load CO3D's depth maps (optional depth supervision); off: frames without depth."""
    masks: bool = True
    """Load CO3D's foreground masks; off: frames without masks."""


def read_jgz(path: Path) -> list[dict[str, Any]]:
    """A gzipped JSON list."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"not a gzipped JSON file ({exc})") from None
    if not isinstance(data, list):
        raise InputError(path, "expected a JSON list of annotations")
    return data


def _categories(root: Path) -> list[Path]:
    if (root / FRAME_ANNOTATIONS).is_file():
        return [root]
    if not root.is_dir():
        raise InputError(root, "not a folder")
    return [p for p in sorted(root.iterdir())
            if not p.name.startswith(".") and p.is_dir() and (p / FRAME_ANNOTATIONS).is_file()]


def intrinsics_format(ann: dict[str, Any], where: Path) -> str:
    """The annotation's intrinsics_format (absent: ndc_norm_image_bounds); an unknown one is an InputError."""
    vp = ann.get("viewpoint") if isinstance(ann, dict) else None
    fmt = vp.get("intrinsics_format", DEFAULT_FORMAT) if isinstance(vp, dict) else DEFAULT_FORMAT
    if fmt not in INTRINSICS_FORMATS:
        raise InputError(where, f"frame {ann.get('frame_number')!r} of {ann.get('sequence_name')!r}: unknown "
                         f"intrinsics_format {fmt!r} (known: {', '.join(INTRINSICS_FORMATS)})")
    return str(fmt)


def _sequence_rows(category: Path) -> dict[str, dict[str, Any]]:
    listing = category / SEQUENCE_ANNOTATIONS
    if not listing.is_file():
        return {}
    return {str(r.get("sequence_name")): r for r in read_jgz(listing) if isinstance(r, dict)}


def _keep(row: dict[str, Any], options: Options) -> bool:
    if options.min_quality is None:
        return True
    score = row.get("viewpoint_quality_score")
    return isinstance(score, (int, float)) and float(score) >= options.min_quality


def _index(category: Path, options: Options) -> dict[str, tuple[list[dict[str, Any]], dict[str, Any]]]:
    """Sequence name -> (its frame annotations, its sequence annotation) for the sequences with a folder that
    pass the options' filter. Every sequence name is checked and every intrinsics_format known."""
    where = category / FRAME_ANNOTATIONS
    grouped: dict[str, list[dict[str, Any]]] = {}
    for ann in read_jgz(where):
        if not isinstance(ann, dict) or "sequence_name" not in ann:
            raise InputError(where, "an annotation has no sequence_name")
        name = check_scene_id(str(ann["sequence_name"]), where)
        intrinsics_format(ann, where)
        grouped.setdefault(name, []).append(ann)
    rows = _sequence_rows(category)
    return {name: (grouped[name], rows.get(name, {})) for name in sorted(grouped)
            if (category / name).is_dir() and _keep(rows.get(name, {}), options)}


def list_scenes(root: Path, options: Options = Options()) -> list[str]:
    """Sequence names (with a folder on disk, passing `options`) of the category folder(s) at or under `root`."""
    return [seq for category in _categories(root) for seq in _index(category, options)]
def camera_from_pytorch3d(
    R: np.ndarray, T: np.ndarray, focal: np.ndarray, principal: np.ndarray, size_hw: tuple[int, int], fmt: str
) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch3D R (3, 3), T (3,), NDC focal (2,) and principal point (2,) of an image (h, w) -> OpenCV
    K (3, 3) in pixels and c2w (4, 4). See the module docstring for the formulas."""
    h, w = size_hw
    if fmt == "ndc_norm_image_bounds":
        s = np.array([w / 2.0, h / 2.0])
    elif fmt == "ndc_isotropic":
        s = np.full(2, min(w, h) / 2.0)
    else:
        raise ValueError(f"unknown intrinsics_format {fmt!r}; known: {', '.join(INTRINSICS_FORMATS)}")
    fx, fy = np.asarray(focal, dtype=np.float64) * s
    cx, cy = np.array([w / 2.0, h / 2.0]) - np.asarray(principal, dtype=np.float64) * s
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    R, T = np.asarray(R, dtype=np.float64), np.asarray(T, dtype=np.float64)
    c2w = np.eye(4)
    c2w[:3, :3] = R @ _FLIP
    c2w[:3, 3] = -R @ T
    return K, c2w


def _load_depth(path: Path, scale: float, mask_path: Path | None, size_hw: tuple[int, int]) -> np.ndarray:
    raw = images.read_array(path)
    if raw.ndim != 2 or raw.dtype != np.uint16:
        raise InputError(path, f"expected a 16-bit single-channel depth PNG, got {raw.dtype} {raw.shape}")
    depth = raw.view(np.float16).astype(np.float32) * np.float32(scale)
    depth[~np.isfinite(depth) | (depth < 0)] = 0.0
    if mask_path is not None:
        valid = images.read_array(mask_path)
        valid = valid[..., 0] if valid.ndim == 3 else valid
        if valid.shape != depth.shape:
            raise InputError(mask_path, f"depth mask is {valid.shape[1]}x{valid.shape[0]}, depth is {depth.shape[1]}x{depth.shape[0]}")
        depth[valid == 0] = 0.0
    return resize(depth, size_hw, "nearest")


def _load_mask(path: Path, size_hw: tuple[int, int]) -> np.ndarray:
    return resize(images.read_mask(path), size_hw, "nearest")


def _frame(ann: dict[str, Any], base: Path, where: Path, options: Options) -> Frame:
    """One Frame from one frame annotation; `base` is the folder annotation paths are relative to."""
    fmt = intrinsics_format(ann, where)
    try:
        h, w = (int(v) for v in ann["image"]["size"])
        vp = ann["viewpoint"]
        K, c2w = camera_from_pytorch3d(vp["R"], vp["T"], vp["focal_length"], vp["principal_point"], (h, w), fmt)
        image = base / ann["image"]["path"]
        depth_ann = (ann.get("depth") or {}) if options.depth else {}
        mask_ann = (ann.get("mask") or {}) if options.masks else {}
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(where, f"frame {ann.get('frame_number')!r} of {ann.get('sequence_name')!r}: "
                         f"bad annotation ({type(exc).__name__}: {exc})") from None
    if not np.all(np.isfinite(c2w)) or not np.all(np.isfinite(K)):
        raise InputError(where, f"frame {ann.get('frame_number')!r}: non-finite camera")
    if not image.is_file():
        raise InputError(image, "image not found")
    depth = mask = None
    if depth_ann.get("path"):
        depth_mask = base / depth_ann["mask_path"] if depth_ann.get("mask_path") else None
        depth = functools.partial(_load_depth, base / depth_ann["path"],
                                  float(depth_ann.get("scale_adjustment", 1.0)), depth_mask, (h, w))
    if mask_ann.get("path"):
        mask = functools.partial(_load_mask, base / mask_ann["path"], (h, w))
    return Frame(name=image.stem, K=K, c2w=c2w, width=w, height=h, image=image, depth=depth, mask=mask)


def _find(root: Path, scene_id: str, options: Options) -> tuple[Path, list[dict[str, Any]], dict[str, Any]]:
    for category in _categories(root):
        index = _index(category, options)
        if scene_id in index:
            return (category, *index[scene_id])
    raise InputError(root, f"no CO3D sequence {scene_id!r} here" + (
        f" with viewpoint_quality_score >= {options.min_quality}" if options.min_quality is not None else ""))


def load_scene(root: Path, scene_id: str, options: Options = Options()) -> Scene:
    """The CO3D sequence `scene_id` under `root` (see the module docstring for the conventions)."""
    category, anns, seq = _find(root, scene_id, options)
    where = category / FRAME_ANNOTATIONS
    anns = sorted(anns, key=lambda a: a.get("frame_number", 0))
    frames = tuple(_frame(a, category.parent, where, options) for a in anns)
    first = frames[0]
    assert isinstance(first.image, Path)  # _frame gives every frame its image file
    width, height, _ = images.image_header(first.image)
    if (width, height) != (first.width, first.height):
        raise InputError(first.image, f"image is {width}x{height} but {where.name} says {first.width}x{first.height}")
    ply = category / scene_id / "pointcloud.ply"
    points = read_ply_points(ply) if ply.is_file() else None
    world_from_grid = normalise(frames, points) if points is not None else normalisation_from_cameras(frames)
    formats = sorted({intrinsics_format(a, where) for a in anns})
    meta: dict[str, Any] = {"capture": "object", "intrinsics_format": formats[0] if len(formats) == 1 else formats}
    if "viewpoint_quality_score" in seq:
        meta["viewpoint_quality_score"] = seq["viewpoint_quality_score"]
    class_name = str(seq.get("category") or category.name)
    return Scene(scene_id=scene_id, frames=frames, world_from_grid=world_from_grid, class_name=class_name,
                 points=points, source=f"co3d:{category / scene_id}", meta=meta)
