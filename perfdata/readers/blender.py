"""The `blender` reader: transforms.json captures (NeRF-synthetic, instant-ngp, nerfstudio, perfdata synth).

A scene folder holds `transforms.json`, or `transforms_train.json` with optional `transforms_val.json` /
`transforms_test.json`; they are merged, frames of the `_test` file get split "test", all others "train".

Cameras: NeRF-synthetic's `camera_angle_x` (+ optional `camera_angle_y`) or instant-ngp / nerfstudio's
`fl_x, fl_y, cx, cy, w, h` at the top level, each overridable per frame. `cx, cy` are in pixels with the image
centre at w/2 (perfdata's pixel-centre convention, the same as nerfstudio's). `camera_model: OPENCV` with
`k1 k2 p1 p2` (and `k3` if given) is removed on load: every map is resampled onto the pinhole camera K of the
same size (bilinear for colour, nearest for depth, masks and labels; pixels that fall outside the captured image
are 0 / False / -1). `transform_matrix` is camera-to-world with OpenGL axes and is converted to OpenCV.

When `w`/`h` are absent the size comes from the first image's header (read once); the first image's size is
also checked against `w`/`h` when they are given. `file_path` without an extension gets ".png". An RGBA image's
alpha is the frame mask (unless `mask_path` is given) and such scenes default to a white background.
Per frame, nerfstudio's `depth_file_path` (uint16 PNG or .npy, times the top-level `depth_unit_scale_factor`,
default 1e-3, gives metres) and `mask_path`, and perfdata's `label_path` (8-bit PNG, 255 = ignore).
The top-level `"perfdata"` object (format_version 1) adds kind, class_name, label_names, bounds (which set
world_from_grid), background, background_color, seed, and optionally capture and backdrop. Scene.meta["capture"]:
the block's capture, else its kind ("object" / "room"), else "object" when every frame has a mask (alpha or
mask_path), else guessed from the cameras (`perfdata.readers.capture.guess_capture`).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from perfdata import camera, images
from perfdata.distortion import Distortion, lazy_undistorted
from perfdata.errors import FormatVersionError, InputError
from perfdata.readers import scene_dir, scene_dirs
from perfdata.readers.capture import CAPTURES, guess_capture
from perfdata.scene import Frame, Scene, normalisation_from_bounds, normalise

PERFDATA_BLOCK_VERSION = 1
_TRANSFORM_FILES = {
    "transforms.json": "train",
    "transforms_train.json": "train",
    "transforms_val.json": "train",
    "transforms_test.json": "test",
}
_DISTORTION_KEYS = ("k1", "k2", "k3", "p1", "p2")
_CAMERA_KEYS = frozenset(
    ("camera_angle_x", "camera_angle_y", "fl_x", "fl_y", "cx", "cy", "w", "h", "camera_model", *_DISTORTION_KEYS)
)
_PINHOLE_MODELS = ("PINHOLE", "SIMPLE_PINHOLE", "OPENCV")
_BACKGROUNDS = ("white", "black", None)


def _read_rgb(path: Path) -> np.ndarray:
    return images.read_rgba(path)[0]


def _read_scaled_npy(path: Path, factor: float) -> np.ndarray:
    return images.read_depth(path) * np.float32(factor)


def _is_scene(folder: Path) -> bool:
    return folder.is_dir() and any((folder / name).is_file() for name in _TRANSFORM_FILES)


def list_scenes(root: Path) -> list[str]:
    """Ids (folder names) of the transforms.json scenes at or one level under `root`."""
    return list(scene_dirs(root, _is_scene))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"not a readable JSON file ({exc})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list):
        raise InputError(path, "expected an object with a 'frames' list")
    return meta


def _image_path(folder: Path, fr: dict[str, Any], where: Path, i: int) -> Path:
    if "file_path" not in fr:
        raise InputError(where, f"frame {i} has no file_path")
    path = folder / str(fr["file_path"])
    return path if path.suffix else path.with_name(path.name + ".png")


def _camera(p: dict[str, Any], size: tuple[int, int], where: Path, i: int) -> tuple[np.ndarray, int, int, Distortion]:
    """(K, width, height, distortion) from the merged top-level and per-frame camera keys."""
    try:
        w, h = int(p.get("w", size[0])), int(p.get("h", size[1]))
        if "fl_x" in p:
            fx = float(p["fl_x"])
        elif "camera_angle_x" in p:
            fx = 0.5 * w / math.tan(0.5 * float(p["camera_angle_x"]))
        else:
            raise InputError(where, f"frame {i}: no focal length (fl_x or camera_angle_x)")
        if "fl_y" in p:
            fy = float(p["fl_y"])
        elif "camera_angle_y" in p:
            fy = 0.5 * h / math.tan(0.5 * float(p["camera_angle_y"]))
        else:
            fy = fx
        K = camera.intrinsics(fx, fy, float(p.get("cx", 0.5 * w)), float(p.get("cy", 0.5 * h)))
        dist = Distortion(**{k: float(p.get(k, 0.0)) for k in _DISTORTION_KEYS})
    except (TypeError, ValueError) as exc:
        raise InputError(where, f"frame {i}: bad camera parameter ({exc})") from None
    model = p.get("camera_model", "OPENCV")
    if model not in _PINHOLE_MODELS or (model != "OPENCV" and not dist.is_zero):
        raise InputError(where, f"frame {i}: camera_model {model!r} is not supported (use one of {_PINHOLE_MODELS})")
    if not (np.all(np.isfinite(K)) and fx > 0 and fy > 0 and w > 0 and h > 0):
        raise InputError(where, f"frame {i}: invalid intrinsics fx={fx} fy={fy} size {w}x{h}")
    return K, w, h, dist


def _pose(fr: dict[str, Any], where: Path, i: int) -> np.ndarray:
    """OpenCV c2w (4, 4) from the frame's OpenGL `transform_matrix` (4x4 or 3x4)."""
    try:
        m = np.asarray(fr["transform_matrix"], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(where, f"frame {i}: missing or malformed transform_matrix ({exc})") from None
    if m.shape == (3, 4):
        m = np.vstack([m, [0.0, 0.0, 0.0, 1.0]])
    if m.shape != (4, 4):
        raise InputError(where, f"frame {i}: transform_matrix must be 4x4, got {m.shape}")
    if not np.all(np.isfinite(m)):
        raise InputError(where, f"frame {i} ({fr.get('file_path')}): non-finite transform_matrix")
    return camera.opengl_to_opencv(m)


@dataclass(frozen=True)
class _FileInfo:
    """What one transforms file says for all of its frames."""

    path: Path
    meta: dict[str, Any]
    split: str
    first_size: tuple[int, int]
    rgba: bool


def _frame(folder: Path, info: _FileInfo, fr: dict[str, Any], i: int) -> Frame:
    params = {k: v for k, v in {**info.meta, **fr}.items() if k in _CAMERA_KEYS}
    K, w, h, dist = _camera(params, info.first_size, info.path, i)
    c2w = _pose(fr, info.path, i)
    image_path = _image_path(folder, fr, info.path, i)
    if not image_path.is_file():
        raise InputError(image_path, f"image not found (frame {i} of {info.path.name})")
    factor = float(info.meta.get("depth_unit_scale_factor", 1e-3))
    depth: Any = None
    if "depth_file_path" in fr:
        depth = folder / str(fr["depth_file_path"])
        if depth.suffix == ".npy" and factor != 1.0:
            depth = functools.partial(_read_scaled_npy, depth, factor)
    mask: Any = folder / str(fr["mask_path"]) if "mask_path" in fr else (image_path if info.rgba else None)
    labels: Any = folder / str(fr["label_path"]) if "label_path" in fr else None
    image: Any = image_path
    if not dist.is_zero:
        image = lazy_undistorted(image_path, _read_rgb, K, dist, "bilinear", 0)
        depth = lazy_undistorted(depth, functools.partial(images.read_depth, scale=1.0 / factor), K, dist, "nearest", 0)
        mask = lazy_undistorted(mask, images.read_mask, K, dist, "nearest", False)
        labels = lazy_undistorted(labels, images.read_labels, K, dist, "nearest", -1)
    name = Path(str(fr["file_path"])).with_suffix("").as_posix().removeprefix("./")
    return Frame(name=name, K=K, c2w=c2w, width=w, height=h, image=image, depth=depth, mask=mask,
                 labels=labels, split=info.split, depth_scale=1.0 / factor)  # type: ignore[arg-type]


def _file_info(folder: Path, name: str, meta: dict[str, Any]) -> _FileInfo | None:
    """Read the first image's header once: its size (for w/h when absent; checked when present) and channels.
    None for a file without frames."""
    path = folder / name
    if not meta["frames"]:
        return None
    first = meta["frames"][0]
    image = _image_path(folder, first, path, 0)
    width, height, channels = images.image_header(image)
    merged = {**meta, **first}
    if ("w" in merged and int(merged["w"]) != width) or ("h" in merged and int(merged["h"]) != height):
        raise InputError(image, f"image is {width}x{height} but {name} says {merged.get('w')}x{merged.get('h')}")
    return _FileInfo(path, meta, _TRANSFORM_FILES[name], (width, height), channels in (2, 4))


def _perfdata_block(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    block = meta.get("perfdata") or {}
    if block and block.get("format_version") != PERFDATA_BLOCK_VERSION:
        raise FormatVersionError(path, block.get("format_version"), PERFDATA_BLOCK_VERSION)
    if block.get("background") not in _BACKGROUNDS:
        raise InputError(path, f"perfdata.background must be white, black or null, got {block['background']!r}")
    return block


def _bounds(path: Path, value: Any) -> tuple[np.ndarray, np.ndarray]:
    try:
        box = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        box = np.zeros(0)
    if box.shape != (2, 3) or not np.all(np.isfinite(box)) or np.any(box[1] <= box[0]):
        raise InputError(path, f"perfdata.bounds must be [[x0, y0, z0], [x1, y1, z1]] with x0 < x1 ..., got {value!r}")
    return box[0], box[1]


def load_scene(root: Path, scene_id: str) -> Scene:
    """The scene `scene_id` under `root` (see the module docstring for what is read)."""
    folder = scene_dir(root, scene_id, _is_scene)
    names = [n for n in _TRANSFORM_FILES if (folder / n).is_file()]
    if "transforms.json" in names and "transforms_train.json" in names:
        names.remove("transforms.json")  # split files win; transforms.json is usually their merge
    infos = [i for n in names if (i := _file_info(folder, n, _read_json(folder / n))) is not None]
    if not infos:
        raise InputError(folder / names[0], "no frames")
    frames = [_frame(folder, info, fr, i) for info in infos for i, fr in enumerate(info.meta["frames"])]
    block = _perfdata_block(infos[0].path, infos[0].meta)
    if "bounds" in block:
        world_from_grid = normalisation_from_bounds(*_bounds(infos[0].path, block["bounds"]))
    else:
        world_from_grid = normalise(frames)
    rgba = any(info.rgba for info in infos)
    background = block["background"] if "background" in block else ("white" if rgba else None)
    extras: dict[str, Any] = {k: block[k] for k in ("kind", "seed", "background_color", "backdrop") if k in block}
    return Scene(
        scene_id=scene_id,
        frames=tuple(frames),
        world_from_grid=world_from_grid,
        class_name=block.get("class_name"),
        label_names=tuple(block["label_names"]) if "label_names" in block else None,
        background=background,
        source=f"blender:{folder}",
        meta={"transforms": names, "capture": _capture(block, frames), **extras},
    )


def _capture(block: dict[str, Any], frames: list[Frame]) -> str:
    """The perfdata block's capture (or its kind: object / room), else "object" when frames have masks (alpha
    or mask_path), else guessed from the cameras."""
    if block.get("capture") in CAPTURES:
        return str(block["capture"])
    if block.get("kind") in ("object", "room"):
        return str(block["kind"])
    if all(f.mask is not None for f in frames):
        return "object"
    return guess_capture(np.stack([f.c2w for f in frames]))


# The camera rules of this reader, for other readers of transforms files (`perfdata.pipelines.camera_files`).
CAMERA_KEYS = _CAMERA_KEYS
image_path = _image_path
camera_params = _camera
frame_pose = _pose
