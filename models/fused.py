"""The fused Plenoxel render: march -> trilinear gather -> SH -> compositing (and its backward) in one kernel
per ray (`fused_kernels`, NVIDIA Warp: LLVM on the CPU, CUDA on a GPU), called from torch.

`plenoxel.render_cube_rays` and `plenoxel_train.render_train` dispatch here when `fused=True` (their default)
and the kernels compile for the tensors' device; otherwise they run the plain PyTorch path, which stays the
reference (tests hold the two equal). Why fused: the plain path writes every per-sample tensor (positions,
8 corner ids and weights, 28 interpolated channels, weights) to memory and reads it back several times; here
a ray's samples live in registers, and the backward marches the ray again, reading the raw density and colour
of its first CACHE_SAMPLES samples from a small per-ray cache the training forward wrote (16 bytes a sample)
instead of gathering the grid again.

Memory: per batch (n_rays, 6) outputs, the sample cache (n_rays, CACHE_SAMPLES, 4), a uint8 flag per grid row
(per CPU worker) and an int32 compact index per grid row, and the SH gradient of the touched rows only (m, 27). On the CPU the rays are split over `torch.get_num_threads()`
threads (Warp runs a CPU launch on one thread; launches release the GIL), each with its own gradient buffers.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from perfdata.models.plenoxel import Accel, PlenoxelGrid

log = logging.getLogger(__name__)

STOP_THRESH = 1e-7
"""A ray stops once its transmittance falls below this (what is behind changes any output by less)."""


CACHE_SAMPLES = 64
"""Samples per ray (in occupied cells, in order) whose raw density and colour the training forward keeps for the
backward (16 bytes each; the backward gathers later ones from the grid again)."""

BACKWARD_BUFFER_BYTES = 384 << 20
"""Largest SH gradient buffer per CPU worker thread of the backward (beyond it the backward runs on one)."""


def _warp_device(device: torch.device) -> str:
    return "cpu" if device.type == "cpu" else f"cuda:{device.index or 0}"


@contextlib.contextmanager
def _native_stderr_silenced(active: bool) -> Iterator[None]:
    """Silence file descriptor 2 while Warp's native library starts (on a machine without CUDA it prints a
    'no CUDA driver' line that says nothing the caller needs)."""
    if not active:
        yield
        return
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _compile(device: str) -> Any:
    """Import Warp, start it quietly and load (compiling at first use, then from Warp's kernel cache) the kernels
    for `device`; returns the kernel module. Raises whatever Warp raises."""
    import warp as wp

    wp.config.log_level = max(wp.config.log_level, wp.LOG_WARNING)
    wp.config.enable_backward = False  # the backward kernel is written by hand
    with _native_stderr_silenced(not torch.cuda.is_available()):
        wp.init()
    from perfdata.models import fused_kernels

    wp.load_module(fused_kernels, device=device)
    return fused_kernels


@functools.cache
def kernel_status(device: str) -> str | None:
    """None when the fused kernels run on `device` ("cpu", "cuda:0"), else why not (logged once).

    Memoised per device so a failed compile is tried (and logged) once per process, not per batch; Warp
    itself keeps the loaded module. `kernel_status.cache_clear()` forgets."""
    try:
        _compile(device)
    except ImportError as exc:
        reason = f"warp-lang is not installed ({exc}); pip install 'perfdata[fused]'"
    except Exception as exc:  # noqa: BLE001 -- any compiler or driver failure means: use the reference
        reason = f"the Warp kernels did not compile for {device}: {type(exc).__name__}: {exc}"
    else:
        return None
    log.warning("fused Plenoxel render unavailable, using the plain PyTorch path: %s", reason)
    return reason


def available(device: torch.device) -> bool:
    """Whether the fused path can run on `device` (compiling its kernels on first use)."""
    return kernel_status(_warp_device(device)) is None


@dataclass
class _Launch:
    """What one fused call needs: the Warp grid struct, the ray arrays, and the tensors they view (kept alive)."""

    grid_struct: Any
    rays: list[Any]
    n_rays: int
    device: torch.device
    keep: list[torch.Tensor]


def _prepare(
    grid: PlenoxelGrid, accel: Accel, origins: torch.Tensor, dirs: torch.Tensor, offsets: torch.Tensor,
    weight_thresh: float,
) -> _Launch:
    import warp as wp
    from perfdata.models import fused_kernels as fk

    box = torch.stack([accel.box_lo, accel.box_hi]).float().contiguous()
    tensors = {
        "box": box, "occupied": accel.occupied.contiguous().view(torch.uint8),
        "coarse": accel.coarse.contiguous().view(torch.uint8), "links": accel.links_bricked.contiguous(),
        "density": grid.density.detach().reshape(-1).contiguous(), "sh": grid.sh.detach().contiguous(),
    }
    g = fk.Grid()
    for name, t in tensors.items():
        setattr(g, name, _wp(t))
    g.reso = wp.vec3i(*accel.reso)
    g.coarse_dims = wp.vec3i(*accel.coarse_dims)
    g.brick_dims = wp.vec3i(*accel.brick_dims)
    g.coarse_factor = int(accel.coarse_factor)
    g.jump = max(1, math.ceil(accel.coarse_factor / accel.step - 1e-6))
    g.step = float(accel.step_cube)
    g.weight_thresh = float(weight_thresh)
    g.stop_thresh = STOP_THRESH
    rays = [origins.float().contiguous(), dirs.float().contiguous(), offsets.float().contiguous()]
    return _Launch(g, [_wp(r) for r in rays], origins.shape[0], origins.device,
                   list(tensors.values()) + rays)


def _n_workers(launch: _Launch) -> int:
    if launch.device.type != "cpu":
        return 1
    return max(1, min(torch.get_num_threads(), launch.n_rays // 256))


def _run(launch: _Launch, kernel: Any, per_worker: list[list[Any]]) -> None:
    """Launch `kernel` over the rays: one CUDA launch, or on the CPU one launch per worker thread (worker j takes
    the j-th of n contiguous blocks of rays), worker j getting the extra trailing arguments per_worker[j]."""
    import warp as wp

    n_workers = len(per_worker)
    dim = -(-launch.n_rays // n_workers)
    device = _warp_device(launch.device)

    def go(j: int) -> None:
        inputs = [launch.grid_struct, *launch.rays, j * dim, min((j + 1) * dim, launch.n_rays), *per_worker[j]]
        stream = wp.stream_from_torch(torch.cuda.current_stream(launch.device)) if device != "cpu" else None
        wp.launch(kernel, dim=dim, inputs=inputs, device=device, stream=stream)

    _in_threads(go, n_workers)


@functools.cache
def _pool(n: int) -> ThreadPoolExecutor:
    """A lasting pool of n worker threads (made once per size: a new pool per launch cost as much as a third of
    a training forward, and varied by as much, while its new threads started)."""
    return ThreadPoolExecutor(n, thread_name_prefix="perfdata-fused")


os.register_at_fork(after_in_child=_pool.cache_clear)  # a forked child has none of its parent's threads


def _in_threads(go: Callable[[int], None], n: int) -> None:
    """go(0), ..., go(n - 1), in n threads when n > 1 (Warp launches release the GIL)."""
    if n == 1:
        go(0)
        return
    list(_pool(n).map(go, range(n)))


def _wp(t: torch.Tensor, dtype: Any = None) -> Any:
    """A Warp view of `t` (no copy): float32 as wp.float32 unless `dtype` (e.g. wp.vec4 over a last axis of 4)."""
    import warp as wp

    if dtype is None and t.dtype == torch.float32:
        dtype = wp.float32
    return wp.from_torch(t, dtype=dtype)


def forward(launch: _Launch, n_voxels: int, mark: bool
            ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """Run the forward kernel: out (n_rays, 6) [rgb, depth before z_scale, opacity, distortion (cube units,
    `volrend.distortion_packed`)], counts (n_rays, 2)
    [samples, colour samples] and, with `mark`, flags (n_voxels,) uint8 of the rows samples with density > 0
    touch and of the rows colour samples touch (else []) and the sample cache (n_rays, CACHE_SAMPLES, 4) for
    `backward`."""
    import warp as wp
    from perfdata.models import fused_kernels as fk

    dev = launch.device
    out = torch.zeros((launch.n_rays, 6), dtype=torch.float32, device=dev)
    counts = torch.zeros((launch.n_rays, 2), dtype=torch.int32, device=dev)
    n_workers = _n_workers(launch)
    # with `mark`, each CPU worker marks its own flags (threads writing bytes of the same cache lines cost ~1/3
    # of the forward), merged after; without, every worker gets the same unused 1-row stand-ins
    flags = torch.zeros((n_workers, 2, max(n_voxels, 1)) if mark else (1, 2, 1), dtype=torch.uint8, device=dev)
    cache = torch.empty((launch.n_rays, CACHE_SAMPLES, 4) if mark else (1, 1, 4), dtype=torch.float32, device=dev)
    mine = [flags[j] if mark else flags[0] for j in range(n_workers)]
    per_worker = [[int(mark), _wp(out), _wp(counts), _wp(f[0]), _wp(f[1]), _wp(cache, wp.vec4)] for f in mine]
    _run(launch, fk.render_forward, per_worker)
    if not mark:
        return out, counts, [], cache
    merged = flags.amax(0) if n_workers > 1 else flags[0]
    return out, counts, [merged[0, :n_voxels], merged[1, :n_voxels]], cache


def compact(flags: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The flagged rows (m,) int64, sorted, and the map (n_voxels,) int32 from a row to its position (-1 = not
    flagged)."""
    rows = torch.nonzero(flags).squeeze(-1)
    row_map = torch.full((max(flags.numel(), 1),), -1, dtype=torch.int32, device=flags.device)
    row_map[rows] = torch.arange(rows.numel(), dtype=torch.int32, device=flags.device)
    return rows, row_map


def backward(
    launch: _Launch, out: torch.Tensor, grad_out: torch.Tensor, maps: tuple[torch.Tensor, torch.Tensor],
    n_rows: tuple[int, int], cache: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the backward kernel: grad_density (m_d,) and grad_sh (m_s, 27) over the compact rows of
    maps (map_d, map_s) (n_voxels,) each, with n_rows (m_d, m_s), and the sample cache of `forward`."""
    import warp as wp
    from perfdata.models import fused_kernels as fk

    # CPU atomics in Warp are plain adds: each worker thread gets its own gradient buffers, summed after, unless
    # they would be large (a barely trained grid, where colour samples touch most rows): then one worker
    n_workers = _n_workers(launch) if n_rows[1] * 27 * 4 <= BACKWARD_BUFFER_BYTES else 1
    dev = launch.device
    grad_d = torch.zeros((n_workers, max(n_rows[0], 1)), dtype=torch.float32, device=dev)
    grad_s = torch.zeros((n_workers, max(n_rows[1], 1), 27), dtype=torch.float32, device=dev)
    fixed = [_wp(out.contiguous()), _wp(grad_out.contiguous()), _wp(maps[0]), _wp(maps[1]), _wp(cache, wp.vec4)]
    per_worker = [fixed + [_wp(grad_d[j]), _wp(grad_s[j])] for j in range(n_workers)]
    _run(launch, fk.render_backward, per_worker)
    for j in range(1, n_workers):
        grad_d[0] += grad_d[j]
        grad_s[0] += grad_s[j]
    return grad_d[0, : n_rows[0]], grad_s[0, : n_rows[1]]


class _FusedRender(torch.autograd.Function):
    """(compact density leaf (m_d, 1), compact SH leaf (m_s, 27)) -> rgb (n_rays, 3), depth (n_rays,) before
    z_scale, opacity (n_rays,), distortion (n_rays,); the forward kernel already ran (its outputs come in `state`),
    backward runs the backward kernel."""

    @staticmethod
    def forward(ctx: Any, density_leaf: torch.Tensor, sh_leaf: torch.Tensor, state: dict) -> tuple[torch.Tensor, ...]:
        ctx.state = state
        out = state["out"]
        return out[:, :3].clone(), out[:, 3].clone(), out[:, 4].clone(), out[:, 5].clone()

    @staticmethod
    def backward(ctx: Any, g_rgb: torch.Tensor, g_depth: torch.Tensor, g_opacity: torch.Tensor,
                 g_distortion: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        st = ctx.state
        grad_out = torch.zeros_like(st["out"])
        for sl, g in ((slice(0, 3), g_rgb), (slice(3, 4), g_depth), (slice(4, 5), g_opacity),
                      (slice(5, 6), g_distortion)):
            if g is not None:
                grad_out[:, sl] = g.reshape(grad_out.shape[0], -1)
        grad_d, grad_s = backward(st["launch"], st["out"], grad_out, st["maps"], st["n_rows"], st["cache"])
        return grad_d.unsqueeze(-1), grad_s, None


def _offsets(offset: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    if isinstance(offset, torch.Tensor):
        return offset
    return torch.full((like.shape[0],), float(offset), dtype=torch.float32, device=like.device)


@torch.no_grad()
def render_rays(
    grid: PlenoxelGrid, accel: Accel, origins: torch.Tensor, dirs: torch.Tensor, weight_thresh: float = 1e-4,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inference render of cube rays (origins, unit dirs (n_rays, 3)): foreground rgb (n_rays, 3), depth
    (n_rays,) in cube units along the unit direction (times z_scale: world), opacity (n_rays,)."""
    launch = _prepare(grid, accel, origins, dirs, _offsets(0.5, origins), weight_thresh)
    out, _, _, _ = forward(launch, grid.n_voxels, mark=False)
    return out[:, :3], out[:, 3], out[:, 4]


def _gradient_carrier(m: int, c: int, like: torch.Tensor) -> torch.Tensor:
    """A (m, c) leaf whose `.grad` receives the compact rows' gradient. The kernels read the grid itself, so the
    leaf holds no copy of the rows (a stride-0 zero: copying ~1M SH rows per step cost ~5 % of a step)."""
    return torch.zeros((), dtype=like.dtype, device=like.device).expand(m, c).requires_grad_(True)


def render_train(
    grid: PlenoxelGrid, accel: Accel, origins: torch.Tensor, dirs: torch.Tensor, offset: torch.Tensor | float,
    weight_thresh: float, extra_rows: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None),
) -> dict[str, Any]:
    """Differentiable render of cube rays: rgb (n_rays, 3) foreground, depth (n_rays,) before z_scale, opacity
    (n_rays,), distortion (n_rays,) (`volrend.distortion_packed`); the gradient carriers (zero-valued leaves
    whose `.grad` is the gradient of their rows) density_leaf (m_d, 1) over density_rows (m_d,) (the rows
    samples with density > 0 touch, and the rows extra_rows[0] names) and sh_leaf (m_s, 27) over sh_rows (m_s,)
    (the rows colour samples touch, and extra_rows[1]), rows sorted, with density_map / sh_map (n_voxels,)
    int32 from a grid row to its leaf row (-1: not in the leaf; other losses add their gradient there:
    `plenoxel_train.tv_grads_into`); and the sample counts n_samples and n_colour."""
    launch = _prepare(grid, accel, origins, dirs, _offsets(offset, origins), weight_thresh)
    out, counts, flags, cache = forward(launch, grid.n_voxels, mark=True)
    for flag, extra in zip(flags, extra_rows, strict=True):
        if extra is not None and extra.numel():
            flag[extra] = 1
    (rows_d, map_d), (rows_s, map_s) = compact(flags[0]), compact(flags[1])
    d_leaf, s_leaf = _gradient_carrier(rows_d.numel(), 1, grid.density), _gradient_carrier(rows_s.numel(), 27, grid.sh)
    state = {"launch": launch, "out": out, "maps": (map_d, map_s), "n_rows": (rows_d.numel(), rows_s.numel()),
             "cache": cache}
    rgb, depth, opacity, distortion = _FusedRender.apply(d_leaf, s_leaf, state)
    totals = counts.sum(0, dtype=torch.int64).tolist()
    return {"rgb": rgb, "depth": depth, "opacity": opacity, "distortion": distortion, "density_leaf": d_leaf,
            "density_rows": rows_d, "sh_leaf": s_leaf, "sh_rows": rows_s, "density_map": map_d, "sh_map": map_s,
            "n_samples": int(totals[0]), "n_colour": int(totals[1])}


def rmsprop_step_(param: torch.Tensor, sq: torch.Tensor, rows: torch.Tensor, grad: torch.Tensor, beta: float,
                  eps: float, lr: float) -> None:
    """The sparse RMSProp step of `optim.SparseRMSProp.step_` in one kernel pass: param, sq (n, C) float32
    updated in place at the distinct rows (m,) int64 from grad (m, C)."""
    import warp as wp
    from perfdata.models import fused_kernels as fk

    device = _warp_device(param.device)
    rows, grad = rows.contiguous(), grad.contiguous()
    if device != "cpu":
        stream = wp.stream_from_torch(torch.cuda.current_stream(param.device))
        wp.launch(fk.rmsprop_rows, dim=grad.shape[0], device=device, stream=stream,
                  inputs=[_wp(param), _wp(sq), _wp(rows), _wp(grad), beta, eps, lr])
        return
    # distinct rows: the CPU worker threads take disjoint slices (a CPU launch runs on one thread)
    n_workers = max(1, min(torch.get_num_threads(), grad.numel() // (1 << 16)))
    bounds = [rows.numel() * j // n_workers for j in range(n_workers + 1)]

    def go(j: int) -> None:
        lo, hi = bounds[j], bounds[j + 1]
        if hi > lo:
            wp.launch(fk.rmsprop_rows, dim=hi - lo, device=device,
                      inputs=[_wp(param), _wp(sq), _wp(rows[lo:hi]), _wp(grad[lo:hi]), beta, eps, lr])

    _in_threads(go, n_workers)


def tv_pairs(values: torch.Tensor, links: torch.Tensor, coords: torch.Tensor, rows: torch.Tensor, coef: float
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """`plenoxel_train.tv_grads` in one kernel pass: values (n, C) float32, links (X, Y, Z) int32, coords (n, 3)
    int64, rows (k,) int64, coef = 2 weight / k; returns rows (k',) and grads (k', C), in the same order."""
    import warp as wp
    from perfdata.models import fused_kernels as fk

    k = rows.numel()
    out_rows = torch.empty(6 * k, dtype=torch.long, device=values.device)
    out_grad = torch.empty((6 * k, values.shape[1]), dtype=torch.float32, device=values.device)
    device = _warp_device(values.device)
    stream = wp.stream_from_torch(torch.cuda.current_stream(values.device)) if device != "cpu" else None
    wp.launch(fk.tv_pairs, dim=(k, 3), device=device, stream=stream,
              inputs=[_wp(values.contiguous()), _wp(links.contiguous()), _wp(coords.contiguous()),
                      _wp(rows.contiguous()), _wp(torch.argsort(rows)), coef, _wp(out_rows), _wp(out_grad)])
    keep = out_rows >= 0
    return out_rows[keep], out_grad[keep]


def tv_into(values: torch.Tensor, links: torch.Tensor, coords: torch.Tensor, rows: torch.Tensor, coef: float,
            row_map: torch.Tensor, grad: torch.Tensor) -> None:
    """`plenoxel_train.tv_grads_into` in one kernel pass: the TV gradient (coef = 2 weight / k) of rows (k,)
    int64 added in place into grad (m, C) float32 at row_map (n,) int32 positions (every pair's rows mapped)."""
    import warp as wp
    from perfdata.models import fused_kernels as fk

    device = _warp_device(values.device)
    stream = wp.stream_from_torch(torch.cuda.current_stream(values.device)) if device != "cpu" else None
    wp.launch(fk.tv_into, dim=(rows.numel(), 3), device=device, stream=stream,
              inputs=[_wp(values.contiguous()), _wp(links.contiguous()), _wp(coords.contiguous()),
                      _wp(rows.contiguous()), coef, _wp(row_map.contiguous()), _wp(grad), int(device != "cpu")])
