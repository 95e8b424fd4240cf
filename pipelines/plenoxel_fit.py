"""The Plenoxel optimisation loop: rays from a Scene, coarse-to-fine training with sparse RMSProp, TV and
optional depth supervision, and held-out evaluation. Used by `pipelines.fit.fit_scene`."""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from perfdata.models import background as background_model
from perfdata.models import fused, metrics, plenoxel, plenoxel_train
from perfdata.models.optim import SparseRMSProp, merge_sparse
from perfdata.models.plenoxel import PlenoxelGrid
from perfdata.pipelines.capture import auto_ndc_margin, choose_background, cleared_cube, ndc_space
from perfdata.pipelines.fitconfig import FitConfig, FitProgress, FitResult

from perfdata import camera, images
from perfdata.errors import FitError, InputError
from perfdata.ndc import NDC
from perfdata.scene import Frame, Scene, resize


@dataclass(frozen=True)
class RaySet:
    """Training rays in the cube frame: origins (n, 3), unit dirs (n, 3), z_scale (n,), rgb (n, 3),
    depth (n,) z-depth with 0 = unknown, or None."""

    origins: torch.Tensor
    dirs: torch.Tensor
    z_scale: torch.Tensor
    rgb: torch.Tensor
    depth: torch.Tensor | None
    mask: torch.Tensor | None = None
    """(n,) float32 foreground mask (1 = the object), when every frame has one and it was asked for."""


def load_rays(frames: Sequence[Frame], grid_from_world: np.ndarray, device: torch.device,
              masks: bool = False, ndc: NDC | None = None) -> RaySet:
    """Every pixel of `frames` as a cube ray with its colour (and depth when every frame has it; with `masks`,
    the foreground mask when every frame has one); with `ndc`, the cube lies in that NDC space."""
    parts: dict[str, list[torch.Tensor]] = {"o": [], "d": [], "rgb": [], "depth": [], "mask": []}
    with_depth = all(f.depth is not None for f in frames)
    with_mask = masks and all(f.mask is not None for f in frames)
    for f in frames:
        o, d = camera.image_rays(f.K, f.c2w, f.width, f.height)
        parts["o"].append(torch.from_numpy(o))
        parts["d"].append(torch.from_numpy(d))
        parts["rgb"].append(torch.from_numpy(np.ascontiguousarray(f.load_image().reshape(-1, 3))))
        if with_depth:
            parts["depth"].append(torch.from_numpy(f.load_depth().reshape(-1)))  # type: ignore[union-attr]
        if with_mask:
            parts["mask"].append(torch.from_numpy(f.load_mask().reshape(-1).astype(np.float32)))  # type: ignore[union-attr]
    cube = plenoxel.world_to_cube(grid_from_world, ndc, torch.cat(parts["o"]), torch.cat(parts["d"]))
    return RaySet(
        origins=cube.origins.float().to(device), dirs=cube.dirs.float().to(device),
        z_scale=cube.z_scale.float().to(device),
        rgb=torch.cat(parts["rgb"]).float().to(device),
        depth=torch.cat(parts["depth"]).float().to(device) if with_depth else None,
        mask=torch.cat(parts["mask"]).to(device) if with_mask else None,
    )


def composited_image(frame: Frame, background: float | None, size: tuple[int, int]) -> np.ndarray:
    """float32 (h, w, 3) colour of `frame` resized to size (h, w); an RGBA file is composited over the
    constant `background` with its soft alpha first (Frame.load_image drops alpha)."""
    if isinstance(frame.image, (str, Path)) and background is not None:
        rgb, alpha = images.read_rgba(frame.image)
        if alpha is not None:
            if rgb.shape[:2] != (frame.height, frame.width):
                raise InputError(frame.image, f"image is {rgb.shape[1]}x{rgb.shape[0]} but the intrinsics are for "
                                 f"{frame.width}x{frame.height}")
            rgb = rgb * alpha[..., None] + background * (1.0 - alpha[..., None])
            return resize(rgb, size, "area").astype(np.float32)
    return resize(frame.load_image(), size, "area").astype(np.float32)


