"""A generalizable field's prediction as a voxel grid: `perfdata export --from-model RUN` (into the same zarr
store as per-scene fits) and the warm start of `perfdata fit --method plenoxel --init-from RUN`.

`sample_grid` evaluates the field at the voxel centres of a resolution-R grid from the scene's K source views:
density and class logits directly (both are direction-independent), SH degree 2 by least squares from the
colours predicted along `n_directions` directions spread over the sphere (`generalizable.fit_sh`). The export
keeps voxels whose opacity over one voxel, 1 - exp(-sigma * 2 / R), exceeds `keep_alpha`, dilated by one voxel;
so does the warm start (`initial_grid_from_model`, at FitConfig.init_from_keep_alpha), with the density
scaled down.

Each exported scene records, in its metrics, on up to `eval_views` of its non-source frames: `psnr` (the
model's render against the images), `psnr_grid` (the exported grid rendered by the Plenoxel renderer against the
images) and `psnr_grid_vs_model` (the grid's render against the model's).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from perfdata.models import generalizable, metrics, plenoxel, sh
from perfdata.models.generalizable import GeneralizableField, Sources
from perfdata.pipelines.generalizable_ckpt import load_model
from perfdata.pipelines.generalizable_data import (
    SceneTensors,
    check_scene,
    eval_targets,
    load_scene_tensors,
    spread_views,
)
from perfdata.pipelines.generalizable_eval import encode_sources, image_hw3, render_frame

from perfdata.devices import resolve_device
from perfdata.grid import SparseGrid
from perfdata.scene import Scene
from perfdata.store.writer import WriteConfig

if TYPE_CHECKING:
    from perfdata.runner import RunConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelExportConfig:
    """How to export a model's predictions."""

    source_views: int = 3
    resolution: int = 64
    """Grid resolution R (R^3 voxel centres are evaluated)."""
    keep_alpha: float = 0.01
    """Voxels kept: opacity over one voxel above this (then dilated by one voxel)."""
    n_directions: int = 16
    """Directions of the SH least-squares fit."""
    eval_views: int = 4
    """Non-source frames on which the metrics are measured."""
    n_samples: int = 32
    """Samples per ray of the metric renders (the training count)."""
    chunk: int = 16384
    """Points evaluated at once."""
    force: bool = False
    dataset: str = "perfdata"
    device: str = "auto"
    write: WriteConfig = field(default_factory=WriteConfig)


def voxel_centres(reso: int, device: torch.device) -> torch.Tensor:
    """(R^3, 3) cube coordinates (2i + 1) / R - 1 of every voxel, x slowest."""
    c = (2.0 * torch.arange(reso, device=device, dtype=torch.float32) + 1.0) / reso - 1.0
    return torch.stack(torch.meshgrid(c, c, c, indexing="ij"), dim=-1).reshape(-1, 3)


