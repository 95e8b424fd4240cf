"""Writing the dataset store: one writer per scene group, atomic per scene, root attrs refreshed at the end.

Local stores: a scene is written into a hidden temporary folder beside the store root (outside the zarr
hierarchy) and renamed into `scenes/<id>` (perfdata.atomic);
remote (fsspec) stores: arrays first, then the scene attrs with `complete: true` last. Scenes are independent,
so any number of writers (threads, processes, cluster jobs) can export different scenes into one store at once;
`refresh_root` then lists the complete scenes and rewrites the root attrs once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from perfdata import __version__
from perfdata.atomic import atomic_dir, remove_stale
from perfdata.errors import InputError
from perfdata.grid import SparseGrid
from perfdata.store.background import GROUP as BACKGROUND_GROUP
from perfdata.store.background import KEY as BACKGROUND_KEY
from perfdata.store.background import BackgroundArrays
from perfdata.store.background import quantise as quantise_background
from perfdata.store.chunks import write_chunks
from perfdata.store.codecs import choose_codec, quiet_numcodecs
from perfdata.store.location import Location
from perfdata.store.quant import choose_density_dtype, density_errors, quantise_sh
from perfdata.store.schema import ARRAYS, ROOT_KEY, SCENE_KEY, RootAttrs, SceneAttrs


@dataclass(frozen=True)
class WriteConfig:
    """How scene arrays are quantised, chunked and compressed."""

    sh_bits: int = 8
    """Bits per SH coefficient (1..8, stored as uint8)."""
    density_dtype: str = "auto"
    """"auto" (float16 unless values overflow it), "float16" or "float32"."""
    chunk_bytes: int = 2 << 20
    """Raw bytes per chunk (>= ~1 MB keeps object-store requests few)."""
    zstd_level: int = 3
    portable: bool = False
    """Only codecs of the zarr v3 spec (no numcodecs delta), for other zarr implementations."""
    checksum: bool = True
    """End every array's codecs in crc32c (keep it: False exists only to measure its cost)."""
    storage_options: dict[str, Any] = field(default_factory=dict)
    """fsspec options for remote stores."""


@dataclass(frozen=True)
class SceneArrays:
    """What goes into one scene group: arrays (name -> data), their attrs, and the scene attrs."""

    arrays: dict[str, np.ndarray]
    array_attrs: dict[str, dict[str, Any]]
    attrs: SceneAttrs
    background: BackgroundArrays | None = None
    """The scene's background model, written into its own group (`perfdata.store.background`)."""


def grid_arrays(grid: SparseGrid, cfg: WriteConfig, **attrs: Any) -> SceneArrays:
    """Quantise a fitted grid into the store's arrays; `attrs` are further SceneAttrs fields (class_name, ...)."""
    if max(grid.reso) > 65535:
        raise InputError(None, f"resolution {grid.reso} does not fit uint16 coords")
    grid = grid.sorted()
    qsh = quantise_sh(grid.sh, cfg.sh_bits)
    dtype = choose_density_dtype(grid.density, cfg.density_dtype)
    density = grid.density.astype(dtype)
    quant = {
        "sh_bits": cfg.sh_bits,
        "sh_max_abs_err": float(np.abs(qsh.decode() - grid.sh).max()) if grid.n_voxels else 0.0,
        "density_dtype": dtype.name,
        **density_errors(grid.density, density),
    }
    arrays = {"coords": grid.coords.astype(np.uint16), "density": density, "sh": qsh.q}
    if grid.labels is not None:
        arrays["labels"] = grid.labels.astype(np.int16)
    if grid.logits is not None:
        arrays["logits"] = grid.logits.astype(np.float16)
    array_attrs = {"sh": {"sh_min": qsh.sh_min.tolist(), "sh_scale": qsh.sh_scale.tolist()}}
    extra = dict(attrs.pop("extra", {}))
    if grid.background is not None:
        extra["background"] = np.asarray(grid.background, dtype=float).tolist()
    if grid.ndc is not None:  # the cube is this NDC box (`perfdata.ndc`): c2w row-major, sx, sy, near
        extra["ndc"] = np.asarray(grid.ndc, dtype=float).tolist()
    if "labels" in arrays and "label_threshold" in extra:  # labels from a semantic field's logits
        array_attrs["labels"] = {"confidence_threshold": float(extra["label_threshold"])}
    scene_attrs = SceneAttrs(
        reso=tuple(int(r) for r in grid.reso),  # type: ignore[arg-type]
        world_from_grid=tuple(tuple(float(v) for v in row) for row in np.asarray(grid.world_from_grid)),
        n_voxels=grid.n_voxels, sh_degree=grid.sh_degree, quantisation=quant, extra=extra, **attrs,
    )
    background = None if grid.msi is None else quantise_background(grid.msi, grid.background)
    return SceneArrays(arrays, array_attrs, scene_attrs, background)


def _check_arrays(scene: SceneArrays) -> None:
    n = scene.attrs.n_voxels
    for name, data in scene.arrays.items():
        ndim, dtypes = ARRAYS[name]
        assert data.ndim == ndim and data.dtype.name in dtypes, f"{name}: {data.dtype}{data.shape} breaks the schema"
        assert name not in ("coords", "density", "sh", "labels", "label_dist", "logits") or len(data) == n, (
            f"{name} has {len(data)} rows, scene has {n} voxels"
        )


