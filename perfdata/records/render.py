"""A render folder and the shard samples made from it: the one reader and writer of the format.

    <renders>/<scene_id>/cameras.json      `SceneRender`, format_version 1: scene_id, class_name, class_id (index
                                           into the store's class list, where known), world_from_grid (4x4),
                                           psnr (of the fit), poses, seed, size, members (file kinds written per
                                           view, `MEMBER_EXTS` order) and views [{name, K (3x3 px), c2w (4x4
                                           metric world frame, OpenCV axes), width, height}]
    <renders>/<scene_id>/<view>.<member>   rgb.png, depth.png (uint16 mm), depth.npy (float32 m), mask.png,
                                           bg.png, label.png (uint8, 255 = ignore)
    <renders>/<scene_id>/contact.png       contact sheet
    <renders>/<scene_id>/DONE              the runner's done marker (`perfdata.markers`), written last

A shard sample of a view (`build_sample`) is keyed `<scene_id>_<view>` and holds the view's members in
`MEMBER_EXTS` order, `cls` (class id as decimal text, where the scene has one) and `json` (`view_json`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from perfdata.atomic import write_json
from perfdata.errors import FormatVersionError, InputError
from perfdata.markers import Markers
from perfdata.shards import sample_key

RENDER_FORMAT_VERSION = 1
CAMERAS_NAME = "cameras.json"
CONTACT_NAME = "contact.png"
# member extension -> file suffix in a render folder (`<view>.<ext>`); also the member order in a sample
MEMBER_EXTS = ("rgb.png", "depth.png", "depth.npy", "mask.png", "bg.png", "label.png")
VIEW_KEYS = ("name", "K", "c2w", "width", "height")


@dataclass(frozen=True)
class SceneRender:
    """cameras.json of one rendered scene."""

    scene_id: str
    members: tuple[str, ...]
    views: tuple[dict[str, Any], ...] = ()
    class_name: str | None = None
    class_id: int | None = None
    world_from_grid: tuple[tuple[float, ...], ...] | None = None
    psnr: float | None = None
    poses: str | None = None
    seed: int | None = None
    size: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys this version does not know, kept as they were."""
    format_version: int = RENDER_FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        doc = {k: v for k, v in asdict(self).items() if k not in ("extra", "format_version")}
        return {"format_version": self.format_version, **doc, **self.extra}

    @classmethod
    def from_json(cls, doc: Any, path: str | Path) -> SceneRender:
        if not isinstance(doc, dict):
            raise InputError(path, "cameras.json is not a JSON object")
        if doc.get("format_version") != RENDER_FORMAT_VERSION:
            raise FormatVersionError(path, doc.get("format_version"), RENDER_FORMAT_VERSION)
        for key in ("scene_id", "views", "members"):
            if key not in doc:
                raise InputError(path, f"cameras.json lacks {key!r}")
        unknown = [m for m in doc["members"] if m not in MEMBER_EXTS]
        bad_views = [i for i, v in enumerate(doc["views"]) if not isinstance(v, dict) or set(VIEW_KEYS) - set(v)]
        if unknown or bad_views:
            problem = f"unknown members {unknown}" if unknown else f"view {bad_views[0]} lacks one of {VIEW_KEYS}"
            raise InputError(path, f"malformed cameras.json: {problem}")
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in doc.items() if k in known}
        values["members"], values["views"] = tuple(doc["members"]), tuple(doc["views"])
        if values.get("world_from_grid") is not None:
            values["world_from_grid"] = tuple(tuple(r) for r in values["world_from_grid"])
        return cls(**values, extra={k: v for k, v in doc.items() if k not in known})


def members_for(what: Sequence[str], depth_format: str) -> tuple[str, ...]:
    """The member extensions written per view for the outputs `what` and a depth format (png, npy, both)."""
    members = [ext for ext in MEMBER_EXTS if ext.split(".")[0] in what]
    if depth_format == "png":
        members = [m for m in members if m != "depth.npy"]
    elif depth_format == "npy":
        members = [m for m in members if m != "depth.png"]
    return tuple(members)


def read_render(scene_dir: str | Path) -> SceneRender:
    """Read and check a render folder's cameras.json."""
    path = Path(scene_dir) / CAMERAS_NAME
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read cameras.json ({exc})") from None
    return SceneRender.from_json(doc, path)


def write_render(scene_dir: str | Path, meta: SceneRender) -> None:
    write_json(Path(scene_dir) / CAMERAS_NAME, meta.to_json())


def list_render_scenes(renders_dir: str | Path) -> tuple[list[str], list[str]]:
    """(complete scene ids, incomplete scene ids) of a renders folder; complete = the done marker."""
    renders_dir = Path(renders_dir)
    if not renders_dir.is_dir():
        raise InputError(renders_dir, "renders folder not found")
    markers = Markers.in_folder(renders_dir, "render")
    done: list[str] = []
    incomplete: list[str] = []
    for d in sorted(p for p in renders_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        (done if markers.is_done(d.name) else incomplete).append(d.name)
    return done, incomplete


def view_json(meta: SceneRender, view: Mapping[str, Any], class_id: int | None) -> dict[str, Any]:
    """The `json` member of a sample: camera and scene facts."""
    return {
        "scene_id": meta.scene_id, "view": view["name"], "class_name": meta.class_name, "class_id": class_id,
        "K": view["K"], "c2w": view["c2w"], "width": view["width"], "height": view["height"],
        "world_from_grid": None if meta.world_from_grid is None else [list(r) for r in meta.world_from_grid],
    }


def build_sample(meta: SceneRender, view: Mapping[str, Any], files: Mapping[str, bytes],
                 class_id: int | None) -> tuple[str, dict[str, bytes]]:
    """(key, members) of one view. `files` maps member extensions (MEMBER_EXTS) to encoded bytes."""
    members = {ext: files[ext] for ext in MEMBER_EXTS if ext in files}
    if class_id is not None:
        members["cls"] = str(class_id).encode()
    members["json"] = json.dumps(view_json(meta, view, class_id), sort_keys=True).encode()
    return sample_key(meta.scene_id, str(view["name"])), members


def class_index(classes: Sequence[str], class_name: str | None) -> int | None:
    return None if class_name is None else list(classes).index(class_name)


def iter_scene_samples(scene_dir: Path, meta: SceneRender, class_id: int | None) -> Iterator[tuple[str, dict]]:
    """Samples of one render folder, in cameras.json order; a missing view file is an InputError naming it."""
    for view in meta.views:
        files = {}
        for ext in meta.members:
            path = scene_dir / f"{view['name']}.{ext}"
            if not path.is_file():
                raise InputError(path, "view file listed in cameras.json is missing")
            files[ext] = path.read_bytes()
        yield build_sample(meta, view, files, class_id)