def prepare_scene(scene: Scene, cfg: FitConfig) -> Scene:
    """The scene as fitted: held-out split, downscaled frames, colour composited over a known background; the
    background chosen (`capture.choose_background`) in meta["fit_background"]; with an MSI the cube cleared
    from the cameras (`capture.cleared_cube`); with NDC the NDC space in meta["fit_ndc"] (`NDC.to_array`), its
    margin in meta["fit_ndc_margin"] (cfg.ndc_margin, or `capture.auto_ndc_margin`) and world_from_grid the
    identity (the cube is the NDC box)."""
    if cfg.holdout_every > 0:
        scene = scene.with_holdout(cfg.holdout_every)
    choice = choose_background(scene, cfg)
    bg = {"white": 1.0, "black": 0.0}.get(choice)
    world_from_grid = scene.world_from_grid
    if choice == "msi":
        centres = np.stack([f.c2w[:3, 3] for f in scene.train_frames]) if scene.train_frames else np.zeros((0, 3))
        world_from_grid = cleared_cube(world_from_grid, centres, cfg.camera_clearance)
    meta = {**scene.meta, "fit_background": choice}
    if choice == "ndc":
        margin = auto_ndc_margin(scene) if cfg.ndc_margin is None else cfg.ndc_margin
        meta.update(fit_ndc=ndc_space(scene, margin).to_array().tolist(), fit_ndc_margin=margin)
        world_from_grid = np.eye(4)
    frames = []
    for f in scene.frames:
        small = f.downscaled(cfg.downscale)
        source = small if f.prescaled else f  # a stored smaller copy (LLFF's images_8/) is read as it is
        image = functools.partial(composited_image, source, bg, (small.height, small.width))
        frames.append(dataclasses.replace(small, image=image))
    return dataclasses.replace(scene, frames=tuple(frames), world_from_grid=world_from_grid, meta=meta)


def resolve_background(scene: Scene, cfg: FitConfig, device: torch.device) -> tuple[torch.Tensor, bool]:
    """(3,) starting background colour (with an MSI: behind its last layer) and whether it is learned."""
    choice = scene.meta.get("fit_background") or choose_background(scene, cfg)
    value = {"white": 1.0, "black": 0.0}.get(choice, 0.5)
    return torch.full((3,), value, device=device), choice in ("learned", "msi", "ndc")


def scene_ndc(scene: Scene) -> NDC | None:
    """The NDC space `prepare_scene` chose for `scene`, or None."""
    values = scene.meta.get("fit_ndc")
    return None if values is None else NDC.from_array(values)


def grid_shape(scene: Scene, cfg: FitConfig, reso: int) -> tuple[int, int, int]:
    """The grid of stage resolution `reso`: cubic, or with NDC reso along the image x axis, the image's aspect
    ratio along y and cfg.ndc_depth_ratio along the depth axis."""
    if scene_ndc(scene) is None:
        return (reso, reso, reso)
    f = (scene.train_frames or scene.frames)[0]
    return (reso, max(2, round(reso * f.height / f.width)), max(2, round(reso * cfg.ndc_depth_ratio)))


