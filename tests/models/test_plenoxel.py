import numpy as np
import torch
from perfdata.models import plenoxel, plenoxel_train, sampling
from perfdata.models.optim import SparseRMSProp, merge_sparse

from perfdata import camera
from perfdata.grid import SparseGrid
from perfdata.scene import similarity


def _blob_grid(reso: int = 24, seed: int = 0) -> plenoxel.PlenoxelGrid:
    """A ball of density with random colour, most of the cube empty, in a scaled and shifted world frame."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.stack(torch.meshgrid(*[torch.arange(reso)] * 3, indexing="ij"), -1)
    centres = (2.0 * idx + 1.0) / reso - 1.0
    r = centres.norm(dim=-1)
    mask = r < 0.6
    grid = plenoxel_train.make_grid(mask, 0.0, similarity(2.0, np.array([1.0, -2.0, 0.5])))
    grid.density[:] = (40.0 * (0.6 - r[mask]) / 0.6)[:, None] + torch.randn(grid.n_voxels, 1, generator=g)
    grid.sh[:] = 0.3 * torch.randn(grid.n_voxels, 27, generator=g)
    grid.background = torch.tensor([1.0, 1.0, 1.0])
    return grid


def _camera(grid: plenoxel.PlenoxelGrid, size: int = 20):
    eye = grid.world_from_grid[:3, 3] + np.array([5.0, -4.0, 3.0])
    c2w = camera.look_at(eye, grid.world_from_grid[:3, 3])
    K = camera.intrinsics_from_fov(0.6, size, size)
    return K, c2w


def test_sparse_round_trip() -> None:
    grid = _blob_grid()
    sparse = grid.to_sparse()
    assert isinstance(sparse, SparseGrid) and sparse.n_voxels == grid.n_voxels
    again = plenoxel.PlenoxelGrid.from_sparse(sparse)
    mask = grid.links >= 0  # the same voxels with the same values (rows may be numbered in another order)
    assert torch.equal(again.links >= 0, mask)
    rows, again_rows = grid.links[mask].long(), again.links[mask].long()
    assert torch.equal(again.density[again_rows], grid.density[rows])
    assert torch.equal(again.sh[again_rows], grid.sh[rows])
    assert torch.equal(again.background, grid.background)


def test_make_grid_numbers_rows_in_morton_order() -> None:
    grid = _blob_grid(12)
    coords = plenoxel_train.voxel_coords(grid)
    assert torch.equal(sampling.morton_order(coords), torch.arange(grid.n_voxels))
    assert grid.n_voxels == int((grid.links >= 0).sum()) and torch.equal(
        torch.sort(grid.links[grid.links >= 0]).values, torch.arange(grid.n_voxels, dtype=torch.int32))


def test_skipping_render_equals_dense_render() -> None:
    grid = _blob_grid()
    K, c2w = _camera(grid)
    o, d = camera.image_rays(K, c2w, 20, 20)
    o, d = torch.from_numpy(o).float(), torch.from_numpy(d).float()
    fast = plenoxel.render_rays(grid, o, d)
    oc, dc, zs = plenoxel.rays_to_cube(np.linalg.inv(grid.world_from_grid), o, d)
    slow = plenoxel.render_cube_rays_dense(grid, oc, dc, zs, grid.background)
    assert float(slow["opacity"].max()) > 0.99 and float(slow["opacity"].min()) < 0.01  # hits and misses
    assert torch.allclose(fast["rgb"], slow["rgb"], atol=2e-3)
    assert torch.allclose(fast["opacity"], slow["opacity"], atol=2e-3)
    assert torch.allclose(fast["depth"], slow["depth"], rtol=2e-3, atol=2e-3)
    # with no thresholds the two are the same computation
    exact = plenoxel.render_rays(grid, o, d, accel=plenoxel.build_accel(grid, 0.5, density_thresh=0.0), weight_thresh=0.0)
    assert torch.allclose(exact["rgb"], slow["rgb"], atol=1e-5)


def test_render_camera_chunks_and_depth() -> None:
    grid = _blob_grid()
    grid.density[:] = 400.0  # a hard ball: opaque within a voxel of its surface
    K, c2w = _camera(grid, 16)
    whole = plenoxel.render_camera(grid, K, c2w, 16, 16, chunk=1 << 20)
    chunked = plenoxel.render_camera(grid, K, c2w, 16, 16, chunk=37)
    assert whole["rgb"].shape == (16, 16, 3) and whole["depth"].shape == (16, 16)
    assert torch.allclose(whole["rgb"], chunked["rgb"], atol=1e-6)
    # the centre pixel looks at the ball (radius 0.6 * scale 2 = 1.2 around the world centre): z-depth ~ |eye| - 1.2
    dist = float(np.linalg.norm([5.0, -4.0, 3.0]))
    centre = whole["depth"][8, 8] / whole["opacity"][8, 8]
    assert abs(float(centre) - (dist - 1.2)) < 0.25


def test_resample_keeps_the_image() -> None:
    grid = _blob_grid(16)
    finer = plenoxel_train.resample(grid, 32, keep=grid.density[:, 0] > 1.0)
    assert finer.reso == (32, 32, 32) and finer.n_voxels < 32**3
    K, c2w = _camera(grid, 16)
    a = plenoxel.render_camera(grid, K, c2w, 16, 16)
    b = plenoxel.render_camera(finer, K, c2w, 16, 16)
    assert float((a["rgb"] - b["rgb"]).abs().mean()) < 0.03


def test_sparse_rmsprop_touches_only_given_rows() -> None:
    param = torch.zeros(6, 2)
    opt = SparseRMSProp(6, 2, beta=0.9)
    rows, grad = merge_sparse([(torch.tensor([1, 3]), torch.ones(2, 2)), (torch.tensor([3]), torch.ones(1, 2))], 6)
    assert rows.tolist() == [1, 3] and grad[1].tolist() == [2.0, 2.0]
    opt.step_(param, rows, grad, lr=0.5)
    # first step: v = 0.1 g^2 -> update = lr / sqrt(0.1)
    assert torch.allclose(param[[1, 3]], torch.full((2, 2), -0.5 / 0.1**0.5), atol=1e-5)
    assert param[[0, 2, 4, 5]].abs().sum() == 0 and opt.sq[[0, 2, 4, 5]].abs().sum() == 0
    dense = torch.zeros(6, 2)
    dense[[1, 3]] = grad
    param2 = torch.zeros(6, 2)
    opt2 = SparseRMSProp(6, 2, beta=0.9)
    opt2.step_dense_(param2, dense, lr=0.5)
    assert torch.allclose(param2, param)


def test_sparse_rmsprop_bias_correction_bounds_the_first_steps() -> None:
    """Without the correction the first step moves a row by lr / sqrt(1 - beta); with it by lr, and a constant
    gradient keeps moving it by lr every step (v / (1 - beta^t) is then exactly g^2); the sparse, fused and dense
    steps agree."""
    beta, lr = 0.95, 3.0
    rows, grad = torch.tensor([0, 2]), torch.full((2, 1), 0.25)
    plain, param = SparseRMSProp(4, 1, beta=beta), torch.zeros(4, 1)
    plain.step_(param, rows, grad, lr)
    assert torch.allclose(param[rows], torch.full((2, 1), -lr / (1 - beta) ** 0.5), atol=1e-4)
    for fused in (True, False):
        opt, p = SparseRMSProp(4, 1, beta=beta, bias_correction=True), torch.zeros(4, 1)
        for t in range(1, 6):
            opt.step_(p, rows, grad, lr, fused=fused)
            assert torch.allclose(p[rows], torch.full((2, 1), -lr * t), atol=1e-4), (fused, t)
        assert p[[1, 3]].abs().sum() == 0 and opt.t == 5
    dense_opt, d = SparseRMSProp(4, 1, beta=beta, bias_correction=True), torch.zeros(4, 1)
    dense_grad = torch.zeros(4, 1).index_copy_(0, rows, grad)
    for _ in range(5):
        dense_opt.step_dense_(d, dense_grad, lr)
    assert torch.allclose(d, p, atol=1e-4)


def test_tv_grads_match_autograd() -> None:
    grid = _blob_grid(8)
    coords = plenoxel_train.voxel_coords(grid)
    rows = torch.arange(grid.n_voxels)
    r, g = plenoxel_train.tv_grads(grid.sh, grid.links, coords, rows, weight=0.7)
    got = torch.zeros_like(grid.sh).index_add_(0, r, g)
    vals = grid.sh.clone().requires_grad_(True)
    vol = torch.zeros(*grid.reso, 27, dtype=vals.dtype)
    mask = grid.links >= 0
    vol = vol.index_put((mask.nonzero(as_tuple=True)), vals[grid.links[mask].long()])
    alloc = mask.float()
    loss = 0
    for axis in range(3):
        a = vol.narrow(axis, 0, 7)
        b = vol.narrow(axis, 1, 7)
        both = alloc.narrow(axis, 0, 7) * alloc.narrow(axis, 1, 7)
        loss = loss + (both[..., None] * (b - a) ** 2).sum()
    (0.7 * loss / grid.n_voxels).backward()
    assert torch.allclose(got, vals.grad, atol=1e-5)


def test_tv_sample_runs_are_uniform_distinct_and_sorted() -> None:
    gen = torch.Generator().manual_seed(0)
    rows = plenoxel_train.tv_sample(10_000, 0.05, gen, "cpu", run=32)
    assert rows.numel() == 16 * 32 and bool((rows[1:] > rows[:-1]).all())  # distinct, sorted, k rounded up
    starts = torch.nonzero(rows[1:] != rows[:-1] + 1).squeeze(-1)
    assert starts.numel() <= 2 * 16  # 16 runs (a run wrapping around in its stratum is two)
    counts = torch.zeros(10_000)
    for _ in range(400):
        counts[plenoxel_train.tv_sample(10_000, 0.05, gen, "cpu", run=32)] += 1
    # every row equally likely: 400 * 512 / 10000 = 20.5 visits each, edges of strata included
    assert abs(float(counts.mean()) - 20.48) < 1e-6 and float(counts.min()) > 3 and float(counts.max()) < 45
    strata = counts.reshape(16, 625)
    assert torch.allclose(strata[:, :32].mean(), strata[:, 300:332].mean(), rtol=0.15)
    assert torch.equal(plenoxel_train.tv_sample(100, 1.0, gen, "cpu"), torch.arange(100))
    assert plenoxel_train.tv_sample(5, 0.01, gen, "cpu").numel() == 1


def test_max_weight_tracks_the_largest_neighbouring_weight() -> None:
    mw = torch.zeros(5)
    ids = torch.tensor([[0, 1, -1, -1, -1, -1, -1, -1], [1, 2, -1, -1, -1, -1, -1, -1]])
    plenoxel_train.update_max_weight_(mw, ids, torch.tensor([0.3, 0.1]))
    plenoxel_train.update_max_weight_(mw, ids[:1], torch.tensor([0.2]))
    assert torch.allclose(mw, torch.tensor([0.3, 0.3, 0.1, 0.0, 0.0]))


def test_build_accel_occupancy_matches_max_pool_definition() -> None:
    """Occupancy = a 2x2x2 corner window above the threshold; coarse = blocks holding one, dilated by a block."""
    g = torch.Generator().manual_seed(4)
    mask = torch.rand(13, 17, 11, generator=g) < 0.05
    grid = plenoxel_train.make_grid(mask, 0.0, np.eye(4))
    grid.density[:] = torch.rand(grid.n_voxels, 1, generator=g) * 10
    accel = plenoxel.build_accel(grid, 0.5, density_thresh=4.0)
    vol = torch.nn.functional.pad(grid.dense_density(), (1, 1, 1, 1, 1, 1))
    occ = torch.nn.functional.max_pool3d(vol[None, None], kernel_size=2, stride=1)[0, 0] > 4.0
    assert torch.equal(accel.occupied, occ.reshape(-1)) and bool(occ.any()) and not bool(occ.all())
    pads = [(-n) % 4 for n in occ.shape]
    occ_f = torch.nn.functional.pad(occ.float()[None, None], (0, pads[2], 0, pads[1], 0, pads[0]))
    coarse = torch.nn.functional.max_pool3d(occ_f, 4, 4)
    coarse = torch.nn.functional.max_pool3d(coarse, 3, 1, 1)[0, 0] > 0
    assert accel.coarse_dims == tuple(coarse.shape) and torch.equal(accel.coarse, coarse.reshape(-1))
    cells = torch.nonzero(occ)
    res = torch.tensor(grid.reso, dtype=torch.float32)
    assert torch.allclose(accel.box_lo, ((cells.amin(0).float() - 0.5) * 2.0 / res - 1.0).clamp(-1, 1))
    assert torch.allclose(accel.box_hi, ((cells.amax(0).float() + 0.5) * 2.0 / res - 1.0).clamp(-1, 1))