def _write_group(target: Any, scene: SceneArrays, cfg: WriteConfig) -> SceneAttrs:
    """Write all arrays into a fresh group at `target`, then the attrs with complete=True."""
    codecs = {}
    with quiet_numcodecs():
        group = zarr.open_group(target, mode="w", zarr_format=3)
        group.attrs[SCENE_KEY] = dataclasses.replace(scene.attrs, complete=False).to_json()
        for name, data in scene.arrays.items():
            choice = choose_codec(data, cfg.chunk_bytes, cfg.zstd_level, cfg.portable)
            kwargs = choice.array_kwargs(data.shape, data.dtype, cfg.chunk_bytes, cfg.checksum)
            arr = group.create_array(
                name, shape=data.shape, dtype=data.dtype, attributes=scene.array_attrs.get(name, {}), **kwargs
            )
            write_chunks(arr, data)
            codecs[name] = choice.name
        if scene.background is not None:
            _write_background(group, scene.background, cfg)
        done = dataclasses.replace(scene.attrs, codecs=codecs, complete=True)
        group.attrs[SCENE_KEY] = done.to_json()
    return done


def _write_background(group: zarr.Group, bg: BackgroundArrays, cfg: WriteConfig) -> None:
    sub = group.create_group(BACKGROUND_GROUP, attributes={BACKGROUND_KEY: bg.attrs})
    for name, data in (("data", bg.data), ("links", bg.links)):
        if data is not None:
            choice = choose_codec(data, cfg.chunk_bytes, cfg.zstd_level, cfg.portable)
            kwargs = choice.array_kwargs(data.shape, data.dtype, cfg.chunk_bytes, cfg.checksum)
            write_chunks(sub.create_array(name, shape=data.shape, dtype=data.dtype, **kwargs), data)


def write_scene(loc: Location, scene_id: str, scene: SceneArrays, cfg: WriteConfig) -> SceneAttrs:
    """Write one scene group (replacing any previous one) atomically; returns the attrs written."""
    _check_arrays(scene)
    key = loc.scene_key(scene_id)
    if loc.is_local:
        like = staging_name(loc, scene_id)
        remove_stale(like.parent, like.name)  # left by a killed export
        with atomic_dir(loc.local_path / key, tmp_like=like) as tmp:
            return _write_group(zarr.storage.LocalStore(tmp), scene, cfg)
    if loc.fs.exists(f"{loc.root}/{key}"):
        loc.fs.rm(f"{loc.root}/{key}", recursive=True)
    return _write_group(loc.zarr_store(key, read_only=False), scene, cfg)


def staging_name(loc: Location, scene_id: str) -> Path:
    """What a local scene group is built under before its rename into `scenes/<id>`: a hidden sibling of the
    store root (`.<store>.<id>.<random>.tmp`), outside the zarr hierarchy, so no group listing ever shows it."""
    root = loc.local_path
    return root.parent / f"{root.name}.{scene_id}"


def read_scene_attrs(loc: Location, scene_id: str) -> SceneAttrs | None:
    """The attrs of a scene group, or None when it is absent."""
    meta = loc.read_json(f"{loc.scene_key(scene_id)}/zarr.json")
    if meta is None:
        return None
    return SceneAttrs.from_json(meta.get("attributes", {}).get(SCENE_KEY), f"{loc.url}/{loc.scene_key(scene_id)}")


def is_complete(loc: Location, scene_id: str) -> bool:
    attrs = read_scene_attrs(loc, scene_id)
    return attrs is not None and attrs.complete


def ensure_root(loc: Location, dataset: str) -> RootAttrs:
    """Create the root group if needed; an existing store must have a supported format_version."""
    with quiet_numcodecs():
        group = zarr.open_group(loc.zarr_store(read_only=False), mode="a", zarr_format=3)
        existing = group.attrs.get(ROOT_KEY)
        if existing is not None:
            return RootAttrs.from_json(existing, loc.url)
        root = RootAttrs(dataset=dataset, created_by=f"perfdata {__version__}")
        group.attrs[ROOT_KEY] = root.to_json()
        zarr.open_group(loc.zarr_store("scenes", read_only=False), mode="a", zarr_format=3)
    return root


def refresh_root(loc: Location, dataset: str | None = None) -> RootAttrs:
    """Rewrite the root attrs from the complete scene groups present (call once, after the writers)."""
    current = ensure_root(loc, dataset or "perfdata")
    scenes, classes = [], set()
    for scene_id in loc.list_scene_dirs():
        attrs = read_scene_attrs(loc, scene_id)
        if attrs is not None and attrs.complete:
            scenes.append(scene_id)
            if attrs.class_name:
                classes.add(attrs.class_name)
    root = dataclasses.replace(
        current, dataset=dataset or current.dataset, scenes=tuple(scenes), classes=tuple(sorted(classes)),
        created_by=f"perfdata {__version__}",
    )
    with quiet_numcodecs():
        group = zarr.open_group(loc.zarr_store(read_only=False), mode="a", zarr_format=3)
        group.attrs[ROOT_KEY] = root.to_json()
    return root