def initial_grid(scene: Scene, cfg: FitConfig, rays: RaySet, background: torch.Tensor) -> PlenoxelGrid:
    """All voxels of the first resolution, or with depth (and init_from_depth) those near the surface; with
    `cfg.init_from`, the prediction of that generalizable model (where it is not sure the space is empty)."""
    reso = cfg.resolution[0]
    if cfg.init_from:
        from perfdata.pipelines.generalizable_export import initial_grid_from_model

        return initial_grid_from_model(cfg.init_from, scene, reso, background, keep_alpha=cfg.init_from_keep_alpha,
                                       density_scale=cfg.init_from_density_scale)
    mask = torch.ones(grid_shape(scene, cfg, reso), dtype=torch.bool, device=rays.origins.device)
    if rays.depth is not None and cfg.init_from_depth:
        known = rays.depth > 0
        if bool(known.any()):
            pts = rays.origins[known] + rays.dirs[known] * (rays.depth[known] / rays.z_scale[known])[:, None]
            mask = plenoxel_train.points_mask(pts, reso, dilate=max(1, reso // 64))
    grid = plenoxel_train.make_grid(mask, cfg.density_init, scene.world_from_grid, background)
    grid.ndc = scene_ndc(scene)
    return grid


@torch.no_grad()
def evaluate(grid: PlenoxelGrid, frames: Sequence[Frame], step: float, max_views: int | None = None) -> dict[str, float]:
    """Held-out metrics: mean per-view psnr and ssim; depth_abs_rel over all pixels with known depth, of the
    rendered z-depth divided by the opacity (the expected depth of what the ray hit)."""
    if max_views is not None and len(frames) > max_views:
        frames = [frames[i] for i in np.linspace(0, len(frames) - 1, max_views).round().astype(int)]
    accel = plenoxel.build_accel(grid, step)
    psnrs, ssims, err, n_depth = [], [], 0.0, 0
    for f in frames:
        out = plenoxel.render_camera(grid, f.K, f.c2w, f.width, f.height, step, accel=accel)
        target = torch.from_numpy(f.load_image()).to(grid.device)
        pred = out["rgb"].clamp(0, 1)
        psnrs.append(metrics.psnr(pred, target))
        ssims.append(metrics.ssim(pred, target))
        depth = f.load_depth()
        if depth is not None:
            if grid.msi is not None:  # only what the grid holds: surfaces beyond the cube are the MSI's
                depth = depth_inside_cube(depth, f, np.linalg.inv(grid.world_from_grid))
            gt = torch.from_numpy(depth).to(grid.device)
            valid = gt > 0
            pred = out["depth"] / out["opacity"].clamp_min(1e-6)  # depth of the surface seen, not mixed with 0
            err += float(((pred[valid] - gt[valid]).abs() / gt[valid]).sum())
            n_depth += int(valid.sum())
    result = {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)), "n_views": len(frames)}
    if n_depth:
        result["depth_abs_rel"] = err / n_depth
    return result


def depth_inside_cube(depth: np.ndarray, frame: Frame, grid_from_world: np.ndarray) -> np.ndarray:
    """The z-depth map (H, W) with 0 (unknown) where the surface seen lies outside the cube [-1, 1]^3."""
    points, flat = camera.backproject(depth, frame.K, frame.c2w)
    cube = points @ grid_from_world[:3, :3].T + grid_from_world[:3, 3]
    out = np.zeros(depth.size, dtype=np.float32)
    inside = flat[np.abs(cube).max(axis=1) <= 1.0]
    out[inside] = depth.reshape(-1)[inside]
    return out.reshape(depth.shape)


