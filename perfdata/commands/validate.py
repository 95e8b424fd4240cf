"""`perfdata validate PATH`: check a dataset artefact. A dispatcher on what PATH is: each kind has a detector
and a checker in VALIDATORS (stores now; shards and downloads can add theirs)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import click

from perfdata.commands.common import print_table


def _is_store(path: str) -> bool:
    """A zarr store: a `.zarr` name or a zarr.json at the root (local or fsspec URL)."""
    if path.rstrip("/").endswith(".zarr"):
        return True
    return "://" not in path and (Path(path) / "zarr.json").is_file()


def _validate_store(path: str) -> tuple[str, list[str]]:
    from perfdata.store.validate import validate_store

    report = validate_store(path)
    return f"store {path}: {report.n_scenes} scenes, {report.n_voxels} voxels", [str(p) for p in report.problems]


# kind -> (detector, checker returning (summary, problems))
VALIDATORS: dict[str, tuple[Callable[[str], bool], Callable[[str], tuple[str, list[str]]]]] = {
    "store": (_is_store, _validate_store),
}


@click.command()
@click.argument("path")
def validate(path: str) -> None:
    """Check PATH (a dataset store: schema, versions, shapes, value ranges, NaNs, every chunk's checksum).
    Prints each problem and exits 2 (bad input) if there is any."""
    from perfdata.errors import InputError

    kinds = [name for name, (detect, _) in VALIDATORS.items() if detect(path)]
    if not kinds:
        raise InputError(path, f"not something perfdata validates (known: {', '.join(VALIDATORS)})")
    summary, problems = VALIDATORS[kinds[0]][1](path)
    if problems:
        print_table(f"{summary}: {len(problems)} problem(s)", [(p,) for p in problems], header=("problem",))
        sys.exit(2)
    click.echo(f"{summary}: ok")
