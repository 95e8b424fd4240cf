"""A fit folder and its fit.json: the one reader and writer of the format.

    <fits>/<scene_id>/grid.npz     the field (`perfdata.grid.SparseGrid.save`: npz, no pickle)
    <fits>/<scene_id>/fit.json     `FitRecord`, format_version 1
    <fits>/<scene_id>/DONE         the runner's done marker (`perfdata.markers`), written last

A failed fit has no fit.json: the runner's failure record `<scene_id>/FAILED.json` (error, traceback,
attempts, seconds, host) is the only record of a failure, whatever failed (the reader, the fit, a worker).
fit.json keys the record does not know (written by a newer perfdata, or by a method's own additions) are
kept in `extra` and written back unchanged.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from perfdata.atomic import write_json
from perfdata.errors import FormatVersionError, InputError

FIT_FORMAT_VERSION = 1
FIT_NAME = "fit.json"
GRID_NAME = "grid.npz"
REQUIRED = ("scene_id", "method")
TYPES: dict[str, tuple[type, ...]] = {
    "scene_id": (str,), "method": (str,), "device": (str,), "seed": (int,), "steps": (int,), "n_voxels": (int,),
    "wall_seconds": (int, float), "train_seconds": (int, float), "config": (dict,), "metrics": (dict,),
    "cameras": (list,), "versions": (dict,),
}


@dataclass(frozen=True)
class FitRecord:
    """fit.json of a finished fit."""

    scene_id: str
    method: str
    """plenoxel, semantic or generalizable."""
    config: dict[str, Any] = field(default_factory=dict)
    """The FitConfig as run (`FitConfig.to_dict()`)."""
    seed: int = 0
    versions: dict[str, str] = field(default_factory=dict)
    """perfdata, torch, numpy, python."""
    source: str | None = None
    """Where the capture came from (reader:path)."""
    wall_seconds: float = 0.0
    """Seconds of the whole fit (reading, optimisation, evaluation)."""
    class_name: str | None = None
    label_names: tuple[str, ...] | None = None
    cameras: tuple[dict[str, Any], ...] = ()
    """Training cameras {name, K (3x3 px), c2w (4x4, metric world, OpenCV axes), width, height}."""
    device: str = "cpu"
    steps: int = 0
    train_seconds: float = 0.0
    n_voxels: int = 0
    resolution: tuple[int, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)
    """Held-out psnr, ssim, and where truth exists depth_abs_rel and miou."""
    curve: tuple[tuple[float, ...], ...] = ()
    """(optimisation seconds, held-out psnr) marks."""
    stats: dict[str, float] = field(default_factory=dict)
    world_from_grid: tuple[tuple[float, ...], ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """fit.json keys this version does not know, kept as they were."""
    format_version: int = FIT_FORMAT_VERSION

    @property
    def psnr(self) -> float | None:
        value = self.metrics.get("psnr")
        return None if value is None else float(value)

    def to_json(self) -> dict[str, Any]:
        doc = {k: v for k, v in asdict(self).items() if k != "extra"}
        doc["metrics"] = {k: _finite(v) for k, v in self.metrics.items()}
        return {"format_version": self.format_version, **{k: v for k, v in doc.items() if k != "format_version"},
                **self.extra}

    @classmethod
    def from_json(cls, doc: Any, path: str | Path) -> FitRecord:
        """Check and read a fit.json document; `path` names it in errors."""
        if not isinstance(doc, dict):
            raise InputError(path, "fit.json is not a JSON object")
        if doc.get("format_version") != FIT_FORMAT_VERSION:
            raise FormatVersionError(path, doc.get("format_version"), FIT_FORMAT_VERSION)
        missing = [k for k in REQUIRED if k not in doc]
        if missing:
            raise InputError(path, f"fit.json lacks {', '.join(missing)}")
        if doc.get("status", "done") != "done":  # written by perfdata before the one failure record
            raise InputError(path, f"fit.json records a {doc['status']} fit, not a finished one")
        wrong = [k for k, types in TYPES.items() if k in doc and (not isinstance(doc[k], types)
                                                                  or isinstance(doc[k], bool))]
        if wrong:
            raise InputError(path, f"malformed fit.json: {', '.join(f'{k}={doc[k]!r}' for k in wrong)}")
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in doc.items() if k in known}
        extra = {k: v for k, v in doc.items() if k not in known and k != "status"}
        try:
            return cls(**_tuples(values), extra=extra)
        except (TypeError, ValueError) as exc:
            raise InputError(path, f"malformed fit.json ({exc})") from None


def _tuples(values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    for key in ("label_names", "resolution"):
        if out.get(key) is not None:
            out[key] = tuple(out[key])
    for key in ("cameras", "curve", "world_from_grid"):
        if out.get(key) is not None:
            out[key] = tuple(tuple(v) if isinstance(v, list) else v for v in out[key])
    out["metrics"] = {str(k): float(v) for k, v in dict(out.get("metrics") or {}).items()
                      if isinstance(v, (int, float))}
    return out


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(float(value)) else None


def read_fit(folder: str | Path) -> FitRecord:
    """The FitRecord of a fit folder (InputError naming fit.json when absent, unreadable or malformed)."""
    path = Path(folder) / FIT_NAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc.strerror or exc})") from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise InputError(path, f"not valid JSON ({exc})") from None
    return FitRecord.from_json(doc, path)


def write_fit(folder: str | Path, record: FitRecord) -> None:
    """Write fit.json atomically (no NaN: a non-finite metric is written as null)."""
    write_json(Path(folder) / FIT_NAME, record.to_json())