class Clock:
    """Optimisation time: wall time minus the time spent in `paused()` blocks (evaluation, callbacks)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.excluded = 0.0

    def seconds(self) -> float:
        return time.perf_counter() - self.start - self.excluded

    def exclude(self, seconds: float) -> None:
        self.excluded += seconds


def progress_fraction(cfg: FitConfig, step: int, seconds: float) -> float:
    frac = step / cfg.steps
    if cfg.max_seconds is not None:
        frac = max(frac, seconds / cfg.max_seconds)
    return min(frac, 1.0)


def decayed(lr0: float, lr1: float, frac: float) -> float:
    return lr0 * (lr1 / lr0) ** frac


class Trainer:
    """State of one fit: grid, optimisers, generator; `step()` runs one batch."""

    def __init__(self, scene: Scene, cfg: FitConfig, rays: RaySet, device: torch.device) -> None:
        self.cfg, self.rays, self.device = cfg, rays, device
        self.gen = torch.Generator(device=device).manual_seed(cfg.seed)
        bg, self.learn_bg = resolve_background(scene, cfg, device)
        self.bg = bg.clone().requires_grad_(self.learn_bg)
        self.bg_opt = torch.optim.Adam([self.bg], lr=1e-2) if self.learn_bg else None
        self.msi = MSIFit(cfg, device) if scene.meta.get("fit_background") == "msi" else None
        self.scene, self.stage = scene, 0
        self.set_grid(initial_grid(scene, cfg, rays, bg))
        if self.grid.ndc is not None and rays.depth is not None:  # z-depth is not a cube distance in NDC
            self.rays = rays = dataclasses.replace(rays, depth=None)
        if self.msi is not None and rays.depth is not None:  # surfaces beyond the cube are the MSI's: no target
            points = rays.origins + rays.dirs * (rays.depth / rays.z_scale)[:, None]
            outside = points.abs().amax(dim=1) > 1.0
            self.rays = rays = dataclasses.replace(rays, depth=torch.where(outside, torch.zeros_like(rays.depth),
                                                                           rays.depth))
        known = rays.depth[rays.depth > 0] if rays.depth is not None else None
        self.depth_norm = float(known.median()) if known is not None and known.numel() else 1.0
        self.n_rays = self.n_samples = self.n_alive = self.n_colour = 0
        self.tv_rows = torch.zeros(0, dtype=torch.long, device=device)
        """The TV rows of the current step (drawn with its rays)."""

    def set_grid(self, grid: PlenoxelGrid) -> None:
        self.grid = grid
        self.opt_d = SparseRMSProp(grid.n_voxels, 1, self.cfg.rmsprop_beta, device=self.device,
                                   bias_correction=bool(self.cfg.density_bias_correction))
        self.opt_s = SparseRMSProp(grid.n_voxels, 27, self.cfg.rmsprop_beta, device=self.device)
        self.coords = plenoxel_train.voxel_coords(grid)
        self.accel = plenoxel.build_accel(grid, self.cfg.step_size)
        self.max_weight = torch.zeros(grid.n_voxels, device=self.device)

    def maybe_upsample(self, frac: float) -> None:
        cfg = self.cfg
        if self.stage + 1 < len(cfg.resolution) and frac >= cfg.upsample_at[self.stage]:
            self.stage += 1
            voxel_alpha = 1.0 - torch.exp(-self.grid.density[:, 0].clamp_min(0) * 2.0 / self.grid.reso[0])
            if cfg.prune_weight > 0:
                voxel_alpha = voxel_alpha * (self.max_weight > cfg.prune_weight)
            visible = self.prune_visible()
            if visible > 0:
                n = min(cfg.prune_visible_rays, self.rays.origins.shape[0])
                pick = torch.randperm(self.rays.origins.shape[0], generator=self.gen, device=self.device)[:n]
                seen = plenoxel_train.max_weights(self.grid, plenoxel.build_accel(self.grid, cfg.step_size),
                                                  self.rays.origins[pick], self.rays.dirs[pick])
                voxel_alpha = voxel_alpha * (seen > visible)
            keep = voxel_alpha > cfg.prune_alpha
            if not bool(keep.any()):
                raise FitError(f"scene {self.scene.scene_id}: no voxel is opaque enough (alpha > prune_alpha "
                               f"{cfg.prune_alpha}) to keep at the upsample to {cfg.resolution[self.stage]}: the "
                               f"grid is empty (try a larger density_init or a longer first stage)")
            n_max = max(1, cfg.max_voxels // 16)  # x8 for the finer grid, ~x2 for the dilation
            if int(keep.sum()) > n_max:  # a barely trained grid: keep only its most opaque voxels
                keep = voxel_alpha >= torch.topk(voxel_alpha, n_max).values[-1]
            grid = plenoxel_train.resample(self.grid, grid_shape(self.scene, cfg, cfg.resolution[self.stage]), keep)
            grid.ndc = self.grid.ndc
            self.set_grid(grid)

    def prune_visible(self) -> float:
        """cfg.prune_visible, resolved (None: 0.01 with NDC, else 0)."""
        if self.cfg.prune_visible is not None:
            return self.cfg.prune_visible
        return 0.01 if self.grid.ndc is not None else 0.0

    def step(self, it: int, frac: float) -> tuple[float, float]:
        """One batch; returns (loss, batch psnr)."""
        cfg, rays = self.cfg, self.rays
        if it % cfg.occupancy_every == 0:
            self.accel = plenoxel.build_accel(self.grid, cfg.step_size)
        idx = torch.randint(rays.origins.shape[0], (cfg.batch_rays,), generator=self.gen, device=self.device)
        offset = torch.rand(cfg.batch_rays, generator=self.gen, device=self.device)
        self.tv_rows = plenoxel_train.tv_sample(self.grid.n_voxels, cfg.tv_fraction, self.gen, self.device)
        fused = cfg.fused and cfg.prune_weight <= 0
        extra: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
        if fused and (cfg.tv_density > 0 or cfg.tv_sh > 0):  # the fused leaves also take the TV rows
            touched = plenoxel_train.tv_rows_touched(self.grid.links, self.coords, self.tv_rows)
            extra = (touched if cfg.tv_density > 0 else None, touched if cfg.tv_sh > 0 else None)
        bg = self.bg.clamp(0, 1) if self.learn_bg else self.bg
        if self.msi is not None:
            bg = self.msi.render(bg, rays.origins[idx], rays.dirs[idx])
        out = plenoxel_train.render_train(
            self.grid, self.accel, rays.origins[idx], rays.dirs[idx], rays.z_scale[idx], bg, offset, cfg.weight_thresh,
            fused=fused, extra_rows=extra,
        )
        mse = torch.mean((out.rgb - rays.rgb[idx]) ** 2)
        loss = mse
        if rays.depth is not None and cfg.depth_weight > 0:
            target = rays.depth[idx]
            known = target > 0
            if bool(known.any()):
                loss = loss + cfg.depth_weight * ((out.depth - target).abs()[known]).mean() / self.depth_norm
        if rays.mask is not None and cfg.mask_weight > 0:  # the object in the grid, its surroundings behind it
            loss = loss + cfg.mask_weight * torch.mean((out.opacity - rays.mask[idx]) ** 2)
        if cfg.distortion > 0 and out.distortion is not None:
            loss = loss + cfg.distortion * out.distortion.mean()
        if self.msi is not None and cfg.tv_msi > 0:
            loss = loss + cfg.tv_msi * background_model.tv_loss(self.msi.data())
        loss.backward()
        self.apply_grads(out, frac)
        if cfg.prune_weight > 0:
            plenoxel_train.update_max_weight_(self.max_weight, out.colour_ids, out.colour_weights)
        self.n_rays += cfg.batch_rays
        self.n_samples += out.n_samples
        self.n_alive += out.n_alive
        self.n_colour += out.n_colour
        return float(loss.detach()), -10.0 * math.log10(max(float(mse.detach()), 1e-10))

    def apply_grads(self, out: plenoxel_train.TrainRender, frac: float) -> None:
        """The RMSProp steps of density and SH from the render's gradients plus TV on `self.tv_rows`."""
        cfg, grid, tv_rows = self.cfg, self.grid, self.tv_rows
        lr_d = decayed(cfg.lr_density, cfg.lr_density_final, frac)
        lr_s = decayed(cfg.lr_sh, cfg.lr_sh_final, frac)
        if out.density_map is not None and out.sh_map is not None and out.density_rows is not None:
            # fused render: its compact leaves already hold the TV rows; TV adds into their gradients in place
            g_d, g_s = _grad(out.density_leaf), _grad(out.sh_leaf)
            if cfg.tv_density > 0:
                plenoxel_train.tv_grads_into(grid.density, grid.links, self.coords, tv_rows, cfg.tv_density,
                                             out.density_map, g_d)
            if cfg.tv_sh > 0:
                plenoxel_train.tv_grads_into(grid.sh, grid.links, self.coords, tv_rows, cfg.tv_sh, out.sh_map, g_s)
            nonzero = torch.nonzero(g_d[:, 0] != 0).squeeze(-1)  # as step_dense_: zero-gradient rows untouched
            self.opt_d.step_(grid.density, out.density_rows[nonzero], g_d[nonzero], lr_d)
            self.opt_s.step_(grid.sh, out.sh_rows, g_s, lr_s)
            self.step_backgrounds(frac)
            return
        # the plain render: a dense density gradient, the SH leaf's rows merged with TV's
        parts_s = [(out.sh_rows, _grad(out.sh_leaf))]
        grad_d = _grad(out.density_leaf)
        if cfg.tv_density > 0:
            grad_d.index_add_(0, *plenoxel_train.tv_grads(grid.density, grid.links, self.coords, tv_rows,
                                                          cfg.tv_density))
        self.opt_d.step_dense_(grid.density, grad_d, lr_d)
        if cfg.tv_sh > 0:
            parts_s.append(plenoxel_train.tv_grads(grid.sh, grid.links, self.coords, tv_rows, cfg.tv_sh))
        rows, g = merge_sparse(parts_s, grid.n_voxels)
        self.opt_s.step_(grid.sh, rows, g, lr_s)
        self.step_backgrounds(frac)

    def step_backgrounds(self, frac: float) -> None:
        """The steps of a learned background colour and of the MSI."""
        if self.bg_opt is not None:
            self.bg_opt.step()
            self.bg_opt.zero_grad()
        if self.msi is not None:
            self.msi.step(frac)

    def final_grid(self) -> PlenoxelGrid:
        """The grid with the background used (or learned) so far."""
        self.grid.background = self.bg.detach().clamp(0, 1).clone()
        if self.msi is not None:
            self.grid.msi = background_model.MSI(self.msi.data().detach().clone(), self.grid.background)
        return self.grid


