"""The fit stage: one radiance field per scene (`fit_scene`), and a resumable loop over scenes writing
`OUT/<scene_id>/{grid.npz, fit.json, DONE}` (`fit_scenes`)."""

from __future__ import annotations

import dataclasses
import functools
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from perfdata.pipelines.fitconfig import FitConfig, FitProgress, FitResult

from perfdata import atomic
from perfdata.devices import resolve_device, versions
from perfdata.errors import ConfigError, FitError, InputError, PerfdataError
from perfdata.executor import ExecutorConfig, TaskOutcome, run_tasks, shard_items
from perfdata.memory import check_fit_memory
from perfdata.names import scene_path
from perfdata.scene import Scene
from perfdata.status import write_plan

FIT_FORMAT_VERSION = 1
DONE_MARKER = "DONE"


def fit_scene(scene: Scene, cfg: FitConfig, callback: Callable[[FitProgress], None] | None = None) -> FitResult:
    """Fit `cfg.method` to `scene` (split by `cfg.holdout_every`, downscaled by `cfg.downscale`).

    Pure: no printing; progress goes to `callback`. Raises FitError (too few frames, black images, divergence)
    and ConfigError (a method not implemented yet).
    """
    if cfg.method != "plenoxel":
        raise ConfigError(f"fit method {cfg.method!r} is not implemented yet (only plenoxel is)")
    from perfdata.pipelines import plenoxel_fit

    prepared = plenoxel_fit.prepare_scene(scene, cfg)
    if not cfg.resolution:
        size = max(max(f.width, f.height) for f in prepared.frames)
        cfg = dataclasses.replace(cfg, resolution=cfg.resolved_resolution(size))
    n_train = len(prepared.train_frames)
    if n_train < cfg.min_train_frames:
        raise FitError(f"scene {scene.scene_id}: {n_train} training frames, at least {cfg.min_train_frames} needed")
    return plenoxel_fit.fit_plenoxel(prepared, cfg, resolve_device(cfg.device), callback)


@dataclass(frozen=True)
class FitOutcome:
    """What happened to one scene in `fit_scenes`."""

    scene_id: str
    """The scene."""
    status: str
    """done, skipped (already done) or failed."""
    out_dir: Path
    """Its output folder."""
    metrics: dict[str, float]
    """Held-out metrics (empty unless done now or before)."""
    seconds: float = 0.0
    """Wall seconds spent on it in this run."""
    error: str | None = None
    """The error message of a failed scene."""


def fit_record(scene: Scene, cfg: FitConfig, status: str, seconds: float, result: FitResult | None = None,
               error: str | None = None) -> dict:
    """The fit.json of a scene."""
    used = result.config if result is not None and result.config is not None else cfg
    record = {
        "format_version": FIT_FORMAT_VERSION, "scene_id": scene.scene_id, "status": status, "method": cfg.method,
        "config": used.to_dict(), "seed": cfg.seed, "versions": versions(), "source": scene.source,
        "wall_seconds": round(seconds, 3), "class_name": scene.class_name,
        "label_names": None if scene.label_names is None else list(scene.label_names),
        "cameras": training_cameras(scene, cfg.holdout_every),
    }
    if result is not None:
        record.update(
            device=result.device, steps=result.steps, train_seconds=round(result.train_seconds, 3),
            n_voxels=result.grid.n_voxels, resolution=list(result.grid.reso), metrics=result.metrics,
            curve=[list(p) for p in result.curve], stats=result.stats,
            world_from_grid=np.asarray(result.grid.world_from_grid).tolist(),
        )
    if error is not None:
        record["error"] = error
    return record


def training_cameras(scene: Scene, holdout_every: int) -> list[dict]:
    """The training cameras (metric world frame, OpenCV axes, source resolution) for fit.json: the render stage
    interpolates novel views between nearby pairs of them."""
    if holdout_every > 0:
        scene = scene.with_holdout(holdout_every)
    return [{"name": f.name, "K": np.asarray(f.K).tolist(), "c2w": np.asarray(f.c2w).tolist(),
             "width": f.width, "height": f.height} for f in scene.frames if f.split == "train"]


def fit_one(scene: Scene, cfg: FitConfig, out: Path, callback: Callable[[FitProgress], None] | None) -> FitOutcome:
    """Fit and write one scene folder atomically (DONE last); a failure writes fit.json with status failed."""
    atomic.remove_stale(out)  # a killed fit's hidden temporary folder
    start = time.perf_counter()
    try:
        result = fit_scene(scene, cfg, callback)
    except (PerfdataError, RuntimeError, ValueError, torch.cuda.OutOfMemoryError) as exc:
        seconds = time.perf_counter() - start
        message = f"{type(exc).__name__}: {exc}"
        with atomic.atomic_dir(out) as tmp:
            record = fit_record(scene, cfg, "failed", seconds, error=message)
            record["traceback"] = traceback.format_exc(limit=5)
            atomic.write_json(tmp / "fit.json", record)
        return FitOutcome(scene.scene_id, "failed", out, {}, seconds, message)
    seconds = time.perf_counter() - start
    with atomic.atomic_dir(out) as tmp:
        result.grid.save(tmp / "grid.npz")
        atomic.write_json(tmp / "fit.json", fit_record(scene, cfg, "done", seconds, result))
        atomic.write_text(tmp / DONE_MARKER, "done\n")
    return FitOutcome(scene.scene_id, "done", out, result.metrics, seconds)


