"""`perfdata fit`: one radiance field per scene."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from perfdata.commands.common import READER_HELP, exit_if_failed, print_outcomes, runner_options
from perfdata.errors import ConfigError, InputError

if TYPE_CHECKING:
    from perfdata.pipelines.fitconfig import FitConfig
    from perfdata.runner import RunConfig, TaskOutcome


def _resolution(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError:
        raise ConfigError(f"--resolution must be R or R1,R2 (integers), got {value!r}") from None


@click.command()
@click.option("--method", type=click.Choice(["plenoxel", "semantic", "generalizable"]), default="plenoxel", show_default=True)
@click.option("--reader", required=True, help=READER_HELP)
@click.option("--data", required=True, type=click.Path(), help="A scene folder or a dataset root.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder (one sub-folder per scene).")
@click.option("--scenes", "scene_ids", multiple=True, help="Scene ids to fit (default: all).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help="auto picks cuda when available.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Maximum optimisation steps.")
@click.option("--max-seconds", type=click.FloatRange(min=0), default=None, help="Optimisation wall-clock budget per scene.")
@click.option("--resolution", default=None, help="Grid resolution R, or coarse-to-fine R1,R2.")
@click.option("--downscale", type=click.FloatRange(min=1), default=None, help="Resize images by 1/F.")
@click.option("--holdout-every", type=click.IntRange(min=0), default=None, help="Hold out frame i when i % K == 0 (default 8; 0 keeps the reader's split).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None, help="JSON file of FitConfig fields.")
@click.option("--seed", type=int, default=None, help="Random seed.")
@click.option("--background", type=click.Choice(["auto", "white", "black", "learned", "msi", "ndc"]), default=None,
              help="plenoxel: what lies behind the grid (default auto: from the capture; fit.json records the "
                   "choice). msi = multi-sphere layers outside the cube, for captures with surroundings; ndc = "
                   "the grid in NDC reaches to infinity, for forward-facing captures (LLFF).")
@click.option("--source-views", type=click.IntRange(min=1), default=None,
              help="generalizable: source views per scene (default 3).")
@click.option("--source-choice", type=click.Choice(["spread", "nearest"]), default=None,
              help="generalizable: one spread set of source views per scene (default), or each target's nearest "
                   "frames (for rooms).")
@click.option("--resume", is_flag=True, help="generalizable: continue the run's checkpoint in OUT.")
@click.option("--init-from", type=click.Path(file_okay=False), default=None,
              help="plenoxel: start from the prediction of this generalizable run.")
@click.option("--label-frames", type=float, default=None, help="semantic: label only this fraction of training frames.")
@click.option("--label-noise", type=float, default=None,
              help="semantic: set this fraction of labelled pixels to a random other class.")
@click.option("--label-downscale", type=int, default=None, help="semantic: labels given at 1/K resolution.")
@click.option("--label-clicks", type=int, default=None, help="semantic: only N labelled pixels per class per frame.")
@click.option("--from-fit", type=click.Path(file_okay=False), default=None,
              help="semantic: keep the grids of this plenoxel fits folder, learn only the logits.")
@runner_options
def fit(method: str, reader: str, data: str, out: Path, scene_ids: tuple[str, ...], device: str | None,
        steps: int | None, max_seconds: float | None, resolution: str | None, downscale: float | None,
        holdout_every: int | None, config_file: str | None, seed: int | None, source_views: int | None,
        source_choice: str | None, resume: bool, init_from: str | None, background: str | None, label_frames: float | None,
        label_noise: float | None, label_downscale: int | None, label_clicks: int | None, from_fit: str | None,
        run: RunConfig) -> None:
    """Fit a radiance field per scene into OUT/<scene_id>/ (grid.npz, fit.json, DONE); done scenes are skipped.
    Exits 1 when a scene failed (see `perfdata status OUT`). --method generalizable trains one field across the
    scenes into OUT (model.safetensors, curves.png, fit.json)."""
    if method == "generalizable":
        from perfdata.commands.fit_generalizable import fit_generalizable_from_cli

        return fit_generalizable_from_cli(reader, data, out, scene_ids, config_file, resume, run, resolution=resolution,
                                          downscale=downscale, holdout_every=holdout_every, init_from=init_from,
                                          device=device, steps=steps, max_seconds=max_seconds, seed=seed,
                                          source_views=source_views, source_choice=source_choice)
    if source_views is not None or source_choice is not None or resume:
        raise ConfigError("--source-views, --source-choice and --resume are options of --method generalizable")
    if init_from is not None:
        from perfdata.pipelines.generalizable_ckpt import load_model

        load_model(init_from)  # a bad checkpoint is bad input before any fit starts
    cfg = _config(config_file, method, device, steps, max_seconds, resolution, downscale, holdout_every, seed)
    extra: dict[str, Any] = {"background": background} if background else {}
    cfg = dataclasses.replace(cfg, init_from=init_from, **extra)
    semantic = {"label_frames": label_frames, "label_noise": label_noise, "label_downscale": label_downscale,
                "label_clicks": label_clicks, "from_fit": from_fit}
    given: dict[str, Any] = {k: v for k, v in semantic.items() if v is not None}
    if given and method != "semantic":
        raise ConfigError(f"--{', --'.join(k.replace('_', '-') for k in given)}: options of --method semantic")
    if given:
        cfg = dataclasses.replace(cfg, semantic=dataclasses.replace(cfg.semantic, **given))
    if from_fit is not None and not Path(from_fit).is_dir():
        raise InputError(from_fit, "--from-fit: no such fits folder")
    outcomes = _run(reader, data, scene_ids, out, cfg, run)
    columns = [("ssim", lambda o: _fmt(o.metrics.get("ssim"), 3)),
               ("depth_abs_rel", lambda o: _fmt(o.metrics.get("depth_abs_rel"), 3))]
    if method == "semantic":
        columns += [("miou", lambda o: _fmt(o.metrics.get("miou"), 3)),
                    ("input_miou", lambda o: _fmt(o.metrics.get("input_miou"), 3))]
    print_outcomes(f"fit {method} -> {out}", outcomes, columns)
    exit_if_failed(outcomes)


def _config(config_file: str | None, method: str, device: str | None, steps: int | None, max_seconds: float | None,
            resolution: str | None, downscale: float | None, holdout_every: int | None, seed: int | None
            ) -> FitConfig:
    from perfdata.pipelines.fitconfig import FitConfig

    cfg = FitConfig.from_json(config_file) if config_file else FitConfig()
    res = _resolution(resolution)
    overrides = {"method": method, "device": device, "steps": steps, "max_seconds": max_seconds, "resolution": res,
                 "downscale": downscale, "holdout_every": holdout_every, "seed": seed}
    changes: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    if res is not None and len(cfg.upsample_at) < len(res) - 1:
        changes["upsample_at"] = tuple((i + 1) * 0.35 / (len(res) - 1) for i in range(len(res) - 1))
    cfg = dataclasses.replace(cfg, **changes)
    return cfg


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _run(reader: str, data: str, scene_ids: tuple[str, ...], out: Path, cfg: FitConfig, run: RunConfig
         ) -> list[TaskOutcome]:
    from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    from perfdata.pipelines.fit import fit_scenes

    total = cfg.max_seconds if cfg.max_seconds is not None else float(cfg.steps)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn()) as progress:
        tasks: dict[str, TaskID] = {}

        def callback(scene_id: str, p) -> None:  # type: ignore[no-untyped-def]
            if scene_id not in tasks:
                tasks[scene_id] = progress.add_task(scene_id, total=total, info="")
            done = p.seconds if cfg.max_seconds is not None else p.step
            info = (f"step {p.step}  loss {p.loss:.4f}  psnr {p.psnr:.2f}  {p.rays_per_second:,.0f} rays/s  "
                    f"{p.resolution}^3 {p.n_voxels:,} vox")
            progress.update(tasks[scene_id], completed=min(done, total), info=info)

        return fit_scenes(reader, data, scene_ids, out, cfg, run, callback=callback)
