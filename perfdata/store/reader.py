"""Reading the dataset store lazily from a local path or any fsspec URL (http(s), s3, file, ...).

    store = open_store("https://host/data/co3d.zarr")
    grid = store.read_scene(store.scene_ids[0])           # SparseGrid, dequantised float32
    vol = store.dense_grid(store.scene_ids[0], 64)        # (1 + 1 + 27, 64, 64, 64) tensor for a 3D CNN
    stats = dataset_stats(store)                          # dask: counts and means without loading it all

Nothing but the root attrs is read on open; a scene's arrays are fetched when asked for (zarr fetches only the
chunks it needs). The scene list comes from the root attrs, so no directory listing is needed over HTTP.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import zarr

from perfdata.errors import InputError
from perfdata.grid import SparseGrid
from perfdata.ndc import NDC_ARRAY_SIZE
from perfdata.store import background
from perfdata.store.background import GROUP as BACKGROUND_GROUP
from perfdata.store.background import KEY as BACKGROUND_KEY
from perfdata.store.chunks import local_array_dir, read_rows
from perfdata.store.codecs import quiet_numcodecs
from perfdata.store.location import Location
from perfdata.store.quant import dequantise_sh
from perfdata.store.schema import PER_VOXEL, REQUIRED_ARRAYS, ROOT_KEY, SCENE_KEY, RootAttrs, SceneAttrs


@dataclass(frozen=True)
class Store:
    """An opened store. Use `open_store`."""

    loc: Location
    root: RootAttrs
    _groups: dict[tuple[int, str], Any] = field(default_factory=dict, repr=False, compare=False)
    """Opened scene groups by (process id, scene id): a forked process (a DataLoader worker) opens its own, as
    the groups' fsspec filesystems belong to the process that opened them (an HTTP one holds an aiohttp session
    on that process's event-loop thread, which the fork does not have)."""

    @property
    def scene_ids(self) -> tuple[str, ...]:
        return self.root.scenes

    def group(self, scene_id: str) -> zarr.Group:
        """The scene's zarr group (opened once per Store and process; arrays inside are lazy)."""
        key = (os.getpid(), scene_id)
        if key not in self._groups:
            if scene_id not in self.root.scenes:
                raise InputError(self.loc.url, f"no complete scene {scene_id!r} in this store")
            with quiet_numcodecs():
                self._groups[key] = zarr.open_group(
                    self.loc.zarr_store(self.loc.scene_key(scene_id)), mode="r", zarr_format=3
                )
        return self._groups[key]

    def scene_attrs(self, scene_id: str) -> SceneAttrs:
        where = f"{self.loc.url}/{self.loc.scene_key(scene_id)}"
        return SceneAttrs.from_json(self.group(scene_id).attrs.get(SCENE_KEY), where)

    def array(self, scene_id: str, name: str) -> zarr.Array | None:
        """A lazy zarr array of the scene, or None for an absent optional array."""
        group = self.group(scene_id)
        try:
            with quiet_numcodecs():
                arr = group[name]
        except KeyError:
            if name in REQUIRED_ARRAYS:
                raise InputError(f"{self.loc.url}/{self.loc.scene_key(scene_id)}", f"array {name!r} is missing") from None
            return None
        assert isinstance(arr, zarr.Array)
        return arr

    def read_array(self, scene_id: str, name: str, rows: slice = slice(None)) -> np.ndarray | None:
        """Rows of one stored array (None for an absent optional one). A corrupt (or, locally, missing) chunk is
        an InputError naming it (`perfdata.store.chunks`)."""
        arr = self.array(scene_id, name)
        return None if arr is None else self._read(scene_id, name, arr, rows)

    def _read(self, scene_id: str, name: str, arr: zarr.Array, rows: slice) -> np.ndarray:
        key = f"{self.loc.scene_key(scene_id)}/{name}"
        return read_rows(arr, rows, f"{self.loc.url}/{key}", local_array_dir(self.loc, key))

    def read_arrays(self, scene_id: str, rows: slice = slice(None)) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
        """The stored (quantised; sh stays uint8) per-voxel arrays of `rows`, each with its array attrs."""
        out = {}
        for name in PER_VOXEL:
            arr = self.array(scene_id, name)
            if arr is not None:
                out[name] = (self._read(scene_id, name, arr, rows), dict(arr.attrs))
        return out

    def read_background(self, scene_id: str) -> np.ndarray | None:
        """The scene's MSI background as dense float32 (2H, H, L, 4) (`perfdata.store.background`), or None.
        A corrupt chunk is an InputError naming it."""
        where = f"{self.loc.url}/{self.loc.scene_key(scene_id)}/{BACKGROUND_GROUP}"
        try:
            with quiet_numcodecs():
                sub = self.group(scene_id)[BACKGROUND_GROUP]
        except KeyError:
            return None
        if not isinstance(sub, zarr.Group):
            raise InputError(where, "is not a group")
        attrs = background.check_attrs(dict(sub.attrs).get(BACKGROUND_KEY), where)
        parts = {}
        for name in ("data", "links"):
            try:
                with quiet_numcodecs():
                    arr = sub[name]
            except KeyError:
                if name == "data":
                    raise InputError(where, "array 'data' is missing") from None
                continue
            assert isinstance(arr, zarr.Array)
            key = f"{self.loc.scene_key(scene_id)}/{BACKGROUND_GROUP}/{name}"
            parts[name] = read_rows(arr, slice(None), f"{self.loc.url}/{key}", local_array_dir(self.loc, key))
        return background.decode(parts["data"], parts.get("links"), attrs, where)

    def read_scene(self, scene_id: str, rows: slice = slice(None)) -> SparseGrid:
        """The scene (or a row range of it) as a SparseGrid with dequantised float32 values."""
        attrs = self.scene_attrs(scene_id)
        data = self.read_arrays(scene_id, rows)
        q, sh_attrs = data["sh"]
        sh = dequantise_sh(q, np.asarray(sh_attrs["sh_min"]), np.asarray(sh_attrs["sh_scale"]))
        bg, ndc = attrs.extra.get("background"), attrs.extra.get("ndc")
        if ndc is not None and np.shape(ndc) != (NDC_ARRAY_SIZE,):
            raise InputError(f"{self.loc.url}/{self.loc.scene_key(scene_id)}", f"attrs ndc must hold {NDC_ARRAY_SIZE} numbers")
        return SparseGrid(
            coords=data["coords"][0].astype(np.int32), density=data["density"][0].astype(np.float32), sh=sh,
            reso=attrs.reso, world_from_grid=np.asarray(attrs.world_from_grid), sh_degree=attrs.sh_degree,
            logits=data["logits"][0].astype(np.float32) if "logits" in data else None,
            labels=data["labels"][0] if "labels" in data else None,
            background=None if bg is None else np.asarray(bg, np.float32),
            msi=self.read_background(scene_id),
            ndc=None if ndc is None else np.asarray(ndc, np.float64),
        )

    def read_tensors(self, scene_id: str) -> dict[str, torch.Tensor]:
        """coords (n, 3) int64, density (n,) float32, sh (n, k) float32 [, labels (n,) int64, logits (n, c)]."""
        grid = self.read_scene(scene_id)
        out = {"coords": torch.from_numpy(grid.coords.astype(np.int64)), "density": torch.from_numpy(grid.density),
               "sh": torch.from_numpy(grid.sh)}
        if grid.labels is not None:
            out["labels"] = torch.from_numpy(grid.labels.astype(np.int64))
        if grid.logits is not None:
            out["logits"] = torch.from_numpy(grid.logits)
        return out

    def dense_grid(self, scene_id: str, reso: int) -> torch.Tensor:
        """A dense (2 + k, reso, reso, reso) float32 volume for 3D CNNs: channel 0 occupancy (fraction of the
        cell's source voxels present), 1 mean density, 2.. mean SH of the voxels falling in each cell.

        Each stored voxel goes to the target cell containing its centre; resampling to a coarser grid averages,
        to a finer one leaves the cells without a voxel centre empty.
        """
        return densify(self.read_scene(scene_id), reso)

    def to_dask(self, scene_id: str, name: str) -> Any:
        """A lazy dask array over one stored array (chunks follow the zarr chunks)."""
        import dask.array as da

        arr = self.array(scene_id, name)
        if arr is None:
            raise InputError(self.loc.url, f"scene {scene_id!r} has no array {name!r}")
        return da.from_zarr(arr)


