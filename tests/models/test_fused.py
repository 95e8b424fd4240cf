"""The fused render (Warp kernels) against the plain PyTorch reference: forward to 1e-5, gradients to 1e-4, on
random grids and rays; the fallback to the reference (with a logged reason) when the kernels cannot compile."""

import logging
import os
import signal

import numpy as np
import pytest
import torch
from perfdata.models import fused, plenoxel, plenoxel_train

pytest.importorskip("warp", reason="warp-lang is not installed (the fused path's tests need it)")

DEVICES = [pytest.param("cpu", id="cpu"),
           pytest.param("cuda", id="cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
               not torch.cuda.is_available(), reason="needs a CUDA device")])]


def random_grid(reso: tuple[int, int, int], seed: int, device: str = "cpu") -> plenoxel.PlenoxelGrid:
    """Random allocation (~70% of the voxels in a ball), densities partly negative (ReLU), random SH."""
    g = torch.Generator().manual_seed(seed)
    axes = [(2 * torch.arange(r) + 1) / r - 1 for r in reso]
    centres = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)
    mask = (torch.rand(reso, generator=g) < 0.7) & (centres.norm(dim=-1) < 0.8)
    grid = plenoxel_train.make_grid(mask, 0.0, np.eye(4))
    grid.density[:] = torch.empty(grid.n_voxels, 1).uniform_(-15.0, 25.0, generator=g)
    grid.sh[:] = 0.4 * torch.randn(grid.n_voxels, 27, generator=g)
    return plenoxel.PlenoxelGrid(grid.links.to(device), grid.density.to(device), grid.sh.to(device), np.eye(4))


def random_rays(n: int, seed: int, device: str = "cpu") -> tuple[torch.Tensor, ...]:
    """Rays from outside and from inside the cube towards random points in it (unit dirs), z_scale, offsets."""
    g = torch.Generator().manual_seed(seed)
    outside = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1) * 2.5
    inside = torch.rand(n, 3, generator=g) * 1.6 - 0.8
    origins = torch.where(torch.rand(n, 1, generator=g) < 0.8, outside, inside)
    target = torch.rand(n, 3, generator=g) * 1.9 - 0.95
    dirs = torch.nn.functional.normalize(target - origins + 1e-3, dim=-1)
    z_scale = torch.rand(n, generator=g) + 0.5
    offsets = torch.rand(n, generator=g)
    return tuple(t.to(device) for t in (origins, dirs, z_scale, offsets))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reso,seed", [((20, 20, 20), 0), ((18, 24, 14), 1)])
def test_fused_inference_equals_reference(device: str, reso: tuple[int, int, int], seed: int) -> None:
    grid = random_grid(reso, seed, device)
    accel = plenoxel.build_accel(grid, 0.5, density_thresh=0.0)
    o, d, zs, _ = random_rays(3000, seed + 10, device)
    bg = torch.tensor([0.2, 0.5, 0.9], device=device)
    ref = plenoxel.render_cube_rays(grid, accel, o, d, zs, bg, fused=False)
    out = plenoxel.render_cube_rays(grid, accel, o, d, zs, bg, fused=True)
    assert float(ref["opacity"].max()) > 0.99 and float(ref["opacity"].min()) == 0.0  # hits and misses
    assert float(((ref["opacity"] > 0.05) & (ref["opacity"] < 0.95)).float().mean()) > 0.1  # and partly opaque
    for key in ("rgb", "depth", "opacity"):
        torch.testing.assert_close(out[key], ref[key], atol=1e-5, rtol=1e-5, msg=key)


