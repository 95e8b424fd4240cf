"""Fit benchmark (issue 3): prints ONE JSON object.

1. lego 100x100 (downscale 8, every 8th view held out): held-out PSNR vs optimisation time of the Plenoxel fit
   and of a plain NeRF MLP (benchmarks/nerf_mlp.py) trained on the same rays in the same run; time to 20 / 25 dB
   and the ratios.
2. lego 200x200 (downscale 4) with 128^3 -> 256^3, in its own process (fused kernels where they compile):
   held-out PSNR vs time (`psnr_200px_300s`), training rays/s and samples/s, render throughput, the process's
   peak RSS (`peak_memory_256_mb`); then on the fitted grid (and the same occupancy at 128^3) training rays/s
   of the fused and the plain PyTorch path on the same batches (`train_rays_per_s_128`, `_256`,
   `fused_speedup_train_256`). --fit-512: a short 128 -> 256 -> 512 fit in its own process (`fit_512`).
3. synthetic object and room scenes (perfdata.synthetic): held-out PSNR and depth_abs_rel against exact depth.

    .venv/bin/python benchmarks/fit.py [--quick] [--data ../shared/data/lego] [--device auto] [--threads N]
                                       [--skip lego100 lego200 synthetic] [--fit-512]

Times are optimisation seconds (held-out evaluation excluded) on whatever else the machine is doing: run it on a
quiet machine. --quick shortens every budget (~7 minutes in all) for a smoke run; the full run takes ~24 minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from perfdata.models import metrics, plenoxel, plenoxel_train
from perfdata.pipelines import plenoxel_fit
from perfdata.pipelines.fit import fit_scene
from perfdata.pipelines.fitconfig import FitConfig

from perfdata.devices import resolve_device

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nerf_mlp import train_nerf  # noqa: E402


def time_to(curve: list[tuple[float, float]], target: float) -> float | None:
    """First time the curve reaches `target` dB (linear interpolation between marks); None if never."""
    prev_t, prev_p = 0.0, 0.0
    for t, p in curve:
        if p >= target:
            return prev_t + (t - prev_t) * (target - prev_p) / max(p - prev_p, 1e-9) if prev_p < target else t
        prev_t, prev_p = t, p
    return None


def ratio(mlp: float | None, plx: float | None, budget: float) -> dict:
    """MLP time / Plenoxel time; when the MLP never got there, a lower bound from its budget."""
    if plx is None:
        return {"value": None, "lower_bound": False}
    if mlp is None:
        return {"value": round(budget / plx, 2), "lower_bound": True}
    return {"value": round(mlp / plx, 2), "lower_bound": False}


def log(message: str) -> None:
    """Progress on stderr (stdout carries only the JSON)."""
    print(f"[fit benchmark] {message}", file=sys.stderr, flush=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def lego_vs_mlp(scene, device: torch.device, marks: list[float], quick: bool) -> dict:
    cfg = FitConfig(downscale=8, device=str(device.type), max_seconds=marks[-1], eval_at_seconds=tuple(marks))
    res = fit_scene(scene, cfg)
    curve = list(res.curve)
    prepared = plenoxel_fit.prepare_scene(scene, cfg)
    rays = plenoxel_fit.load_rays(prepared.train_frames, np.linalg.inv(scene.world_from_grid), device)
    held = prepared.heldout_frames
    targets = [torch.from_numpy(f.load_image()).to(device) for f in held]
    held_rays = [plenoxel_fit.load_rays([f], np.linalg.inv(scene.world_from_grid), device) for f in held]

    def evaluate(render) -> float:  # type: ignore[no-untyped-def]
        return float(np.mean([metrics.psnr(render(r.origins, r.dirs).reshape(t.shape).clamp(0, 1), t)
                              for r, t in zip(held_rays, targets, strict=True)]))

    nerf = train_nerf(rays.origins, rays.dirs, rays.rgb, torch.ones(3, device=device), evaluate, marks)
    mlp_curve = list(nerf.curve)
    out = {"image_size": [held[0].width, held[0].height], "config": _short(res.config or cfg),
           "plenoxel": {"psnr_at": {str(t): round(p, 2) for t, p in curve}, "final": res.metrics, "steps": res.steps,
                        **{k: round(v) for k, v in res.stats.items()}, "n_voxels": res.grid.n_voxels},
           "nerf_mlp": {"psnr_at": {str(t): round(p, 2) for t, p in mlp_curve}, "steps": nerf.steps,
                        "rays_per_second": round(nerf.rays_per_second)}}
    for target in (20.0, 25.0):
        tp, tm = time_to(curve, target), time_to(mlp_curve, target)
        key = f"time_to_{int(target)}db"
        out["plenoxel"][key] = None if tp is None else round(tp, 1)
        out["nerf_mlp"][key] = None if tm is None else round(tm, 1)
        out[f"ratio_{key}"] = ratio(tm, tp, marks[-1])
    return out


def _fit_in_child(data: str, cfg: FitConfig, threads: int) -> tuple:
    """One fit in a fresh process (spawned): its result and its own peak RSS in MB."""
    torch.set_num_threads(threads)
    from perfdata.readers import load_scenes

    res = fit_scene(next(load_scenes("blender", data)), cfg)
    return res, peak_rss_mb()


def fit_child(data: str, cfg: FitConfig) -> tuple:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_fit_in_child, data, cfg, torch.get_num_threads()).result()


def lego_200(scene, data: str, device: torch.device, budget: float, marks: list[float], quick: bool) -> dict:
    """The fit (fused path where it compiles) in its own process, so its peak RSS is its own."""
    cfg = FitConfig(downscale=4, device=str(device.type), max_seconds=budget, eval_at_seconds=tuple(marks),
                    resolution=(64, 128) if quick else (128, 256), upsample_at=(0.4,), eval_max_views=6)
    res, peak = fit_child(data, cfg)
    grid = plenoxel.PlenoxelGrid.from_sparse(res.grid, device)
    prepared = plenoxel_fit.prepare_scene(scene, cfg)
    f = prepared.heldout_frames[0]
    accel = plenoxel.build_accel(grid, cfg.step_size)
    start = time.perf_counter()
    plenoxel.render_camera(grid, f.K, f.c2w, f.width, f.height, accel=accel)
    render_s = time.perf_counter() - start
    out = {"image_size": [f.width, f.height], "config": _short(res.config or cfg),
           "psnr_at": {str(t): round(p, 2) for t, p in res.curve}, "final": res.metrics, "steps": res.steps,
           "n_voxels": res.grid.n_voxels, **{k: round(v) for k, v in res.stats.items()},
           "render_rays_per_second": round(f.width * f.height / render_s), "peak_rss_mb": round(peak)}
    out["train_throughput"] = train_throughput(prepared, res.grid, device, 6 if quick else 15)
    return out


def train_throughput(scene, sparse, device: torch.device, n_steps: int) -> dict:
    """Training rays/s (render, backward, TV, optimiser step) of the fused and the plain path, on the same grid
    and the same batches (same seed): the fitted grid and the same occupancy at half its resolution."""
    cfg = FitConfig(downscale=4, device=str(device.type), resolution=(8,))
    rays = plenoxel_fit.load_rays(scene.train_frames, np.linalg.inv(scene.world_from_grid), device)
    full = plenoxel.PlenoxelGrid.from_sparse(sparse, device)
    out = {}
    for reso in (full.reso[0] // 2, full.reso[0]):
        # resampled at its own resolution too (values unchanged): rows then follow the order a fit gives them
        grid = plenoxel_train.resample(full, reso, torch.ones(full.n_voxels, dtype=torch.bool, device=device),
                                       dilate=0)
        speed = {}
        for name, use in (("reference", False), ("fused", True)):
            trainer = plenoxel_fit.Trainer(scene, dataclasses.replace(cfg, fused=use), rays, device)
            trainer.set_grid(plenoxel.PlenoxelGrid(grid.links.clone(), grid.density.clone(), grid.sh.clone(),
                                                   grid.world_from_grid, grid.background))
            trainer.step(0, 0.5)  # warm-up (kernel load, allocator)
            start = time.perf_counter()
            for it in range(1, n_steps + 1):
                trainer.step(it, 0.5)
            speed[name] = n_steps * cfg.batch_rays / (time.perf_counter() - start)
        out[str(reso)] = {"n_voxels": grid.n_voxels, "reference_rays_per_s": round(speed["reference"]),
                          "fused_rays_per_s": round(speed["fused"]),
                          "speedup": round(speed["fused"] / speed["reference"], 2)}
    return out


def memory_512(data: str, device: torch.device) -> dict:
    """A short 128 -> 256 -> 512 fit of lego (200x200) in its own process: its peak RSS."""
    cfg = FitConfig(downscale=4, device=str(device.type), max_seconds=90.0, resolution=(128, 256, 512),
                    upsample_at=(0.2, 0.5), eval_max_views=2, max_voxels=4_000_000)
    res, peak = fit_child(data, cfg)
    return {"reso": 512, "n_voxels": res.grid.n_voxels, "steps": res.steps, "psnr": round(res.metrics["psnr"], 2),
            "peak_rss_mb": round(peak), "max_voxels": cfg.max_voxels}


def synthetic(device: torch.device, budget: float) -> dict:
    from perfdata.synthetic import make_object_scene, make_room_scene

    out = {}
    scenes = {"object_torus": make_object_scene(seed=0, n_views=40, size=96, shape="torus"),
              "room": make_room_scene(seed=0, n_views=40, size=96)}
    for name, scene in scenes.items():
        cfg = FitConfig(device=str(device.type), max_seconds=budget)
        res = fit_scene(scene, cfg)
        out[name] = {**{k: round(v, 4) for k, v in res.metrics.items()}, "steps": res.steps,
                     "n_voxels": res.grid.n_voxels, "seconds": round(res.train_seconds, 1)}
    return out


def _short(cfg: FitConfig) -> dict:
    keep = ("resolution", "upsample_at", "batch_rays", "step_size", "max_seconds", "downscale", "lr_density", "lr_sh")
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k in keep}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / "../shared/data/lego"))
    ap.add_argument("--quick", action="store_true", help="short budgets: a smoke run of a few minutes")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["lego100", "lego200", "synthetic"])
    ap.add_argument("--fit-512", action="store_true", help="also a short 512^3 fit in its own process (peak RSS)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from perfdata.readers import load_scenes

    device = resolve_device(args.device)
    scene = next(load_scenes("blender", args.data))
    marks = [10.0, 20.0, 40.0] if args.quick else [10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 240.0, 300.0]
    result: dict = {"benchmark": "fit", "quick": args.quick, "device": str(device), "threads": torch.get_num_threads(),
                    "torch": torch.__version__}
    start = time.perf_counter()
    if "lego100" not in args.skip:
        log("lego 100x100: plenoxel, then the NeRF MLP")
        result["lego_100"] = lego_vs_mlp(scene, device, marks, args.quick)
    if "lego200" not in args.skip:
        log(f"lego 200x200 ({time.perf_counter() - start:.0f} s so far)")
        budget = 40.0 if args.quick else 300.0
        lego = lego_200(scene, args.data, device, budget, [budget / 2, budget], args.quick)
        result["lego_200"] = lego
        tp = lego["train_throughput"]
        result["psnr_200px_300s"] = None if args.quick else lego["psnr_at"].get(str(budget))
        result["fused_speedup_train_256"] = tp["256"]["speedup"] if "256" in tp else None
        for reso, v in tp.items():
            result[f"train_rays_per_s_{reso}"] = {"fused": v["fused_rays_per_s"], "reference": v["reference_rays_per_s"]}
        result["peak_memory_256_mb"] = None if args.quick else lego["peak_rss_mb"]
    if args.fit_512:
        log(f"lego 200x200 at 512^3: memory ({time.perf_counter() - start:.0f} s so far)")
        result["fit_512"] = memory_512(args.data, device)
    if "synthetic" not in args.skip:
        log(f"synthetic scenes ({time.perf_counter() - start:.0f} s so far)")
        result["synthetic"] = synthetic(device, 20.0 if args.quick else 90.0)
    result["peak_rss_mb"] = round(peak_rss_mb())
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