@torch.no_grad()
def point_density(model: GeneralizableField, sources: Sources, points: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """sigma (n,) and logits (n, C) at points (n, 3)."""
    sig, log = [], []
    for s in range(0, points.shape[0], chunk):
        pf = model.point_features(sources, points[s : s + chunk])
        sig.append(pf["sigma"])
        log.append(pf["logits"])
    return torch.cat(sig), torch.cat(log)


@torch.no_grad()
def point_sh(model: GeneralizableField, sources: Sources, points: torch.Tensor, n_directions: int, chunk: int) -> torch.Tensor:
    """(n, 27) SH coefficients fitted to the colours of points (n, 3) seen along `n_directions` directions."""
    dirs = generalizable.fibonacci_directions(n_directions).to(points.device)
    basis = sh.eval_sh_basis(dirs)
    out = []
    step = max(1, chunk // n_directions)
    for s in range(0, points.shape[0], step):
        pts = points[s : s + step]
        pf = model.point_features(sources, pts)
        cols = torch.stack([model.colour(sources, pts, d.expand_as(pts), pf) for d in dirs], dim=1)
        out.append(generalizable.fit_sh(basis, cols))
    return torch.cat(out) if out else torch.zeros((0, 27), device=points.device)


def dilate(mask: torch.Tensor) -> torch.Tensor:
    """(R, R, R) bool grown by one voxel (3x3x3)."""
    return torch.nn.functional.max_pool3d(mask.float()[None, None], 3, 1, 1)[0, 0] > 0


@torch.no_grad()
def sample_grid(model: GeneralizableField, sources: Sources, st: SceneTensors, reso: int, keep_alpha: float | None,
                n_directions: int = 16, chunk: int = 16384) -> SparseGrid:
    """The field as a SparseGrid of resolution `reso` (module docstring); keep_alpha None keeps every voxel."""
    dev = sources.images.device
    centres = voxel_centres(reso, dev)
    sigma, logits = point_density(model, sources, centres, chunk)
    if keep_alpha is None:
        keep = torch.ones(reso**3, dtype=torch.bool, device=dev)
    else:
        alpha = 1.0 - torch.exp(-sigma * 2.0 / reso)
        keep = dilate((alpha > keep_alpha).reshape(reso, reso, reso)).reshape(-1)
    rows = torch.nonzero(keep).squeeze(-1)
    coeffs = point_sh(model, sources, centres[rows], n_directions, chunk)
    r = rows.cpu().numpy()
    coords = np.stack([r // (reso * reso), (r // reso) % reso, r % reso], axis=1).astype(np.int32)
    return SparseGrid(
        coords=coords, density=sigma[rows].cpu().numpy().astype(np.float32), sh=coeffs.cpu().numpy().astype(np.float32),
        reso=(reso, reso, reso), world_from_grid=np.asarray(st.world_from_grid, dtype=np.float64),
        logits=logits[rows].cpu().numpy().astype(np.float32) if model.cfg.n_classes else None,
        background=st.background.cpu().numpy().astype(np.float32),
    )


def grid_metrics(model: GeneralizableField, sources: Sources, st: SceneTensors, grid: SparseGrid,
                 targets: Sequence[int], n_samples: int) -> dict[str, float]:
    """psnr, psnr_grid, psnr_grid_vs_model on frames `targets` (means over them)."""
    pg = plenoxel.PlenoxelGrid.from_sparse(grid, sources.images.device)
    accel = plenoxel.build_accel(pg)
    h, w = st.size
    vals: dict[str, list[float]] = {"psnr": [], "psnr_grid": [], "psnr_grid_vs_model": []}
    for t in targets:
        truth = image_hw3(st, t)
        mine = render_frame(model, sources, st, t, n_samples)["rgb"].clamp(0, 1)
        theirs = plenoxel.render_camera(pg, st.K[t], st.c2w[t], w, h, accel=accel)["rgb"].clamp(0, 1).cpu()
        vals["psnr"].append(metrics.psnr(mine, truth))
        vals["psnr_grid"].append(metrics.psnr(theirs, truth))
        vals["psnr_grid_vs_model"].append(metrics.psnr(theirs, mine))
    return {k: float(np.mean(v)) for k, v in vals.items() if v}


def scene_cameras_json(scene: Scene) -> list[dict]:
    """Every frame's camera (metric world, OpenCV), for the render stage's interpolated poses."""
    return [{"name": f.name, "K": np.asarray(f.K).tolist(), "c2w": np.asarray(f.c2w).tolist(), "width": f.width,
             "height": f.height} for f in scene.frames]


@dataclass(frozen=True)
class ExportedScene:
    scene_id: str
    status: str
    n_voxels: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    error: str = ""


def predict_scene(model: GeneralizableField, names: tuple[str, ...], scene: Scene, cfg: ModelExportConfig,
                  device: torch.device) -> tuple[SparseGrid, dict[str, float], list[str]]:
    """The exported grid of one scene, its metrics and the names of its source frames."""
    st = load_scene_tensors(scene, names, labels=False).to(device)
    src = spread_views(st.centres.cpu(), st.axes.cpu(), cfg.source_views, start=0)
    sources = encode_sources(model, st, src)
    grid = sample_grid(model, sources, st, cfg.resolution, cfg.keep_alpha, cfg.n_directions, cfg.chunk)
    found = grid_metrics(model, sources, st, grid, eval_targets(st.n_frames, src, cfg.eval_views), cfg.n_samples)
    return grid, found, [scene.frames[i].name for i in src]


def export_from_model(run: str | Path, scenes: Sequence[Scene], out: str, cfg: ModelExportConfig,
                      run_cfg: RunConfig | None = None) -> list[ExportedScene]:
    """Write each scene's predicted grid into the store `out`: one runner item per scene (atomic per scene;
    complete scenes are skipped unless `cfg.force`); root attrs refreshed at the end. Inputs are all checked
    before anything is written."""
    from perfdata.pipelines.export import ExportConfig, run_scene_jobs

    from perfdata.runner import RunConfig
    from perfdata.store.location import Location
    from perfdata.store.writer import refresh_root

    device = resolve_device(cfg.device)
    ckpt = load_model(run, device)
    for scene in scenes:
        check_scene(scene, cfg.source_views, ckpt.model.cfg.image_size)
    loc = Location(out, cfg.write.storage_options)
    by_id = {s.scene_id: s for s in scenes}
    work = functools.partial(export_scene, ckpt.model, tuple(ckpt.label_names), by_id, str(run), loc, cfg, device)
    ecfg = ExportConfig(force=cfg.force, dataset=cfg.dataset, write=cfg.write)
    results = run_scene_jobs(loc, list(by_id), work, ecfg, run_cfg or RunConfig())
    refresh_root(loc, cfg.dataset)
    metrics_of = {r.scene_id: loc_metrics(loc, r.scene_id) for r in results if r.status == "written"}
    return [ExportedScene(r.scene_id, r.status, r.n_voxels, metrics_of.get(r.scene_id, {}), r.seconds, r.error)
            for r in results]


def loc_metrics(loc, scene_id: str) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """The metrics recorded in a written scene's attrs."""
    from perfdata.store import open_store

    return dict(open_store(loc.url).scene_attrs(scene_id).metrics)


def export_scene(model: GeneralizableField, names: tuple[str, ...], scenes: dict[str, Scene], run: str, loc,  # type: ignore[no-untyped-def]
                 cfg: ModelExportConfig, device: torch.device, scene_id: str) -> dict:
    """Runner work: one scene's prediction -> one scene group of the store; facts n_voxels and metrics."""
    from perfdata.store.writer import grid_arrays, write_scene

    scene = scenes[scene_id]
    grid, m, src = predict_scene(model, names, scene, cfg, device)
    extra = {"method": "generalizable", "model": run, "source_views": src, "cameras": scene_cameras_json(scene),
             "label_names": list(names)}
    write_scene(loc, scene_id, grid_arrays(grid, cfg.write, class_name=scene.class_name, metrics=m,
                                           source=scene.source or scene_id, extra=extra), cfg.write)
    return {"n_voxels": grid.n_voxels, "metrics": m}


def initial_grid_from_model(run: str | Path, scene: Scene, reso: int, background: torch.Tensor,
                            source_views: int | None = None, *, keep_alpha: float,
                            density_scale: float) -> plenoxel.PlenoxelGrid:
    """Warm start of a Plenoxel fit: a resolution-`reso` grid from the model's prediction of `scene` from K of
    its training frames (K: the run's source views). Allocated: the voxels whose predicted opacity over one
    voxel exceeds `keep_alpha`, dilated by one voxel (0: every voxel), so the space the model sees through starts
    empty; their SH as predicted, their density times `density_scale` (FitConfig.init_from_keep_alpha and
    init_from_density_scale say why). Where the model sees through every voxel, every voxel is kept (logged).
    On `background`'s device."""
    from perfdata.pipelines.generalizable_fit import read_run

    device = background.device
    ckpt = load_model(run, device)
    k = source_views or int(read_run(run).get("source_views", 3))
    train = scene.select([i for i, f in enumerate(scene.frames) if f.split == "train"])
    check_scene(train, k, ckpt.model.cfg.image_size)
    st = load_scene_tensors(train, tuple(ckpt.label_names), labels=False).to(device)
    sources = encode_sources(ckpt.model, st, spread_views(st.centres.cpu(), st.axes.cpu(), k, start=0))
    sparse = sample_grid(ckpt.model, sources, st, reso, keep_alpha if keep_alpha > 0 else None)
    if sparse.n_voxels == 0:
        log.warning("%s: the model %s predicts an opacity per voxel of at most %g everywhere; the warm start keeps "
                    "every voxel", scene.scene_id, run, keep_alpha)
        sparse = sample_grid(ckpt.model, sources, st, reso, None)
    grid = plenoxel.PlenoxelGrid.from_sparse(dataclasses.replace(sparse, density=sparse.density * density_scale), device)
    grid.background = background.detach().clone()
    return grid
