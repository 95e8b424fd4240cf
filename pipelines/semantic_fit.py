"""`fit --method semantic`: a Plenoxel grid with class logits (`models.semantic`), trained jointly with colour
(a Trainer subclass adds the label loss to every step) or on a fitted grid (`from_fit`: only logits learn), and
evaluated on held-out views with Semantic-NeRF's metrics. Used by `pipelines.fit.fit_scene`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from perfdata.models import plenoxel, semantic
from perfdata.models.optim import SparseAdam
from perfdata.models.plenoxel import PlenoxelGrid
from perfdata.models.plenoxel_train import tv_grads_into, tv_rows_touched, tv_sample
from perfdata.pipelines import plenoxel_fit
from perfdata.pipelines.fitconfig import FitConfig, FitProgress, FitResult
from perfdata.pipelines.semantic_labels import check_scene_labels, degrade, read_labels

from perfdata.errors import FitError, InputError
from perfdata.grid import SparseGrid
from perfdata.records.fit import GRID_NAME
from perfdata.scene import Frame, Scene


class SemanticTrainer(plenoxel_fit.Trainer):
    """A Plenoxel Trainer that also fits a `SemanticField` to per-ray labels (n_rays,) int64 (-1 = unlabelled):
    each step, after the colour step, the label loss on `cfg.semantic.rays` labelled rays. With `train_grid`
    False only the logits learn (the grid is set once with `set_grid`)."""

    def __init__(self, scene: Scene, cfg: FitConfig, rays: plenoxel_fit.RaySet, device: torch.device,
                 labels: torch.Tensor, n_classes: int, train_grid: bool = True) -> None:
        self.n_classes, self.train_grid = n_classes, train_grid
        self.field: semantic.SemanticField | None = None
        self.labels = labels.to(device)
        self.labelled = torch.nonzero(self.labels >= 0).squeeze(-1)
        if self.labelled.numel() == 0:
            raise FitError(f"scene {scene.scene_id}: no labelled training pixel is left under the label regime")
        self.n_label_rays = self.n_label_samples = 0
        super().__init__(scene, cfg, rays, device)

    def set_grid(self, grid: PlenoxelGrid) -> None:
        old = getattr(self, "grid", None)
        super().set_grid(grid)
        sem = self.cfg.semantic
        if self.field is None or old is None:
            self.field = semantic.make_field(grid, self.n_classes, sem.resolved_factor)
        else:
            self.field = semantic.resample_field(self.field, grid, old.reso)
        self.opt_l = SparseAdam(self.field.n_rows, self.n_classes, device=self.device)
        self.field_coords = semantic.link_coords(self.field.links) if sem.tv > 0 else None

    def step(self, it: int, frac: float) -> tuple[float, float]:
        loss, psnr = super().step(it, frac)
        start = self.label_start()
        if frac < start:
            return loss, psnr
        n_rays = int(round(self.cfg.semantic.rays / (1.0 - start)))  # the same label rays in all, in fewer steps
        return loss + self.cfg.semantic.weight * self.label_step((frac - start) / (1.0 - start), n_rays), psnr

    def label_start(self) -> float:
        """Progress fraction at which the label loss starts (`SemanticConfig.start_at`; None: the last upsample)."""
        sem, cfg = self.cfg.semantic, self.cfg
        if sem.start_at is not None:
            return min(sem.start_at, 0.99)
        stages = len(cfg.resolution) - 1
        return min(cfg.upsample_at[stages - 1], 0.99) if stages > 0 else 0.0

    def label_step(self, frac: float, n_rays: int | None = None) -> float:
        """One label-loss step on the logits (`frac`: progress of the label training, for the lr); returns the
        cross-entropy. n_rays: labelled rays (default `SemanticConfig.rays`)."""
        sem, rays = self.cfg.semantic, self.rays
        assert self.field is not None, "set_grid sets the field"
        n_rays = sem.rays if n_rays is None else n_rays
        pick = torch.randint(self.labelled.numel(), (n_rays,), generator=self.gen, device=self.device)
        idx = self.labelled[pick]
        offset = torch.rand(n_rays, generator=self.gen, device=self.device)
        accel = self.accel if sem.step_size == self.accel.step else dataclasses.replace(self.accel, step=sem.step_size)
        field, tv_rows, touched = self.field, None, None
        if sem.tv > 0 and self.field_coords is not None:  # TV's rows join the render's leaf (no merge after)
            tv_rows = tv_sample(field.n_rows, sem.tv_fraction, self.gen, self.device)
            touched = tv_rows_touched(field.links, self.field_coords, tv_rows)
        out = semantic.render_logits_train(self.grid, accel, field, rays.origins[idx], rays.dirs[idx],
                                           offset, sem.weight_thresh, touched)
        ce = semantic.semantic_loss(out.logits, self.labels[idx])
        (sem.weight * ce).backward()
        g = plenoxel_fit._grad(out.leaf)
        if tv_rows is not None and out.row_map is not None and self.field_coords is not None:
            tv_grads_into(field.logits, field.links, self.field_coords, tv_rows, sem.tv, out.row_map, g)
        self.opt_l.step_(field.logits, out.rows, g, plenoxel_fit.decayed(sem.lr, sem.lr_final, frac))
        self.n_label_rays += n_rays
        self.n_label_samples += out.n_samples
        return float(ce.detach())


def ray_labels(frames: Sequence[Frame], maps: Sequence[np.ndarray]) -> torch.Tensor:
    """(n_rays,) int64 labels in the ray order of `plenoxel_fit.load_rays` (frame by frame, row-major pixels)."""
    assert len(frames) == len(maps), "one label map per frame"
    return torch.from_numpy(np.concatenate([m.reshape(-1) for m in maps]).astype(np.int64))


@torch.no_grad()
def evaluate_labels(grid: PlenoxelGrid, field: semantic.SemanticField, frames: Sequence[Frame], step: float,
                    n_classes: int, scene_id: str, max_views: int | None = None) -> dict[str, float]:
    """miou, accuracy, class_accuracy of the rendered label maps (argmax of composited logits) against the
    frames' label maps, over all their labelled pixels."""
    if max_views is not None and len(frames) > max_views:
        frames = [frames[i] for i in np.linspace(0, len(frames) - 1, max_views).round().astype(int)]
    accel = plenoxel.build_accel(grid, step)
    conf = torch.zeros((n_classes, n_classes + 1), dtype=torch.int64)
    for f in frames:
        logits, _ = semantic.render_camera_logits(grid, accel, field, f.K, f.c2w, f.width, f.height)
        truth = torch.from_numpy(read_labels(f, scene_id, n_classes))
        conf += semantic.label_confusion(logits.argmax(-1).cpu(), truth, n_classes)
    return semantic.label_metrics(conf)