class MSIFit:
    """The MSI background's parameters while fitting: colour and density texels (dense: 2H x H x L, small next
    to the grid), RMSProp with their own learning rates, decayed tenfold over the fit like the grid's."""

    def __init__(self, cfg: FitConfig, device: torch.device) -> None:
        self.cfg = cfg
        shape = (2 * cfg.msi_height, cfg.msi_height, cfg.msi_layers)
        self.colour = torch.zeros((*shape, 3), device=device, requires_grad=True)
        self.density = torch.full((*shape, 1), cfg.msi_density_init, device=device, requires_grad=True)
        self.opt = torch.optim.RMSprop([{"params": [self.colour], "lr": cfg.lr_msi_colour},
                                        {"params": [self.density], "lr": cfg.lr_msi_density}],
                                       alpha=cfg.rmsprop_beta, eps=1e-8)

    def data(self) -> torch.Tensor:
        return torch.cat([self.colour, self.density], dim=-1)

    def render(self, behind: torch.Tensor, origins: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
        """(n, 3) background colour of cube rays, differentiable in the texels (and in `behind`)."""
        data = self.data()
        return background_model.render(background_model.MSI(data, behind), origins, dirs)

    def step(self, frac: float) -> None:
        for group, lr0 in zip(self.opt.param_groups, (self.cfg.lr_msi_colour, self.cfg.lr_msi_density),
                             strict=True):
            group["lr"] = decayed(lr0, 0.1 * lr0, frac)
        self.opt.step()
        self.opt.zero_grad()


@dataclass(frozen=True)
class StageMark:
    """The counters of a fit at the start of a coarse-to-fine stage (or at its end)."""

    resolution: int
    voxels: int
    step: int
    seconds: float
    rays: int
    samples: int
    colour: int

    @staticmethod
    def of(trainer: Trainer, step: int, seconds: float) -> StageMark:
        return StageMark(int(trainer.grid.reso[0]), trainer.grid.n_voxels, step, seconds, trainer.n_rays,
                         trainer.n_samples, trainer.n_colour)


def stage_stats(starts: Sequence[StageMark], end: StageMark) -> dict[str, float]:
    """Per coarse-to-fine stage k, flat keys for fit.json's stats: stage{k}_resolution (along x), _voxels (at
    its start), _steps, _seconds (optimisation), _rays_per_second, _samples_per_ray and _colour_samples_per_ray
    -- where a fit spends its budget (a forward-facing scene's last stage holds most of the cost)."""
    out: dict[str, float] = {}
    for k, (a, b) in enumerate(zip(starts, [*starts[1:], end], strict=True)):
        rays, seconds = b.rays - a.rays, b.seconds - a.seconds
        out.update({
            f"stage{k}_resolution": a.resolution, f"stage{k}_voxels": a.voxels, f"stage{k}_steps": b.step - a.step,
            f"stage{k}_seconds": seconds, f"stage{k}_rays_per_second": rays / max(seconds, 1e-9),
            f"stage{k}_samples_per_ray": (b.samples - a.samples) / max(rays, 1),
            f"stage{k}_colour_samples_per_ray": (b.colour - a.colour) / max(rays, 1),
        })
    return out


def _grad(leaf: torch.Tensor) -> torch.Tensor:
    return leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)


