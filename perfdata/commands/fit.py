"""`perfdata fit`: one radiance field per scene."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from perfdata.commands.common import READER_HELP, print_table
from perfdata.errors import ConfigError


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
@click.option("--force", is_flag=True, help="Refit scenes already marked done.")
@click.option("--executor", default="local", show_default=True,
              help="local, dask[:N] (LocalCluster of N processes), tcp://HOST:PORT (a scheduler) or slurm[:N].")
@click.option("--shard", default=None, help="i/n: fit only every n-th scene starting at i (job arrays).")
@click.option("--dry-run", is_flag=True, help="List the scenes and whether they are done; fit nothing.")
def fit(method: str, reader: str, data: str, out: Path, scene_ids: tuple[str, ...], device: str | None,
        steps: int | None, max_seconds: float | None, resolution: str | None, downscale: float | None,
        holdout_every: int | None, config_file: str | None, seed: int | None, force: bool, executor: str,
        shard: str | None, dry_run: bool) -> None:
    """Fit a radiance field per scene into OUT/<scene_id>/ (grid.npz, fit.json, DONE); done scenes are skipped."""
    from perfdata.pipelines.fitconfig import FitConfig

    cfg = FitConfig.from_json(config_file) if config_file else FitConfig()
    res = _resolution(resolution)
    overrides = {"method": method, "device": device, "steps": steps, "max_seconds": max_seconds, "resolution": res,
                 "downscale": downscale, "holdout_every": holdout_every, "seed": seed}
    changes = {k: v for k, v in overrides.items() if v is not None}
    if res is not None and len(cfg.upsample_at) < len(res) - 1:
        changes["upsample_at"] = tuple((i + 1) * 0.35 / (len(res) - 1) for i in range(len(res) - 1))
    cfg = dataclasses.replace(cfg, **changes)
    if method != "plenoxel":
        raise ConfigError(f"fit method {method!r} is not implemented yet (only plenoxel is)")
    from perfdata.executor import parse_executor, parse_shard

    executor_cfg, shard_ij = parse_executor(executor), parse_shard(shard)
    if dry_run:
        _dry_run(reader, data, scene_ids, out, shard_ij)
        return
    outcomes = _run(reader, data, scene_ids, out, cfg, force, executor_cfg, shard_ij)
    rows = [(o.scene_id, o.status, _fmt(o.metrics.get("psnr")), _fmt(o.metrics.get("ssim"), 3),
             _fmt(o.metrics.get("depth_abs_rel"), 3), f"{o.seconds:.1f}", o.error or "") for o in outcomes]
    print_table(f"fit {method} -> {out}", rows, header=["scene", "status", "psnr", "ssim", "depth_abs_rel", "seconds", "error"])
    if any(o.status == "failed" for o in outcomes):
        raise SystemExit(1)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _dry_run(reader: str, data: str, scene_ids: tuple[str, ...], out: Path, shard: tuple[int, int] | None) -> None:
    from perfdata.executor import shard_items
    from perfdata.pipelines.fit import select_scene_ids
    from perfdata.status import item_status

    ids = shard_items(select_scene_ids(reader, data, scene_ids), shard)
    print_table(f"fit --dry-run: {len(ids)} scenes -> {out}", [(i, item_status(out / i).state) for i in ids],
                header=["scene", "state"])


def _run(reader, data, scene_ids, out, cfg, force, executor, shard):  # type: ignore[no-untyped-def]
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from perfdata.pipelines.fit import fit_scenes

    total = cfg.max_seconds if cfg.max_seconds is not None else float(cfg.steps)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn()) as progress:
        tasks: dict[str, int] = {}

        def callback(scene_id: str, p) -> None:  # type: ignore[no-untyped-def]
            if scene_id not in tasks:
                tasks[scene_id] = progress.add_task(scene_id, total=total, info="")
            done = p.seconds if cfg.max_seconds is not None else p.step
            info = (f"step {p.step}  loss {p.loss:.4f}  psnr {p.psnr:.2f}  {p.rays_per_second:,.0f} rays/s  "
                    f"{p.resolution}^3 {p.n_voxels:,} vox")
            progress.update(tasks[scene_id], completed=min(done, total), info=info)

        return fit_scenes(reader, data, scene_ids, out, cfg, force=force, callback=callback, executor=executor,
                          shard=shard)
