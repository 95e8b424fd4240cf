"""The dataset store's schema (DESIGN.md section 6), version 1.

```
NAME.zarr/                      attrs {"perfdata": RootAttrs}
  scenes/<scene_id>/            attrs {"perfdata_scene": SceneAttrs}
    coords    (N, 3) uint16     voxel indices (x, y, z), rows sorted by linear index x*Ry*Rz + y*Rz + z
    density   (N,)   float16 or float32   raw sigma
    sh        (N, K) uint8      attrs sh_min[K], sh_scale[K]: value = q * sh_scale + sh_min (per channel)
    labels    (N,)   int16      optional; -1 = ignore
    label_dist (N,)  float16    optional; metres to the labelled vertex a label came from
    logits    (N, C) float16    optional, from a semantic field
    background/               optional group: the scene's MSI background (`perfdata.store.background`), own
                              format_version; PeRFception's `background_data` / `_links` import here
```
Every array is a plain zarr v3 array: any zarr reader sees the public shapes and dtypes above. Chunking and
codecs vary per array (chosen by measurement, see `codecs.py`); they are recorded in each array's metadata.
A scene group is complete when its attrs say `complete: true` (written last); readers ignore other groups.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from perfdata.errors import FormatVersionError, InputError

FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
ROOT_KEY = "perfdata"
SCENE_KEY = "perfdata_scene"
SCENES_GROUP = "scenes"

# array name -> (ndim, allowed dtypes); "coords", "density", "sh" are required.
ARRAYS: dict[str, tuple[int, tuple[str, ...]]] = {
    "coords": (2, ("uint16",)),
    "density": (1, ("float16", "float32")),
    "sh": (2, ("uint8",)),
    "labels": (1, ("int16",)),
    "label_dist": (1, ("float16", "float32")),
    "logits": (2, ("float16", "float32")),
}
REQUIRED_ARRAYS = ("coords", "density", "sh")
PER_VOXEL = ("coords", "density", "sh", "labels", "label_dist", "logits")


@dataclass(frozen=True)
class RootAttrs:
    """The store's root attributes, under the key "perfdata"."""

    dataset: str
    """Dataset name, e.g. "perfception-co3d" or "synthetic-rooms"."""
    scenes: tuple[str, ...] = ()
    """Complete scenes, sorted."""
    classes: tuple[str, ...] = ()
    """Sorted distinct class names of the scenes (object-centric datasets)."""
    created_by: str = ""
    """"perfdata <version>"."""
    format_version: int = FORMAT_VERSION

    @property
    def n_scenes(self) -> int:
        return len(self.scenes)

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["scenes"], out["classes"], out["n_scenes"] = list(self.scenes), list(self.classes), self.n_scenes
        return out

    @classmethod
    def from_json(cls, obj: Any, where: str) -> RootAttrs:
        """Parse the "perfdata" attrs of the store at `where`; unknown versions raise FormatVersionError."""
        if not isinstance(obj, dict) or "format_version" not in obj:
            raise InputError(where, "not a perfdata store (root attrs lack perfdata.format_version)")
        if obj["format_version"] not in SUPPORTED_VERSIONS:
            raise FormatVersionError(where, obj["format_version"], list(SUPPORTED_VERSIONS))
        try:
            return cls(
                dataset=str(obj["dataset"]), scenes=tuple(obj.get("scenes", ())),
                classes=tuple(obj.get("classes", ())), created_by=str(obj.get("created_by", "")),
                format_version=int(obj["format_version"]),
            )
        except (KeyError, TypeError) as exc:
            raise InputError(where, f"malformed root attrs ({exc})") from None


@dataclass(frozen=True)
class SceneAttrs:
    """A scene group's attributes, under the key "perfdata_scene"."""

    reso: tuple[int, int, int]
    world_from_grid: tuple[tuple[float, ...], ...]
    """(4, 4) similarity from the cube [-1, 1]^3 to the source's metric frame."""
    n_voxels: int
    sh_degree: int = 2
    class_name: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    """Fit metrics (psnr, ssim, ...) as the fit or release reported them."""
    source: str = ""
    """Where the scene came from: a fit folder or a PeRFception checkpoint."""
    quantisation: dict[str, Any] = field(default_factory=dict)
    """Measured quantisation error: sh_bits, sh_max_abs_err, density_dtype, density_max_rel_err."""
    codecs: dict[str, str] = field(default_factory=dict)
    """Array name -> name of the codec pipeline chosen for it (see codecs.CANDIDATES)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Source-specific extras (e.g. PeRFception's frame_ids), JSON only."""
    complete: bool = False
    """Written true last: a scene without it is incomplete and ignored."""

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["reso"] = list(self.reso)
        out["world_from_grid"] = [list(r) for r in self.world_from_grid]
        return out

    @classmethod
    def from_json(cls, obj: Any, where: str) -> SceneAttrs:
        if not isinstance(obj, dict):
            raise InputError(where, f"scene attrs lack {SCENE_KEY!r}")
        try:
            return cls(
                reso=tuple(int(r) for r in obj["reso"]),  # type: ignore[arg-type]
                world_from_grid=tuple(tuple(float(v) for v in r) for r in obj["world_from_grid"]),
                n_voxels=int(obj["n_voxels"]), sh_degree=int(obj.get("sh_degree", 2)),
                class_name=obj.get("class_name"), metrics=dict(obj.get("metrics", {})),
                source=str(obj.get("source", "")), quantisation=dict(obj.get("quantisation", {})),
                codecs=dict(obj.get("codecs", {})), extra=dict(obj.get("extra", {})),
                complete=bool(obj.get("complete", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(where, f"malformed scene attrs ({exc})") from None