def _loss_and_grads(grid, accel, rays, bg, use_fused: bool):
    o, d, zs, off = rays
    bg_leaf = bg.detach().clone().requires_grad_(True)
    out = plenoxel_train.render_train(grid, accel, o, d, zs, bg_leaf, off, 1e-4, fused=use_fused)
    assert out.fused == use_fused
    g = torch.Generator().manual_seed(3)
    target = torch.rand(out.rgb.shape, generator=g).to(o.device)
    assert out.distortion is not None
    loss = ((out.rgb - target) ** 2).sum() + (0.3 * out.depth).sum() - 0.7 * out.opacity.sum() + out.distortion.sum()
    loss.backward()
    grad_d = torch.zeros_like(grid.density)
    if out.density_rows is None:
        grad_d = out.density_leaf.grad
    else:
        grad_d[out.density_rows] = out.density_leaf.grad
    grad_s = torch.zeros_like(grid.sh)
    grad_s[out.sh_rows] = out.sh_leaf.grad
    return out, grad_d, grad_s, bg_leaf.grad


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("per_ray_background,cache", [(False, None), (True, None), (False, 3)])
def test_fused_train_equals_reference(device: str, per_ray_background: bool, cache: int | None,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """cache=3: the backward reads each ray's first 3 samples from the forward's cache, later ones from the grid."""
    if cache is not None:
        monkeypatch.setattr(fused, "CACHE_SAMPLES", cache)
    grid = random_grid((22, 22, 22), 5, device)
    accel = plenoxel.build_accel(grid, 0.5, density_thresh=0.0)
    rays = random_rays(2000, 6, device)
    bg = torch.rand(2000, 3) if per_ray_background else torch.tensor([0.3, 0.6, 0.1])
    ref, ref_d, ref_s, ref_bg = _loss_and_grads(grid, accel, rays, bg.to(device), use_fused=False)
    out, out_d, out_s, out_bg = _loss_and_grads(grid, accel, rays, bg.to(device), use_fused=True)
    for name in ("rgb", "depth", "opacity", "distortion"):
        torch.testing.assert_close(getattr(out, name), getattr(ref, name), atol=1e-5, rtol=1e-5, msg=name)
    assert float(ref.distortion.detach().max()) > 0.1  # rays whose weight is spread: a distortion gradient to check
    assert torch.equal(out.sh_rows, ref.sh_rows)  # the same colour samples
    assert out.n_colour == ref.n_colour and 0 < out.n_samples <= ref.n_samples
    assert float(ref_d.abs().max()) > 1e-2 and float(ref_s.abs().max()) > 1e-2  # gradients that can differ
    torch.testing.assert_close(out_d, ref_d, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out_s, ref_s, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out_bg, ref_bg, atol=1e-4, rtol=1e-4)


def test_fused_default_pruning_thresholds_close_to_reference() -> None:
    """With the default occupancy threshold (cells below alpha 1e-4 skipped) both paths drop the same samples."""
    grid = random_grid((20, 20, 20), 7)
    grid.density[:] = grid.density.clamp_min(0) * (torch.rand(grid.n_voxels, 1) < 0.3)
    accel = plenoxel.build_accel(grid, 0.5)
    o, d, zs, _ = random_rays(2000, 8)
    bg = torch.ones(3)
    ref = plenoxel.render_cube_rays(grid, accel, o, d, zs, bg, fused=False)
    out = plenoxel.render_cube_rays(grid, accel, o, d, zs, bg)
    for key in ("rgb", "depth", "opacity"):
        torch.testing.assert_close(out[key], ref[key], atol=1e-5, rtol=1e-5, msg=key)


def test_empty_batch_and_empty_grid() -> None:
    grid = random_grid((8, 8, 8), 0)
    accel = plenoxel.build_accel(grid)
    o, d, zs, off = random_rays(0, 0)
    out = plenoxel_train.render_train(grid, accel, o, d, zs, torch.ones(3), off)
    assert out.rgb.shape == (0, 3)
    grid.density[:] = -1.0  # nothing occupied: every ray misses
    accel = plenoxel.build_accel(grid)
    o, d, zs, _ = random_rays(100, 1)
    res = plenoxel.render_cube_rays(grid, accel, o, d, zs, torch.full((3,), 0.25))
    assert torch.equal(res["rgb"], torch.full((100, 3), 0.25)) and float(res["opacity"].abs().max()) == 0.0


@pytest.fixture
def fresh_status():
    fused.kernel_status.cache_clear()
    yield
    fused.kernel_status.cache_clear()


@pytest.mark.parametrize("error,words", [(RuntimeError("clang: error: cannot compile"), "did not compile"),
                                         (ImportError("No module named 'warp'"), "warp-lang is not installed")])
def test_falls_back_to_reference_with_logged_reason(fresh_status, monkeypatch, caplog, error, words) -> None:
    def broken(device: str):
        raise error

    monkeypatch.setattr(fused, "_compile", broken)
    grid = random_grid((10, 10, 10), 2)
    accel = plenoxel.build_accel(grid)
    o, d, zs, off = random_rays(200, 3)
    with caplog.at_level(logging.WARNING, logger="perfdata.models.fused"):
        out = plenoxel_train.render_train(grid, accel, o, d, zs, torch.ones(3), off)
        again = plenoxel.render_cube_rays(grid, accel, o, d, zs, torch.ones(3))
    assert not out.fused and out.colour_ids is not None  # the reference ran
    ref = plenoxel.render_cube_rays(grid, accel, o, d, zs, torch.ones(3), fused=False)
    assert torch.equal(again["rgb"], ref["rgb"])
    records = [r for r in caplog.records if r.name == "perfdata.models.fused"]
    assert len(records) == 1, "the reason is logged once, not per batch"
    assert words in records[0].getMessage() and str(error) in records[0].getMessage()
    assert fused.kernel_status("cpu") is not None


def test_sparse_density_step_equals_dense_step() -> None:
    """The fit's sparse density update (fused path) equals the dense one over rows with a nonzero gradient."""
    from perfdata.models.optim import SparseRMSProp

    g = torch.Generator().manual_seed(0)
    param = torch.randn(50, 1, generator=g)
    grad = torch.randn(50, 1, generator=g) * (torch.rand(50, 1, generator=g) < 0.4)
    dense, sparse = SparseRMSProp(50, 1), SparseRMSProp(50, 1)
    a, b = param.clone(), param.clone()
    for _ in range(3):
        dense.step_dense_(a, grad, 0.1)
        rows = torch.nonzero(grad[:, 0]).squeeze(-1)
        sparse.step_(b, rows, grad[rows], 0.1)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(dense.sq, sparse.sq)


def test_fused_rmsprop_step_equals_torch_step() -> None:
    from perfdata.models.optim import SparseRMSProp

    g = torch.Generator().manual_seed(1)
    param = torch.randn(300, 27, generator=g)
    rows = torch.randperm(300, generator=g)[:120].sort().values
    a, b = param.clone(), param.clone()
    opt_a, opt_b = SparseRMSProp(300, 27), SparseRMSProp(300, 27)
    for _ in range(3):
        grad = torch.randn(120, 27, generator=g)
        opt_a.step_(a, rows, grad, 0.05, fused=False)
        opt_b.step_(b, rows, grad, 0.05, fused=True)
    torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(opt_b.sq, opt_a.sq, atol=1e-6, rtol=1e-6)
    untouched = torch.ones(300, dtype=torch.bool)
    untouched[rows] = False
    assert torch.equal(b[untouched], param[untouched])


def test_fused_tv_equals_torch_tv() -> None:
    grid = random_grid((9, 11, 7), 3)
    coords = plenoxel_train.voxel_coords(grid)
    rows = torch.randint(grid.n_voxels, (200,), generator=torch.Generator().manual_seed(0))
    for values, weight in ((grid.density, 1e-2), (grid.sh, 1e-3)):
        ref_rows, ref_g = plenoxel_train.tv_grads(values, grid.links, coords, rows, weight, fused=False)
        out_rows, out_g = plenoxel_train.tv_grads(values, grid.links, coords, rows, weight)
        assert torch.equal(out_rows, ref_rows) and ref_rows.numel() > 200
        torch.testing.assert_close(out_g, ref_g, atol=1e-7, rtol=1e-6)


def test_tv_into_the_fused_leaves_equals_merged_sparse_gradients() -> None:
    """The fit's fused route (TV rows put into the render's compact leaves, TV added in place) gives the rows and
    gradients of the reference route (render rows and TV pairs merged by merge_sparse), kernel and torch TV."""
    from perfdata.models.optim import merge_sparse

    grid = random_grid((16, 16, 16), 4)
    coords = plenoxel_train.voxel_coords(grid)
    accel = plenoxel.build_accel(grid, 0.5)
    o, d, zs, off = random_rays(60, 5)  # few rays: the TV rows add rows the render does not touch
    tv_rows = torch.randint(grid.n_voxels, (150,), generator=torch.Generator().manual_seed(2))
    touched = plenoxel_train.tv_rows_touched(grid.links, coords, tv_rows)

    def render(extra: tuple) -> plenoxel_train.TrainRender:
        out = plenoxel_train.render_train(grid, accel, o, d, zs, torch.ones(3), off, extra_rows=extra)
        (out.rgb.square().sum() + 0.1 * out.depth.sum()).backward()
        return out

    ref = render((None, None))
    assert ref.fused
    cases = (("density", grid.density, 1e-2), ("sh", grid.sh, 1e-3))
    for fused_tv in (True, False):
        out = render((touched, touched))
        for name, values, weight in cases:
            leaf, ref_leaf = getattr(out, f"{name}_leaf"), getattr(ref, f"{name}_leaf")
            rows, ref_rows = getattr(out, f"{name}_rows"), getattr(ref, f"{name}_rows")
            grad = leaf.grad.clone()
            plenoxel_train.tv_grads_into(values, grid.links, coords, tv_rows, weight, getattr(out, f"{name}_map"),
                                         grad, fused=fused_tv)
            tv = plenoxel_train.tv_grads(values, grid.links, coords, tv_rows, weight, fused=False)
            want_rows, want = merge_sparse([(ref_rows, ref_leaf.grad), tv], grid.n_voxels)
            assert torch.equal(rows, want_rows) and rows.numel() > ref_rows.numel(), name
            torch.testing.assert_close(grad, want, atol=1e-6, rtol=1e-5, msg=name)


def test_fused_rmsprop_over_two_threads_equals_torch_step(monkeypatch) -> None:
    from perfdata.models.optim import SparseRMSProp

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # two CPU workers, whatever the machine
    g = torch.Generator().manual_seed(3)
    param = torch.randn(9000, 27, generator=g)
    rows = torch.randperm(9000, generator=g)[:5000].sort().values
    grad = torch.randn(5000, 27, generator=g)
    a, b = param.clone(), param.clone()
    opt_a, opt_b = SparseRMSProp(9000, 27), SparseRMSProp(9000, 27)
    opt_a.step_(a, rows, grad, 0.05, fused=False)
    opt_b.step_(b, rows, grad, 0.05, fused=True)
    torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(opt_b.sq, opt_a.sq, atol=1e-6, rtol=1e-6)


def test_backward_on_one_worker_equals_several(monkeypatch) -> None:
    """Large SH gradients are accumulated by one CPU worker instead of per-thread buffers: same gradients."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # two workers, whatever the machine
    grid = random_grid((16, 16, 16), 9)
    accel = plenoxel.build_accel(grid, 0.5, density_thresh=0.0)
    rays = random_rays(1500, 10)
    bg = torch.ones(3)
    _, d_many, s_many, _ = _loss_and_grads(grid, accel, rays, bg, use_fused=True)
    monkeypatch.setattr(fused, "BACKWARD_BUFFER_BYTES", 0)
    _, d_one, s_one, _ = _loss_and_grads(grid, accel, rays, bg, use_fused=True)
    torch.testing.assert_close(d_one, d_many, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(s_one, s_many, atol=1e-6, rtol=1e-5)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_worker_threads_last_and_a_forked_child_gets_its_own(monkeypatch) -> None:
    """The CPU workers' pool is made once per size; a child forked after it ran (its threads are not copied)
    still renders on two workers, the same as its parent, instead of waiting forever on a dead pool."""
    assert fused.available(torch.device("cpu"))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # two workers, whatever the machine
    grid = random_grid((16, 16, 16), 11)
    accel = plenoxel.build_accel(grid, 0.5, density_thresh=0.0)
    o, d, _, _ = random_rays(1024, 12)
    parent = fused.render_rays(grid, accel, o, d)[0]
    assert fused._pool(2) is fused._pool(2)
    pid = os.fork()
    if pid == 0:  # the child: a hang ends it by SIGALRM, a wrong image or an error by exit 1
        code = 1
        try:
            signal.alarm(60)
            code = 0 if torch.equal(fused.render_rays(grid, accel, o, d)[0], parent) else 1
        finally:
            os._exit(code)  # never back into pytest
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
