"""The writing loops of the render stage: per-scene folders (layout in `perfdata.pipelines.render`) or shards.
Each scene's views are rendered, encoded and written one at a time; only contact-sheet tiles (a few) are kept."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from perfdata.pipelines.render_config import Progress, RenderConfig, rays_per_chunk, scene_cameras, scene_seed
from perfdata.pipelines.render_source import GridSource, SceneInfo
from perfdata.pipelines.render_view import encode_view, prepare_fields, render_view

from perfdata import contact
from perfdata.atomic import atomic_dir, write_bytes
from perfdata.devices import resolve_device, split_scene_ids
from perfdata.records.render import (
    CONTACT_NAME,
    SceneRender,
    build_sample,
    class_index,
    members_for,
    write_render,
)
from perfdata.shards import ShardSet

log = logging.getLogger(__name__)


@dataclass
class ContactTiles:
    """Tiles of the first `limit` views of one size; a row per view."""

    limit: int
    n_classes: int
    rows: list[list[np.ndarray]] = field(default_factory=list)

    def add(self, outputs: dict[str, np.ndarray]) -> None:
        if len(self.rows) >= self.limit or (self.rows and self.rows[0][0].shape != outputs["rgb"].shape):
            return
        row = [outputs["rgb"]]
        if "depth" in outputs:
            row.append(contact.colorize_depth(outputs["depth"]))
        if "mask" in outputs:
            row.append(np.repeat(outputs["mask"].astype(np.float32)[..., None], 3, axis=-1))
        if "label" in outputs:
            row.append(contact.colorize_labels(outputs["label"], self.n_classes))
        if "bg" in outputs:
            row.append(outputs["bg"])
        self.rows.append(row)


def scene_views(
    source: GridSource, info: SceneInfo, cfg: RenderConfig, tiles: ContactTiles | None
) -> tuple[SceneRender, Iterator[tuple[dict[str, Any], dict[str, bytes]]]]:
    """Read a scene and return its meta (cameras.json without views) and an iterator of (view meta, encoded
    files) that renders one view per step."""
    cams, kind = scene_cameras(info, cfg)
    grid = source.read_scene(info.scene_id)
    what = tuple(w for w in cfg.what if w != "label" or grid.labels is not None or grid.logits is not None)
    if "rgb" not in what:  # contact sheets and masks come from the colour render anyway
        tiles = None
    fields = prepare_fields(grid, info.label_names, cfg.background_labels, cfg.step,
                            str(resolve_device(cfg.device)), "bg" in what)
    chunk = rays_per_chunk(grid.reso, cfg)
    del grid
    if tiles is not None:
        tiles.n_classes = max(fields.n_classes, 1)
    meta = scene_meta(info, cfg, kind, scene_seed(cfg.seed, info.scene_id), what)

    def views() -> Iterator[tuple[dict[str, Any], dict[str, bytes]]]:
        for i, cam in enumerate(cams):
            outputs = render_view(fields, cam, what, cfg.step, chunk)
            if tiles is not None:
                tiles.add(outputs)
            yield cam.to_json(f"{i:05d}"), encode_view(outputs, cfg.depth_format)

    return meta, views()


def scene_meta(info: SceneInfo, cfg: RenderConfig, kind: str, seed: int, what: tuple[str, ...]) -> SceneRender:
    return SceneRender(
        scene_id=info.scene_id, members=members_for(what, cfg.depth_format), class_name=info.class_name,
        class_id=info.class_id, world_from_grid=tuple(tuple(float(v) for v in r) for r in info.world_from_grid),
        psnr=info.psnr, poses=kind, seed=seed, size=cfg.size,
    )


def write_scene_folder(
    source: GridSource, info: SceneInfo, final: Path, cfg: RenderConfig, progress: Progress | None = None
) -> int:
    """Render one scene into `final` (built under a temporary name and renamed whole; the runner writes the
    done marker after); returns the view count."""
    tiles = ContactTiles(cfg.contact_views, 1)
    meta, rendered = scene_views(source, info, cfg, tiles)
    return write_views_folder(final, meta, rendered, tiles, cfg.n_views, progress)


def write_views_folder(
    final: Path, meta: SceneRender, rendered: Iterator[tuple[dict[str, Any], dict[str, bytes]]],
    tiles: ContactTiles, n_views: int, progress: Progress | None = None,
) -> int:
    """Write one scene's render folder from its meta (cameras.json without views) and (view meta, encoded files)
    pairs, built under a temporary name and renamed whole (the runner writes the done marker after). Also used
    by the generalizable renderer."""
    views = []
    with atomic_dir(final) as tmp:
        for view, files in rendered:
            for ext, data in files.items():
                write_bytes(tmp / f"{view['name']}.{ext}", data)
            views.append(view)
            if progress is not None:
                progress(meta.scene_id, len(views), n_views)
        write_render(tmp, dataclasses.replace(meta, views=tuple(views)))
        if tiles.rows:
            contact.write_contact_sheet(tmp / CONTACT_NAME, tiles.rows)
    return len(views)


def render_to_shards(
    source: GridSource, infos: list[SceneInfo], out_dir: Path, cfg: RenderConfig, progress: Progress | None = None
) -> dict:
    """Shards straight from the renders (same samples and order as render-then-pack); contact sheets go to
    `out_dir/contact/<scene_id>.png`. A failure removes every shard of the run."""
    classes = sorted({i.class_name for i in infos if i.class_name is not None})
    splits = split_scene_ids([i.scene_id for i in infos], cfg.pack.val_fraction, cfg.pack.seed)
    split_of = {sid: name for name, ids in splits.items() for sid in ids}
    n_views = 0
    with ShardSet(out_dir) as shard_set:  # written whole, index.json switched last (perfdata.shards)
        writers = {name: shard_set.writer(name, cfg.pack.maxcount, cfg.pack.maxsize, cfg.pack.mix_bytes, cfg.pack.seed)
                   for name in splits}
        for info in infos:
            tiles = ContactTiles(cfg.contact_views, 1)
            cid = class_index(classes, info.class_name)
            meta, rendered = scene_views(source, info, cfg, tiles)
            for i, (view, files) in enumerate(rendered):
                writers[split_of[info.scene_id]].write(*build_sample(meta, view, files, cid))
                n_views += 1
                if progress is not None:
                    progress(info.scene_id, i + 1, cfg.n_views)
            if tiles.rows:
                contact.write_contact_sheet(out_dir / "contact" / f"{info.scene_id}.png", tiles.rows)
        index, shards = shard_set.commit(classes, seed=cfg.pack.seed, val_fraction=cfg.pack.val_fraction,
                                         split_by="scene", scenes={k: list(v) for k, v in splits.items()})
    rendered_ids = tuple(i.scene_id for i in infos)
    return {"rendered": rendered_ids, "n_views": n_views, "shards": tuple(shards), "index_path": index}
