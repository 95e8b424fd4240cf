"""Fitting maths of the Plenoxel grid: the differentiable render over compact parameter rows, TV
regularisation over a random voxel subset, initial grids and coarse-to-fine resampling with pruning.

The differentiable render never builds a gradient the size of the grid: it gathers the rows a batch touches
into small leaf tensors (`compact_rows`), so backward and the optimiser step cost O(rows touched).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from perfdata.models import fused as fused_render
from perfdata.models import sampling, sh, volrend
from perfdata.models.plenoxel import Accel, PlenoxelGrid, lookup, march


@dataclass
class TrainRender:
    """Outputs of `render_train` (n_rays rays) and the leaves whose `.grad` the optimiser reads.

    Attributes:
        rgb: (n_rays, 3). depth: (n_rays,) z-depth (world units). opacity: (n_rays,).
        density_leaf: (n, 1) the grid's density as a leaf (its grad is dense over the rows), or with
            `density_rows` (k,) set (the fused path) a (k, 1) gradient carrier of those rows (its values are
            zeros, not the rows'; only its grad is meant to be read, as `sh_leaf`'s there).
        sh_rows: (m, ) grid rows behind `sh_leaf` (m, 27).
        density_map, sh_map: (n,) int32 grid row -> leaf row (-1: none), from the fused path (else None): other
            losses add their gradient into the leaves' gradients there (`tv_grads_into`).
        n_samples: samples in occupied cells. n_alive: those in front of the surface (composited).
        n_colour: samples whose colour was evaluated.
        colour_ids: (m, 8) grid rows (-1 empty) around the colour samples; colour_weights: (m,) their weights;
            None from the fused path (which keeps no per-sample tensor).
        fused: whether the fused kernels rendered (else the plain PyTorch reference).
        distortion: (n_rays,) the distortion loss of each ray's weights (`volrend.distortion_packed`, cube
            units), differentiable like rgb.
    """

    rgb: torch.Tensor
    depth: torch.Tensor
    opacity: torch.Tensor
    density_leaf: torch.Tensor
    sh_rows: torch.Tensor
    sh_leaf: torch.Tensor
    n_samples: int
    n_alive: int
    n_colour: int
    colour_ids: torch.Tensor | None
    colour_weights: torch.Tensor | None
    fused: bool = False
    density_rows: torch.Tensor | None = None
    density_map: torch.Tensor | None = None
    sh_map: torch.Tensor | None = None
    distortion: torch.Tensor | None = None


def render_train(
    grid: PlenoxelGrid, accel: Accel, origins: torch.Tensor, dirs: torch.Tensor, z_scale: torch.Tensor,
    background: torch.Tensor, offset: torch.Tensor | float = 0.5, weight_thresh: float = 1e-4,
    trans_thresh: float = 0.0, fused: bool = True,
    extra_rows: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None),
) -> TrainRender:
    """Differentiable render of cube rays (origins (n_rays, 3), unit dirs (n_rays, 3), z_scale (n_rays,));
    background (3,) may require grad (a learned colour).

    Passes over the packed samples: with `trans_thresh` > 0, densities without grad first, to drop samples
    behind an opaque surface (transmittance below it: early ray termination -- on lego it dropped only ~10%
    of samples, less than it cost, hence off by default); densities with grad; SH colour only where the
    weight exceeds `weight_thresh`. The density gradient is dense over the grid's rows
    (cheap: one float each); the SH gradient covers only the rows the colour samples touch.

    With `fused` (default) the fused kernels (`perfdata.models.fused`) run where they compile for the device
    (same outputs and gradients; they stop a ray once it is opaque, so `trans_thresh` is not used there); with
    fused=False, or where they do not compile, the plain PyTorch path below, the reference. The fused path
    also puts `extra_rows` (density rows, SH rows; e.g. `tv_rows_touched`) into its compact leaves, so another
    loss can add its gradient there; the plain path ignores them (its density gradient is dense).
    """
    if fused and origins.shape[0] and fused_render.available(origins.device):
        out = fused_render.render_train(grid, accel, origins, dirs, offset, weight_thresh, extra_rows)
        rgb = volrend.add_background(out["rgb"], out["opacity"], background)
        return TrainRender(rgb, out["depth"] * z_scale, out["opacity"], out["density_leaf"], out["sh_rows"],
                           out["sh_leaf"], out["n_samples"], out["n_samples"], out["n_colour"], None, None, True,
                           out["density_rows"], out["density_map"], out["sh_map"], out["distortion"])
    n_rays = origins.shape[0]
    ray_idx, t, u = march(accel, origins, dirs, offset)
    ids, w = lookup(accel, u)
    safe_ids = ids.clamp_min(0)
    if trans_thresh > 0:
        with torch.no_grad():
            sigma0 = sampling.trilinear_gather(grid.density, safe_ids, w).squeeze(-1).clamp_min(0.0)
            _, trans0 = volrend.render_weights_packed(sigma0, accel.step_cube, ray_idx, n_rays)
            alive = torch.nonzero(trans0 > trans_thresh).squeeze(-1)
        ray_idx, t, ids, safe_ids, w = ray_idx[alive], t[alive], ids[alive], safe_ids[alive], w[alive]
    d_leaf = grid.density.detach().requires_grad_(True)
    sigma = torch.relu(sampling.trilinear_gather(d_leaf, safe_ids, w).squeeze(-1))
    weights, _ = volrend.render_weights_packed(sigma, accel.step_cube, ray_idx, n_rays)
    opacity = volrend.accumulate_opacity(weights, ray_idx, n_rays)
    depth = volrend.composite_packed(weights, t, ray_idx, n_rays) * z_scale
    sel = torch.nonzero(weights.detach() > weight_thresh).squeeze(-1)
    rays_sel = ray_idx[sel]
    s_rows, s_local = sampling.compact_rows(ids[sel], grid.n_voxels)
    s_leaf = grid.sh.index_select(0, s_rows).requires_grad_(True)
    coeffs = sampling.trilinear_gather(s_leaf, s_local, w[sel])
    colour = sh.sh_to_rgb(coeffs, sh.eval_sh_basis(dirs)[rays_sel])
    rgb = volrend.composite_packed(weights[sel], colour, rays_sel, n_rays)
    rgb = volrend.add_background(rgb, opacity, background)
    distortion = volrend.distortion_packed(weights, t, accel.step_cube, ray_idx, n_rays)
    return TrainRender(rgb, depth, opacity, d_leaf, s_rows, s_leaf, int(u.shape[0]), int(t.numel()), int(sel.numel()),
                       ids[sel], weights.detach()[sel], distortion=distortion)


def update_max_weight_(max_weight: torch.Tensor, ids: torch.Tensor | None, weights: torch.Tensor | None) -> None:
    """max_weight (n,) <- max(max_weight, the largest compositing weight (m,) of a sample next to each row);
    ids (m, 8) are the samples' corner rows (-1 empty). Used to prune voxels no ray ever relied on; needs the
    reference render's per-sample ids (`render_train(..., fused=False)`)."""
    assert ids is not None and weights is not None, "max-weight pruning needs render_train(..., fused=False)"
    flat = ids.reshape(-1)
    vals = weights[:, None].expand(-1, 8).reshape(-1)
    keep = flat >= 0
    max_weight.scatter_reduce_(0, flat[keep], vals[keep], reduce="amax")


