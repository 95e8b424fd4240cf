"""`perfdata train {cls2d,cls3d,seg3d}`: train a downstream model on shards or a store; a summary table."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click

from perfdata.commands.common import print_table

FEATURES = ("coords", "density", "sh", "sh+density")


def _options(*opts: Callable[..., Any]) -> Callable[..., Any]:
    def apply(f: Callable[..., Any]) -> Callable[..., Any]:
        for opt in reversed(opts):
            f = opt(f)
        return f

    return apply


_common = _options(
    click.option("--out", required=True, type=click.Path(), help="Output folder (metrics.json, model, pictures)."),
    click.option("--epochs", type=click.IntRange(1), default=10, show_default=True),
    click.option("--batch-size", type=click.IntRange(1), default=16, show_default=True, help="Per process."),
    click.option("--lr", type=float, default=3e-3, show_default=True, help="AdamW learning rate (cosine decay)."),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True),
    click.option("--scenes", multiple=True, help="Scene ids or globs to use (repeatable; default all)."),
    click.option("--workers", type=click.IntRange(0), default=0, show_default=True, help="DataLoader workers."),
    click.option("--nproc", type=click.IntRange(1), default=1, show_default=True,
                 help="Data-parallel processes on this machine (gloo on CPU, nccl on GPU); or start with torchrun."),
    click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint.pt (same settings)."),
    click.option("--colour-aug", type=click.FloatRange(0, 1), default=0.0, show_default=True,
                 help="Probability of re-colouring a training input (RGB permuted, gains, shifts; SH of grids)."),
)

_grid = _options(
    click.option("--reso", type=click.IntRange(4), default=32, show_default=True, help="Grid resolution."),
    click.option("--val-fraction", type=float, default=0.25, show_default=True, help="Fraction of scenes for val."),
    click.option("--features", type=click.Choice(FEATURES), default="sh+density", show_default=True,
                 help="Per-cell inputs."),
    click.option("--backbone", type=click.Choice(["dense", "sparse"]), default="dense", show_default=True,
                 help="Dense 3D CNN or sparse spconv network (extra 'sparse')."),
)


def _run_and_report(nproc: int, scenes: tuple[str, ...], **kwargs: Any) -> None:
    from perfdata.downstream.distributed import launch
    from perfdata.downstream.train import TrainConfig, train

    cfg = TrainConfig(scenes=tuple(scenes), **kwargs)
    res = train(cfg) if nproc == 1 else launch(nproc, train, (cfg,))
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports
        return
    rows = [(e.epoch, f"{e.train_loss:.4f}", f"{e.train_metric:.3f}", f"{e.val_metric:.3f}", f"{e.seconds:.1f}")
            for e in res.epochs]
    source = f", source-image top-1 {res.extra['source_top1']:.3f}" if "source_top1" in res.extra else ""
    print_table(f"train {res.task} -> {res.out_dir}: {len(res.classes)} classes, {res.n_train} train / "
                f"{res.n_val} val, {res.n_params} params, {res.device} x {res.extra.get('world_size', 1)}, {res.wall_seconds:.1f} s{source}",
                rows, header=("epoch", "train loss", f"train {res.metric}", f"val {res.metric}", "seconds"))


@click.group()
def train() -> None:
    """Train a downstream model: cls2d (views from shards), cls3d / seg3d (grids from a store)."""


@train.command()
@click.option("--shards", required=True, help="Shard folder or URL with index.json (`perfdata pack`).")
@_common
@click.option("--size", type=click.IntRange(8), default=32, show_default=True, help="Images resized to S x S.")
@click.option("--bg-aug", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Probability of pasting the object onto another train scene's background render.")
@click.option("--eval-images", default="", help="READER:PATH: also score the held-out scenes' source images.")
@click.option("--val-shards", "val_data", default="", help="Use this shard folder's val split instead.")
@click.option("--verify", is_flag=True, help="Check every shard's sha256 against index.json first.")
@click.option("--skip-bad", is_flag=True, help="Skip samples with a missing or bad member (counted) instead of failing.")
def cls2d(shards: str, **kwargs: Any) -> None:
    """Classify rendered views (ResNet-style CNN)."""
    _run_and_report(task="cls2d", data=shards, **kwargs)


@train.command()
@click.option("--store", required=True, help="Dataset store path or fsspec URL.")
@_common
@_grid
@click.option("--foreground-only", is_flag=True,
              help="Only the object's voxels (labels not background/wall/floor/ceiling), framed to their box.")
def cls3d(store: str, **kwargs: Any) -> None:
    """Classify scenes from their voxel grids; classes are the chosen scenes' class names."""
    _run_and_report(task="cls3d", data=store, **kwargs)


@train.command()
@click.option("--store", required=True, help="Dataset store path or fsspec URL (scenes with voxel labels).")
@_common
@_grid
def seg3d(store: str, **kwargs: Any) -> None:
    """Segment voxel cells (3D U-Net, dense or sparse); -1 labels are ignored."""
    _run_and_report(task="seg3d", data=store, **kwargs)