def densify(grid: SparseGrid, reso: int) -> torch.Tensor:
    """(2 + k, reso, reso, reso) float32: occupancy fraction, mean density, mean SH per cell (see dense_grid)."""
    src = np.asarray(grid.reso, dtype=np.float64)
    cell = np.floor((grid.coords + 0.5) / src * reso).astype(np.int64).clip(0, reso - 1)
    flat = torch.from_numpy((cell[:, 0] * reso + cell[:, 1]) * reso + cell[:, 2])
    feats = torch.from_numpy(np.concatenate([grid.density[:, None], grid.sh], axis=1).astype(np.float32))
    sums = torch.zeros(reso**3, feats.shape[1]).index_add_(0, flat, feats)
    counts = torch.zeros(reso**3).index_add_(0, flat, torch.ones(len(flat)))
    per_cell = float(np.prod(src)) / reso**3  # source voxels per target cell
    occupancy = (counts / max(per_cell, 1.0)).clamp(max=1.0)
    means = sums / counts.clamp(min=1.0)[:, None]
    vol = torch.cat([occupancy[:, None], means], dim=1)
    return vol.T.reshape(-1, reso, reso, reso).contiguous()


def open_store(url: str, storage_options: dict[str, Any] | None = None) -> Store:
    """Open a store (local path or fsspec URL); only the root attrs are read. Unknown versions raise."""
    loc = Location(str(url), dict(storage_options or {}))
    meta = loc.read_json("zarr.json")
    if meta is None:
        raise InputError(url, "not a zarr store (no zarr.json)")
    return Store(loc, RootAttrs.from_json(meta.get("attributes", {}).get(ROOT_KEY), str(url)))


def dataset_stats(store: Store) -> dict[str, Any]:
    """Dataset-wide statistics with dask (chunk by chunk, never the whole store in memory):
    voxel count per scene, total, mean density and mean SH coefficient (k,) over all voxels."""
    import dask
    import dask.array as da

    counts = {s: store.scene_attrs(s).n_voxels for s in store.scene_ids}
    sums_sh, sums_d = [], []
    for s in store.scene_ids:
        sh_arr = store.array(s, "sh")
        assert sh_arr is not None
        q = store.to_dask(s, "sh").astype(np.float64)
        sums_sh.append(q.sum(axis=0) * np.asarray(sh_arr.attrs["sh_scale"]) + counts[s] * np.asarray(sh_arr.attrs["sh_min"]))
        sums_d.append(store.to_dask(s, "density").astype(np.float64).sum())
    total = sum(counts.values())
    if not sums_sh:
        return {"n_scenes": 0, "n_voxels": 0, "voxels_per_scene": {}, "density_mean": None, "sh_mean": None}
    sh_total, d_total = dask.compute(da.stack(sums_sh).sum(axis=0), da.stack(sums_d).sum())
    return {
        "n_scenes": len(counts), "n_voxels": total, "voxels_per_scene": counts,
        "density_mean": float(d_total) / max(total, 1), "sh_mean": (np.asarray(sh_total) / max(total, 1)).tolist(),
    }