def input_miou(truth: Sequence[np.ndarray], given: Sequence[np.ndarray], n_classes: int) -> float:
    """mIoU of the (degraded) training labels against the true ones; an unlabelled pixel counts as wrong."""
    conf = sum(semantic.label_confusion(torch.from_numpy(g), torch.from_numpy(t), n_classes)
               for t, g in zip(truth, given, strict=True))
    return semantic.label_metrics(conf)["miou"]  # type: ignore[arg-type]


def with_logits(result: FitResult, trainer: SemanticTrainer, metrics: dict[str, float], stats: dict[str, float]
                ) -> FitResult:
    """The fit result with per-voxel logits and confident labels in its grid and the label metrics added."""
    grid = result.grid
    assert trainer.field is not None, "set_grid sets the field"
    coords = torch.from_numpy(grid.coords.astype(np.int64)).to(trainer.device)
    logits = semantic.voxel_logits(trainer.field, trainer.grid, coords).cpu().numpy().astype(np.float32)
    labels = semantic.confident_labels(logits, trainer.cfg.semantic.threshold)
    return dataclasses.replace(result, grid=dataclasses.replace(grid, logits=logits, labels=labels),
                               metrics={**result.metrics, **metrics}, stats={**result.stats, **stats})


def fit_semantic(scene: Scene, cfg: FitConfig, device: torch.device,
                 callback: Callable[[FitProgress], None] | None = None) -> FitResult:
    """Fit `scene` (prepared: split and downscaled) with class logits; `cfg.semantic.from_fit` keeps that fit's
    grid and learns only the logits. Metrics: the plenoxel ones, miou / accuracy / class_accuracy on held-out
    views, and input_miou when the training labels were degraded."""
    n_classes = check_scene_labels(scene)
    sem = cfg.semantic
    train = scene.train_frames
    truth = [read_labels(f, scene.scene_id, n_classes) for f in train]
    given = degrade(truth, sem, n_classes, cfg.seed)
    labels = ray_labels(train, given)
    made: list[SemanticTrainer] = []

    def make_trainer(s: Scene, c: FitConfig, rays: plenoxel_fit.RaySet, dev: torch.device) -> SemanticTrainer:
        made.append(SemanticTrainer(s, c, rays, dev, labels, n_classes, train_grid=sem.from_fit is None))
        return made[-1]

    if sem.from_fit is None:
        result = plenoxel_fit.fit_plenoxel(scene, cfg, device, callback, make_trainer)
    else:
        result = fit_logits_only(scene, cfg, device, make_trainer, callback)
    trainer = made[-1]
    assert trainer.field is not None, "set_grid sets the field"
    metrics: dict[str, float] = {}
    if scene.heldout_frames:
        metrics = evaluate_labels(trainer.grid, trainer.field, scene.heldout_frames, cfg.step_size, n_classes,
                                  scene.scene_id, cfg.eval_max_views)
    if sem.degraded:
        metrics["input_miou"] = input_miou(truth, given, n_classes)
    metrics["labelled_fraction"] = float((labels >= 0).float().mean())
    stats = {"label_rays_per_second": trainer.n_label_rays / max(result.train_seconds, 1e-9),
             "logit_rows": float(trainer.field.n_rows)}
    return with_logits(result, trainer, metrics, stats)


