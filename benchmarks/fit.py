"""Fit benchmark (issue 3): prints ONE JSON object.

1. lego 100x100 (downscale 8, every 8th view held out): held-out PSNR vs optimisation time of the Plenoxel fit
   and of a plain NeRF MLP (benchmarks/nerf_mlp.py) trained on the same rays in the same run; time to 20 / 25 dB
   and the ratios.
2. lego 200x200 (downscale 4) with 128^3 -> 256^3: PSNR vs time, training rays/s and samples/s, render
   throughput, peak memory.
3. synthetic object and room scenes (perfdata.synthetic): held-out PSNR and depth_abs_rel against exact depth.

    .venv/bin/python benchmarks/fit.py [--quick] [--data ../shared/data/lego] [--device auto] [--threads N]

Times are optimisation seconds (held-out evaluation excluded) on whatever else the machine is doing: run it on a
quiet machine. --quick shortens every budget (~7 minutes in all) for a smoke run; the full run takes ~24 minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from perfdata.models import metrics, plenoxel
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


def lego_200(scene, device: torch.device, budget: float, marks: list[float], quick: bool) -> dict:
    cfg = FitConfig(downscale=4, device=str(device.type), max_seconds=budget, eval_at_seconds=tuple(marks),
                    resolution=(64, 128) if quick else (128, 256), upsample_at=(0.4,), eval_max_views=6)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    res = fit_scene(scene, cfg)
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
           "render_rays_per_second": round(f.width * f.height / render_s), "peak_rss_mb": round(peak_rss_mb())}
    if device.type == "cuda":
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    return out


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
        result["lego_200"] = lego_200(scene, device, budget, [budget / 2, budget], args.quick)
    if "synthetic" not in args.skip:
        log(f"synthetic scenes ({time.perf_counter() - start:.0f} s so far)")
        result["synthetic"] = synthetic(device, 20.0 if args.quick else 90.0)
    result["peak_rss_mb"] = round(peak_rss_mb())
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
