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
    RENDERS/<scene_id>/DONE              written last; a scene folder is built under a temporary name and
                                         renamed, so a folder without DONE never appears (a rerun redoes it)

View names are `00000`, `00001`, ...; `perfdata.pipelines.pack` turns the layout into WebDataset shards, and
`--shards` writes the same samples straight into shards (identical bytes to render-then-pack).

Definitions:
- depth: composited z-depth divided by opacity where opacity > 0.5 (so edges are not pulled to the camera),
  else 0. In metres: rays are built in the metric world frame with camera-z 1 directions.
- foreground voxels: where the scene has voxel labels, those whose label is >= 0 and whose class name (label
  names from the scene attributes; lacking them, id 0 = background) is not in `background_labels` (background,
  wall, floor, ceiling); scenes with logits only use the argmax label the same way; scenes without labels: every
  voxel (the stored field is the object; the background is the fit's constant background colour).
- mask: composited foreground indicator > 0.5 (labelled scenes), else opacity > 0.5.
- bg: the field rendered with the foreground voxels removed (labelled scenes), else the background colour.
- label: argmax of composited one-hot voxel labels (or of composited logits); 255 where less than half of the
  ray's weight falls on labelled voxels (or, for logits, where opacity <= 0.5).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from perfdata.pipelines.pack import PackConfig
from perfdata.pipelines.poses import Camera, make_cameras
from perfdata.pipelines.render_source import GridSource, SceneInfo, open_source, scene_info

from perfdata.errors import ConfigError, InputError
from perfdata.shards import ShardInfo

log = logging.getLogger(__name__)

WHAT = ("rgb", "depth", "mask", "bg", "label")


@dataclass(frozen=True)
class RenderConfig:
    """How to render scenes of a store."""

    scenes: tuple[str, ...] = ()
    """Scene ids to render (empty: all)."""
    n_views: int = 50
    """Views per scene."""
    size: int = 300
    """Longer image side in pixels."""
    poses: str = "interpolate"
    """interpolate (between nearby training cameras), orbit, or train (the training cameras)."""
    what: tuple[str, ...] = WHAT
    """Which outputs to write: rgb, depth, mask, bg, label."""
    depth_format: str = "png"
    """png (uint16 mm), npy (float32 m) or both."""
    min_psnr: float | None = None
    """Skip (and list) scenes whose fit psnr is below this, or unknown."""
    seed: int = 0
    """Seed of the novel cameras (each scene derives its own from it and its id)."""
    step: float = 0.5
    """Sample spacing in voxels."""
    chunk: int = 16384
    """Rays rendered at once."""
    device: str = "auto"
    """auto (CUDA when available), cpu or cuda."""
    memory_budget_mb: float = 4096.0
    """A view whose buffers would exceed this is refused before any rendering."""
    background_labels: tuple[str, ...] = ("background", "wall", "floor", "ceiling")
    """Class names whose voxels count as background (see module docstring)."""
    contact_views: int = 8
    """Views shown in each scene's contact sheet."""
    shards: bool = False
    """Write WebDataset shards (and index.json) into the output folder instead of per-view files."""
    pack: PackConfig = field(default_factory=PackConfig)
    """Shard rolling and train / val split, with `shards`."""
    dry_run: bool = False
    """List what would be rendered; write nothing."""


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


def check_config(cfg: RenderConfig) -> None:
    """Reject bad options before anything is read or written."""
    if cfg.n_views < 1:
        raise ConfigError(f"--views must be at least 1, got {cfg.n_views}")
    if cfg.size < 1:
        raise ConfigError(f"--size must be at least 1, got {cfg.size}")
    unknown = set(cfg.what) - set(WHAT)
    if unknown or not cfg.what:
        raise ConfigError(f"--what {','.join(cfg.what)}: choose from {','.join(WHAT)}")
    if cfg.depth_format not in ("png", "npy", "both"):
        raise ConfigError(f"--depth-format {cfg.depth_format!r}: choose png, npy or both")
    if cfg.poses not in ("interpolate", "orbit", "train"):
        raise ConfigError(f"--poses {cfg.poses!r}: choose interpolate, orbit or train")
    need_mb = view_bytes(cfg.size, cfg.size, 64) / 2**20
    if need_mb > cfg.memory_budget_mb:
        raise ConfigError(
            f"--size {cfg.size}: one view needs about {need_mb:.0f} MB, more than the memory budget of "
            f"{cfg.memory_budget_mb:.0f} MB; lower --size or raise --memory-budget"
        )


def view_bytes(width: int, height: int, n_classes: int) -> int:
    """Peak bytes of one view's buffers: rgb, depth, opacity, bg, features (float32) held twice (tensor and
    numpy), plus encoded files."""
    per_pixel = 4 * (3 + 1 + 1 + 3 + 1 + n_classes) * 2 + 16
    return width * height * per_pixel


def rays_per_chunk(reso: tuple[int, int, int], cfg: RenderConfig, bytes_per_sample: int = 128) -> int:
    """Rays rendered at once: `cfg.chunk`, lowered so one chunk's samples (up to sqrt(3) * R / step per ray,
    about `bytes_per_sample` each while marching) take at most a quarter of the memory budget."""
    n_max = int(np.ceil(np.sqrt(3.0) * max(reso) / cfg.step)) + 1
    fit = int(cfg.memory_budget_mb * 2**20 / 4 / (n_max * bytes_per_sample))
    return max(256, min(cfg.chunk, fit))


def scene_seed(seed: int, scene_id: str) -> int:
    """A per-scene seed from the run seed and the scene id (stable across runs and machines)."""
    import zlib

    return int(np.random.SeedSequence([seed, zlib.crc32(scene_id.encode())]).generate_state(1)[0])


def select_scenes(source: GridSource, cfg: RenderConfig, where: str) -> tuple[list[SceneInfo], list[tuple[str, str]]]:
    """The scenes to render, in sorted order, and the (id, reason) of those skipped by --min-psnr."""
    ids = list(source.scene_ids)
    missing = [s for s in cfg.scenes if s not in ids]
    if missing:
        raise InputError(where, f"scene id(s) not in the store: {', '.join(missing)}")
    chosen, skipped = [], []
    for sid in sorted(cfg.scenes or ids):
        info = scene_info(source, sid)
        if cfg.min_psnr is not None and (info.psnr is None or info.psnr < cfg.min_psnr):
            why = "no fit psnr recorded" if info.psnr is None else f"fit psnr {info.psnr:.2f} is below"
            skipped.append((sid, f"{why} --min-psnr {cfg.min_psnr}"))
            continue
        chosen.append(info)
    return chosen, skipped


def scene_cameras(info: SceneInfo, cfg: RenderConfig) -> tuple[list[Camera], str]:
    """Cameras of one scene and the pose kind used (interpolate falls back to orbit without nearby pairs)."""
    seed = scene_seed(cfg.seed, info.scene_id)
    try:
        return make_cameras(cfg.poses, info.cameras, info.world_from_grid, cfg.n_views, cfg.size, seed), cfg.poses
    except ConfigError as exc:
        if cfg.poses != "interpolate":
            raise
        log.warning("scene %s: %s; rendering an orbit instead", info.scene_id, exc)
        return make_cameras("orbit", info.cameras, info.world_from_grid, cfg.n_views, cfg.size, seed), "orbit"


Progress = Callable[[str, int, int], None]
"""progress(scene_id, views done, views in the scene), called after each view."""


def render_store(
    store_url: str | Path | GridSource, out_dir: str | Path, cfg: RenderConfig, progress: Progress | None = None
) -> RenderResult:
    """Render the scenes of a store (a path or URL of a zarr store or a fits folder, or an open `GridSource`)
    into `out_dir`: per-view files (module docstring) or, with `cfg.shards`, WebDataset shards. Completed scenes
    (DONE) are kept; a failed scene does not stop the others (with `shards`, any failure removes the run's
    shards)."""
    from perfdata.pipelines import render_write

    check_config(cfg)
    start = time.perf_counter()
    out_dir = Path(out_dir)
    source = open_source(store_url) if isinstance(store_url, (str, Path)) else store_url
    infos, skipped = select_scenes(source, cfg, str(store_url) if isinstance(store_url, (str, Path)) else "store")
    for sid, reason in skipped:
        log.warning("skipping scene %s: %s", sid, reason)
    if cfg.dry_run:
        return RenderResult(out_dir, rendered=tuple(i.scene_id for i in infos), skipped=tuple(skipped))
    writer: Callable = render_write.render_to_shards if cfg.shards else render_write.render_to_folders
    out = writer(source, infos, out_dir, cfg, progress)
    return RenderResult(out_dir, skipped=tuple(skipped), seconds=time.perf_counter() - start, **out)


__all__ = ["RenderConfig", "RenderResult", "render_store"]
