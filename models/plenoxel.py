"""The Plenoxel grid (Fridovich-Keil et al. 2022) as plain tensors, and inference rendering.

A `PlenoxelGrid` is svox2-like: `links` (int32 [X, Y, Z], -1 = empty) index rows of `density` (n, 1) and
`sh` (n, 27). Units and frames:
- The grid lives in the normalised cube [-1, 1]^3; voxel i of a resolution-R axis sits at (2i + 1) / R - 1.
  `world_from_grid` (4, 4 similarity) maps the cube to the world; rays given in the world frame are mapped
  into the cube with its inverse.
- `density` is raw sigma per unit length *of the cube* (so a voxel of a 256 grid is 2/256 long), used through
  ReLU after trilinear interpolation.
- SH colour (degree 2, layout [R0..R8, G0..G8, B0..B8], colour = clamp(sum c_k Y_k(d) + 0.5, 0, 1)) is
  evaluated at the unit viewing direction expressed in the cube frame (equal to the world direction when
  `world_from_grid` has no rotation).
Samples are taken every `step` voxels along each ray between its entry and exit of the occupied box; samples
in cells whose 8 corner densities are all below a threshold are dropped before any gather (`Accel`), and SH
colour is evaluated only where the compositing weight exceeds `weight_thresh`.

Entry points for other stages: `PlenoxelGrid.from_sparse` / `to_sparse`, `render_rays` (world rays, no grad)
and `render_camera` (a whole pinhole camera in chunks with bounded memory).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from perfdata.models import background as background_model
from perfdata.models import fused as fused_render
from perfdata.models import ndc as ndc_space
from perfdata.models import sampling, sh, volrend

from perfdata.grid import SparseGrid
from perfdata.ndc import NDC


@dataclass
class PlenoxelGrid:
    """Sparse voxel grid of density and SH colour (tensors on one device).

    Attributes:
        links: (X, Y, Z) int32 row of each voxel, -1 = not allocated.
        density: (n, 1) float32 raw sigma per cube unit.
        sh: (n, 27) float32 SH coefficients.
        world_from_grid: (4, 4) float64 numpy similarity cube -> world.
        background: (3,) float32 colour behind the field, or None (black); with `msi`, behind its last layer.
        msi: the multi-sphere background outside the cube (`perfdata.models.background`), or None.
        ndc: with a forward-facing fit, the NDC space the cube lies in (`perfdata.models.ndc`): world rays are
            mapped into NDC, then by the inverse of world_from_grid; None: world_from_grid alone.
    """

    links: torch.Tensor
    density: torch.Tensor
    sh: torch.Tensor
    world_from_grid: np.ndarray
    background: torch.Tensor | None = None
    msi: background_model.MSI | None = None
    ndc: NDC | None = None

    def __post_init__(self) -> None:
        n = self.density.shape[0]
        assert self.links.ndim == 3, f"links must be (X, Y, Z), got {tuple(self.links.shape)}"
        assert self.density.shape == (n, 1), f"density must be (n, 1), got {tuple(self.density.shape)}"
        assert self.sh.shape == (n, 27), f"sh must be ({n}, 27), got {tuple(self.sh.shape)}"

    @property
    def reso(self) -> tuple[int, int, int]:
        return tuple(int(r) for r in self.links.shape)  # type: ignore[return-value]

    @property
    def n_voxels(self) -> int:
        return int(self.density.shape[0])

    @property
    def device(self) -> torch.device:
        return self.density.device

    @classmethod
    def from_sparse(cls, grid: SparseGrid, device: str | torch.device = "cpu") -> PlenoxelGrid:
        """A grid from the exchange format (`perfdata.grid.SparseGrid`, SH degree 2)."""
        if grid.sh_degree != 2:
            raise ValueError(f"PlenoxelGrid needs SH degree 2, got {grid.sh_degree}")
        links = torch.full(tuple(grid.reso), -1, dtype=torch.int32)
        c = torch.from_numpy(grid.coords.astype(np.int64))
        links[c[:, 0], c[:, 1], c[:, 2]] = torch.arange(len(c), dtype=torch.int32)
        bg = None if grid.background is None else torch.as_tensor(grid.background, dtype=torch.float32, device=device)
        msi = None
        if grid.msi is not None:
            behind = bg if bg is not None else torch.zeros(3, device=device)
            msi = background_model.MSI(torch.as_tensor(grid.msi, dtype=torch.float32).to(device), behind)
        return cls(
            links=links.to(device),
            density=torch.as_tensor(grid.density, dtype=torch.float32).reshape(-1, 1).to(device),
            sh=torch.as_tensor(grid.sh, dtype=torch.float32).to(device),
            world_from_grid=np.asarray(grid.world_from_grid, dtype=np.float64),
            background=bg,
            msi=msi,
            ndc=None if grid.ndc is None else NDC.from_array(grid.ndc),
        )

    def to_sparse(self) -> SparseGrid:
        """The allocated voxels as a `SparseGrid`, rows sorted by linear index."""
        coords = torch.nonzero(self.links >= 0)
        rows = self.links[coords[:, 0], coords[:, 1], coords[:, 2]].long()
        return SparseGrid(
            coords=coords.cpu().numpy().astype(np.int32),
            density=self.density[rows, 0].detach().cpu().numpy().astype(np.float32),
            sh=self.sh[rows].detach().cpu().numpy().astype(np.float32),
            reso=self.reso,
            world_from_grid=self.world_from_grid.copy(),
            sh_degree=2,
            background=None if self.background is None else self.background.detach().cpu().numpy(),
            msi=None if self.msi is None else self.msi.to_numpy(),
            ndc=None if self.ndc is None else self.ndc.to_array(),
        )

    def dense_density(self) -> torch.Tensor:
        """(X, Y, Z) ReLU density, 0 where not allocated."""
        values = torch.cat([self.density.new_zeros(1), self.density[:, 0].clamp_min(0.0)])  # row -1 -> 0
        return values.index_select(0, (self.links + 1).reshape(-1)).reshape(self.reso)


@dataclass(frozen=True)
class Accel:
    """What rendering needs besides the parameters; rebuild it after the densities change much.

    Attributes:
        links: the grid's (X, Y, Z) int32 link table (not a copy); the layouts each render path reads are made
            from it at first use (`links_pad` for the plain path, `links_bricked` for the fused one), so a fit
            holds only the one its path needs.
        occupied: ((X+1)(Y+1)(Z+1),) bool: cell c (between voxels c and c + 1 per axis, c from -1) holds a
            corner with density above the threshold.
        box_lo, box_hi: (3,) cube-coordinate box around the occupied cells (rays are marched only inside).
        reso: grid resolution. step: sample spacing in voxels.
        coarse: ((X+1)/c (Y+1)/c (Z+1)/c,) bool, rounded up: blocks of c^3 cells holding an occupied cell,
            dilated by one block (`march` tests these first, for runs of samples at once).
        coarse_dims: its shape. coarse_factor: c.
    """

    links: torch.Tensor
    occupied: torch.Tensor
    box_lo: torch.Tensor
    box_hi: torch.Tensor
    reso: tuple[int, int, int]
    step: float
    coarse: torch.Tensor
    coarse_dims: tuple[int, int, int]
    coarse_factor: int

    @functools.cached_property
    def links_pad(self) -> torch.Tensor:
        """((X+2)(Y+2)(Z+2),) int64 padded link table (`sampling.pad_links`)."""
        return sampling.pad_links(self.links)

    @functools.cached_property
    def _bricked(self) -> tuple[torch.Tensor, tuple[int, int, int]]:
        return sampling.brick_links(self.links)

    @property
    def links_bricked(self) -> torch.Tensor:
        """The padded link table as int32 bricks of 4^3 (`sampling.brick_links`), the fused kernels' layout."""
        return self._bricked[0]

    @property
    def brick_dims(self) -> tuple[int, int, int]:
        """Bricks of `links_bricked` per axis."""
        return self._bricked[1]

    @property
    def step_cube(self) -> float:
        """Sample spacing in cube units (along unit directions)."""
        return self.step * 2.0 / max(self.reso)


