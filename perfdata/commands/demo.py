"""`perfdata demo`: the whole pipeline on embedded synthetic scenes, with a report."""

from __future__ import annotations

from pathlib import Path

import click

from perfdata.commands.common import print_table


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
@click.option("--scenes", "n_scenes", type=click.IntRange(min=1, max=10), default=3, show_default=True,
              help="Object scenes (and as many rooms).")
@click.option("--size", type=click.IntRange(min=16), default=64, show_default=True, help="Image width = height, pixels.")
@click.option("--views", "n_views", type=click.IntRange(min=6), default=12, show_default=True, help="Cameras per scene.")
@click.option("--fit-seconds", type=click.FloatRange(min=1), default=20.0, show_default=True,
              help="Wall-clock budget of each scene's fit.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the scenes, fits, renders, training.")
@click.option("--executor", default="dask:2", show_default=True,
              help="Where the fits run: local, dask:N (a LocalCluster of N worker processes), tcp://HOST:PORT, ...")
def demo(out: Path, n_scenes: int, size: int, n_views: int, fit_seconds: float, seed: int, executor: str) -> None:
    """Synthesize scenes, serve them as a local mirror and download them, fit (objects: plenoxel, rooms:
    semantic) on a 2-worker LocalCluster, export, label, render, pack, train cls2d, cls3d and seg3d; write
    report/index.html (and report.md) under OUT. A rerun skips what is done."""
    from perfdata.pipelines.demo import DemoConfig, run_demo

    cfg = DemoConfig(out, n_scenes=n_scenes, size=size, n_views=n_views, seed=seed, fit_seconds=fit_seconds,
                     executor=executor)
    result = run_demo(cfg, on_step=lambda name: click.echo(f"demo: {name} ...", err=True))
    rows = [(name, f"{sec:.2f}") for name, sec in result.timings.items()]
    rows += [(name, str(path)) for name, path in result.artefacts.items()]
    print_table(f"demo -> {out} ({len(result.scenes)} scenes)", rows, header=["step / artefact", "seconds / path"])
    for note in result.notes:
        click.echo(note)
