"""Depth-supervised 3D labels for a stored (or any) voxel grid, in the metric world frame.

- From a labelled mesh or point cloud (a PLY with a `label` vertex property, e.g. ScanNet's
  `<scene>_vh_clean_2.labels.ply`): each voxel centre takes the label of the nearest labelled vertex within
  `max_dist` (5 cm), else -1; the distance to that vertex is kept (`label_dist`).
- From 2D label maps through depth: every labelled pixel with a depth is back-projected to the world, snapped
  to the nearest voxel centre within `snap_voxels` voxel sizes, and votes; each voxel takes its majority label
  (-1 without votes).

`label_store` writes `labels` (int16) and `label_dist` (float16) into a scene of the store: locally a copy of
the scene group gets the arrays and replaces the original (atomic); remotely the arrays go first, attrs last.
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from scipy.spatial import cKDTree

from perfdata import camera
from perfdata.atomic import atomic_dir, remove_stale
from perfdata.errors import ConfigError, InputError
from perfdata.grid import SparseGrid
from perfdata.markers import Markers
from perfdata.runner import RunConfig, StageJob, TaskOutcome, run_stage
from perfdata.scene import Frame
from perfdata.store.chunks import write_chunks
from perfdata.store.codecs import choose_codec, quiet_numcodecs
from perfdata.store.reader import Store
from perfdata.store.schema import SCENE_KEY
from perfdata.store.writer import WriteConfig, staging_name

LABEL_SHIFT = 16  # vote keys: voxel << 16 | label


@dataclass(frozen=True)
class LabelConfig:
    max_dist: float = 0.05
    """Metres: farther than this from every labelled vertex, a voxel is ignore (-1)."""
    ignore_ids: tuple[int, ...] = ()
    """Vertex labels treated as unlabelled (besides negatives), e.g. (0,) for ScanNet's nyu40 'unannotated'."""
    snap_voxels: float = 1.5
    """2D fusion: a back-projected pixel votes for the nearest voxel centre within this many voxel sizes."""
    pixel_stride: int = 1
    """2D fusion: use every n-th pixel in each direction."""
    fill_voxels: float = 2.0
    """2D fusion: a voxel without votes takes the label of the nearest voted voxel within this many voxel sizes
    (the rendered surface spreads over a shell of a few voxels; 0 turns the fill off)."""


