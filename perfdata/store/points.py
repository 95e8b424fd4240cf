"""Point exports of a fitted grid: PLY (for viewers) and HDF5 (for point-based 3D classifiers).

PLY, one file per scene, binary little-endian, element `vertex` with float32 properties
`x, y, z` (voxel centre in the metric world frame, via world_from_grid), `density` (raw sigma),
`f_dc_0..2` (the DC SH coefficient of R, G, B) and `f_rest_0..(3*(K-1)-1)` (the other coefficients grouped per
channel: R1..R8, G1..G8, B1..B8 for degree 2 -- the order 3D Gaussian Splatting files use; colour = 0.5 +
SH, the same convention), plus `label` (int16) when the grid has labels.

HDF5: `<scene_id>.h5` per scene with `points` (n, 3) float32 world, `features` (n, 1 + K*3) float32
[density, SH], optional `labels` (n,) int16, attrs scene_id / class_name / reso / world_from_grid; and
`all.h5`, a fixed-size sample per scene for classifiers: `points` (S, P, 3), `features` (S, P, 1 + K*3),
`label` (S,) int64 class index into attr `classes` (-1 = none), `scene_ids` (S,).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from perfdata.atomic import atomic_path
from perfdata.grid import SparseGrid


def ply_vertices(grid: SparseGrid) -> np.ndarray:
    """The structured (n,) vertex array of the PLY layout above."""
    k = (grid.sh_degree + 1) ** 2
    names = ["x", "y", "z", "density"] + [f"f_dc_{i}" for i in range(3)] + [f"f_rest_{i}" for i in range(3 * (k - 1))]
    fields = [(n, "<f4") for n in names] + ([("label", "<i2")] if grid.labels is not None else [])
    out = np.empty(grid.n_voxels, dtype=fields)
    xyz = grid.world_centers()
    for i, axis in enumerate("xyz"):
        out[axis] = xyz[:, i]
    out["density"] = grid.density
    per_channel = grid.sh.reshape(-1, 3, k)  # [R0..R8, G0..G8, B0..B8]
    for c in range(3):
        out[f"f_dc_{c}"] = per_channel[:, c, 0]
        for j in range(k - 1):
            out[f"f_rest_{c * (k - 1) + j}"] = per_channel[:, c, j + 1]
    if grid.labels is not None:
        out["label"] = grid.labels
    return out


def write_ply(grid: SparseGrid, path: str | Path, scene_id: str = "") -> None:
    """Write the grid's voxels as a binary PLY (atomic)."""
    from plyfile import PlyData, PlyElement

    el = PlyElement.describe(ply_vertices(grid), "vertex")
    comments = [f"perfdata scene {scene_id}", f"sh_degree {grid.sh_degree}", f"reso {' '.join(map(str, grid.reso))}"]
    with atomic_path(path) as tmp:
        PlyData([el], byte_order="<", comments=comments).write(str(tmp))


def features(grid: SparseGrid) -> np.ndarray:
    """(n, 1 + K*3) float32 [density, SH]."""
    return np.concatenate([grid.density[:, None], grid.sh], axis=1).astype(np.float32)


def write_h5_scene(grid: SparseGrid, path: str | Path, scene_id: str, class_name: str | None) -> None:
    """One scene's full point set (atomic)."""
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("points", data=grid.world_centers().astype(np.float32), compression="gzip")
        f.create_dataset("features", data=features(grid), compression="gzip")
        if grid.labels is not None:
            f.create_dataset("labels", data=grid.labels.astype(np.int16), compression="gzip")
        f.attrs.update(scene_id=scene_id, class_name=class_name or "", reso=list(grid.reso),
                       world_from_grid=np.asarray(grid.world_from_grid, np.float64))


def sample_rows(grid: SparseGrid, n_points: int, seed: int, scene_id: str) -> np.ndarray:
    """`n_points` row indices among voxels with positive density (all voxels if none), seeded per scene."""
    rng = np.random.default_rng([seed, zlib.crc32(scene_id.encode())])
    pool = np.flatnonzero(grid.density > 0)
    pool = pool if len(pool) else np.arange(grid.n_voxels)
    return rng.choice(pool, size=n_points, replace=len(pool) < n_points)


def write_h5_combined(
    samples: Sequence[tuple[str, str | None, SparseGrid | None]], path: Path, n_points: int, seed: int
) -> None:
    """The classifier file: a fixed-size point sample per scene with its class index (atomic)."""
    import h5py

    classes = sorted({c for _, c, _ in samples if c})
    kept = [(s, c, g) for s, c, g in samples if g is not None]
    n_feat = features(kept[0][2]).shape[1] if kept else 28
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        pts = f.create_dataset("points", (len(kept), n_points, 3), dtype="f4")
        feat = f.create_dataset("features", (len(kept), n_points, n_feat), dtype="f4")
        for i, (_, _, g) in enumerate(kept):
            pts[i], feat[i] = g.world_centers().astype(np.float32), features(g)
        f.create_dataset("label", data=np.array([classes.index(c) if c else -1 for _, c, _ in kept], np.int64))
        f.create_dataset("scene_ids", data=np.array([s for s, _, _ in kept], dtype=h5py.string_dtype()))
        f.attrs.update(classes=classes, n_points=n_points, seed=seed)
