"""`perfdata scenes inspect`: what a reader sees."""

from __future__ import annotations

import click

from perfdata.commands.common import print_table


@click.group()
def scenes() -> None:
    """Inspect scenes as readers see them."""


@scenes.command("inspect")
@click.option("--reader", required=True, help="Reader name: blender, synthetic, rgbd, scannet, replica, co3d.")
@click.option("--data", "data", required=True, type=click.Path(), help="A scene folder or a dataset root.")
@click.option("--scenes", "scene_ids", multiple=True, help="Scene ids to show (default: all).")
def inspect(reader: str, data: str, scene_ids: tuple[str, ...]) -> None:
    """Print frames, resolution, intrinsics, depth / mask / label availability and the normalisation."""
    from perfdata.readers import load_scenes

    for scene in load_scenes(reader, data, scene_ids):
        s = scene.summary()
        rows = [
            ("scene", s["scene_id"]),
            ("source", s["source"]),
            ("frames", f"{s['frames']} ({s['train']} train, {s['heldout']} held out)"),
            ("resolution", ", ".join(f"{w}x{h}" for w, h in s["resolution"])),
            ("intrinsics", f"fx {s['fx']:.2f}  fy {s['fy']:.2f}  cx {s['cx']:.2f}  cy {s['cy']:.2f}"),
            ("depth", "yes" if s["depth"] else "no"),
            ("masks", "yes" if s["masks"] else "no"),
            ("labels", "yes" if s["labels"] else "no"),
            ("points", str(s["points"])),
            ("class", s["class_name"] or "-"),
            ("normalisation", f"scale {s['grid_scale']:.4g} m, centre "
             + "[" + ", ".join(f"{c:.3f}" for c in s["grid_center"]) + "]"),
        ]
        print_table(f"scene {s['scene_id']}", rows)
