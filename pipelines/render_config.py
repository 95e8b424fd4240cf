"""Options of the render stage (`RenderConfig`) and the choices made from them before any rendering: checks,
memory bounds, per-scene seeds, the scenes to render and their cameras. Definitions of the outputs are in
`perfdata.pipelines.render`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from perfdata.pipelines.poses import Camera, make_cameras
from perfdata.pipelines.render_source import GridSource, SceneInfo, scene_info

from perfdata.errors import ConfigError, InputError
from perfdata.shards import PackConfig

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
    cameras_file: str | None = None
    """Render exactly the cameras of this file instead (a transforms.json, a cameras.json or a nerfstudio
    camera_path.json in the scene's world frame; `perfdata.pipelines.camera_files`); n_views, size and poses
    then do not apply."""
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
    if cfg.cameras_file is not None:
        from perfdata.pipelines.camera_files import read_camera_file

        return [cam for _, cam in read_camera_file(cfg.cameras_file)], "file"
    seed = scene_seed(cfg.seed, info.scene_id)
    try:
        return make_cameras(cfg.poses, info.cameras, info.pose_frame(), cfg.n_views, cfg.size, seed), cfg.poses
    except ConfigError as exc:
        if cfg.poses != "interpolate":
            raise
        log.warning("scene %s: %s; rendering an orbit instead", info.scene_id, exc)
        return make_cameras("orbit", info.cameras, info.pose_frame(), cfg.n_views, cfg.size, seed), "orbit"


Progress = Callable[[str, int, int], None]
"""progress(scene_id, views done, views in the scene), called after each view."""
