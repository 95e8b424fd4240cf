"""The pack stage: rendered views (layout in `perfdata.pipelines.render`) -> WebDataset shards + index.json.

Samples are keyed `<scene_id>_<view>` (dots and slashes replaced by '_'); members, in this order: `rgb.png`,
`depth.png`, `depth.npy`, `mask.png`, `bg.png`, `label.png` (those the render wrote), `cls` (class id as
decimal text, where the scene has a class) and `json` (scene id, view, class name and id, K, c2w in the metric
world frame, width, height, world_from_grid). Scenes, never views, are split into train / val: the sorted scene
ids are permuted by `seed` and the first round(val_fraction * n) go to val (at least one when val_fraction > 0
and there are two or more scenes). Class ids index `classes`: the sorted class names of every complete scene in
the renders folder. Within a split, scenes go in sorted order and views in cameras.json order, so a rerun gives
byte-identical shards (see `perfdata.shards`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perfdata.devices import split_scene_ids
from perfdata.errors import ConfigError, FormatVersionError, InputError
from perfdata.shards import INDEX_NAME, ShardInfo, ShardSet, sample_key

log = logging.getLogger(__name__)

RENDER_FORMAT_VERSION = 1
CAMERAS_NAME = "cameras.json"
DONE_NAME = "DONE"
# member extension -> file suffix in a render folder (`<view>.<ext>`); also the member order in a sample
MEMBER_EXTS = ("rgb.png", "depth.png", "depth.npy", "mask.png", "bg.png", "label.png")


@dataclass(frozen=True)
class PackConfig:
    """How to pack rendered views into shards."""

    maxcount: int = 1000
    """At most this many samples per shard."""
    maxsize: int = 1 << 30
    """Roll to a new shard before one would exceed this many bytes."""
    val_fraction: float = 0.1
    """Fraction of scenes (not views) that go to the val split."""
    seed: int = 0
    """Seed of the scene split."""
    split_by: str = "scene"
    """Only "scene": views of one scene never straddle splits."""
    dry_run: bool = False
    """Plan only: count scenes and samples, write nothing."""


@dataclass(frozen=True)
class PackResult:
    """What pack wrote (or, on a dry run, would write)."""

    out_dir: Path
    index_path: Path | None
    shards: tuple[ShardInfo, ...]
    n_samples: dict[str, int]
    scenes: dict[str, tuple[str, ...]]
    classes: tuple[str, ...]
    incomplete: tuple[str, ...] = field(default_factory=tuple)
    """Scene folders without a DONE marker (left out)."""


def read_cameras(scene_dir: str | Path) -> dict[str, Any]:
    """Read and check a render folder's cameras.json."""
    path = Path(scene_dir) / CAMERAS_NAME
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read cameras.json ({exc})") from None
    if meta.get("format_version") != RENDER_FORMAT_VERSION:
        raise FormatVersionError(path, meta.get("format_version"), RENDER_FORMAT_VERSION)
    for key in ("scene_id", "views", "members"):
        if key not in meta:
            raise InputError(path, f"cameras.json lacks {key!r}")
    return meta


def view_json(meta: Mapping[str, Any], view: Mapping[str, Any], class_id: int | None) -> dict[str, Any]:
    """The `json` member of a sample: camera and scene facts."""
    return {
        "scene_id": meta["scene_id"],
        "view": view["name"],
        "class_name": meta.get("class_name"),
        "class_id": class_id,
        "K": view["K"],
        "c2w": view["c2w"],
        "width": view["width"],
        "height": view["height"],
        "world_from_grid": meta.get("world_from_grid"),
    }