def fit_scenes(
    reader: str, data: str | Path, scene_ids: Sequence[str] | None, out_dir: str | Path, cfg: FitConfig,
    force: bool = False, callback: Callable[[str, FitProgress], None] | None = None,
    scenes: Sequence[Scene] | None = None, executor: ExecutorConfig = ExecutorConfig(),
    shard: tuple[int, int] | None = None,
) -> list[FitOutcome]:
    """Fit every chosen scene into `out_dir/<scene_id>/`; a scene with a DONE marker is skipped unless `force`,
    a failed scene (also one whose capture cannot be read) is recorded and the next goes on.

    `scenes` (in-memory scenes) replaces the reader when given (in-process only). Otherwise the scene list
    (all of `data`, or `scene_ids`) is split by `shard` (i, n) and run on `executor`; the planned ids go to
    `out_dir/plan.json` for `perfdata status`. `callback(scene_id, progress)` receives progress (in-process)."""
    out_dir = Path(out_dir)
    if cfg.resolution:  # refused up front, with the estimate, rather than as an allocator error per scene
        check_fit_memory(cfg.resolution, resolve_device(cfg.device))
    if scenes is not None:
        return [_fit_or_skip(s, cfg, scene_path(out_dir, s.scene_id), force, callback) for s in scenes]
    ids = shard_items(select_scene_ids(reader, data, scene_ids), shard)
    write_plan(out_dir, "fit", ids)
    if executor.kind == "local":
        return [fit_scene_by_id(reader, str(data), str(out_dir), cfg, force, sid, callback) for sid in ids]
    job = functools.partial(fit_scene_by_id, reader, str(data), str(out_dir), cfg, force)
    return [_as_fit_outcome(o, out_dir) for o in run_tasks(job, ids, executor)]


def select_scene_ids(reader: str, data: str | Path, scene_ids: Sequence[str] | None) -> list[str]:
    """The scene ids to fit: all under `data`, or `scene_ids` (an unknown id is an InputError)."""
    from perfdata.readers import list_scenes

    known = list_scenes(reader, data)
    missing = [s for s in scene_ids or () if s not in known]
    if missing:
        raise InputError(data, f"no scene {', '.join(missing)} here (found: {', '.join(known[:10])})")
    return list(scene_ids) if scene_ids else known


def fit_scene_by_id(reader: str, data: str, out_dir: str, cfg: FitConfig, force: bool, scene_id: str,
                    callback: Callable[[str, FitProgress], None] | None = None) -> FitOutcome:
    """Load one scene with its reader and fit it (picklable with functools.partial, for the executors)."""
    from perfdata.readers import get_reader
    from perfdata.status import mark_failed

    out = scene_path(out_dir, scene_id)  # a safe name, inside out_dir (perfdata.names)
    if (out / DONE_MARKER).is_file() and not force:
        return FitOutcome(scene_id, "skipped", out, _done_metrics(out))
    try:
        scene = get_reader(reader).load_scene(Path(data), scene_id)
    except PerfdataError as exc:
        mark_failed(out, f"{type(exc).__name__}: {exc}")
        return FitOutcome(scene_id, "failed", out, {}, 0.0, f"{type(exc).__name__}: {exc}")
    return _fit_or_skip(scene, cfg, out, force, callback)


def _fit_or_skip(scene: Scene, cfg: FitConfig, out: Path, force: bool,
                 callback: Callable[[str, FitProgress], None] | None) -> FitOutcome:
    if (out / DONE_MARKER).is_file() and not force:
        return FitOutcome(scene.scene_id, "skipped", out, _done_metrics(out))
    cb = None if callback is None else functools.partial(callback, scene.scene_id)
    return fit_one(scene, cfg, out, cb)


def _as_fit_outcome(outcome: TaskOutcome, out_dir: Path) -> FitOutcome:
    if isinstance(outcome.result, FitOutcome):
        return outcome.result
    return FitOutcome(outcome.item, "failed", out_dir / outcome.item, {}, outcome.seconds, outcome.error)


def _done_metrics(out: Path) -> dict[str, float]:
    import json

    try:
        return dict(json.loads((out / "fit.json").read_text()).get("metrics", {}))
    except (OSError, ValueError):
        return {}
