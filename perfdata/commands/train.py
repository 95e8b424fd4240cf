"""`perfdata train {cls2d,cls3d,seg3d}`: train a downstream model on shards or a store; a summary table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from perfdata.commands.common import print_table


def _common(f: Callable[..., Any]) -> Callable[..., Any]:
    """Options every task shares."""
    for opt in reversed([
        click.option("--out", required=True, type=click.Path(), help="Output folder (metrics.json, model, curve)."),
        click.option("--epochs", type=click.IntRange(1), default=10, show_default=True),
        click.option("--batch-size", type=click.IntRange(1), default=16, show_default=True),
        click.option("--lr", type=float, default=3e-3, show_default=True, help="AdamW learning rate."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True),
    ]):
        f = opt(f)
    return f


def _grid_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Options of the tasks that read dense grids from a store (cls3d, seg3d)."""
    f = click.option("--val-fraction", type=float, default=0.25, show_default=True,
                     help="Fraction of scenes for val.")(f)
    return click.option("--reso", type=click.IntRange(4), default=32, show_default=True,
                        help="Dense grid resolution.")(f)


def _run_and_report(**kwargs: Any) -> None:
    from perfdata.downstream.train import TrainConfig, train

    res = train(TrainConfig(**kwargs))
    rows = [(e.epoch, f"{e.train_loss:.4f}", f"{e.train_metric:.3f}", f"{e.val_metric:.3f}", f"{e.seconds:.1f}")
            for e in res.epochs]
    print_table(f"train {res.task} -> {res.out_dir}: {len(res.classes)} classes, {res.n_train} train / "
                f"{res.n_val} val, {res.n_params} params, {res.device}, {res.wall_seconds:.1f} s", rows,
                header=("epoch", "train loss", f"train {res.metric}", f"val {res.metric}", "seconds"))


@click.group()
def train() -> None:
    """Train a downstream model: cls2d (views from shards), cls3d / seg3d (dense grids from a store)."""


@train.command()
@click.option("--shards", required=True, type=click.Path(), help="Shard folder with index.json (`perfdata pack`).")
@_common
@click.option("--size", type=click.IntRange(8), default=32, show_default=True, help="Images resized to S x S.")
@click.option("--verify", is_flag=True, help="Check every shard's sha256 against index.json first.")
def cls2d(shards: str, **kwargs: Any) -> None:
    """Classify rendered views (ResNet-style CNN)."""
    _run_and_report(task="cls2d", data=shards, **kwargs)


@train.command()
@click.option("--store", required=True, help="Dataset store path or fsspec URL.")
@_common
@_grid_options
def cls3d(store: str, **kwargs: Any) -> None:
    """Classify scenes from dense grids (3D CNN); classes are the store's class names."""
    _run_and_report(task="cls3d", data=store, **kwargs)


@train.command()
@click.option("--store", required=True, help="Dataset store path or fsspec URL (scenes with voxel labels).")
@_common
@_grid_options
def seg3d(store: str, **kwargs: Any) -> None:
    """Segment voxels of dense grids (3D U-Net); -1 labels are ignored."""
    _run_and_report(task="seg3d", data=store, **kwargs)
