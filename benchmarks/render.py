"""Render and pack throughput, and render memory vs the number of scenes. Prints one JSON object.

1. speed: a 256^3 grid (a solid labelled sphere on a slab, ~1M voxels) written to a zarr store, then
   `render_store` of `--speed-views` views at `--size` pixels: rays/s and views/s (rgb + depth + mask + bg +
   label, i.e. everything a view costs), on CUDA when available, else CPU. And the rgb-only render of one
   camera (rgb, depth, opacity) by the fused kernels against the plain PyTorch path, same grid and camera
   (`fused_speedup_render_256`, `fused_render_rays_per_s_256`).
2. memory: `--scenes` scenes x `--views` views (smaller grids) rendered in one call; the process's RSS is sampled
   after every view, and the peak after the first scene is compared with the peak at the end (ratio ~1 = memory
   does not grow with the number of scenes).
3. pack: the renders of (2) packed with `--maxcount`: shards/s, MB/s, against the reference of copying the
   same files (plain file copies, measured in the same run).

Usage: python benchmarks/render.py [--scenes 20 --views 50 --size 64 --speed-views 4 --reso 256]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from perfdata.pipelines.pack import PackConfig, pack_renders
from perfdata.pipelines.render import RenderConfig, render_store
from perfdata.pipelines.render_source import MemorySource

from perfdata.devices import resolve_device
from perfdata.grid import SparseGrid
from perfdata.scene import similarity

Y0 = 0.28209479177387814


def sphere_grid(reso: int, seed: int) -> SparseGrid:
    """A solid sphere (label 1) on a slab (label 0) with a one-voxel empty shell, random colours."""
    rng = np.random.default_rng(seed)
    axis = (2 * np.arange(reso) + 1) / reso - 1
    coords, labels, density = [], [], []
    for x in range(reso):  # slice by slice: bounded memory even at 512^3
        yy, zz = np.meshgrid(axis, axis, indexing="ij")
        d_sph = np.sqrt(axis[x] ** 2 + yy**2 + (zz - 0.1) ** 2) - 0.45
        in_slab = (abs(axis[x]) <= 0.85) & (np.abs(yy) <= 0.85) & (zz >= -0.7) & (zz <= -0.5)
        keep = (d_sph <= 2.0 / reso) | in_slab
        iy, iz = np.nonzero(keep)
        coords.append(np.stack([np.full_like(iy, x), iy, iz], 1))
        labels.append((d_sph[keep] <= 2.0 / reso).astype(np.int16))
        density.append(np.where((d_sph[keep] <= 0) | in_slab[keep], 300.0, 0.0))
    coords_a, labels_a = np.concatenate(coords).astype(np.int32), np.concatenate(labels)
    colours = rng.uniform(0.1, 0.9, (2, 3))[labels_a]
    sh = np.zeros((len(coords_a), 27), np.float32)
    sh[:, [0, 9, 18]] = (colours - 0.5) / Y0
    return SparseGrid(coords_a, np.concatenate(density).astype(np.float32), sh, (reso,) * 3,
                      similarity(1.5, np.array([0.0, 0.0, 1.0])), labels=labels_a,
                      background=np.ones(3, np.float32))


def ring_cameras(n: int = 72) -> list[dict]:
    from perfdata import camera

    K = camera.intrinsics_from_fov(0.8, 64, 64)
    out = []
    for k in range(n):
        a = 2 * np.pi * k / n
        eye = np.array([4.0 * np.cos(a), 4.0 * np.sin(a), 3.5])
        out.append({"K": K.tolist(), "c2w": camera.look_at(eye, np.array([0.0, 0.0, 1.0])).tolist(),
                    "width": 64, "height": 64})
    return out


def scene_attrs(i: int) -> dict:
    return {"class_name": f"class{i % 3}", "metrics": {"psnr": 30.0},
            "extra": {"cameras": ring_cameras(), "label_names": ["background", "sphere"]}}


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def bench_speed(tmp: Path, reso: int, n_views: int, size: int) -> dict:
    from perfdata.store.location import Location
    from perfdata.store.writer import WriteConfig, grid_arrays, refresh_root, write_scene

    grid = sphere_grid(reso, 0)
    loc = Location(str(tmp / "speed.zarr"), {})
    write_scene(loc, "big", grid_arrays(grid, WriteConfig(), **scene_attrs(0)), WriteConfig())
    refresh_root(loc, "bench")
    cfg = RenderConfig(n_views=n_views, size=size, device="auto", seed=0)
    stamps: list[float] = []
    start = time.perf_counter()
    res = render_store(str(tmp / "speed.zarr"), tmp / "speed_out", cfg, lambda *_: stamps.append(time.perf_counter()))
    total = time.perf_counter() - start
    per_view = (stamps[-1] - stamps[0]) / max(len(stamps) - 1, 1)  # steady state: excludes load and setup
    raw = raw_render_rays_per_s(grid, size, repeats=1)
    return {"reso": reso, "n_voxels": grid.n_voxels, "views": res.n_views, "size": size, "fused": bench_fused(grid, size),
            "device": str(resolve_device("auto")), "seconds_total_incl_load_setup": round(total, 3),
            "setup_seconds": round(stamps[0] - start - per_view, 3), "views_per_s": round(1 / per_view, 3),
            "rays_per_s": round(size * size / per_view),
            "reference_rgb_only_render_camera_rays_per_s": round(raw),
            "full_view_cost_vs_rgb_only": round(raw * per_view / (size * size), 2)}


def raw_render_rays_per_s(grid: SparseGrid, size: int, fused: bool = True, repeats: int = 3) -> float:
    """The model's plain rgb/depth/opacity render of one camera (what one view costs without labels, mask and
    background), best of `repeats`; `fused` False: the plain PyTorch path (the reference)."""
    from perfdata.models import plenoxel
    from perfdata.pipelines.poses import Camera, interpolate_cameras

    field = plenoxel.PlenoxelGrid.from_sparse(grid, resolve_device("auto"))
    accel = plenoxel.build_accel(field)
    cams = [Camera(np.array(c["K"]), np.array(c["c2w"]), c["width"], c["height"]) for c in ring_cameras()]
    cam = interpolate_cameras(cams, grid.world_from_grid, 1, size, seed=0)[0]
    plenoxel.render_camera(field, cam.K, cam.c2w, 8, 8, accel=accel, fused=fused)  # warm-up: kernel load
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        plenoxel.render_camera(field, cam.K, cam.c2w, cam.width, cam.height, accel=accel, fused=fused)
        best = min(best, time.perf_counter() - start)
    return cam.width * cam.height / best


def bench_fused(grid: SparseGrid, size: int) -> dict:
    """rgb-only render rays/s of the fused path against the plain PyTorch path, same grid, same camera."""
    from perfdata.models import fused

    ref = raw_render_rays_per_s(grid, size, fused=False)
    fast = raw_render_rays_per_s(grid, size, fused=True)
    return {"reso": grid.reso[0], "size": size, "fused_available": fused.available(resolve_device("auto")),
            "reference_rays_per_s": round(ref), "fused_rays_per_s": round(fast), "speedup": round(fast / ref, 2)}


def bench_memory(tmp: Path, n_scenes: int, n_views: int, size: int, reso: int) -> tuple[dict, Path]:
    source = _LazySource({f"scene{i:03d}": _LazyGrid(reso, i) for i in range(n_scenes)},  # type: ignore[misc]
                         {f"scene{i:03d}": scene_attrs(i) for i in range(n_scenes)})
    samples: list[tuple[str, float]] = []
    cfg = RenderConfig(n_views=n_views, size=size, device="auto", seed=1)
    start = time.perf_counter()
    res = render_store(source, tmp / "renders", cfg, lambda sid, done, total: samples.append((sid, rss_mb())))
    seconds = time.perf_counter() - start
    first = max(r for s, r in samples if s == samples[0][0])
    return {"scenes": n_scenes, "views_per_scene": n_views, "size": size, "reso": reso,
            "views": res.n_views, "seconds": round(seconds, 2),
            "views_per_s": round(res.n_views / seconds, 3),
            "rss_peak_mb_first_scene": round(first, 1), "rss_peak_mb_all_scenes": round(max(r for _, r in samples), 1),
            "rss_growth_ratio": round(max(r for _, r in samples) / first, 3),
            "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}, tmp / "renders"


class _LazyGrid:
    """Stands for a grid in MemorySource but is built on read, so only one scene exists at a time."""

    def __init__(self, reso: int, seed: int) -> None:
        self.reso, self.seed = reso, seed
        self.world_from_grid = similarity(1.5, np.array([0.0, 0.0, 1.0]))
        self.ndc = None  # what MemorySource's scene attributes read of a grid besides its frame


class _LazySource(MemorySource):
    def read_scene(self, scene_id: str) -> SparseGrid:
        lazy = self.grids[scene_id]
        return sphere_grid(lazy.reso, lazy.seed)  # type: ignore[attr-defined]


def bench_pack(tmp: Path, renders: Path, maxcount: int) -> dict:
    files = [p for p in renders.rglob("*") if p.is_file()]
    n_bytes = sum(p.stat().st_size for p in files)
    start = time.perf_counter()
    for i, p in enumerate(files):
        shutil.copyfile(p, tmp / f"copy{i}")
    copy_s = time.perf_counter() - start
    start = time.perf_counter()
    res = pack_renders(renders, tmp / "shards", PackConfig(maxcount=maxcount, val_fraction=0.1))
    pack_s = time.perf_counter() - start
    shard_mb = sum(s.bytes for s in res.shards) / 2**20
    return {"shards": len(res.shards), "samples": sum(res.n_samples.values()), "shard_mb": round(shard_mb, 2),
            "seconds": round(pack_s, 3), "shards_per_s": round(len(res.shards) / pack_s, 2),
            "mb_per_s": round(shard_mb / pack_s, 2), "reference_copy_mb_per_s": round(n_bytes / 2**20 / copy_s, 2),
            "ratio_to_copy": round((shard_mb / pack_s) / (n_bytes / 2**20 / copy_s), 3)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=20)
    ap.add_argument("--views", type=int, default=50)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--mem-reso", type=int, default=64)
    ap.add_argument("--reso", type=int, default=256)
    ap.add_argument("--speed-views", type=int, default=4)
    ap.add_argument("--speed-size", type=int, default=128)
    ap.add_argument("--maxcount", type=int, default=100)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        speed = bench_speed(tmp, args.reso, args.speed_views, args.speed_size)
        memory, renders = bench_memory(tmp, args.scenes, args.views, args.size, args.mem_reso)
        pack = bench_pack(tmp, renders, args.maxcount)
    fz = speed["fused"]
    json.dump({"benchmark": "render", "argv": sys.argv[1:], f"fused_speedup_render_{args.reso}": fz["speedup"],
               f"fused_render_rays_per_s_{args.reso}": fz["fused_rays_per_s"], "render_speed": speed,
               "render_memory": memory, "pack": pack}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
