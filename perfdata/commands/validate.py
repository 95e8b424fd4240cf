"""`perfdata validate PATH`: check a dataset artefact. A dispatcher on what PATH is: each kind has a detector
and a checker in VALIDATORS (stores and shard folders now; downloads can add theirs)."""

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


def _is_shards(path: str) -> bool:
    """A shard folder: an index.json that lists shards (a mirror's index.json lists chunks)."""
    import json

    index = Path(path) / "index.json"
    try:
        return "://" not in path and index.is_file() and "shards" in json.loads(index.read_text())
    except ValueError:
        return True  # a damaged index: let the shard checker say so


def _validate_shards(path: str) -> tuple[str, list[str]]:
    from perfdata.shardcheck import validate_shards

    return validate_shards(path)


# kind -> (detector, checker returning (summary, problems))
VALIDATORS: dict[str, tuple[Callable[[str], bool], Callable[[str], tuple[str, list[str]]]]] = {
    "store": (_is_store, _validate_store),
    "shards": (_is_shards, _validate_shards),
}


@click.command()
@click.argument("path")
def validate(path: str) -> None:
    """Check PATH: a dataset store (schema, versions, shapes, value ranges, NaNs, every chunk's checksum) or a
    shard folder (index.json, every shard's set, size, sha256 and sample count). Prints each problem and exits 2
    (bad input) if there is any."""
    from perfdata.errors import InputError

    kinds = [name for name, (detect, _) in VALIDATORS.items() if detect(path)]
    if not kinds:
        raise InputError(path, f"not something perfdata validates (known: {', '.join(VALIDATORS)})")
    summary, problems = VALIDATORS[kinds[0]][1](path)
    if problems:
        print_table(f"{summary}: {len(problems)} problem(s)", [(p,) for p in problems], header=("problem",))
        sys.exit(2)
    click.echo(f"{summary}: ok")
