"""Where render reads fitted scenes from: a small `GridSource` interface with three implementations.

- the zarr dataset store (`perfdata.store.open_store(url)`: its object already has `scene_ids`, `read_scene`
  and `scene_attrs`), the normal source, so imported PeRFception data renders too;
- `FitsSource`: a folder of finished fits (`perfdata.records.fit`), the interim source;
- `MemorySource`: grids held in memory (tests, benchmarks).

Scene attributes are read leniently into a `SceneInfo`: class_name; fit psnr from `metrics["psnr"]` (or a top-level
`psnr`); world_from_grid; the training cameras from `cameras` or `extra["cameras"]` (a list of {K, c2w, width,
height}, c2w metric world frame, OpenCV axes); label names from `label_names` or `extra["label_names"]`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from perfdata.pipelines.poses import Camera

from perfdata.errors import ConfigError, InputError
from perfdata.grid import SparseGrid
from perfdata.markers import Markers
from perfdata.ndc import NDC
from perfdata.records.fit import GRID_NAME, read_fit
from perfdata.scene import similarity


class GridSource(Protocol):
    """What render needs of a store of fitted scenes."""

    @property
    def scene_ids(self) -> Sequence[str]: ...

    def read_scene(self, scene_id: str) -> SparseGrid: ...

    def scene_attrs(self, scene_id: str) -> Any: ...


@dataclass(frozen=True)
class SceneInfo:
    """The facts render uses about one scene (see module docstring for where each comes from)."""

    scene_id: str
    class_name: str | None
    psnr: float | None
    world_from_grid: np.ndarray
    cameras: tuple[Camera, ...]
    label_names: tuple[str, ...] | None
    class_id: int | None = None
    """Index of class_name in the store's class list (`source.classes`), or the attrs' class_id."""
    ndc: np.ndarray | None = None
    """(19,) the NDC space of a forward-facing fit (extra["ndc"], `perfdata.ndc`), or None."""

    def pose_frame(self) -> np.ndarray:
        """The frame camera distances are measured in (`pipelines.poses`): world_from_grid, or for a grid in NDC
        (whose cube is not metric) the reference camera scaled by its near-plane depth."""
        if self.ndc is None:
            return self.world_from_grid
        space = NDC.from_array(self.ndc)
        return similarity(space.near, space.c2w[:3, 3], space.c2w[:3, :3])


def _as_dict(attrs: Any) -> dict[str, Any]:
    if isinstance(attrs, Mapping):
        return dict(attrs)
    if hasattr(attrs, "to_json"):
        return dict(attrs.to_json())
    if is_dataclass(attrs) and not isinstance(attrs, type):
        return asdict(attrs)
    raise TypeError(f"scene attrs of type {type(attrs).__name__} are not understood")


def scene_info(source: GridSource, scene_id: str) -> SceneInfo:
    """Read one scene's `SceneInfo` from its attributes."""
    attrs = _as_dict(source.scene_attrs(scene_id))
    extra = attrs.get("extra") or {}
    metrics = attrs.get("metrics") or {}
    psnr = metrics.get("psnr", attrs.get("psnr"))
    cams_json = attrs.get("cameras") or extra.get("cameras") or []
    try:
        cams = tuple(
            Camera(np.asarray(c["K"], float), np.asarray(c["c2w"], float), int(c["width"]), int(c["height"]))
            for c in cams_json
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(scene_id, f"malformed training cameras in the scene attributes ({exc})") from None
    names = attrs.get("label_names") or extra.get("label_names")
    class_name = attrs.get("class_name")
    root = getattr(source, "root", None)  # perfdata.store.Store keeps the class list in its root attrs
    classes = list(getattr(source, "classes", None) or getattr(root, "classes", None) or ())
    class_id = attrs.get("class_id", extra.get("class_id"))
    if class_name in classes:
        class_id = classes.index(class_name)
    return SceneInfo(
        scene_id=scene_id,
        class_name=class_name,
        psnr=None if psnr is None else float(psnr),
        world_from_grid=np.asarray(attrs["world_from_grid"], dtype=np.float64),
        cameras=cams,
        label_names=None if names is None else tuple(str(n) for n in names),
        class_id=None if class_id is None else int(class_id),
        ndc=None if extra.get("ndc") is None else np.asarray(extra["ndc"], dtype=np.float64),
    )


@dataclass(frozen=True)
class MemorySource:
    """Grids held in memory: `grids[id]` with attributes `attrs[id]` (a dict as described above)."""

    grids: Mapping[str, SparseGrid]
    attrs: Mapping[str, Mapping[str, Any]]

    @property
    def scene_ids(self) -> list[str]:
        return sorted(self.grids)

    def read_scene(self, scene_id: str) -> SparseGrid:
        return self.grids[scene_id]

    def scene_attrs(self, scene_id: str) -> dict[str, Any]:
        grid = self.grids[scene_id]
        return _with_ndc({"world_from_grid": grid.world_from_grid.tolist(), **self.attrs.get(scene_id, {})}, grid)


@dataclass(frozen=True)
class FitsSource:
    """A folder of fits (`perfdata.records.fit`): the scenes with a done marker."""

    root: Path

    @property
    def scene_ids(self) -> list[str]:
        markers = Markers.in_folder(self.root, "fit")
        return sorted(p.parent.name for p in self.root.glob(f"*/{GRID_NAME}")
                      if not p.parent.name.startswith(".") and markers.is_done(p.parent.name))

    def read_scene(self, scene_id: str) -> SparseGrid:
        return SparseGrid.load(self.root / scene_id / GRID_NAME)

    def scene_attrs(self, scene_id: str) -> dict[str, Any]:
        record = read_fit(self.root / scene_id)
        attrs = record.to_json()
        if record.world_from_grid is None:
            attrs["world_from_grid"] = self.read_scene(scene_id).world_from_grid.tolist()
        if (record.config or {}).get("background") == "ndc":
            attrs = _with_ndc(attrs, self.read_scene(scene_id))
        return attrs


def _with_ndc(attrs: dict[str, Any], grid: SparseGrid) -> dict[str, Any]:
    """attrs with the grid's NDC space in extra["ndc"] (as a store keeps it), when it has one."""
    if grid.ndc is None:
        return attrs
    return {**attrs, "extra": {**(attrs.get("extra") or {}), "ndc": np.asarray(grid.ndc).tolist()}}


def open_source(path: str | Path) -> GridSource:
    """A `GridSource` for `path`: a folder of fits (`*/grid.npz`) or, otherwise, a dataset store (local path or
    fsspec URL). A path that is neither is an InputError naming it."""
    p = Path(str(path))
    if p.is_dir() and any(p.glob(f"*/{GRID_NAME}")):
        return FitsSource(p)
    if "://" not in str(path) and not p.exists():
        raise InputError(path, "store not found")
    try:
        from perfdata.store import open_store
    except ImportError:
        raise ConfigError("the zarr dataset store is not available in this build (perfdata.store)") from None
    try:
        return open_store(str(path))
    except InputError:
        raise
    except Exception as exc:  # zarr / fsspec raise many types for things that are not stores
        raise InputError(path, f"not a perfdata store ({type(exc).__name__}: {exc})") from None
