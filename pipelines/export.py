"""The export stage: fit folders (`DIR/<scene_id>/{grid.npz, fit.json, DONE}`) -> the zarr dataset store, or
PLY / HDF5 point files.

Scenes are written in parallel (a thread pool; each scene is its own group, so writers never share files),
idempotently (a scene already complete in the store is skipped unless `force`) and atomically per scene. Fit
folders without their DONE marker are skipped and reported. The store's root attrs are rewritten once at the end.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perfdata.atomic import removed_on_error
from perfdata.errors import ConfigError, InputError, PerfdataError
from perfdata.grid import SparseGrid
from perfdata.store.location import Location
from perfdata.store.schema import RootAttrs
from perfdata.store.writer import WriteConfig, grid_arrays, is_complete, refresh_root, write_scene

DONE_MARKER = "DONE"
FORMATS = ("zarr", "ply", "h5")


@dataclass(frozen=True)
class ExportConfig:
    """What `perfdata export` does."""

    format: str = "zarr"
    """"zarr" (the dataset store), "ply" (one PLY per scene) or "h5" (per-scene HDF5 + one combined file)."""
    scenes: tuple[str, ...] = ()
    """Scene ids to export (default: every fit folder)."""
    force: bool = False
    """Rewrite scenes already complete in the output."""
    workers: int = 2
    """Scenes written at once."""
    dataset: str = "perfdata"
    """Dataset name recorded in the store's root attrs."""
    write: WriteConfig = field(default_factory=WriteConfig)
    h5_points: int = 4096
    """Points per scene in the combined HDF5 file (sampled with `seed`)."""
    seed: int = 0
    dry_run: bool = False


@dataclass(frozen=True)
class SceneExport:
    scene_id: str
    status: str
    """"written", "skipped" (already complete), "not-done" (no DONE marker), "failed" or "planned" (dry run)."""
    n_voxels: int = 0
    seconds: float = 0.0
    error: str = ""


@dataclass(frozen=True)
class ExportResult:
    out: str
    scenes: tuple[SceneExport, ...]
    root: RootAttrs | None = None

    def count(self, status: str) -> int:
        return sum(s.status == status for s in self.scenes)


def find_fits(fits_dir: str | Path, scene_ids: Sequence[str] = ()) -> tuple[list[Path], list[str]]:
    """Fit folders with a DONE marker (sorted) and the ids of those without one."""
    root = Path(fits_dir)
    if not root.is_dir():
        raise InputError(root, "fits folder not found")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if scene_ids:
        known = {p.name for p in folders}
        missing = [s for s in scene_ids if s not in known]
        if missing:
            raise InputError(root, f"no fit folder for scene(s) {', '.join(missing)}")
        folders = [p for p in folders if p.name in set(scene_ids)]
    done = [p for p in folders if (p / DONE_MARKER).is_file()]
    return done, [p.name for p in folders if not (p / DONE_MARKER).is_file()]


def load_fit(folder: Path) -> tuple[SparseGrid, dict[str, Any]]:
    """A fit folder's grid and the scene attrs its fit.json gives: class_name, metrics, source, and into `extra`
    method / seed / steps / device / label_names / cameras (training cameras [{K, c2w, width, height}], from
    fit.json or a cameras.json beside it, which the render stage interpolates between)."""
    grid = SparseGrid.load(folder / "grid.npz")
    record: dict[str, Any] = {}
    if (folder / "fit.json").is_file():
        try:
            record = json.loads((folder / "fit.json").read_text())
        except ValueError as exc:
            raise InputError(folder / "fit.json", f"not valid JSON ({exc})") from None
    metrics = {k: float(v) for k, v in dict(record.get("metrics") or {}).items() if isinstance(v, (int, float))}
    extra = {k: record[k] for k in ("method", "seed", "steps", "device", "label_names", "cameras") if k in record}
    if "cameras" not in extra and (folder / "cameras.json").is_file():  # training cameras, for the renderer
        try:
            extra["cameras"] = json.loads((folder / "cameras.json").read_text())
        except ValueError as exc:
            raise InputError(folder / "cameras.json", f"not valid JSON ({exc})") from None
    return grid, {"class_name": record.get("class_name"), "metrics": metrics,
                  "source": str(record.get("source") or folder), "extra": extra}


