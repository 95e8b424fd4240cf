"""The `replica` reader: Replica renders in Semantic-NeRF's layout.

Layout of a scene folder (e.g. `room_0/Sequence_1/`):
    rgb/rgb_N.png                        colour
    depth/depth_N.png                    optional uint16 depth, 1000 units per metre (millimetres)
    semantic_class/semantic_class_N.png  optional 8-bit class ids
    traj_w_c.txt                         line N: flattened 4x4 camera-to-world of frame N

What this reader assumes (Semantic-NeRF's released renders, 640x480):
- Poses are camera-to-world with OpenCV camera axes (x right, y down, z forward), metres: Semantic-NeRF casts
  rays with its "opencv" convention for Replica; they are used as they are.
- Intrinsics follow from a 90-degree horizontal field of view at the image width: fx = fy = W / 2 / tan(45 deg)
  = W / 2, principal point at the image centre (W / 2, H / 2 in perfdata's pixel-centre convention, which is
  Semantic-NeRF's ((W - 1) / 2, (H - 1) / 2) with pixel centres at integers).
- Depth PNG values / 1000 = metres of z-depth; 0 = unknown.
- Class ids are kept as stored (Replica's semantic class ids, 0 = void/undefined in Semantic-NeRF); 255 = ignore.
  When an `info_semantic.json` (Replica's class list: {"classes": [{"id", "name"}]}) sits in the scene folder or
  one or two levels up, it names the ids.
Frames are numbered by N (sorted numerically), and traj_w_c.txt needs one line per rgb image.
Scene.meta["capture"] is "room" (cameras inside the space they look at).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from perfdata import camera, images
from perfdata.errors import InputError
from perfdata.readers import scene_dir, scene_dirs
from perfdata.readers.rgbd import read_matrix_lines
from perfdata.scene import Frame, Scene, normalise

HFOV_DEGREES = 90.0
DEPTH_UNITS_PER_METRE = 1000.0
_RGB_NAME = re.compile(r"^rgb_(\d+)\.png$")


def _is_scene(folder: Path) -> bool:
    return (folder / "rgb").is_dir() and (folder / "traj_w_c.txt").is_file()


def list_scenes(root: Path) -> list[str]:
    """Ids (folder names) of the Semantic-NeRF Replica sequences at or one level under `root`."""
    return list(scene_dirs(root, _is_scene))


def _frame_numbers(folder: Path) -> list[int]:
    numbers = sorted(int(m.group(1)) for p in (folder / "rgb").iterdir() if (m := _RGB_NAME.match(p.name)))
    if not numbers:
        raise InputError(folder / "rgb", "no rgb_N.png images")
    return numbers


def _label_names(folder: Path) -> tuple[str, ...] | None:
    for parent in (folder, folder.parent, folder.parent.parent):
        info = parent / "info_semantic.json"
        if info.is_file():
            try:
                classes = {int(c["id"]): str(c["name"]) for c in json.loads(info.read_text())["classes"]}
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise InputError(info, f"cannot read the class list ({exc!r})") from None
            if not classes or min(classes) < 0:
                raise InputError(info, "the class list is empty or has negative ids")
            return tuple(classes.get(i, f"class_{i}") for i in range(max(classes) + 1))
    return None


def _optional(folder: Path, sub: str, stem: str, numbers: list[int]) -> list[Path] | None:
    if not (folder / sub).is_dir():
        return None
    paths = [folder / sub / f"{stem}_{n}.png" for n in numbers]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise InputError(missing[0], f"file not found ({len(missing)} missing in {sub}/)")
    return paths


def load_scene(root: Path, scene_id: str) -> Scene:
    """The Replica sequence `scene_id` under `root`; world_from_grid from depth when present."""
    folder = scene_dir(root, scene_id, _is_scene)
    numbers = _frame_numbers(folder)
    poses = read_matrix_lines(folder / "traj_w_c.txt")
    if len(poses) < numbers[-1] + 1 or len(poses) != len(numbers):
        raise InputError(folder / "traj_w_c.txt", f"{len(poses)} poses for {len(numbers)} images "
                         f"(numbered {numbers[0]}..{numbers[-1]})")
    width, height, _ = images.image_header(folder / "rgb" / f"rgb_{numbers[0]}.png")
    fx = 0.5 * width / math.tan(math.radians(0.5 * HFOV_DEGREES))
    K = camera.intrinsics(fx, fx, 0.5 * width, 0.5 * height)
    depths = _optional(folder, "depth", "depth", numbers)
    labels = _optional(folder, "semantic_class", "semantic_class", numbers)
    if depths is not None:
        dw, dh, _ = images.image_header(depths[0])
        if (dw, dh) != (width, height):
            raise InputError(depths[0], f"depth map is {dw}x{dh} but the images are {width}x{height}")
    frames = []
    for j, n in enumerate(numbers):
        frames.append(Frame(
            name=f"{n}", K=K, c2w=poses[n].reshape(4, 4), width=width, height=height,
            image=folder / "rgb" / f"rgb_{n}.png",
            depth=None if depths is None else depths[j], labels=None if labels is None else labels[j],
            depth_scale=DEPTH_UNITS_PER_METRE,
        ))
    return Scene(
        scene_id=scene_id, frames=tuple(frames), world_from_grid=normalise(frames),
        label_names=_label_names(folder) if labels is not None else None, source=f"replica:{folder}",
        meta={"capture": "room"},
    )