def load_fitted_grid(from_fit: str, scene: Scene) -> SparseGrid:
    """The grid of `from_fit`: a scene's fit folder (grid.npz inside) or a fits folder with `<scene_id>/`."""
    root = Path(from_fit)
    path = root / GRID_NAME if (root / GRID_NAME).is_file() else root / scene.scene_id / GRID_NAME
    if not path.is_file():
        raise InputError(path, f"--from-fit: no fitted grid for scene {scene.scene_id} here")
    grid = SparseGrid.load(path)
    if not np.allclose(grid.world_from_grid, scene.world_from_grid, atol=1e-6):
        raise InputError(path, f"--from-fit: this grid's world_from_grid is not scene {scene.scene_id}'s frame")
    return grid


def fit_logits_only(scene: Scene, cfg: FitConfig, device: torch.device,
                    make_trainer: Callable[..., SemanticTrainer],
                    callback: Callable[[FitProgress], None] | None) -> FitResult:
    """Learn only the logits on a fitted grid (`cfg.semantic.from_fit`), for cfg.steps or cfg.max_seconds."""
    assert cfg.semantic.from_fit is not None
    sparse = load_fitted_grid(cfg.semantic.from_fit, scene)
    rays = plenoxel_fit.load_rays(scene.train_frames, np.linalg.inv(scene.world_from_grid), device)
    one = dataclasses.replace(cfg, resolution=(int(max(sparse.reso)),), upsample_at=())
    trainer = make_trainer(scene, one, rays, device)
    grid = PlenoxelGrid.from_sparse(sparse, device)
    trainer.field = None
    trainer.set_grid(grid)
    clock, it, ce = plenoxel_fit.Clock(), 0, 0.0
    while it < cfg.steps:
        frac = plenoxel_fit.progress_fraction(cfg, it, clock.seconds())
        if frac >= 1.0:
            break
        ce = trainer.label_step(frac)
        it += 1
        if not math.isfinite(ce):
            raise FitError(f"scene {scene.scene_id}: label training diverged at step {it}")
        if callback is not None and (it % 10 == 0 or it == 1):
            secs = clock.seconds()
            callback(FitProgress(it, secs, ce, 0.0, trainer.n_label_rays / max(secs, 1e-9), grid.reso[0],
                                 grid.n_voxels))
    seconds = clock.seconds()
    held = scene.heldout_frames
    metrics = plenoxel_fit.evaluate(grid, held, cfg.step_size, cfg.eval_max_views) if held else {}
    return FitResult(sparse, metrics, (), it, seconds, str(device), {}, cfg)