@torch.no_grad()
def max_weights(grid: PlenoxelGrid, accel: Accel, origins: torch.Tensor, dirs: torch.Tensor,
                chunk: int = 32768) -> torch.Tensor:
    """(n_voxels,) the largest compositing weight of any sample next to each row, over cube rays origins, dirs
    (n, 3) (plain PyTorch render without colour): 0 for voxels no ray sees, such as occluded interiors."""
    out = torch.zeros(grid.n_voxels, device=grid.device)
    for start in range(0, origins.shape[0], chunk):
        o, d = origins[start : start + chunk], dirs[start : start + chunk]
        ray_idx, _, u = march(accel, o, d)
        ids, w = lookup(accel, u)
        sigma = sampling.trilinear_gather(grid.density, ids.clamp_min(0), w).squeeze(-1).clamp_min(0.0)
        weights, _ = volrend.render_weights_packed(sigma, accel.step_cube, ray_idx, o.shape[0])
        update_max_weight_(out, ids, weights)
    return out


def voxel_coords(grid: PlenoxelGrid) -> torch.Tensor:
    """(n, 3) int64 voxel index of every row (inverse of `links`)."""
    coords = torch.nonzero(grid.links >= 0)
    out = torch.empty((grid.n_voxels, 3), dtype=torch.long, device=grid.device)
    out[grid.links[coords[:, 0], coords[:, 1], coords[:, 2]].long()] = coords
    return out


