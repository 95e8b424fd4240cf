"""Cameras to render read from a file (`perfdata render --cameras FILE`), so fits are scored on given views:

- a transforms.json (NeRF-synthetic / instant-ngp / nerfstudio: `camera_angle_x` or `fl_x fl_y cx cy w h`,
  per-frame overrides, OpenGL `transform_matrix`; parsed by the blender reader's own rules). Without `w`/`h`
  the size comes from the first frame's image;
- a cameras.json written by an earlier `perfdata render` (`perfdata.records.render`);
- a nerfstudio `camera_path.json` (`render_width`, `render_height`, and per camera a `camera_to_world` (4x4 or
  16 values, OpenGL axes) and a vertical `fov` in degrees).
Every camera must be in the scene's world frame (the frame of the capture the fit read); views are named
after the file's frames where it names them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from perfdata.pipelines.poses import Camera

from perfdata import images
from perfdata.errors import InputError
from perfdata.readers import blender

OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])


def read_camera_file(path: str | Path) -> list[tuple[str, Camera]]:
    """(view name, camera) of every camera in `path` (module doc); errors name the file and the problem."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "camera file not found") from None
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not a readable JSON camera file ({exc})") from None
    if not isinstance(doc, dict):
        raise InputError(path, "a camera file must be a JSON object")
    try:
        if "camera_path" in doc:
            cams = _camera_path(doc, path)
        elif "views" in doc and "members" in doc:
            cams = [(str(v["name"]), Camera(np.asarray(v["K"], np.float64), np.asarray(v["c2w"], np.float64),
                                            int(v["width"]), int(v["height"]))) for v in doc["views"]]
        elif "frames" in doc:
            cams = _transforms(doc, path)
        else:
            raise InputError(path, "neither a transforms.json (frames), a cameras.json (views) nor a nerfstudio "
                             "camera_path.json (camera_path)")
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(path, f"malformed camera entry ({type(exc).__name__}: {exc})") from None
    if not cams:
        raise InputError(path, "holds no cameras")
    for name, cam in cams:
        if cam.K.shape != (3, 3) or cam.c2w.shape != (4, 4) or cam.width < 1 or cam.height < 1 or not (
            np.isfinite(cam.K).all() and np.isfinite(cam.c2w).all()
        ):
            raise InputError(path, f"camera {name!r}: K must be 3x3, c2w 4x4, finite, and the size positive")
    return cams


def _transforms(doc: dict[str, Any], path: Path) -> list[tuple[str, Camera]]:
    size = None
    if not doc["frames"]:
        return []
    if "w" not in doc or "h" not in doc:
        first = doc["frames"][0]
        if "w" not in first or "h" not in first:
            image = blender.image_path(path.parent, first, path, 0)
            if not image.is_file():
                raise InputError(path, f"no w / h and no image {image.name} to read the size from")
            width, height, _ = images.image_header(image)
            size = (width, height)
    out = []
    for i, fr in enumerate(doc["frames"]):
        params = {k: v for k, v in {**doc, **fr}.items() if k in blender.CAMERA_KEYS}
        K, w, h, _ = blender.camera_params(params, size or (int(params["w"]), int(params["h"])), path, i)
        name = Path(str(fr.get("file_path", f"{i:05d}"))).with_suffix("").as_posix().removeprefix("./")
        out.append((name.replace("/", "_"), Camera(K, blender.frame_pose(fr, path, i), w, h)))
    return out


def _camera_path(doc: dict[str, Any], path: Path) -> list[tuple[str, Camera]]:
    w, h = int(doc["render_width"]), int(doc["render_height"])
    out = []
    for i, cam in enumerate(doc["camera_path"]):
        c2w = np.asarray(cam["camera_to_world"], np.float64).reshape(4, 4) @ OPENGL_TO_OPENCV
        fov = float(cam["fov"])
        if not 0 < fov < 180:
            raise InputError(path, f"camera {i}: fov {fov} must be a vertical field of view in degrees")
        fy = 0.5 * h / math.tan(math.radians(fov) / 2)
        K = np.array([[fy, 0.0, w / 2], [0.0, fy, h / 2], [0.0, 0.0, 1.0]])
        out.append((f"{i:05d}", Camera(K, c2w, w, h)))
    return out
