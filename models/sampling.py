"""Ray-box intersection and 8-corner trilinear interpolation over flat voxel rows.

Grid convention (DESIGN.md section 2): voxel i of a resolution-R axis sits at x = (2i + 1) / R - 1 in the cube
[-1, 1]; its *index coordinate* is u = (x + 1) R / 2 - 1/2, so voxel centres sit at integers. Trilinear
interpolation mixes the 8 voxels around a point; voxels outside the grid or not allocated count as zero (what
`F.grid_sample(..., align_corners=False, padding_mode="zeros")` does on a dense volume).

Lookups go through a padded link table: `links` (R+2)^3 flattened, with a border of -1, so the 8 corners of any
point inside the cube index it without bounds checks.
"""

from __future__ import annotations

from typing import Any

import torch


def ray_box_intersect(
    origins: torch.Tensor, dirs: torch.Tensor, lo: torch.Tensor | float = -1.0, hi: torch.Tensor | float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit parameters of rays through the box [lo, hi] (slab method).

    Args:
        origins: (n_rays, 3). dirs: (n_rays, 3), any length (t is in units of |dir|).
        lo, hi: scalars or (3,) box corners.
    Returns:
        t_near (n_rays,) clamped at 0 and t_far (n_rays,); a ray missing the box has t_far <= t_near.
    """
    assert origins.shape == dirs.shape and origins.shape[-1] == 3, "origins and dirs must be (n_rays, 3)"
    safe = torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    inv = 1.0 / safe
    t0 = (lo - origins) * inv
    t1 = (hi - origins) * inv
    t_near = torch.minimum(t0, t1).amax(-1).clamp_min(0.0)
    t_far = torch.maximum(t0, t1).amin(-1)
    return t_near, t_far


def cube_to_index(points: torch.Tensor, reso: torch.Tensor) -> torch.Tensor:
    """(n, 3) cube coordinates in [-1, 1] -> (n, 3) index coordinates u = (x + 1) R / 2 - 1/2."""
    return (points + 1.0) * (0.5 * reso) - 0.5


def padded_strides(reso: tuple[int, int, int]) -> tuple[int, int, int]:
    """Strides of the padded (R+2)^3 link table, x slowest: links_pad[x + 1, y + 1, z + 1]."""
    return ((reso[1] + 2) * (reso[2] + 2), reso[2] + 2, 1)


def pad_links(links: torch.Tensor) -> torch.Tensor:
    """(X, Y, Z) int32 links -> flat ((X+2)(Y+2)(Z+2),) int64 with a border of -1."""
    padded = torch.full([n + 2 for n in links.shape], -1, dtype=torch.long, device=links.device)
    padded[1:-1, 1:-1, 1:-1] = links
    return padded.reshape(-1)


def morton_order(coords: torch.Tensor) -> torch.Tensor:
    """The permutation (n,) int64 that sorts voxel coordinates (n, 3) (each < 2^20) by their Morton (Z-order)
    index: the bits of x, y, z interleaved, x's highest."""
    key = torch.zeros(coords.shape[0], dtype=torch.long, device=coords.device)
    c = coords.long()
    bits = int(c.max()).bit_length() if c.numel() else 0
    for bit in range(bits):
        for axis in range(3):
            key |= ((c[:, axis] >> bit) & 1) << (3 * bit + 2 - axis)
    return torch.argsort(key)


def brick_links(links: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """(X, Y, Z) int32 links -> the padded table of `pad_links` (entry [x + 1, y + 1, z + 1], border -1) as
    int32 in bricks of 4^3: flat (n_bricks * 64,), brick (bx, by, bz) at ((bx B_y + by) B_z + bz) * 64, entry
    (i, j, k) of a brick at 16 i + 4 j + k; and the bricks per axis (B_x, B_y, B_z) = ceil((R + 2) / 4). The 8
    corners of a cell lie in one brick most of the time (the fused kernels' layout)."""
    dims = tuple(-(-(n + 2) // 4) for n in links.shape)
    table = torch.full([4 * d for d in dims], -1, dtype=torch.int32, device=links.device)
    table[1: links.shape[0] + 1, 1: links.shape[1] + 1, 1: links.shape[2] + 1] = links
    bricks = table.reshape(dims[0], 4, dims[1], 4, dims[2], 4).permute(0, 2, 4, 1, 3, 5)
    return bricks.contiguous().reshape(-1), dims  # type: ignore[return-value]


def trilinear_corners(u: torch.Tensor, reso: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8 corners of points given in index coordinates.

    Args:
        u: (n, 3) index coordinates, each within [-1/2, R - 1/2] (points inside the cube).
        reso: grid resolution (X, Y, Z).
    Returns:
        flat (n, 8) int64 positions in the padded link table, and weights (n, 8) trilinear weights summing to 1.
    """
    assert u.ndim == 2 and u.shape[1] == 3, f"u must be (n, 3), got {tuple(u.shape)}"
    hi = torch.tensor([r - 1 for r in reso], dtype=u.dtype, device=u.device)
    i0 = torch.minimum(torch.floor(u).clamp_min(-1.0), hi)  # in [-1, R - 1]: corners stay in the padded table
    f = (u - i0).clamp(0.0, 1.0)
    sx, sy, sz = padded_strides(reso)
    i0 = i0.long() + 1
    base = i0[:, 0] * sx + i0[:, 1] * sy + i0[:, 2] * sz
    offsets = torch.tensor(
        [dx * sx + dy * sy + dz * sz for dx in (0, 1) for dy in (0, 1) for dz in (0, 1)], device=u.device
    )
    wx = torch.stack([1.0 - f[:, 0], f[:, 0]], -1)
    wy = torch.stack([1.0 - f[:, 1], f[:, 1]], -1)
    wz = torch.stack([1.0 - f[:, 2], f[:, 2]], -1)
    w = (wx[:, :, None, None] * wy[:, None, :, None] * wz[:, None, None, :]).reshape(-1, 8)
    return base[:, None] + offsets[None, :], w


def compact_rows(ids: torch.Tensor, n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct rows a lookup touches, and the lookup rewritten against them.

    Args:
        ids: (...) int64 rows of a parameter table with `n_rows` rows, any shape (e.g. (n, 8)); -1 = empty.
        n_rows: rows in the table.
    Returns:
        rows (m,) sorted distinct non-negative ids, and local (...) positions in `rows`, shaped like `ids`
        (empties -> 0; callers zero their weights).
    """
    flag = torch.zeros(n_rows + 1, dtype=torch.bool, device=ids.device)
    flag[ids.reshape(-1) + 1] = True
    rows = torch.nonzero(flag[1:]).squeeze(-1)
    lookup = torch.zeros(n_rows + 1, dtype=torch.long, device=ids.device)
    lookup[rows + 1] = torch.arange(rows.numel(), device=ids.device)
    return rows, lookup[ids + 1]


class _TrilinearGather(torch.autograd.Function):
    """out[i] = sum_c w[i, c] * values[idx[i, c]]; backward scatters into the rows with index_add_.

    Forward: one gather + addcmul per corner (on lego ~20% faster on CPU than gathering (n, 8, C) and a bmm);
    backward: one index_add_ of all 8 n rows (faster than 8 separate scatters, and than autograd's backward of
    indexing, which sorts)."""

    @staticmethod
    def forward(ctx: Any, values: torch.Tensor, idx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(idx, w)
        ctx.n_rows = values.shape[0]
        w = w.to(values.dtype)
        out = values.index_select(0, idx[:, 0]) * w[:, :1]
        for c in range(1, 8):
            out.addcmul_(values.index_select(0, idx[:, c]), w[:, c : c + 1])
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        idx, w = ctx.saved_tensors
        grad_values = None
        if ctx.needs_input_grad[0]:
            c = grad_out.shape[1]
            contrib = (w.to(grad_out.dtype).unsqueeze(-1) * grad_out.unsqueeze(1)).reshape(-1, c)
            grad_values = torch.zeros((ctx.n_rows, c), dtype=grad_out.dtype, device=grad_out.device)
            grad_values.index_add_(0, idx.reshape(-1), contrib)
        return grad_values, None, None


def trilinear_gather(values: torch.Tensor, idx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Trilinear interpolation of per-voxel rows (differentiable in `values`).

    Args:
        values: (m, C) parameter rows. idx: (n, 8) int64 rows of the 8 corners. w: (n, 8) corner weights
            (0 for empty corners).
    Returns:
        (n, C) interpolated features.
    """
    assert idx.ndim == 2 and idx.shape[1] == 8 and w.shape == idx.shape, "idx and w must be (n, 8)"
    assert values.ndim == 2, f"values must be (m, C), got {tuple(values.shape)}"
    return _TrilinearGather.apply(values, idx, w)


def trilinear_gather_reference(values: torch.Tensor, idx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Plain-autograd version of `trilinear_gather` (the slow reference the tests hold it equal to)."""
    return (w.unsqueeze(-1).to(values.dtype) * values[idx]).sum(1)
