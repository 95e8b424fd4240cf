"""`perfdata synth`: synthetic scenes on disk in transforms.json form."""

from __future__ import annotations

from pathlib import Path

import click

from perfdata.commands.common import print_table


@click.command()
@click.option("--kind", type=click.Choice(["objects", "rooms"]), required=True, help="Object (CO3D-like) or room (ScanNet-like) scenes.")
@click.option("--scenes", "n_scenes", type=click.IntRange(min=0), default=5, show_default=True, help="Number of scenes.")
@click.option("--views", "n_views", type=click.IntRange(min=1), default=24, show_default=True, help="Cameras per scene.")
@click.option("--size", type=click.IntRange(min=1), default=64, show_default=True, help="Image width = height, pixels.")
@click.option("--seed", type=int, default=0, show_default=True, help="Run seed; scene i uses a seed derived from (seed, i).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Dataset root to write.")
@click.option("--backdrop", type=click.Choice(["plain", "textured"]), default="plain", show_default=True,
              help="Objects: plain background with masks, or a textured dome and ground without masks (CO3D-like).")
def synth(kind: str, n_scenes: int, n_views: int, size: int, seed: int, out: Path, backdrop: str) -> None:
    """Write synthetic scenes with exact depth, masks and labels (one folder per scene; existing ones are skipped)."""
    from perfdata.synthetic import SynthConfig, synthesize

    outcomes = synthesize(SynthConfig(kind, out, n_scenes, n_views, size, seed, backdrop))  # type: ignore[arg-type]
    rows = [(o.spec.name, o.spec.shape or "room", o.spec.seed, o.status, f"{o.seconds:.2f}") for o in outcomes]
    print_table(f"synth {kind} -> {out}", rows, header=["scene", "class", "seed", "status", "seconds"])
