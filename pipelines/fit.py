"""The fit stage: one radiance field per scene (`fit_scene`), and a resumable loop over scenes writing
`OUT/<scene_id>/{grid.npz, fit.json, DONE}` (`fit_scenes`)."""

from __future__ import annotations

import dataclasses
import platform
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from perfdata.pipelines.fitconfig import FitConfig, FitProgress, FitResult

import perfdata
from perfdata import atomic
from perfdata.errors import ConfigError, FitError, PerfdataError
from perfdata.scene import Scene

FIT_FORMAT_VERSION = 1
DONE_MARKER = "DONE"


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when available, else cpu; cuda without a GPU is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(name)


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


def versions() -> dict[str, str]:
    return {"perfdata": perfdata.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def fit_record(scene: Scene, cfg: FitConfig, status: str, seconds: float, result: FitResult | None = None,
               error: str | None = None) -> dict:
    """The fit.json of a scene."""
    used = result.config if result is not None and result.config is not None else cfg
    record = {
        "format_version": FIT_FORMAT_VERSION, "scene_id": scene.scene_id, "status": status, "method": cfg.method,
        "config": used.to_dict(), "seed": cfg.seed, "versions": versions(), "source": scene.source,
        "wall_seconds": round(seconds, 3),
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


def fit_one(scene: Scene, cfg: FitConfig, out: Path, callback: Callable[[FitProgress], None] | None) -> FitOutcome:
    """Fit and write one scene folder atomically (DONE last); a failure writes fit.json with status failed."""
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
    scenes: Sequence[Scene] | None = None,
) -> list[FitOutcome]:
    """Fit every chosen scene into `out_dir/<scene_id>/`; a scene with a DONE marker is skipped unless `force`,
    a failed scene is recorded and the next goes on. `scenes` (in-memory scenes) replaces the reader when given.
    `callback(scene_id, progress)` receives progress."""
    from perfdata.readers import load_scenes

    out_dir = Path(out_dir)
    source = scenes if scenes is not None else load_scenes(reader, data, scene_ids)
    outcomes = []
    for scene in source:
        out = out_dir / scene.scene_id
        if (out / DONE_MARKER).is_file() and not force:
            outcomes.append(FitOutcome(scene.scene_id, "skipped", out, _done_metrics(out)))
            continue
        cb = None if callback is None else (lambda p, sid=scene.scene_id: callback(sid, p))
        outcomes.append(fit_one(scene, cfg, out, cb))
    return outcomes


def _done_metrics(out: Path) -> dict[str, float]:
    import json

    try:
        return dict(json.loads((out / "fit.json").read_text()).get("metrics", {}))
    except (OSError, ValueError):
        return {}
