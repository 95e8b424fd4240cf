"""3D loaders: a store's scenes as per-cell features on a D^3 grid, dense (for the 3D CNN / U-Net) or sparse
(only the occupied cells, for spconv), read from the store's sparse rows (coords, density, sh).

    ds = StoreGridDataset(store, ids, reso=32, task="cls", classes=store.root.classes, features="sh+density")
    ds[0]   # dense:  {"x": (C, D, D, D) float32, "y": () int64}; task "seg": "y" (D, D, D) int64, -1 = ignore
    ds = StoreGridDataset(..., sparse=True)
    ds[0]   # sparse: {"coords": (m, 3) int32 cell indices, "feats": (m, C), "y": () or (m,) int64}
    collate_dense(items)   # {"x": (B, C, D, D, D), "y": (B,) or (B, D, D, D)}
    collate_sparse(items)  # {"coords": (M, 4) int32 (batch, x, y, z), "feats": (M, C), "y": (B,) or (M,),
                           #  "batch_size": B, "reso": D}

A stored voxel falls into the cell holding its centre, or, where cells are finer than voxels (a small object
framed into its own cube), fills every cell whose centre it contains (`cell_cover`). Features per cell (FEATURE_SETS, PeRFception's
comparison): "coords" occupancy only (the fraction of the cell's source voxels present: geometry alone);
"density" adds log(1 + relu(mean density)); "sh" adds the mean SH coefficients (27 at degree 2) instead;
"sh+density" has all. Empty cells are zero (dense) or absent (sparse). Cell labels are the majority label of the
cell's labelled voxels, -1 where it has none; so dense and sparse models are scored on the same cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from perfdata.errors import ConfigError, InputError
from perfdata.store.quant import dequantise_sh
from perfdata.store.reader import Store

IGNORE_3D = -1
FEATURE_SETS = ("coords", "density", "sh", "sh+density")
BACKGROUND_LABELS = ("background", "wall", "floor", "ceiling")
"""Label names that are not the object (the render stage's default background classes)."""


def feature_arrays(features: str) -> tuple[str, ...]:
    """The stored arrays a feature set reads (besides coords)."""
    if features not in FEATURE_SETS:
        raise ConfigError(f"--features must be one of {', '.join(FEATURE_SETS)}, got {features!r}")
    return {"coords": (), "density": ("density",), "sh": ("sh",), "sh+density": ("density", "sh")}[features]


def n_feature_channels(features: str, n_sh: int = 27) -> int:
    arrays = feature_arrays(features)
    return 1 + ("density" in arrays) + n_sh * ("sh" in arrays)


def scene_where(store: Store, scene_id: str) -> str:
    return f"{store.loc.url}/{store.loc.scene_key(scene_id)}"


def read_rows(store: Store, scene_id: str, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The scene's sparse rows: coords (n, 3) int64 and the named arrays (density (n,) float32, sh (n, K)
    dequantised float32, labels (n,) int64). A missing array is an InputError naming the scene."""
    out = {}
    for name in ("coords", *names):
        try:
            arr = store.array(scene_id, name)
        except InputError:
            arr = None
        if arr is None or (name == "sh" and (arr.ndim != 2 or arr.shape[1] == 0)):
            need = "SH coefficients" if name == "sh" else f"the {name!r} array"
            raise InputError(scene_where(store, scene_id), f"array {name!r} is missing; this task needs {need}")
        data = store.read_array(scene_id, name)  # a corrupt chunk is an InputError naming it
        assert data is not None
        if name == "sh":
            data = dequantise_sh(data, np.asarray(arr.attrs["sh_min"]), np.asarray(arr.attrs["sh_scale"]))
        out[name] = data.astype(np.int64 if name in ("coords", "labels") else np.float32)
    return out


def cell_cover(coords: np.ndarray, src_reso: Sequence[int], reso: int) -> tuple[np.ndarray, np.ndarray]:
    """Which cells each voxel fills: (rows (k,) int64 voxel index, cells (k,) int64 flat cell id) pairs.

    coords: (n, 3) voxel indices of a source grid of `src_reso`. On an axis where cells are at least as large as
    voxels (src >= D) a voxel fills the one cell holding its centre; where cells are finer (src < D, e.g. an
    object framed into its own small cube) it fills every cell whose centre lies inside it (nearest-neighbour
    upsampling), so an upsampled solid stays solid instead of becoming a lattice of isolated cells.
    """
    src = np.asarray(src_reso, dtype=np.int64)
    lo = np.empty(coords.shape, np.int64)
    count = np.ones(coords.shape, np.int64)
    for a in range(3):
        if src[a] >= reso:
            lo[:, a] = np.floor((coords[:, a] + 0.5) / src[a] * reso).astype(np.int64).clip(0, reso - 1)
            continue
        first = np.ceil(coords[:, a] * reso / src[a] - 0.5).astype(np.int64)  # first cell centre inside
        last = np.ceil((coords[:, a] + 1) * reso / src[a] - 0.5).astype(np.int64) - 1
        lo[:, a] = first.clip(0, reso - 1)
        count[:, a] = np.maximum(last.clip(-1, reso - 1) - lo[:, a] + 1, 1)
    per_row = count.prod(axis=1)
    rows = np.repeat(np.arange(len(coords)), per_row)
    j = np.arange(len(rows)) - np.repeat(np.cumsum(per_row) - per_row, per_row)
    ny, nz = count[rows, 1], count[rows, 2]
    cell = lo[rows] + np.stack([j // (ny * nz), (j // nz) % ny, j % nz], axis=1)
    return rows, (cell[:, 0] * reso + cell[:, 1]) * reso + cell[:, 2]


def cell_features(rows: dict[str, np.ndarray], src_reso: Sequence[int], reso: int,
                  features: str) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """(cells (m,) int64 sorted flat ids, feats (m, C) float32, (voxel (k,), cell position (k,)) pairs of
    cell_cover: which voxels each cell averages)."""
    voxel, flat = cell_cover(rows["coords"], src_reso, reso)
    cells, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    per_cell = float(np.prod(np.asarray(src_reso, np.float64))) / reso**3
    cols = [np.minimum(counts / max(per_cell, 1.0), 1.0)[:, None]]
    arrays = feature_arrays(features)
    for name in ("density", "sh"):
        if name in arrays:
            vals = rows[name].reshape(len(rows["coords"]), -1).astype(np.float64)[voxel]
            mean = np.zeros((len(cells), vals.shape[1]))
            np.add.at(mean, inverse, vals)
            mean /= counts[:, None]
            cols.append(np.log1p(np.maximum(mean, 0.0)) if name == "density" else mean)
    return cells, np.concatenate(cols, axis=1).astype(np.float32), (voxel, inverse)


def cell_labels(labels: np.ndarray, pairs: tuple[np.ndarray, np.ndarray], n_cells: int, n_classes: int) -> np.ndarray:
    """(m,) int64 majority label of each cell's voxels (cell_features' pairs) with a label in [0, n_classes);
    -1 where none."""
    voxel, inverse = pairs
    lab = labels[voxel]
    keep = (lab >= 0) & (lab < n_classes)
    votes = np.zeros((n_cells, n_classes), np.int64)
    np.add.at(votes, (inverse[keep], lab[keep]), 1)
    out = votes.argmax(axis=1)
    out[votes.sum(axis=1) == 0] = IGNORE_3D
    return out


def foreground_rows(rows: dict[str, np.ndarray], label_names: Sequence[str] | None,
                    where: str) -> tuple[dict[str, np.ndarray], tuple[int, int, int]]:
    """The rows of foreground voxels (label >= 0 and not a BACKGROUND_LABELS name; without names, label 0 is
    background; with a "density" row, only density > 0: a stored voxel of no density is empty space that the
    label stage's fill gave the object's label) re-framed into their own bounding cube, centred: (rows, new
    source resolution)."""
    labels = rows["labels"]
    bg = [i for i, n in enumerate(label_names or ()) if n in BACKGROUND_LABELS] if label_names else [0]
    keep = (labels >= 0) & ~np.isin(labels, bg)
    if "density" in rows:
        keep &= rows["density"] > 0
    if not keep.any():
        raise InputError(where, "scene has no foreground voxel (--foreground-only needs labelled objects)")
    out = {k: v[keep] for k, v in rows.items()}
    lo, hi = out["coords"].min(axis=0), out["coords"].max(axis=0) + 1
    extent = int((hi - lo).max())
    out["coords"] = out["coords"] - lo + (extent - (hi - lo)) // 2
    return out, (extent, extent, extent)


def unflatten(cells: np.ndarray, reso: int) -> np.ndarray:
    """(m,) flat cell ids -> (m, 3) int32 (x, y, z)."""
    return np.stack([cells // (reso * reso), (cells // reso) % reso, cells % reso], axis=1).astype(np.int32)


class StoreGridDataset(torch.utils.data.Dataset):
    """Scenes of a store as cell features (module doc): dense volumes, or the occupied cells with `sparse`;
    with `foreground_only`, only the object's voxels (foreground_rows), framed into their own bounding cube.

    task "cls": y is the index of the scene's class_name in `classes`; task "seg": per-cell labels of
    `n_classes` classes (-1 = ignore). `preload` reads every scene once up front (small datasets).
    """

    def __init__(self, store: Store, scene_ids: Sequence[str], reso: int, task: str, classes: Sequence[str] = (),
                 n_classes: int = 0, preload: bool = False, features: str = "sh+density",
                 sparse: bool = False, foreground_only: bool = False) -> None:
        if task not in ("cls", "seg"):
            raise ConfigError(f"task must be 'cls' or 'seg', got {task!r}")
        if reso < 2:
            raise ConfigError(f"grid resolution must be at least 2, got {reso}")
        feature_arrays(features)
        self.store, self.ids, self.reso, self.task = store, list(scene_ids), reso, task
        self.classes, self.n_classes, self.features, self.sparse = tuple(classes), n_classes, features, sparse
        self.foreground_only = foreground_only
        self._items = [self.load(i) for i in range(len(self.ids))] if preload else None

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self._items[i] if self._items is not None else self.load(i)

    def load(self, i: int) -> dict[str, torch.Tensor]:
        """Read scene i from the store (see the class doc for the shapes)."""
        sid = self.ids[i]
        attrs = self.store.scene_attrs(sid)
        labelled = self.task == "seg" or self.foreground_only
        names = feature_arrays(self.features) + (("labels",) if labelled else ())
        if self.foreground_only and "density" not in names:
            names += ("density",)  # which foreground voxels hold anything (foreground_rows)
        rows = read_rows(self.store, sid, names)
        src_reso = attrs.reso
        if self.foreground_only:
            rows, src_reso = foreground_rows(rows, attrs.extra.get("label_names"), scene_where(self.store, sid))
        cells, feats, pairs = cell_features(rows, src_reso, self.reso, self.features)
        if self.task == "cls":
            if attrs.class_name not in self.classes:
                raise InputError(scene_where(self.store, sid),
                                 f"class_name {attrs.class_name!r} is not one of the classes {list(self.classes)}")
            y = torch.tensor(self.classes.index(attrs.class_name), dtype=torch.int64)
        else:
            y = torch.from_numpy(cell_labels(rows["labels"], pairs, len(cells), self.n_classes))
        if self.sparse:
            return {"coords": torch.from_numpy(unflatten(cells, self.reso)), "feats": torch.from_numpy(feats), "y": y}
        vol = torch.zeros(self.reso**3, feats.shape[1])
        vol[torch.from_numpy(cells)] = torch.from_numpy(feats)
        x = vol.T.reshape(-1, self.reso, self.reso, self.reso).contiguous()
        if self.task == "seg":
            dense_y = torch.full((self.reso**3,), IGNORE_3D, dtype=torch.int64)
            dense_y[torch.from_numpy(cells)] = y
            y = dense_y.view(self.reso, self.reso, self.reso)
        return {"x": x, "y": y}


def collate_dense(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Dense items -> {"x": (B, C, D, D, D), "y": (B,) or (B, D, D, D)}."""
    return {"x": torch.stack([it["x"] for it in items]), "y": torch.stack([it["y"] for it in items])}


