"""Helpers shared by the click commands: tables and progress."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

READER_HELP = ("Reader NAME or NAME:KEY=VALUE,... (options, e.g. co3d:min_quality=0.5,depth=off; see README): "
               "blender, synthetic, rgbd, scannet, replica, co3d, llff, colmap.")


def print_table(title: str, rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None) -> None:
    """Print a small table with rich (to stdout)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=header is not None)
    for name in header or [""] * (len(rows[0]) if rows else 2):
        table.add_column(name)
    for row in rows:
        table.add_row(*(str(v) for v in row))
    console = Console(width=120)
    console.print(title, soft_wrap=True, markup=False, highlight=False)
    console.print(table)