def read_labelled_points(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(m, 3) float64 vertex positions and (m,) int64 labels of a PLY with a `label` vertex property."""
    from plyfile import PlyData

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        vertex = PlyData.read(str(path))["vertex"]
    except Exception as exc:  # noqa: BLE001 -- plyfile raises many kinds
        raise InputError(path, f"not a readable PLY with vertices ({exc})") from None
    names = {p.name for p in vertex.properties}
    if "label" not in names:
        raise InputError(path, f"PLY vertices have no 'label' property (have {', '.join(sorted(names))})")
    pts = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1).astype(np.float64)
    return pts, np.asarray(vertex["label"]).astype(np.int64)


def labels_from_points(
    grid: SparseGrid, points: np.ndarray, point_labels: np.ndarray, cfg: LabelConfig = LabelConfig()
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest labelled vertex within cfg.max_dist.

    Args: points (m, 3) world; point_labels (m,).
    Returns: labels (n,) int16 (-1 = none near) and dist (n,) float32 metres to the nearest labelled vertex.
    """
    assert points.shape == (len(point_labels), 3), f"points must be (m, 3) beside (m,) labels, got {points.shape}"
    keep = (point_labels >= 0) & ~np.isin(point_labels, cfg.ignore_ids)
    if not keep.any() or grid.n_voxels == 0:
        return np.full(grid.n_voxels, -1, np.int16), np.full(grid.n_voxels, np.inf, np.float32)
    dist, idx = cKDTree(points[keep]).query(grid.world_centers(), k=1)
    labels = np.where(dist <= cfg.max_dist, point_labels[keep][idx], -1).astype(np.int16)
    return labels, dist.astype(np.float32)


def voxel_size(grid: SparseGrid) -> float:
    """World size of one voxel edge (the similarity's scale times 2 / R)."""
    scale = float(np.cbrt(abs(np.linalg.det(np.asarray(grid.world_from_grid)[:3, :3]))))
    return scale * 2.0 / float(max(grid.reso))


def frame_votes(frame: Frame, tree: cKDTree, max_dist: float, stride: int) -> np.ndarray:
    """Unique vote keys (voxel << 16 | label) of one frame's labelled, depth-valid pixels, with counts (2, k)."""
    depth, labels = frame.load_depth(), frame.load_labels()
    if depth is None or labels is None:
        return np.zeros((2, 0), np.int64)
    if stride > 1:
        depth = np.where(_stride_mask(depth.shape, stride), depth, 0)
    pts, flat = camera.backproject(depth, frame.K, frame.c2w)
    lab = labels.ravel()[flat].astype(np.int64)
    ok = lab >= 0
    dist, idx = tree.query(pts[ok], k=1, distance_upper_bound=max_dist)
    hit = np.isfinite(dist)
    keys, counts = np.unique((idx[hit].astype(np.int64) << LABEL_SHIFT) | lab[ok][hit], return_counts=True)
    return np.stack([keys, counts])


def _stride_mask(shape: tuple[int, ...], stride: int) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[::stride, ::stride] = True
    return mask


def labels_from_maps(
    grid: SparseGrid, frames: Iterable[Frame], cfg: LabelConfig = LabelConfig()
) -> tuple[np.ndarray, np.ndarray]:
    """Majority vote of back-projected 2D labels.

    Returns: labels (n,) int16 (-1 = no votes) and votes (n,) int32 of the winning label.
    """
    tree = cKDTree(grid.world_centers())
    max_dist = cfg.snap_voxels * voxel_size(grid)
    keys, counts = np.zeros(0, np.int64), np.zeros(0, np.int64)
    for frame in frames:
        kc = frame_votes(frame, tree, max_dist, cfg.pixel_stride)
        keys, inverse = np.unique(np.concatenate([keys, kc[0]]), return_inverse=True)
        counts = np.bincount(inverse, weights=np.concatenate([counts, kc[1]])).astype(np.int64) if len(keys) else counts
    labels = np.full(grid.n_voxels, -1, np.int16)
    votes = np.zeros(grid.n_voxels, np.int32)
    if len(keys):
        voxel, label = keys >> LABEL_SHIFT, keys & ((1 << LABEL_SHIFT) - 1)
        order = np.lexsort((counts, voxel))  # by voxel, then count ascending: the last of each voxel wins
        last = np.r_[voxel[order][1:] != voxel[order][:-1], True]
        win = order[last]
        labels[voxel[win]] = label[win]
        votes[voxel[win]] = counts[win]
    return fill_labels(grid, labels, cfg.fill_voxels * voxel_size(grid)), votes


def fill_labels(grid: SparseGrid, labels: np.ndarray, max_dist: float) -> np.ndarray:
    """Labels (n,) with each unlabelled voxel given the label of the nearest labelled one within max_dist."""
    known = labels >= 0
    if max_dist <= 0 or not known.any() or known.all():
        return labels
    centres = grid.world_centers()
    dist, idx = cKDTree(centres[known]).query(centres[~known], k=1, distance_upper_bound=max_dist)
    out = labels.copy()
    near = np.isfinite(dist)
    out[np.flatnonzero(~known)[near]] = labels[known][idx[near]]
    return out


def label_store(store: Store, scene_id: str, labels: np.ndarray, dist: np.ndarray | None, source: str) -> None:
    """Add (or replace) `labels` / `label_dist` in a store scene, recording where they came from."""
    attrs = store.scene_attrs(scene_id)
    assert labels.shape == (attrs.n_voxels,), f"labels must be ({attrs.n_voxels},), got {labels.shape}"
    arrays = {"labels": labels.astype(np.int16)}
    if dist is not None:
        arrays["label_dist"] = np.minimum(dist, 65504.0).astype(np.float16)
    extra = dict(attrs.extra, labels_source=source)
    new_attrs = dataclasses.replace(attrs, extra=extra).to_json()
    loc, key = store.loc, store.loc.scene_key(scene_id)
    if loc.is_local:
        like = staging_name(loc, scene_id)  # beside the store, outside its hierarchy
        remove_stale(like.parent, like.name)
        with atomic_dir(loc.local_path / key, tmp_like=like) as tmp:
            shutil.copytree(loc.local_path / key, tmp, dirs_exist_ok=True)
            _add_arrays(zarr.storage.LocalStore(tmp), arrays, new_attrs)
    else:
        _add_arrays(loc.zarr_store(key, read_only=False), arrays, new_attrs)


def _add_arrays(target: object, arrays: dict[str, np.ndarray], attrs: dict) -> None:
    cfg = WriteConfig()
    codecs = dict(attrs.get("codecs", {}))
    with quiet_numcodecs():
        group = zarr.open_group(target, mode="r+", zarr_format=3)
        for name, data in arrays.items():
            choice = choose_codec(data, cfg.chunk_bytes, cfg.zstd_level)
            arr = group.create_array(name, shape=data.shape, dtype=data.dtype, overwrite=True,
                                     **choice.array_kwargs(data.shape, data.dtype, cfg.chunk_bytes))
            write_chunks(arr, data)
            codecs[name] = choice.name
        group.attrs[SCENE_KEY] = dict(attrs, codecs=codecs)


def label_scene(store_url: str, cfg: LabelConfig, points_template: str | None, reader: str | None,
                data: str | None, scene_id: str) -> dict[str, Any]:
    """Runner work: label one scene from `points_template.format(scene=id)` or from the reader's 2D label maps."""
    from perfdata.store import open_store

    store = open_store(store_url)
    if store.loc.is_local:
        remove_stale(store.loc.local_path / store.loc.scene_key(scene_id).rpartition("/")[0], scene_id)
    grid = store.read_scene(scene_id)
    if points_template is not None:
        source = points_template.replace("{scene}", scene_id)
        labels, dist = labels_from_points(grid, *read_labelled_points(source), cfg)
    else:
        from perfdata.readers import load_scenes

        if reader is None or data is None:
            raise ConfigError("labels come from a points file (--points) or from a reader's label maps "
                              "(--reader and --data): none was given")
        (scene,) = list(load_scenes(reader, data, (scene_id,)))
        labels, dist = labels_from_maps(grid, scene.frames, cfg)[0], None
        source = f"{reader}:{data} (2D label maps through depth)"
    label_store(store, scene_id, labels, dist, source)
    return {"n_voxels": grid.n_voxels, "n_labelled": int((labels >= 0).sum()), "source": source}


def is_labelled(store_url: str, scene_id: str) -> bool:
    """Whether the store's scene already has labels written by this stage."""
    from perfdata.store import open_store

    store = open_store(store_url)
    return scene_id in store.scene_ids and "labels_source" in store.scene_attrs(scene_id).extra


def label_scenes(
    store_url: str, scene_ids: Iterable[str], cfg: LabelConfig, points_template: str | None = None,
    reader: str | None = None, data: str | None = None, run: RunConfig = RunConfig(),
) -> list[TaskOutcome]:
    """Label each scene (`label_scene`) on the per-scene runner, markers beside the store; scenes labelled
    before are skipped unless `run.force`. Outcome facts: n_voxels, n_labelled, source."""
    job = StageJob(Markers.for_store(str(store_url), "label"),
                   functools.partial(label_scene, str(store_url), cfg, points_template, reader, data),
                   functools.partial(is_labelled, str(store_url)))
    return run_stage(job, list(scene_ids), run)
