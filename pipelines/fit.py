"""The fit stage: one radiance field per scene (`fit_scene`), and every scene of a capture on the per-scene
runner (`fit_scenes`), writing `OUT/<scene_id>/{grid.npz, fit.json}` (`perfdata.records.fit`) atomically and
then the runner's done marker; a failure of any kind leaves only the runner's FAILED.json."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from perfdata.pipelines.capture import KNOWN_COLOURS, auto_density_bias_correction
from perfdata.pipelines.fitconfig import FitConfig, FitProgress, FitResult

from perfdata import atomic
from perfdata.devices import resolve_device, versions
from perfdata.errors import ConfigError, FitError, InputError
from perfdata.markers import Markers
from perfdata.memory import check_fit_memory
from perfdata.names import scene_path
from perfdata.records.fit import GRID_NAME, FitRecord, write_fit
from perfdata.runner import RunConfig, StageJob, TaskOutcome, run_stage
from perfdata.scene import Scene

Callback = Callable[[str, FitProgress], None]


def fit_scene(scene: Scene, cfg: FitConfig, callback: Callable[[FitProgress], None] | None = None) -> FitResult:
    """Fit `cfg.method` to `scene` (split by `cfg.holdout_every`, downscaled by `cfg.downscale`).

    Pure: no printing; progress goes to `callback`. Raises FitError (too few frames, black images, divergence)
    and ConfigError (a method not implemented yet).
    """
    if cfg.method not in ("plenoxel", "semantic"):
        raise ConfigError(f"fit method {cfg.method!r} is not implemented here (plenoxel and semantic are)")
    from perfdata.pipelines import plenoxel_fit

    prepared = plenoxel_fit.prepare_scene(scene, cfg)
    if cfg.density_bias_correction is None:
        cfg = dataclasses.replace(cfg, density_bias_correction=auto_density_bias_correction(prepared, cfg))
    size = max(max(f.width, f.height) for f in prepared.frames)
    if not cfg.resolution:
        cfg = dataclasses.replace(cfg, resolution=cfg.resolved_resolution(size))
        if prepared.meta.get("fit_background") == "ndc":
            cfg = ndc_schedule(cfg)
    if prepared.meta.get("fit_background") == "msi":
        cfg = msi_schedule(cfg, size)
    elif prepared.meta.get("fit_background") in KNOWN_COLOURS:
        cfg = fine_object_schedule(cfg)
    n_train = len(prepared.train_frames)
    if n_train < cfg.min_train_frames:
        raise FitError(f"scene {scene.scene_id}: {n_train} training frames, at least {cfg.min_train_frames} needed")
    if cfg.method == "semantic":
        from perfdata.pipelines.semantic_fit import fit_semantic

        return fit_semantic(prepared, cfg, resolve_device(cfg.device), callback)
    return plenoxel_fit.fit_plenoxel(prepared, cfg, resolve_device(cfg.device), callback)


def ndc_schedule(cfg: FitConfig) -> FitConfig:
    """The automatic schedule of an NDC fit: a third, coarser first stage (R/4, R/2, R, upsampled at 10% and 45%
    of the budget) -- a forward-facing scene fills the whole box at first, so the start must be cheap -- and,
    unless set, one sample per two x voxels (one depth voxel: the depth axis has ndc_depth_ratio as many), a
    3x SH learning rate (3e-2 -> 3e-3: the few epochs a budget allows must move the colours further) and a
    distortion loss of weight 3e-3 (the field starts as fog filling the frustum; gathering each ray's weight
    leaves fewer voxels at each upsample and fewer samples per ray; 150 s on fern, held-out dB: 0 22.25,
    1e-3 22.46, 3e-3 22.56, 1e-2 22.45, 3e-2 21.61, 0.1 19.61). Measured on fern in benchmarks/real.py (README
    "Real captures"; the sweep behind it in the README too)."""
    final = cfg.resolution[-1]
    defaults = FitConfig()
    changes: dict = {"resolution": (max(final // 4, 2), max(final // 2, 2), final)}
    if cfg.upsample_at == defaults.upsample_at:
        changes["upsample_at"] = (0.1, 0.45)
    if cfg.step_size == defaults.step_size:
        changes["step_size"] = 2.0
    if (cfg.lr_sh, cfg.lr_sh_final) == (defaults.lr_sh, defaults.lr_sh_final):
        changes.update(lr_sh=3e-2, lr_sh_final=3e-3)
    if cfg.distortion == defaults.distortion:
        changes["distortion"] = 3e-3
    return dataclasses.replace(cfg, **changes)


def msi_schedule(cfg: FitConfig, image_size: int) -> FitConfig:
    """The automatic settings of a fit with an MSI background: its height from the images
    (`FitConfig.resolved_msi_height`) and, unless set, a 10x SH TV (1e-2): on the textured backdrop (300 s,
    benchmarks/real.py's fit) held-out PSNR 26.70 -> 27.30 dB, SSIM 0.77 -> 0.78; without it the held-out curve
    fell after 60 s (26.97 -> 26.70 dB at 300 s), a sign of the grid overfitting the training views; and a
    distortion loss of weight 1e-2 (150 s sweep on the same capture, held-out dB: 0 27.44, 3e-3 27.22, 6e-3 27.71,
    1e-2 28.00 and 27.99, 1.5e-2 27.65, 3e-2 24.46: too strong, it empties the object's thin parts)."""
    defaults = FitConfig()
    changes: dict = {"msi_height": cfg.resolved_msi_height(image_size)}
    if cfg.tv_sh == defaults.tv_sh:
        changes["tv_sh"] = 1e-2
    if cfg.distortion == defaults.distortion:
        changes["distortion"] = 1e-2
    return dataclasses.replace(cfg, **changes)


FINE_RESOLUTION = 256
"""From this final grid resolution on, a masked object's fit takes a distortion loss (`fine_object_schedule`)."""


def fine_object_schedule(cfg: FitConfig) -> FitConfig:
    """The automatic settings of a masked object's fit (a known background colour): from a final resolution of
    FINE_RESOLUTION on, unless set, a distortion loss of weight 1e-2. On a fine grid it keeps fewer floaters
    and samples per ray (lego at 200 px, 128^3 -> 256^3, 300 s, benchmarks/fit.py: 29.07 -> 29.88 and 30.14 dB
    held-out in two runs, 1.27x the rays/s, 25% fewer voxels); on a coarse one it does not pay (lego at 100 px,
    300 s: 32.71 without, 32.59 with, within a run's spread), so coarser fits keep none."""
    if cfg.resolution[-1] < FINE_RESOLUTION or cfg.distortion != FitConfig().distortion:
        return cfg
    return dataclasses.replace(cfg, distortion=1e-2)


def fit_record(scene: Scene, cfg: FitConfig, seconds: float, result: FitResult) -> FitRecord:
    """The fit.json of a finished fit."""
    used = result.config if result.config is not None else cfg
    return FitRecord(
        scene_id=scene.scene_id, method=cfg.method, config=used.to_dict(), seed=cfg.seed, versions=versions(),
        source=scene.source, wall_seconds=round(seconds, 3), class_name=scene.class_name,
        label_names=None if scene.label_names is None else tuple(scene.label_names),
        cameras=tuple(training_cameras(scene, cfg.holdout_every)), device=result.device, steps=result.steps,
        train_seconds=round(result.train_seconds, 3), n_voxels=result.grid.n_voxels,
        resolution=tuple(int(r) for r in result.grid.reso), metrics=dict(result.metrics),
        curve=tuple(tuple(p) for p in result.curve), stats=dict(result.stats),
        world_from_grid=tuple(tuple(float(v) for v in row) for row in np.asarray(result.grid.world_from_grid)),
    )


def training_cameras(scene: Scene, holdout_every: int) -> list[dict]:
    """The training cameras (metric world frame, OpenCV axes, source resolution) for fit.json: the render stage
    interpolates novel views between nearby pairs of them."""
    if holdout_every > 0:
        scene = scene.with_holdout(holdout_every)
    return [{"name": f.name, "K": np.asarray(f.K).tolist(), "c2w": np.asarray(f.c2w).tolist(),
             "width": f.width, "height": f.height} for f in scene.frames if f.split == "train"]


def fit_one(scene: Scene, cfg: FitConfig, out: Path, callback: Callable[[FitProgress], None] | None = None
            ) -> dict[str, Any]:
    """Fit one scene and write its folder atomically (grid.npz, fit.json); returns the facts for its done
    marker. Raises what the fit raises (the runner records it)."""
    start = time.perf_counter()
    result = fit_scene(scene, cfg, callback)
    seconds = time.perf_counter() - start
    atomic.remove_stale(out.parent, out.name)
    with atomic.atomic_dir(out) as tmp:
        result.grid.save(tmp / GRID_NAME)
        write_fit(tmp, fit_record(scene, cfg, seconds, result))
    return {"device": result.device, "metrics": dict(result.metrics), "n_voxels": result.grid.n_voxels,
            "steps": result.steps, "resolution": list(result.grid.reso)}


def fit_scenes(
    reader: str, data: str | Path, scene_ids: Sequence[str] | None, out_dir: str | Path, cfg: FitConfig,
    run: RunConfig = RunConfig(), callback: Callback | None = None, scenes: Sequence[Scene] | None = None,
) -> list[TaskOutcome]:
    """Fit every chosen scene into `out_dir/<scene_id>/` on the per-scene runner (`run`: executor, shard, force,
    retry_failed, dry_run); one outcome per scene (`outcome.metrics` holds the held-out metrics).

    `scenes` (in-memory scenes) replaces the reader when given (in-process executors only). Otherwise the scene
    list is all of `data`, or `scene_ids`. `callback(scene_id, progress)` receives progress (in-process)."""
    out_dir = Path(out_dir)
    if cfg.resolution:  # refused up front, with the estimate, rather than as an allocator error per scene
        check_fit_memory(cfg.resolution, resolve_device(cfg.device))
    if cfg.method == "semantic" and not run.dry_run:  # bad label maps: one error before anything is written
        from perfdata.pipelines.semantic_labels import check_scenes

        from perfdata.readers import load_scenes

        check_scenes(scenes if scenes is not None else load_scenes(reader, data, scene_ids))
    in_process = run.executor.kind in ("local", "threads")
    cb = callback if in_process else None
    if scenes is not None:
        if not in_process:
            raise ConfigError("in-memory scenes can only be fitted in this process (executor local or threads)")
        by_id = {s.scene_id: s for s in scenes}
        work: Callable[[str], Mapping[str, Any]] = functools.partial(fit_memory_scene, by_id, str(out_dir), cfg, cb)
        ids = list(by_id)
    else:
        work = functools.partial(fit_scene_by_id, reader, str(data), str(out_dir), cfg, cb)
        ids = select_scene_ids(reader, data, scene_ids)
    return run_stage(StageJob(Markers.in_folder(out_dir, "fit"), work), ids, run)


def select_scene_ids(reader: str, data: str | Path, scene_ids: Sequence[str] | None) -> list[str]:
    """The scene ids to fit: all under `data`, or `scene_ids` (an unknown id is an InputError)."""
    from perfdata.readers import list_scenes

    known = list_scenes(reader, data)
    missing = [s for s in scene_ids or () if s not in known]
    if missing:
        raise InputError(data, f"no scene {', '.join(missing)} here (found: {', '.join(known[:10])})")
    return list(scene_ids) if scene_ids else known


def fit_scene_by_id(reader: str, data: str, out_dir: str, cfg: FitConfig, callback: Callback | None,
                    scene_id: str) -> dict[str, Any]:
    """Runner work: load one scene with its reader and fit it (picklable with functools.partial)."""
    from perfdata.readers import get_reader

    scene = get_reader(reader).load_scene(Path(data), scene_id)
    return fit_one(scene, cfg, scene_path(out_dir, scene_id), _bind(callback, scene_id))


def fit_memory_scene(scenes: Mapping[str, Scene], out_dir: str, cfg: FitConfig, callback: Callback | None,
                     scene_id: str) -> dict[str, Any]:
    """Runner work for a scene held in memory."""
    return fit_one(scenes[scene_id], cfg, scene_path(out_dir, scene_id), _bind(callback, scene_id))


def _bind(callback: Callback | None, scene_id: str) -> Callable[[FitProgress], None] | None:
    return None if callback is None else functools.partial(callback, scene_id)
