"""The render stage: fitted scenes from the dataset store -> posed views with depth, masks, backgrounds, labels.

Streams: scenes are read one at a time and each view is rendered (in ray chunks), encoded and written before the
next one starts, so memory is bounded by one scene's grid plus one view, whatever the number of scenes or views.

Output layout (RENDERS = the --out folder)::

    RENDERS/<scene_id>/cameras.json      format_version 1, scene_id, class_name, class_id (index into the
                                         store's class list, where known), world_from_grid (4x4), psnr (fit),
                                         poses, seed, size, members (file kinds written per view, below), and
                                         views: [{name, K (3x3 px), c2w (4x4 metric world frame, OpenCV axes),
                                         width, height}]
    RENDERS/<scene_id>/<view>.rgb.png    uint8 RGB colour
    RENDERS/<scene_id>/<view>.depth.png  uint16 z-depth in millimetres, 0 = nothing hit (opacity <= 0.5)
    RENDERS/<scene_id>/<view>.depth.npy  float32 z-depth in metres (with --depth-format npy / both)
    RENDERS/<scene_id>/<view>.mask.png   uint8 foreground mask, 255 = foreground
    RENDERS/<scene_id>/<view>.bg.png     uint8 RGB background-only colour
    RENDERS/<scene_id>/<view>.label.png  uint8 class ids, 255 = ignore (scenes with voxel labels or logits)
    RENDERS/<scene_id>/contact.png       contact sheet: a row per view (up to 8): rgb, depth, mask, label, bg
    RENDERS/<scene_id>/DONE              the runner's done marker, written last; a scene folder is built
                                         under a temporary name and renamed whole, so no partial folder ever
                                         appears (a folder without DONE is redone by a rerun)
    RENDERS/<scene_id>/FAILED.json       instead of the views, when the scene failed (error, traceback)

The format (cameras.json, members, samples) is `perfdata.records.render`. View names are `00000`, `00001`, ...;
`perfdata.pipelines.pack` turns the layout into WebDataset shards, and `--shards` writes the same samples
straight into shards (identical bytes to render-then-pack). Scenes run on the per-scene runner
(`perfdata.runner`: any executor, `--shard`, a failing scene never stops the others, markers and status).

Definitions:
- depth: composited z-depth divided by opacity where opacity > 0.5 (so edges are not pulled to the camera),
  else 0. In metres: rays are built in the metric world frame with camera-z 1 directions.
- foreground voxels: where the scene has voxel labels, those whose label is >= 0 and whose class name (label
  names from the scene attributes; lacking them, id 0 = background) is not in `background_labels` (background,
  wall, floor, ceiling); scenes with logits only use the argmax label the same way; scenes without labels: every
  voxel (the stored field is the object; the background is the scene's MSI, else the fit's constant colour).
- mask: composited foreground indicator > 0.5 (labelled scenes), else opacity > 0.5.
- bg: the field rendered with the foreground voxels removed, in front of the scene's MSI background if it has
  one (labelled scenes); else the MSI alone (the real surroundings, no trace of the object), else the
  background colour.
- label: argmax of composited one-hot voxel labels (or of composited logits); 255 where less than half of the
  ray's weight falls on labelled voxels (or, for logits, where opacity <= 0.5).
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perfdata.pipelines.render_config import (
    WHAT,
    Progress,
    RenderConfig,
    check_config,
    select_scenes,
)
from perfdata.pipelines.render_source import GridSource, open_source, scene_info

from perfdata.atomic import remove_stale
from perfdata.devices import resolve_device
from perfdata.markers import Markers
from perfdata.names import scene_path
from perfdata.runner import RunConfig, StageJob, TaskOutcome, run_stage
from perfdata.shards import ShardInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RenderResult:
    """What a render run did."""

    out_dir: Path
    rendered: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
    """Scenes already complete (DONE) and left as they were."""
    skipped: tuple[tuple[str, str], ...] = ()
    """(scene id, reason), e.g. psnr below --min-psnr."""
    failed: tuple[tuple[str, str], ...] = ()
    """(scene id, error) of scenes that failed; the others went on."""
    n_views: int = 0
    seconds: float = 0.0
    shards: tuple[ShardInfo, ...] = ()
    index_path: Path | None = None
    outcomes: tuple[TaskOutcome, ...] = ()
    """One per scene chosen (folder output)."""



def render_store(
    store_url: str | Path | GridSource, out_dir: str | Path, cfg: RenderConfig, progress: Progress | None = None,
    run: RunConfig = RunConfig(),
) -> RenderResult:
    """Render the scenes of a store (a path or URL of a zarr store or a fits folder, or an open `GridSource`)
    into `out_dir`: per-view files (module docstring), one runner item per scene, or, with `cfg.shards`,
    WebDataset shards (in this process; any failure removes the run's shards)."""
    from perfdata.pipelines import render_write

    check_config(cfg)
    start = time.perf_counter()
    out_dir = Path(out_dir)
    source = open_source(store_url) if isinstance(store_url, (str, Path)) else store_url
    infos, skipped = select_scenes(source, cfg, str(store_url) if isinstance(store_url, (str, Path)) else "store")
    for sid, reason in skipped:
        log.warning("skipping scene %s: %s", sid, reason)
    if cfg.dry_run or run.dry_run:
        return RenderResult(out_dir, rendered=tuple(i.scene_id for i in infos), skipped=tuple(skipped))
    if cfg.shards:
        out = render_write.render_to_shards(source, infos, out_dir, cfg, progress)
        return RenderResult(out_dir, skipped=tuple(skipped), seconds=time.perf_counter() - start, **out)
    in_process = run.executor.kind in ("local", "threads") or not isinstance(store_url, (str, Path))
    where: Any = source if in_process else str(store_url)
    job = StageJob(Markers.in_folder(out_dir, "render"),
                   functools.partial(render_scene, where, str(out_dir), cfg, progress if in_process else None))
    outcomes = run_stage(job, [i.scene_id for i in infos], run)
    return RenderResult(
        out_dir, rendered=tuple(o.item for o in outcomes if o.status == "done"),
        kept=tuple(o.item for o in outcomes if o.status == "skipped"), skipped=tuple(skipped),
        failed=tuple((o.item, o.error or o.status) for o in outcomes if o.status in ("failed", "held", "busy")),
        n_views=sum(int(o.facts.get("n_views", 0)) for o in outcomes if o.status == "done"),
        seconds=time.perf_counter() - start, outcomes=tuple(outcomes))


def render_scene(source: GridSource | str, out_dir: str, cfg: RenderConfig, progress: Progress | None,
                 scene_id: str) -> dict[str, Any]:
    """One scene's folder (runner work: under the scene's lock, so a killed run's temporaries can go)."""
    from perfdata.pipelines.render_write import write_scene_folder

    src = open_source(source) if isinstance(source, str) else source
    info = scene_info(src, scene_id)
    remove_stale(Path(out_dir), scene_id)
    n_views = write_scene_folder(src, info, scene_path(out_dir, scene_id), cfg, progress)  # safe, inside out_dir
    return {"n_views": n_views, "device": str(resolve_device(cfg.device)), "psnr": info.psnr}


__all__ = ["WHAT", "RenderConfig", "RenderResult", "render_store"]
