"""`perfdata render --model RUN`: views of unseen scenes rendered by a trained generalizable field from K source
views, written in the render folder format (`perfdata.pipelines.render`), so `perfdata pack` and the loaders
take them.

Per scene: the cameras are the frames other than `spread_views(k, start=0)` (`--poses train`, the first
`n_views` of them), or interpolations / an orbit of all its frames (`perfdata.pipelines.poses`). Their K source
views are those spread frames (source choice spread), or per camera the K frames nearest to its pose (nearest;
the run's own choice unless `source_choice` says otherwise; `generalizable_data`). Outputs follow the render
stage's definitions with the field's own quantities: depth is composited z-depth / opacity where opacity > 0.5
(else 0); with class logits, label is the argmax of the composited logits where opacity > 0.5 (else ignore),
mask is the composited probability of the non-background classes > 0.5 and bg is the field rendered with each
sample's density scaled by its background probability; without logits, mask is opacity > 0.5 and bg the
background colour. cameras.json also records `model` (the run), `source_choice`, `source_views` (frame names;
with nearest, each view's own in its camera entry) and `label_names` (the model's classes).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from perfdata.models.generalizable import GeneralizableField, Sources
from perfdata.models.plenoxel import rays_to_cube
from perfdata.pipelines.generalizable_ckpt import load_model
from perfdata.pipelines.generalizable_data import (
    SOURCE_CHOICES,
    SceneTensors,
    check_scene,
    load_scene_tensors,
    nearest_to_pose,
    pose_in_cube,
    spread_views,
)
from perfdata.pipelines.generalizable_eval import encode_sources, render_rays_chunked
from perfdata.pipelines.poses import Camera, make_cameras
from perfdata.pipelines.render_config import WHAT, RenderConfig
from perfdata.pipelines.render_source import SceneInfo
from perfdata.pipelines.render_view import encode_view
from perfdata.pipelines.render_write import ContactTiles, scene_meta, write_views_folder

from perfdata import camera
from perfdata.devices import resolve_device
from perfdata.errors import ConfigError
from perfdata.records.render import SceneRender
from perfdata.scene import Scene

if TYPE_CHECKING:
    from perfdata.runner import RunConfig


@dataclass(frozen=True)
class ModelRenderConfig:
    """How to render scenes through a trained generalizable field."""

    source_views: int = 3
    """Source views per scene."""
    source_choice: str | None = None
    """spread or nearest (None: the run's own choice)."""
    n_views: int = 50
    """Views per scene (at most the frames left with --poses train)."""
    poses: str = "train"
    """train (the scene's frames other than the sources), interpolate or orbit."""
    size: int | None = None
    """Longer image side (default: the frames' own size)."""
    what: tuple[str, ...] = WHAT
    depth_format: str = "png"
    n_samples: int = 32
    """Samples per ray (the training count; 64 renders no better, `GeneralizableConfig.eval_samples`)."""
    chunk: int | None = None
    """Rays rendered at once (default: `generalizable_eval.RAY_CHUNK` on the CPU, more on a GPU)."""
    background_labels: tuple[str, ...] = ("background", "wall", "floor", "ceiling")
    seed: int = 0
    device: str = "auto"


@dataclass(frozen=True)
class ModelRenderResult:
    out_dir: Path
    rendered: tuple[str, ...]
    kept: tuple[str, ...]
    n_views: int
    seconds: float
    failed: tuple[tuple[str, str], ...] = ()


def render_config(cfg: ModelRenderConfig, size: int) -> RenderConfig:
    """The render stage's config equivalent (checks the shared options the same way)."""
    from perfdata.pipelines.render_config import check_config

    rc = RenderConfig(n_views=cfg.n_views, size=size, poses=cfg.poses, what=cfg.what, depth_format=cfg.depth_format,
                      seed=cfg.seed, device=cfg.device, background_labels=cfg.background_labels)
    check_config(rc)
    return rc


def scene_cameras(scene: Scene, sources: Sequence[int], cfg: ModelRenderConfig, size: int, seed: int) -> tuple[list[Camera], str]:
    """The cameras to render and the pose kind used (interpolate falls back to orbit without nearby pairs, as
    the render stage does)."""
    cams = [Camera(f.K, f.c2w, f.width, f.height) for f in scene.frames]
    if cfg.poses == "train":
        rest = [c for i, c in enumerate(cams) if i not in set(sources)]
        return make_cameras("train", rest, scene.world_from_grid, cfg.n_views, size, seed), "train"
    try:
        return make_cameras(cfg.poses, cams, scene.world_from_grid, cfg.n_views, size, seed), cfg.poses
    except ConfigError:
        if cfg.poses != "interpolate":
            raise
        return make_cameras("orbit", cams, scene.world_from_grid, cfg.n_views, size, seed), "orbit"


@torch.no_grad()
def render_camera(model: GeneralizableField, sources: Sources, st: SceneTensors, cam: Camera, cfg: ModelRenderConfig,
                  bg_classes: torch.Tensor | None) -> dict[str, np.ndarray]:
    """One camera's outputs (render_view's keys and dtypes)."""
    o, d = camera.image_rays(cam.K, cam.c2w, cam.width, cam.height)
    oc, dc, zs = rays_to_cube(np.linalg.inv(st.world_from_grid), torch.from_numpy(o), torch.from_numpy(d))
    out = render_rays_chunked(model, sources, oc, dc, zs, st.background, cfg.n_samples, cfg.chunk, bg_classes)
    shape = (cam.height, cam.width)
    opacity = out["opacity"].reshape(shape).numpy()
    solid = opacity > 0.5
    depth = out["depth"].reshape(shape).numpy()
    res: dict[str, np.ndarray] = {
        "rgb": out["rgb"].clamp(0, 1).reshape(*shape, 3).numpy(),
        "depth": np.where(solid, depth / np.maximum(opacity, 1e-6), 0.0).astype(np.float32), "mask": solid,
        "bg": np.broadcast_to(st.background.cpu().numpy(), (*shape, 3)).astype(np.float32),
    }
    if model.cfg.n_classes:
        res["label"] = np.where(solid, out["logits"].argmax(-1).reshape(shape).numpy(), -1).astype(np.int32)
    if bg_classes is not None:
        res["mask"] = out["foreground"].reshape(shape).numpy() > 0.5
        res["bg"] = out["rgb_bg"].clamp(0, 1).reshape(*shape, 3).numpy()
    return {k: v for k, v in res.items() if k in cfg.what}


def background_class_ids(names: Sequence[str], background: Sequence[str], device: torch.device) -> torch.Tensor | None:
    """Model class ids whose names are background classes (None without classes)."""
    if not names:
        return None
    return torch.tensor([i for i, n in enumerate(names) if n in background], dtype=torch.long, device=device)


def camera_sources(st: SceneTensors, cam: Camera, k: int) -> list[int]:
    """The k frames of `st` nearest to camera `cam`'s pose (never a frame at that very pose)."""
    centre, axis = pose_in_cube(np.asarray(cam.c2w, dtype=np.float64), np.linalg.inv(st.world_from_grid))
    return nearest_to_pose(st.centres.cpu(), st.axes.cpu(), torch.from_numpy(centre), torch.from_numpy(axis), k)


def scene_render(model: GeneralizableField, names: tuple[str, ...], scene: Scene, cfg: ModelRenderConfig, run: str,
                 device: torch.device, tiles: ContactTiles) -> tuple[SceneRender, Iterator]:
    """The cameras.json meta of one scene and an iterator rendering its views one at a time (`cfg.source_choice`
    must be set)."""
    check_scene(scene, cfg.source_views, model.cfg.image_size)
    st = load_scene_tensors(scene, names, labels=False).to(device)
    src = spread_views(st.centres.cpu(), st.axes.cpu(), cfg.source_views, start=0)
    nearest = cfg.source_choice == "nearest"
    size = cfg.size or max(scene.frames[0].width, scene.frames[0].height)
    rc = render_config(cfg, size)
    seed = cfg.seed
    cams, kind = scene_cameras(scene, src, cfg, size, seed)
    what = tuple(w for w in cfg.what if w != "label" or model.cfg.n_classes)
    info = SceneInfo(scene.scene_id, scene.class_name, None, np.asarray(scene.world_from_grid), (), names or None)
    frame_names = [f.name for f in scene.frames]
    meta = dataclasses.replace(scene_meta(info, rc, kind, seed, what), extra={
        "model": str(run), "source_choice": cfg.source_choice,
        "source_views": None if nearest else [frame_names[i] for i in src], "label_names": list(names)})
    spread_sources = encode_sources(model, st, src)
    last: list[tuple[tuple[int, ...], Sources]] = []  # nearest: the previous camera's encoding (neighbours share)
    bg_ids = background_class_ids(names, cfg.background_labels, device)
    tiles.n_classes = max(len(names), 1)
    view_cfg = dataclasses.replace(cfg, what=what)

    def views() -> Iterator[tuple[dict[str, Any], dict[str, bytes]]]:
        for i, cam in enumerate(cams):
            entry = cam.to_json(f"{i:05d}")
            sources = spread_sources
            if nearest:
                views_of = tuple(camera_sources(st, cam, cfg.source_views))
                if not last or last[0][0] != views_of:
                    last[:] = [(views_of, encode_sources(model, st, views_of))]
                sources = last[0][1]
                entry["source_views"] = [frame_names[j] for j in views_of]
            outputs = render_camera(model, sources, st, cam, view_cfg, bg_ids)
            if "rgb" in outputs:
                tiles.add(outputs)
            yield entry, encode_view(outputs, cfg.depth_format)

    return meta, views()


def render_from_model(run: str | Path, scenes: Sequence[Scene], out_dir: str | Path, cfg: ModelRenderConfig,
                      run_cfg: RunConfig | None = None, progress: Callable[[str, int, int], None] | None = None
                      ) -> ModelRenderResult:
    """Render every scene into out_dir/<scene_id>/, one runner item per scene (in this process; scenes already
    done are kept). Bad input (image sizes, too few views, a bad checkpoint) raises before anything is written."""
    from perfdata.pipelines.generalizable_fit import read_run

    from perfdata.markers import Markers
    from perfdata.runner import RunConfig, StageJob, run_stage

    if cfg.poses not in ("train", "interpolate", "orbit"):
        raise ConfigError(f"--poses {cfg.poses!r}: choose train, interpolate or orbit")
    if cfg.source_choice is not None and cfg.source_choice not in SOURCE_CHOICES:
        raise ConfigError(f"--source-choice {cfg.source_choice!r}: choose {' or '.join(SOURCE_CHOICES)}")
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    ckpt = load_model(run, device)
    if cfg.source_choice is None:
        cfg = dataclasses.replace(cfg, source_choice=str(read_run(run).get("source_choice", "spread")))
    for scene in scenes:
        check_scene(scene, cfg.source_views, ckpt.model.cfg.image_size)
    out_dir = Path(out_dir)
    by_id = {s.scene_id: s for s in scenes}
    rc = run_cfg or RunConfig()
    local = RunConfig(force=rc.force, retry_failed=rc.retry_failed, dry_run=rc.dry_run)  # the model stays here
    work = functools.partial(render_scene, ckpt.model, tuple(ckpt.label_names), by_id, str(run), str(out_dir), cfg,
                             device, progress)
    outcomes = run_stage(StageJob(Markers.in_folder(out_dir, "render"), work), list(by_id), local)
    return ModelRenderResult(
        out_dir, tuple(o.item for o in outcomes if o.status == "done"),
        tuple(o.item for o in outcomes if o.status == "skipped"),
        sum(int(o.facts.get("n_views", 0)) for o in outcomes if o.status == "done"), time.perf_counter() - start,
        tuple((o.item, o.error or o.status) for o in outcomes if o.status in ("failed", "held", "busy")))


def render_scene(model: GeneralizableField, names: tuple[str, ...], scenes: dict[str, Scene], run: str, out_dir: str,
                 cfg: ModelRenderConfig, device: torch.device, progress: Callable[[str, int, int], None] | None,
                 scene_id: str) -> dict[str, Any]:
    """Runner work: one scene's render folder (built under a temporary name and renamed whole)."""
    from perfdata.atomic import remove_stale

    tiles = ContactTiles(8, 1)
    remove_stale(Path(out_dir), scene_id)
    meta, views = scene_render(model, names, scenes[scene_id], cfg, run, device, tiles)
    n_views = write_views_folder(Path(out_dir) / scene_id, meta, views, tiles, cfg.n_views, progress)
    return {"n_views": n_views, "device": str(device)}