def export_fits(fits_dir: str | Path, out: str, cfg: ExportConfig) -> ExportResult:
    """Export every done fit under `fits_dir` to `out` in `cfg.format`."""
    if cfg.format not in FORMATS:
        raise ConfigError(f"unknown export format {cfg.format!r} (choose from {', '.join(FORMATS)})")
    done, not_done = find_fits(fits_dir, cfg.scenes)
    skipped = [SceneExport(s, "not-done") for s in not_done]
    if cfg.format != "zarr":
        return ExportResult(out, tuple(skipped) + export_points(done, load_fit, Path(out), cfg))
    loc = Location(out, cfg.write.storage_options)

    def job(folder: Path) -> SceneExport:
        grid, attrs = load_fit(folder)
        write_scene(loc, folder.name, grid_arrays(grid, cfg.write, **attrs), cfg.write)
        return SceneExport(folder.name, "written", grid.n_voxels)

    results = run_scene_jobs(loc, [(p.name, p) for p in done], job, cfg)
    root = None if cfg.dry_run else refresh_root(loc, cfg.dataset)
    return ExportResult(out, tuple(skipped) + tuple(results), root)


def run_scene_jobs(
    loc: Location, items: Sequence[tuple[str, Any]], job: Callable[[Any], SceneExport], cfg: ExportConfig
) -> list[SceneExport]:
    """Run `job(item)` for each (scene_id, item) not yet complete in `loc`, `cfg.workers` at a time; a failing
    scene is recorded and never stops the others."""
    with removed_on_error(loc.local_path if loc.is_local and not cfg.dry_run else None):  # a crash: no new store
        return _run_scene_jobs(loc, items, job, cfg)


def _run_scene_jobs(
    loc: Location, items: Sequence[tuple[str, Any]], job: Callable[[Any], SceneExport], cfg: ExportConfig
) -> list[SceneExport]:
    if not cfg.dry_run:
        from perfdata.store.writer import ensure_root

        ensure_root(loc, cfg.dataset)
    todo, results = [], []
    for scene_id, item in items:
        loc.scene_key(scene_id)  # refuses unusable ids early
        if not cfg.force and is_complete(loc, scene_id):
            results.append(SceneExport(scene_id, "skipped"))
        elif cfg.dry_run:
            results.append(SceneExport(scene_id, "planned"))
        else:
            todo.append((scene_id, item))

    def timed(pair: tuple[str, Any]) -> SceneExport:
        t0 = time.perf_counter()
        try:
            res = job(pair[1])
        except PerfdataError as exc:
            return SceneExport(pair[0], "failed", error=str(exc), seconds=time.perf_counter() - t0)
        return SceneExport(res.scene_id, res.status, res.n_voxels, time.perf_counter() - t0)

    with ThreadPoolExecutor(max_workers=max(1, cfg.workers)) as pool:
        results += list(pool.map(timed, todo))
    return sorted(results, key=lambda r: r.scene_id)


def export_points(
    folders: Sequence[Path], load: Callable[[Path], tuple[SparseGrid, dict[str, Any]]], out: Path, cfg: ExportConfig
) -> tuple[SceneExport, ...]:
    """Write PLY or HDF5 files for each fit folder into `out`; existing files are kept unless `cfg.force`."""
    from perfdata.store.points import sample_rows, write_h5_combined, write_h5_scene, write_ply

    out.mkdir(parents=True, exist_ok=True)
    results, samples = [], []
    for folder in folders:
        target = out / f"{folder.name}.{cfg.format}"
        if target.exists() and not cfg.force and cfg.format == "ply":
            results.append(SceneExport(folder.name, "skipped"))
            continue
        if cfg.dry_run:
            results.append(SceneExport(folder.name, "planned"))
            continue
        grid, attrs = load(folder)
        if cfg.format == "ply":
            write_ply(grid, target, folder.name)
        else:
            write_h5_scene(grid, target, folder.name, attrs.get("class_name"))
            rows = sample_rows(grid, cfg.h5_points, cfg.seed, folder.name) if grid.n_voxels else None
            samples.append((folder.name, attrs.get("class_name"), None if rows is None else grid.take(rows)))
        results.append(SceneExport(folder.name, "written", grid.n_voxels))
    if samples:
        write_h5_combined(samples, out / "all.h5", cfg.h5_points, cfg.seed)
    return tuple(results)