def collate_sparse(items: list[dict[str, torch.Tensor]], reso: int) -> dict[str, Any]:
    """Sparse items -> {"coords": (M, 4) int32 (batch index, x, y, z), "feats": (M, C), "y": (B,) for
    classification or (M,) per cell for segmentation, "batch_size": B, "reso": D}."""
    coords = torch.cat([torch.cat([torch.full((len(it["coords"]), 1), b, dtype=torch.int32), it["coords"]], 1)
                        for b, it in enumerate(items)])
    y = torch.stack([it["y"] for it in items]) if items[0]["y"].ndim == 0 else torch.cat([it["y"] for it in items])
    return {"coords": coords, "feats": torch.cat([it["feats"] for it in items]), "y": y, "batch_size": len(items),
            "reso": reso}


def store_seg_classes(store: Store, scene_ids: Sequence[str]) -> tuple[str, ...]:
    """Label names of a store's scenes for seg3d: `extra["label_names"]` (all scenes that have them must agree);
    lacking them, "0".."max label". A scene without a labels array is an InputError naming it."""
    names: tuple[str, ...] | None = None
    max_label = -1
    for sid in scene_ids:
        arr = store.array(sid, "labels")
        if arr is None:
            raise InputError(scene_where(store, sid), "scene has no 'labels' array; seg3d needs per-voxel labels")
        max_label = max(max_label, int(np.asarray(arr[:]).max(initial=-1)))
        found = store.scene_attrs(sid).extra.get("label_names")
        if found is not None:
            if names is not None and tuple(found) != names:
                raise InputError(scene_where(store, sid),
                                 f"label_names {list(found)} differ from other scenes' {list(names)}")
            names = tuple(str(n) for n in found)
    if names is None:
        if max_label < 0:
            raise InputError(store.loc.url, "no scene has any labelled voxel")
        names = tuple(str(i) for i in range(max_label + 1))
    return names
