"""`perfdata scenes inspect`: what a reader sees."""

from __future__ import annotations

import json
from typing import Any

import click

from perfdata.commands.common import READER_HELP, print_table


@click.group()
def scenes() -> None:
    """Inspect scenes as readers see them."""


@scenes.command("inspect")
@click.option("--reader", required=True, help=READER_HELP)
@click.option("--data", "data", required=True, type=click.Path(), help="A scene folder or a dataset root.")
@click.option("--scenes", "scene_ids", multiple=True, help="Scene ids to show (default: all).")
def inspect(reader: str, data: str, scene_ids: tuple[str, ...]) -> None:
    """Print frames, resolution, intrinsics, depth / mask / label availability, the capture kind, the
    normalisation and the reader's extras (bounds, image folders, ...)."""
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
            ("capture", s["capture"] or "-"),
            ("normalisation", f"scale {s['grid_scale']:.4g} m, centre "
             + "[" + ", ".join(f"{c:.3f}" for c in s["grid_center"]) + "]"),
            *((f"meta.{k}", _short(v)) for k, v in scene.meta.items() if k != "capture"),
        ]
        print_table(f"scene {s['scene_id']}", rows)


def _short(value: Any) -> str:
    """A meta value on one line: numbers to 4 significant digits, long lists as their length."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)) and len(value) > 4:
        return f"{len(value)} values"
    if isinstance(value, (list, tuple, dict)):
        text = json.dumps(_rounded(value), default=str)
        return text if len(text) <= 80 else text[:77] + "..."
    return str(value)


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value