def tv_grads(
    values: torch.Tensor, links: torch.Tensor, coords: torch.Tensor, rows: torch.Tensor, weight: float,
    fused: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of weight * mean_{r in rows} sum_{axis} |v[r + e_axis] - v[r]|^2 (squared-difference TV,
    neighbours that are outside or not allocated skipped).

    Args:
        values: (n, C) parameter table. links: (X, Y, Z) int32. coords: (n, 3) int64 voxel of each row.
        rows: (k,) int64 sampled rows. weight: the loss weight.
        fused: one kernel pass where the fused kernels run (`perfdata.models.fused`; same output).
    Returns:
        sparse gradient: rows (k',) with repeats, grad (k', C).
    """
    if fused and values.dtype == torch.float32 and rows.numel() and fused_render.available(values.device):
        return fused_render.tv_pairs(values, links, coords, rows, 2.0 * weight / rows.numel())
    out_rows, out_grads = [], []
    c = coords[rows]
    for axis in range(3):
        nb = c.clone()
        nb[:, axis] += 1
        inside = nb[:, axis] < links.shape[axis]
        nb_ids = torch.full_like(rows, -1)
        nb_ids[inside] = links[nb[inside, 0], nb[inside, 1], nb[inside, 2]].long()
        ok = nb_ids >= 0
        a, b = rows[ok], nb_ids[ok]
        g = (2.0 * weight / max(rows.numel(), 1)) * (values[b] - values[a])
        out_rows += [a, b]
        out_grads += [-g, g]
    return torch.cat(out_rows), torch.cat(out_grads)


TV_RUN = 64
"""Consecutive rows per run of `tv_sample` (a fit's rows follow Morton order (`make_grid`): 64 rows are one
4^3 block where all its voxels are allocated; 32 and 128 gave within 10 % of its TV time at 256^3)."""


def tv_sample(n_rows: int, fraction: float, gen: torch.Generator, device: torch.device | str,
              run: int = TV_RUN) -> torch.Tensor:
    """The rows TV visits in one step: about fraction * n_rows distinct rows (at least 1), sorted, in runs of
    `run` consecutive rows: the row range splits into k / run equal strata and each stratum gives one run
    starting at a uniform position (wrapping around inside the stratum), so every row is equally likely.
    Runs let TV read the grid, its neighbours and the link table as a few streams: one random row per stratum
    (run=1) costs ~4x more on a CPU (a cache miss per row and neighbour)."""
    k = max(1, min(n_rows, int(fraction * n_rows)))
    run = max(1, min(run, k))
    n_runs = -(-k // run)
    lo = torch.arange(n_runs, device=device) * n_rows // n_runs
    size = torch.arange(1, n_runs + 1, device=device) * n_rows // n_runs - lo
    start = (torch.rand(n_runs, generator=gen, device=device) * size).long().clamp_max(size - 1)
    offset = torch.arange(run, device=device)
    rows = lo[:, None] + (start[:, None] + offset) % size[:, None]
    rows = rows[offset < size[:, None]]  # a stratum smaller than a run gives its rows once
    return torch.sort(rows).values


def tv_rows_touched(links: torch.Tensor, coords: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The rows (with repeats) whose TV gradient `tv_grads` of `rows` can be non-zero: each sampled row that has
    an allocated +x, +y or +z neighbour, and those neighbours."""
    c = coords[rows]
    out = []
    for axis in range(3):
        nb = c.clone()
        nb[:, axis] += 1
        inside = nb[:, axis] < links.shape[axis]
        nb_ids = torch.full_like(rows, -1)
        nb_ids[inside] = links[nb[inside, 0], nb[inside, 1], nb[inside, 2]].long()
        ok = nb_ids >= 0
        out += [rows[ok], nb_ids[ok]]
    return torch.cat(out)


def tv_grads_into(
    values: torch.Tensor, links: torch.Tensor, coords: torch.Tensor, rows: torch.Tensor, weight: float,
    row_map: torch.Tensor, grad: torch.Tensor, fused: bool = True,
) -> None:
    """Add the gradient of `tv_grads` into a compact gradient in place: grad (m, C) holds the rows that
    row_map (n,) int32 maps (every row of `tv_rows_touched(links, coords, rows)` must be mapped)."""
    if not rows.numel():
        return
    if fused and values.dtype == torch.float32 and grad.dtype == torch.float32 and grad.is_contiguous() \
            and fused_render.available(values.device):
        fused_render.tv_into(values, links, coords, rows, 2.0 * weight / rows.numel(), row_map, grad)
        return
    r, g = tv_grads(values, links, coords, rows, weight, fused=False)
    grad.index_add_(0, row_map[r].long(), g)


def make_grid(
    mask: torch.Tensor, density: float, world_from_grid: np.ndarray, background: torch.Tensor | None = None
) -> PlenoxelGrid:
    """A grid allocating the voxels where `mask` (X, Y, Z) bool is set, with constant density and zero SH
    (grey 0.5). Rows follow the voxels' Morton (Z-order) index (`sampling.morton_order`): the 8 corners of a
    cell and the cells a ray crosses next lie close in memory (the fused render ~15 % faster than with rows in
    x, y, z order at 256^3 on a CPU)."""
    links = torch.full(mask.shape, -1, dtype=torch.int32, device=mask.device)
    coords = torch.nonzero(mask)
    n = coords.shape[0]
    rows = torch.empty(n, dtype=torch.int32, device=mask.device)
    rows[sampling.morton_order(coords)] = torch.arange(n, dtype=torch.int32, device=mask.device)
    links[coords[:, 0], coords[:, 1], coords[:, 2]] = rows
    return PlenoxelGrid(
        links=links,
        density=torch.full((n, 1), density, dtype=torch.float32, device=mask.device),
        sh=torch.zeros((n, 27), dtype=torch.float32, device=mask.device),
        world_from_grid=np.asarray(world_from_grid, dtype=np.float64),
        background=background,
    )


def points_mask(points_cube: torch.Tensor, reso: int, dilate: int) -> torch.Tensor:
    """(R, R, R) bool: voxels holding a point of points_cube (n, 3) (cube coordinates), dilated by `dilate`."""
    idx = torch.floor((points_cube + 1.0) * 0.5 * reso).long()
    idx = idx[((idx >= 0) & (idx < reso)).all(-1)]
    mask = torch.zeros((reso, reso, reso), dtype=torch.float32, device=points_cube.device)
    mask[idx[:, 0], idx[:, 1], idx[:, 2]] = 1.0
    if dilate > 0:
        k = 2 * dilate + 1
        mask = torch.nn.functional.max_pool3d(mask[None, None], k, stride=1, padding=dilate)[0, 0]
    return mask > 0


@torch.no_grad()
def resample(grid: PlenoxelGrid, reso: int | tuple[int, int, int], keep: torch.Tensor, dilate: int = 1,
             chunk: int = 131072) -> PlenoxelGrid:
    """The field on a new resolution (an int: cubic), allocated only around the rows in `keep` (n,) bool.

    New voxels whose nearest old voxel is kept, dilated by `dilate` new voxels, are allocated; their values are
    the old field trilinearly interpolated at the new centres.
    """
    assert keep.shape == (grid.n_voxels,), f"keep must be ({grid.n_voxels},), got {tuple(keep.shape)}"
    old = grid.reso
    new_reso = (reso, reso, reso) if isinstance(reso, int) else tuple(int(r) for r in reso)
    vol = torch.zeros(old, dtype=torch.float32, device=grid.device)
    mask = grid.links >= 0
    vol[mask] = keep[grid.links[mask].long()].float()
    near = [
        torch.clamp(((2 * torch.arange(n, device=grid.device) + 1) * r) // (2 * n), max=r - 1)
        for r, n in zip(old, new_reso, strict=True)
    ]
    alloc = vol[near[0]][:, near[1]][:, :, near[2]]
    if dilate > 0:
        alloc = torch.nn.functional.max_pool3d(alloc[None, None], 2 * dilate + 1, 1, dilate)[0, 0]
    alloc = alloc > 0
    new = make_grid(alloc, 0.0, grid.world_from_grid, grid.background)
    coords = torch.nonzero(alloc)
    links_pad = sampling.pad_links(grid.links)
    res_old = torch.tensor(old, dtype=torch.float32, device=grid.device)
    for start in range(0, coords.shape[0], chunk):
        c = coords[start : start + chunk]
        centres = (2.0 * c.float() + 1.0) / torch.tensor(new_reso, dtype=torch.float32, device=grid.device) - 1.0
        flat, w = sampling.trilinear_corners(sampling.cube_to_index(centres, res_old), old)
        ids = links_pad[flat]
        w = w * (ids >= 0).float()
        rows = new.links[c[:, 0], c[:, 1], c[:, 2]].long()
        new.density[rows] = sampling.trilinear_gather(grid.density, ids.clamp_min(0), w)
        new.sh[rows] = sampling.trilinear_gather(grid.sh, ids.clamp_min(0), w)
    return new