def build_sample(
    meta: Mapping[str, Any], view: Mapping[str, Any], files: Mapping[str, bytes], class_id: int | None
) -> tuple[str, dict[str, bytes]]:
    """(key, members) of one view. `files` maps member extensions (MEMBER_EXTS) to encoded bytes."""
    members = {ext: files[ext] for ext in MEMBER_EXTS if ext in files}
    if class_id is not None:
        members["cls"] = str(class_id).encode()
    members["json"] = json.dumps(view_json(meta, view, class_id), sort_keys=True).encode()
    return sample_key(str(meta["scene_id"]), str(view["name"])), members


def class_index(classes: Sequence[str], class_name: str | None) -> int | None:
    return None if class_name is None else list(classes).index(class_name)


def list_render_scenes(renders_dir: Path) -> tuple[list[str], list[str]]:
    """(complete scene ids, incomplete scene ids) of a renders folder; complete = has DONE."""
    if not renders_dir.is_dir():
        raise InputError(renders_dir, "renders folder not found")
    done, incomplete = [], []
    for d in sorted(p for p in renders_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        (done if (d / DONE_NAME).is_file() else incomplete).append(d.name)
    return done, incomplete


def iter_scene_samples(scene_dir: Path, meta: Mapping[str, Any], class_id: int | None) -> Iterator[tuple[str, dict]]:
    """Samples of one render folder, in cameras.json order; a missing view file is an InputError naming it."""
    for view in meta["views"]:
        files = {}
        for ext in meta["members"]:
            path = scene_dir / f"{view['name']}.{ext}"
            if not path.is_file():
                raise InputError(path, "view file listed in cameras.json is missing")
            files[ext] = path.read_bytes()
        yield build_sample(meta, view, files, class_id)


def pack_renders(renders_dir: str | Path, out_dir: str | Path, cfg: PackConfig) -> PackResult:
    """Pack every complete scene of `renders_dir` into `<split>-NNNNNN.tar` shards and index.json in `out_dir`."""
    renders_dir, out_dir = Path(renders_dir), Path(out_dir)
    if cfg.split_by != "scene":
        raise ConfigError(f"--split-by {cfg.split_by!r}: only 'scene' is supported (views never straddle splits)")
    split_scene_ids([], cfg.val_fraction, cfg.seed)  # checks the fraction before any reading
    scene_ids, incomplete = list_render_scenes(renders_dir)
    if incomplete:
        log.warning("%d scene folder(s) without %s left out: %s", len(incomplete), DONE_NAME, ", ".join(incomplete))
    if not scene_ids:
        raise InputError(renders_dir, "no completed render folders (with cameras.json and DONE) to pack")
    metas = {sid: read_cameras(renders_dir / sid) for sid in scene_ids}
    classes = sorted({m["class_name"] for m in metas.values() if m.get("class_name") is not None})
    splits = split_scene_ids(scene_ids, cfg.val_fraction, cfg.seed)
    scenes = {k: tuple(v) for k, v in splits.items()}
    if cfg.dry_run:
        counts = {k: sum(len(metas[s]["views"]) for s in v) for k, v in splits.items()}
        return PackResult(out_dir, None, (), counts, scenes, tuple(classes), tuple(incomplete))
    with ShardSet(out_dir) as shard_set:  # written whole, index.json switched last (perfdata.shards)
        for split, ids in splits.items():
            with shard_set.writer(split, cfg.maxcount, cfg.maxsize) as writer:
                for sid in ids:
                    cid = class_index(classes, metas[sid].get("class_name"))
                    for key, members in iter_scene_samples(renders_dir / sid, metas[sid], cid):
                        writer.write(key, members)
        index, shards = shard_set.commit(classes, seed=cfg.seed, val_fraction=cfg.val_fraction,
                                         split_by=cfg.split_by, scenes={k: list(v) for k, v in scenes.items()})
    n_samples = {k: sum(s.samples for s in shards if s.split == k) for k in splits}
    return PackResult(out_dir, index, tuple(shards), n_samples, scenes, tuple(classes), tuple(incomplete))


__all__ = ["INDEX_NAME", "PackConfig", "PackResult", "build_sample", "pack_renders"]
