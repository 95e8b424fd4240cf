"""`perfdata demo`: the pipeline on embedded synthetic scenes, with a report."""

from __future__ import annotations

from pathlib import Path

import click

from perfdata.commands.common import print_table


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
@click.option("--scenes", "n_scenes", type=click.IntRange(min=1), default=3, show_default=True, help="Object scenes (and as many rooms).")
@click.option("--size", type=click.IntRange(min=8), default=64, show_default=True, help="Image width = height, pixels.")
@click.option("--views", "n_views", type=click.IntRange(min=1), default=12, show_default=True, help="Cameras per scene.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the synthetic scenes.")
def demo(out: Path, n_scenes: int, size: int, n_views: int, seed: int) -> None:
    """Make synthetic scenes, then write report/contact_sheet.png and report/report.md under OUT."""
    from perfdata.demo import DemoConfig, run_demo

    result = run_demo(DemoConfig(out, n_scenes=n_scenes, size=size, n_views=n_views, seed=seed))
    rows = [(name, f"{sec:.2f}") for name, sec in result.timings.items()]
    rows += [(name, str(path)) for name, path in result.artefacts.items()]
    print_table(f"demo -> {out} ({len(result.scenes)} scenes)", rows, header=["step / artefact", "seconds / path"])
