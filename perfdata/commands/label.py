"""`perfdata label`: 3D labels for a store's scenes from labelled meshes or from 2D label maps through depth."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from perfdata.commands.common import exit_if_failed, print_outcomes, runner_options

if TYPE_CHECKING:
    from perfdata.runner import RunConfig


@click.command()
@click.option("--store", "store_url", required=True, help="The dataset store (path or fsspec URL).")
@click.option("--scenes", "scene_ids", multiple=True, help="Scenes to label (default: all).")
@click.option("--points", "points_template", help="Labelled PLY per scene; '{scene}' is replaced by the scene id, "
              "e.g. 'scans/{scene}/{scene}_vh_clean_2.labels.ply'.")
@click.option("--reader", help="Fuse 2D label maps: the reader of the captures (scannet, replica, synthetic...).")
@click.option("--data", type=click.Path(), help="Fuse 2D label maps: the captures' root for --reader.")
@click.option("--max-dist", type=float, default=0.05, show_default=True, help="Metres to the nearest vertex.")
@click.option("--ignore-id", "ignore_ids", type=int, multiple=True, help="Vertex labels that mean unlabelled.")
@runner_options
def label(store_url: str, scene_ids: tuple[str, ...], points_template: str | None, reader: str | None,
          data: str | None, max_dist: float, ignore_ids: tuple[int, ...], run: RunConfig) -> None:
    """Give each voxel the label of the nearest labelled vertex within --max-dist (--points), or the majority
    of back-projected 2D labels (--reader/--data); -1 elsewhere. Writes labels (and label_dist) into the store;
    scenes labelled before are skipped (--force relabels). Exits 1 if any scene failed."""
    from perfdata.errors import ConfigError
    from perfdata.pipelines.labels import LabelConfig, label_scenes
    from perfdata.store import open_store

    if (points_template is None) == (reader is None or data is None):
        raise ConfigError("give either --points TEMPLATE or both --reader and --data")
    cfg = LabelConfig(max_dist=max_dist, ignore_ids=ignore_ids)
    ids = scene_ids or open_store(store_url).scene_ids
    outcomes = label_scenes(store_url, ids, cfg, points_template, reader, data, run)
    print_outcomes(f"labels -> {store_url}", outcomes, [
        ("voxels", lambda o: o.facts.get("n_voxels", "")), ("labelled", lambda o: o.facts.get("n_labelled", ""))])
    exit_if_failed(outcomes)