def fit_plenoxel(scene: Scene, cfg: FitConfig, device: torch.device,
                 callback: Callable[[FitProgress], None] | None = None,
                 make_trainer: Callable[[Scene, FitConfig, RaySet, torch.device], Trainer] = Trainer) -> FitResult:
    """Fit a Plenoxel grid to `scene`'s training frames and evaluate it on its held-out frames; `make_trainer`
    builds the Trainer (a subclass adds losses: `pipelines.semantic_fit`)."""
    with_msi = scene.meta.get("fit_background") == "msi"
    rays = load_rays(scene.train_frames, np.linalg.inv(scene.world_from_grid), device, masks=with_msi,
                     ndc=scene_ndc(scene))
    if float(rays.rgb.max()) < 1e-3:
        raise FitError(f"scene {scene.scene_id}: every training image is black")
    trainer = make_trainer(scene, cfg, rays, device)
    if cfg.fused:
        fused.available(device)  # load (or compile) the fused kernels before the clock starts
    clock, curve, marks = Clock(), [], list(cfg.eval_at_seconds)
    it, loss = 0, 0.0
    stage_starts: list[StageMark] = []
    while it < cfg.steps:
        frac = progress_fraction(cfg, it, clock.seconds())
        if frac >= 1.0:
            break
        trainer.maybe_upsample(frac)
        if len(stage_starts) <= trainer.stage:
            stage_starts.append(StageMark.of(trainer, it, clock.seconds()))
        loss, batch_psnr = trainer.step(it, frac)
        it += 1
        if not math.isfinite(loss) or (it % 10 == 0 and not bool(torch.isfinite(trainer.grid.density).all())):
            raise FitError(f"scene {scene.scene_id}: training diverged (non-finite loss or density) at step {it}")
        paused, secs = time.perf_counter(), clock.seconds()
        while marks and secs >= marks[0] and scene.heldout_frames:
            grid = trainer.final_grid()
            curve.append((marks.pop(0), evaluate(grid, scene.heldout_frames, cfg.step_size, cfg.eval_max_views)["psnr"]))
        if callback is not None and (it % 10 == 0 or it == 1):
            callback(FitProgress(it, secs, loss, batch_psnr, trainer.n_rays / max(secs, 1e-9),
                                 trainer.grid.reso[0], trainer.grid.n_voxels))
        clock.exclude(time.perf_counter() - paused)
    train_seconds = clock.seconds()
    grid = trainer.final_grid()
    held = scene.heldout_frames
    result = evaluate(grid, held, cfg.step_size, cfg.eval_max_views) if held else {}
    stats = {
        "rays_per_second": trainer.n_rays / max(train_seconds, 1e-9),
        "samples_per_second": trainer.n_samples / max(train_seconds, 1e-9),
        "alive_samples_per_second": trainer.n_alive / max(train_seconds, 1e-9),
        "colour_samples_per_second": trainer.n_colour / max(train_seconds, 1e-9),
        **stage_stats(stage_starts, StageMark.of(trainer, it, train_seconds)),
    }
    used = dataclasses.replace(cfg, background=scene.meta.get("fit_background") or choose_background(scene, cfg),
                               ndc_margin=scene.meta.get("fit_ndc_margin", cfg.ndc_margin))
    return FitResult(grid.to_sparse(), result, tuple(curve), it, train_seconds, str(device), stats, used)
