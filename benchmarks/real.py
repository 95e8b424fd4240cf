"""Real captures benchmark (issue 9): prints ONE JSON object.

Per capture -- fern (llff, images_8), hololens-000 (rgbd), lego (blender), and a synthetic object on a textured
backdrop without masks or depth (`perfdata synth --backdrop textured`, the stand-in for CO3D) -- a fit with
`--background auto` (what the capture gets) and, where auto picks something else, one with today's single learned
colour in the same run: held-out PSNR / SSIM at the time marks (60, 120, 300 s of optimisation), final
voxels, training rays/s, per coarse-to-fine stage its steps, seconds, rays/s and samples per ray (`stages`: where
the budget went), depth_abs_rel where depth truth exists, and the background chosen.

    .venv/bin/python benchmarks/real.py [--seconds 300] [--captures fern hololens lego backdrop] [--quick]
                                        [--data ../shared/data] [--device auto] [--threads N]

Times are optimisation seconds (held-out evaluation excluded) on whatever else the machine is doing: run it
on a quiet machine. --quick: 60 s per fit (~10 minutes in all); the full run takes ~45 minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from perfdata.pipelines.capture import choose_background
from perfdata.pipelines.fit import fit_scene, ndc_schedule
from perfdata.pipelines.fitconfig import FitConfig

from perfdata.readers import get_reader, list_scenes
from perfdata.scene import Scene

TARGETS = {"fern": 24.0, "backdrop": 28.0, "lego": 32.0}
CAPTURES = {"fern": ("llff", "fern"), "hololens": ("rgbd", "hololens-000"), "lego": ("blender", "lego")}


def log(message: str) -> None:
    print(f"[real {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load(name: str, data: Path) -> Scene:
    if name == "backdrop":
        from perfdata.synthetic import make_object_scene
        from perfdata.synthetic.objects import ObjectSceneConfig

        return make_object_scene(3, n_views=48, size=100, config=ObjectSceneConfig(backdrop="textured"))
    reader, folder = CAPTURES[name]
    root = data / folder
    scene_id = list_scenes(reader, root)[0]
    return get_reader(reader).load_scene(root, scene_id)


def config(name: str, background: str, seconds: float, marks: list[float], device: str,
           **extra: object) -> FitConfig:
    if name == "backdrop":  # CO3D-like: colour only (no masks, no depth)
        extra.update(depth_weight=0.0, init_from_depth=False)
    downscale = 1.0 if name == "backdrop" else 8.0
    return FitConfig(background=background, downscale=downscale, max_seconds=seconds, steps=10**7,
                     eval_at_seconds=tuple(marks), eval_max_views=8, device=device, **extra)


STAGE_KEYS = ("resolution", "voxels", "steps", "seconds", "rays_per_second", "samples_per_ray",
              "colour_samples_per_ray")


def stages(stats: dict[str, float]) -> list[dict[str, float]]:
    """fit stats' per-stage keys (`plenoxel_fit.stage_stats`) as one entry per coarse-to-fine stage."""
    out, k = [], 0
    while f"stage{k}_steps" in stats:
        out.append({key: round(stats[f"stage{k}_{key}"], 1) for key in STAGE_KEYS})
        k += 1
    return out


def run_fit(scene: Scene, cfg: FitConfig) -> dict:
    start = time.perf_counter()
    result = fit_scene(scene, cfg)
    out = {
        "background": result.config.background if result.config else cfg.background,
        "psnr": round(result.metrics.get("psnr", float("nan")), 3),
        "ssim": round(result.metrics.get("ssim", float("nan")), 4),
        "curve": [[round(t, 1), round(p, 3)] for t, p in result.curve],
        "voxels": result.grid.n_voxels,
        "resolution": list(result.grid.reso),
        "rays_per_second": round(result.stats.get("rays_per_second", 0.0)),
        "stages": stages(result.stats),
        "steps": result.steps,
        "train_seconds": round(result.train_seconds, 1),
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    if "depth_abs_rel" in result.metrics:
        out["depth_abs_rel"] = round(result.metrics["depth_abs_rel"], 4)
    if out["background"] == "ndc" and result.config is not None:
        out["ndc_margin"] = result.config.ndc_margin  # as fit.json records it (automatic unless set)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--captures", nargs="+", default=["fern", "hololens", "lego", "backdrop"],
                    choices=["fern", "hololens", "lego", "backdrop"])
    ap.add_argument("--quick", action="store_true", help="60 s per fit")
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seconds = 60.0 if args.quick else args.seconds
    marks = [m for m in (60.0, 120.0, 300.0) if m < seconds] + [seconds]
    report: dict = {"seconds": seconds, "marks": marks, "captures": {}}
    for name in args.captures:
        scene = load(name, args.data)
        auto = choose_background(scene, FitConfig())
        runs = {"auto": auto} if auto in ("learned", "white", "black") else {"auto": auto, "single_colour": "learned"}
        entry: dict = {"capture": scene.meta.get("capture"), "frames": len(scene.frames)}
        schedules: dict = {key: {} for key in runs}
        if auto == "ndc":  # also one colour in a bounded cube on NDC's coarse-to-fine schedule: what NDC adds alone
            runs["single_colour_same_schedule"] = "learned"
            same = ndc_schedule(FitConfig(resolution=(256,)))
            schedules["single_colour_same_schedule"] = {
                k: getattr(same, k)
                for k in ("resolution", "upsample_at", "step_size", "lr_sh", "lr_sh_final", "distortion")}
        for key, background in runs.items():
            log(f"{name}: {key}: background {background}, {seconds:.0f} s")
            entry[key] = run_fit(scene, config(name, background, seconds, marks, args.device, **schedules[key]))
            log(f"{name}: {background} -> {entry[key]['psnr']} dB")
        if name in TARGETS:
            entry["target_psnr"] = TARGETS[name]
            entry["target_met"] = bool(entry["auto"]["psnr"] >= TARGETS[name])
        if "single_colour" in entry:
            entry["gain_db"] = round(entry["auto"]["psnr"] - entry["single_colour"]["psnr"], 3)
        report["captures"][name] = entry
    print(json.dumps(report))


if __name__ == "__main__":
    main()