def build_accel(
    grid: PlenoxelGrid, step: float = 0.5, density_thresh: float | None = None, coarse_factor: int = 4
) -> Accel:
    """Padded links and the cell occupancy of `grid`.

    A cell is occupied when a corner's density exceeds `density_thresh` (default: the density whose alpha over
    one step is 1e-4, so dropped samples change the image by less than 1e-4 each).
    """
    reso = grid.reso
    step_cube = step * 2.0 / max(reso)
    thresh = -np.log1p(-1e-4) / step_cube if density_thresh is None else density_thresh
    above = torch.nn.functional.pad(grid.dense_density() > thresh, (1, 1, 1, 1, 1, 1))
    occ = _any_of_pairs(above)  # cell q: any of its 8 corners (padded voxels q .. q + 1) above the threshold
    res = torch.tensor(reso, dtype=torch.float32, device=grid.device)
    if not bool(occ.any()):
        lo = hi = torch.zeros(3, device=grid.device)
    else:  # cell q (= c + 1) spans index coordinates [q - 1, q]
        first, last = _occupied_range(occ)
        lo = ((first.float() - 1.0 + 0.5) * 2.0 / res - 1.0).clamp(-1.0, 1.0)
        hi = ((last.float() + 0.5) * 2.0 / res - 1.0).clamp(-1.0, 1.0)
    c = coarse_factor
    pads = [(-n) % c for n in occ.shape]
    occ_p = torch.nn.functional.pad(occ, (0, pads[2], 0, pads[1], 0, pads[0]))
    b = [n // c for n in occ_p.shape]
    coarse = occ_p.reshape(b[0], c, b[1], c, b[2], c).any(5).any(3).any(1)
    coarse = torch.nn.functional.max_pool3d(coarse.float()[None, None], 3, 1, 1)[0, 0] > 0
    dims = tuple(int(n) for n in coarse.shape)
    return Accel(grid.links, occ.reshape(-1), lo, hi, reso, step, coarse.reshape(-1), dims, c)  # type: ignore[arg-type]


def _any_of_pairs(a: torch.Tensor) -> torch.Tensor:
    """(X, Y, Z) bool -> (X-1, Y-1, Z-1): a 2x2x2 window holds a True (max_pool3d(2, stride 1), separably)."""
    a = a[:-1] | a[1:]
    a = a[:, :-1] | a[:, 1:]
    return a[:, :, :-1] | a[:, :, 1:]


def _occupied_range(occ: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last index (3,) along each axis of the True cells of occ (X, Y, Z) bool (at least one)."""
    first, last = [], []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        idx = torch.nonzero(occ.any(others[1]).any(others[0])).squeeze(-1)
        first.append(idx[0])
        last.append(idx[-1])
    return torch.stack(first), torch.stack(last)


def rays_to_cube(grid_from_world: np.ndarray, origins: torch.Tensor, dirs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """World rays -> cube rays.

    Args:
        grid_from_world: (4, 4) inverse of world_from_grid. origins, dirs: (n, 3) world rays.
    Returns:
        origins (n, 3), unit directions (n, 3) in the cube, and z_scale (n,) = 1 / |cube dir| so that a cube
        distance t along the unit direction is the world ray parameter t * z_scale (the z-depth when the world
        directions have camera-z 1).
    """
    T = torch.as_tensor(grid_from_world, dtype=origins.dtype, device=origins.device)
    o = origins @ T[:3, :3].T + T[:3, 3]
    d = dirs @ T[:3, :3].T
    norm = d.norm(dim=-1).clamp_min(1e-12)
    return o, d / norm[:, None], 1.0 / norm


@dataclass(frozen=True)
class CubeRays:
    """World rays in a grid's cube: origins (n, 3), unit directions (n, 3), and the map from a cube distance t
    to the world ray parameter: t * z_scale, or through NDC (`ndc_rays`) when the grid lies in NDC."""

    origins: torch.Tensor
    dirs: torch.Tensor
    z_scale: torch.Tensor
    ndc_rays: ndc_space.NDCRays | None = None

    def world_parameter(self, t: torch.Tensor) -> torch.Tensor:
        """(n,) world ray parameter of cube distances t (n,): z-depth for directions with camera-z 1."""
        if self.ndc_rays is None:
            return t * self.z_scale
        return self.ndc_rays.world_parameter(t * self.z_scale)


def world_to_cube(grid_from_world: np.ndarray, ndc: NDC | None, origins: torch.Tensor,
                  dirs: torch.Tensor) -> CubeRays:
    """World rays (n, 3) -> cube rays of a grid with this inverse world_from_grid (and NDC space, or None)."""
    nr = None if ndc is None else ndc_space.rays(ndc, origins, dirs)
    o, d, zs = rays_to_cube(grid_from_world, origins, dirs) if nr is None else \
        rays_to_cube(grid_from_world, nr.origins, nr.dirs)
    return CubeRays(o, d, zs, nr)


def grid_rays(grid: PlenoxelGrid, origins: torch.Tensor, dirs: torch.Tensor) -> CubeRays:
    """World rays (n, 3) -> `grid`'s cube rays, on its device."""
    return world_to_cube(np.linalg.inv(grid.world_from_grid), grid.ndc, origins.to(grid.device), dirs.to(grid.device))


def march(
    accel: Accel, origins: torch.Tensor, dirs: torch.Tensor, offset: torch.Tensor | float = 0.5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Packed samples of cube rays in occupied cells.

    Samples sit at cube_entry + (k + offset) * step (whatever the occupied box, so skipping never moves them).
    Runs of B = coarse_factor / step samples (at most coarse_factor voxels long) are tested first against the
    dilated coarse occupancy at their midpoint -- a run's samples lie within coarse_factor / 2 voxels of it, so
    any occupied cell they touch is in the dilated block -- and only runs that pass are tested sample by sample.

    Args:
        origins: (n_rays, 3) cube origins. dirs: (n_rays, 3) unit cube directions.
        offset: (n_rays,) or scalar in [0, 1): position of the first sample within its step.
    Returns:
        ray_indices (n,) int64 (non-decreasing), t (n,) cube distance of each sample, u (n, 3) index coordinates.
    """
    assert origins.shape == dirs.shape and origins.shape[-1] == 3, "origins and dirs must be (n_rays, 3)"
    dev, dt = origins.device, origins.dtype
    empty = (torch.zeros(0, dtype=torch.long, device=dev), origins.new_zeros(0), origins.new_zeros(0, 3))
    t_cube, _ = sampling.ray_box_intersect(origins, dirs)
    t_near, t_far = sampling.ray_box_intersect(origins, dirs, accel.box_lo, accel.box_hi)
    step = accel.step_cube
    n_run = max(1, int(accel.coarse_factor / accel.step))
    k0 = torch.floor((t_near - t_cube) / step - 1.0).clamp_min(0.0)
    span = (t_far - t_cube - k0 * step).clamp_min(0.0) * (t_far > t_near)
    n_blocks = int(torch.ceil(span.max() / (step * n_run)).item()) + 1 if span.numel() else 0
    if n_blocks <= 1 or not bool(accel.coarse.any()):
        return empty
    res = torch.tensor(accel.reso, dtype=dt, device=dev)
    off = offset if isinstance(offset, float) else offset[:, None]
    # coarse pass: midpoints of runs (n_rays, n_blocks)
    j = torch.arange(n_blocks, device=dev, dtype=dt)
    t_mid = t_cube[:, None] + (k0[:, None] + j[None, :] * n_run + 0.5 * (n_run - 1) + off) * step
    u_mid = sampling.cube_to_index(origins[:, None, :] + t_mid[..., None] * dirs[:, None, :], res)
    cb = ((torch.minimum(u_mid.clamp_min(-1.0), res - 1.0).floor() + 1.0) / accel.coarse_factor).long()
    cd = accel.coarse_dims
    run_ok = accel.coarse[(cb[..., 0] * cd[1] + cb[..., 1]) * cd[2] + cb[..., 2]]
    run_ok &= (t_mid - 0.5 * n_run * step < t_far[:, None]) & (t_mid + 0.5 * n_run * step >= t_near[:, None])
    ray_b, j_b = torch.nonzero(run_ok, as_tuple=True)
    if ray_b.numel() == 0:
        return empty
    # fine pass: every sample of the runs that passed, (n_runs * n_run,)
    ray_idx = ray_b.repeat_interleave(n_run)
    k = (k0[ray_b][:, None] + j_b[:, None].to(dt) * n_run + torch.arange(n_run, device=dev, dtype=dt)).reshape(-1)
    off_s = off if isinstance(off, float) else offset[ray_idx]  # type: ignore[index]
    t = t_cube[ray_idx] + (k + off_s) * step
    u = sampling.cube_to_index(origins[ray_idx] + t[:, None] * dirs[ray_idx], res)
    cell = torch.minimum(u.clamp_min(-1.0), res - 1.0).floor().long() + 1
    r1 = [r + 1 for r in accel.reso]
    keep = accel.occupied[(cell[:, 0] * r1[1] + cell[:, 1]) * r1[2] + cell[:, 2]]
    keep &= (t < t_far[ray_idx]) & (t >= t_near[ray_idx])
    sel = torch.nonzero(keep).squeeze(-1)
    return ray_idx[sel], t[sel], u[sel]


def lookup(accel: Accel, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows and weights of the 8 corners of points u (n, 3) (index coordinates): ids (n, 8) int64 with -1 =
    empty, and w (n, 8) trilinear weights with empty corners zeroed."""
    flat, w = sampling.trilinear_corners(u, accel.reso)
    ids = accel.links_pad[flat]
    return ids, w * (ids >= 0).to(w.dtype)


@torch.no_grad()
def render_cube_rays(
    grid: PlenoxelGrid, accel: Accel, origins: torch.Tensor, dirs: torch.Tensor, z_scale: torch.Tensor,
    background: torch.Tensor, weight_thresh: float = 1e-4, fused: bool = True,
) -> dict[str, torch.Tensor]:
    """Render cube rays with empty-space skipping (see `render_rays` for the outputs).

    With `fused` (default) the fused kernels (`perfdata.models.fused`) render where they compile for the
    device; else, or with fused=False, the plain PyTorch path below (the reference)."""
    if fused and origins.shape[0] and fused_render.available(origins.device):
        rgb, depth, opacity = fused_render.render_rays(grid, accel, origins, dirs, weight_thresh)
        return {"rgb": volrend.add_background(rgb, opacity, background), "depth": depth * z_scale, "opacity": opacity}
    n_rays = origins.shape[0]
    ray_idx, t, u = march(accel, origins, dirs)
    ids, w = lookup(accel, u)
    sigma = sampling.trilinear_gather(grid.density, ids.clamp_min(0), w).squeeze(-1).clamp_min(0.0)
    weights, _ = volrend.render_weights_packed(sigma, accel.step_cube, ray_idx, n_rays)
    opacity = volrend.accumulate_opacity(weights, ray_idx, n_rays)
    depth = volrend.composite_packed(weights, t, ray_idx, n_rays) * z_scale
    sel = weights > weight_thresh
    rays_sel = ray_idx[sel]
    basis = sh.eval_sh_basis(dirs)[rays_sel]
    coeffs = sampling.trilinear_gather(grid.sh, ids[sel].clamp_min(0), w[sel])
    rgb = volrend.composite_packed(weights[sel], sh.sh_to_rgb(coeffs, basis), rays_sel, n_rays)
    return {"rgb": volrend.add_background(rgb, opacity, background), "depth": depth, "opacity": opacity}


def default_background(grid: PlenoxelGrid) -> torch.Tensor:
    return grid.background if grid.background is not None else torch.zeros(3, device=grid.device)


def ray_background(grid: PlenoxelGrid, origins: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """What lies behind the grid along cube rays: (n, 3) from its MSI, else its constant colour (3,)."""
    if grid.msi is not None:
        return background_model.render(grid.msi, origins, dirs)
    return default_background(grid)


@torch.no_grad()
def render_rays(
    grid: PlenoxelGrid, origins: torch.Tensor, dirs: torch.Tensor, step: float = 0.5,
    background: torch.Tensor | None = None, accel: Accel | None = None, weight_thresh: float = 1e-4,
    fused: bool = True,
) -> dict[str, torch.Tensor]:
    """Render world rays (no grad).

    Args:
        grid: the field. origins: (n, 3) world ray origins. dirs: (n, 3) world directions; with camera-z 1
            (`perfdata.camera.pixel_rays`) the returned depth is z-depth, with unit directions ray distance.
        step: sample spacing in voxels. background: (3,) colour; default the grid's own: its MSI along each
            ray (`ray_background`), else its colour, else black.
        accel: a prebuilt `build_accel(grid, step)` to reuse across calls.
        weight_thresh: SH colour is evaluated only where the compositing weight exceeds this.
        fused: use the fused kernels where they compile (see `render_cube_rays`).
    Returns:
        dict of rgb (n, 3), depth (n,) in world units (expected depth, opacity-weighted; 0 where empty; in NDC
        the depth of the expected NDC point, times opacity) and opacity (n,).
    """
    assert origins.shape == dirs.shape and origins.ndim == 2 and origins.shape[1] == 3, "rays must be (n, 3)"
    accel = build_accel(grid, step) if accel is None else accel
    cube = grid_rays(grid, origins, dirs)
    bg = ray_background(grid, cube.origins, cube.dirs) if background is None else background.to(grid.device)
    if cube.ndc_rays is None:
        return render_cube_rays(grid, accel, cube.origins, cube.dirs, cube.z_scale, bg, weight_thresh, fused)
    out = render_cube_rays(grid, accel, cube.origins, cube.dirs, torch.ones_like(cube.z_scale), bg, weight_thresh,
                           fused)
    # NDC: the world depth of the expected cube distance (exact for one surface), weighted by opacity
    opacity = out["opacity"]
    t_mean = out["depth"] / opacity.clamp_min(1e-6)
    out["depth"] = torch.where(opacity > 1e-6, cube.world_parameter(t_mean) * opacity, torch.zeros_like(opacity))
    return out


@torch.no_grad()
def render_camera(
    grid: PlenoxelGrid, K: np.ndarray, c2w: np.ndarray, width: int, height: int, step: float = 0.5,
    background: torch.Tensor | None = None, chunk: int = 16384, accel: Accel | None = None, fused: bool = True,
) -> dict[str, torch.Tensor]:
    """Render a pinhole camera (K (3, 3) pixels, c2w (4, 4) OpenCV axes, world frame) in chunks of `chunk`
    rays, so memory stays bounded whatever the image size (`fused` as in `render_cube_rays`).

    Returns:
        dict of rgb (H, W, 3), depth (H, W) z-depth in world units, opacity (H, W), on the grid's device.
    """
    from perfdata import camera

    accel = build_accel(grid, step) if accel is None else accel
    uv = camera.pixel_grid(width, height)
    parts: dict[str, list[torch.Tensor]] = {"rgb": [], "depth": [], "opacity": []}
    for start in range(0, len(uv), chunk):
        o, d = camera.pixel_rays(K, c2w, uv[start : start + chunk])
        out = render_rays(
            grid, torch.from_numpy(o).float(), torch.from_numpy(d).float(), step, background, accel, fused=fused
        )
        for key in parts:
            parts[key].append(out[key])
    return {
        "rgb": torch.cat(parts["rgb"]).reshape(height, width, 3),
        "depth": torch.cat(parts["depth"]).reshape(height, width),
        "opacity": torch.cat(parts["opacity"]).reshape(height, width),
    }


@torch.no_grad()
def render_cube_rays_dense(
    grid: PlenoxelGrid, origins: torch.Tensor, dirs: torch.Tensor, z_scale: torch.Tensor,
    background: torch.Tensor, step: float = 0.5,
) -> dict[str, torch.Tensor]:
    """The plain reference of `render_cube_rays`: every sample of every ray through the whole cube, plain-autograd
    gathers, dense `(n_rays, n_samples)` compositing, colour everywhere. Slow; for tests."""
    n_rays = origins.shape[0]
    step_cube = step * 2.0 / max(grid.reso)
    t_near, t_far = sampling.ray_box_intersect(origins, dirs)
    n_max = max(int(torch.ceil((t_far - t_near).clamp_min(0).max() / step_cube).item()) + 1, 1)
    t = t_near[:, None] + (torch.arange(n_max, dtype=origins.dtype, device=origins.device) + 0.5) * step_cube
    inside = t < t_far[:, None]
    res = torch.tensor(grid.reso, dtype=origins.dtype, device=origins.device)
    u = sampling.cube_to_index(origins[:, None, :] + t[..., None] * dirs[:, None, :], res).reshape(-1, 3)
    flat, w = sampling.trilinear_corners(u, grid.reso)
    ids = sampling.pad_links(grid.links)[flat]
    w = w * (ids >= 0).to(w.dtype)
    sigma = sampling.trilinear_gather_reference(grid.density, ids.clamp_min(0), w).reshape(n_rays, n_max)
    sigma = sigma.clamp_min(0.0) * inside
    weights, _ = volrend.render_weights(sigma, torch.full_like(sigma, step_cube))
    coeffs = sampling.trilinear_gather_reference(grid.sh, ids.clamp_min(0), w)
    basis = sh.eval_sh_basis(dirs)[:, None, :].expand(n_rays, n_max, 9).reshape(-1, 9)
    colour = sh.sh_to_rgb(coeffs, basis).reshape(n_rays, n_max, 3)
    opacity = volrend.accumulate_opacity(weights)
    rgb = volrend.add_background(volrend.composite(weights, colour), opacity, background)
    return {"rgb": rgb, "depth": volrend.composite(weights, t) * z_scale, "opacity": opacity}
