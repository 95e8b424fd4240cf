"""The export stage: fit folders (`DIR/<scene_id>/{grid.npz, fit.json, DONE}`, `perfdata.records.fit`) -> the zarr
dataset store, or PLY / HDF5 point files.

Scenes run on the per-scene runner (`perfdata.runner`: `--executor`, `--shard`, markers beside the store, a
failing scene never stops the others); each scene is its own group, so writers never share files. A scene
already complete in the store is skipped unless `force`, and written atomically otherwise. Fit folders without
their done marker are skipped and reported, as are fits below `min_psnr`. The store's root attrs are rewritten
once at the end.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perfdata.atomic import remove_path, remove_stale, removed_on_error
from perfdata.errors import ConfigError, InputError
from perfdata.executor import ExecutorConfig
from perfdata.grid import SparseGrid
from perfdata.markers import Markers
from perfdata.records.fit import GRID_NAME, read_fit
from perfdata.runner import RunConfig, StageJob, TaskOutcome, run_stage
from perfdata.store.location import Location
from perfdata.store.schema import RootAttrs
from perfdata.store.writer import WriteConfig, grid_arrays, is_complete, refresh_root, write_scene

FORMATS = ("zarr", "ply", "h5")
# runner outcome -> SceneExport status
STATUS = {"done": "written", "skipped": "skipped", "failed": "failed", "held": "failed earlier",
          "busy": "busy", "pending": "pending", "planned": "planned"}
IN_PROCESS = RunConfig(executor=ExecutorConfig(kind="threads", workers=2))


@dataclass(frozen=True)
class ExportConfig:
    """What `perfdata export` does."""

    format: str = "zarr"
    """"zarr" (the dataset store), "ply" (one PLY per scene) or "h5" (per-scene HDF5 + one combined file)."""
    scenes: tuple[str, ...] = ()
    """Scene ids to export (default: every fit folder)."""
    force: bool = False
    """Rewrite scenes already complete in the output."""
    dataset: str = "perfdata"
    """Dataset name recorded in the store's root attrs."""
    write: WriteConfig = field(default_factory=WriteConfig)
    h5_points: int = 4096
    """Points per scene in the combined HDF5 file (sampled with `seed`)."""
    seed: int = 0
    min_psnr: float | None = None
    """Leave out (and list) fits whose held-out psnr is below this, or unknown."""
    dry_run: bool = False


@dataclass(frozen=True)
class SceneExport:
    scene_id: str
    status: str
    """"written", "skipped" (already complete), "not-done" (no done marker), "low-psnr", "failed", "failed
    earlier" (use --retry-failed), "busy" (another run writes it) or "planned" (dry run)."""
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
    """Fit folders with a done marker (sorted) and the ids of those without one."""
    root = Path(fits_dir)
    if not root.is_dir():
        raise InputError(root, "fits folder not found")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    if scene_ids:
        known = {p.name for p in folders}
        missing = [s for s in scene_ids if s not in known]
        if missing:
            raise InputError(root, f"no fit folder for scene(s) {', '.join(missing)}")
        folders = [p for p in folders if p.name in set(scene_ids)]
    markers = Markers.in_folder(root, "fit")
    done = [p for p in folders if markers.is_done(p.name)]
    return done, [p.name for p in folders if not markers.is_done(p.name)]


def load_fit(folder: Path) -> tuple[SparseGrid, dict[str, Any]]:
    """A fit folder's grid and the scene attrs its fit.json gives: class_name, metrics, source, and into `extra`
    method / seed / steps / device / label_names / cameras (training cameras [{K, c2w, width, height}], from
    fit.json or a cameras.json beside it, which the render stage interpolates between)."""
    import json

    record = read_fit(folder)
    grid = SparseGrid.load(folder / GRID_NAME)
    extra: dict[str, Any] = {"method": record.method, "seed": record.seed, "steps": record.steps,
                             "device": record.device}
    if record.label_names is not None:
        extra["label_names"] = list(record.label_names)
    if record.method == "semantic" and grid.labels is not None:  # labels = confident argmax of the logits
        extra["label_threshold"] = float(record.config.get("semantic", {}).get("threshold", 0.5))
        extra["labels_source"] = "semantic field (argmax of logits)"
    if record.cameras:
        extra["cameras"] = [dict(c) for c in record.cameras]
    elif (folder / "cameras.json").is_file():  # training cameras beside an imported fit, for the renderer
        try:
            extra["cameras"] = json.loads((folder / "cameras.json").read_text())
        except ValueError as exc:
            raise InputError(folder / "cameras.json", f"not valid JSON ({exc})") from None
    return grid, {"class_name": record.class_name, "metrics": dict(record.metrics),
                  "source": str(record.source or folder), "extra": extra}


def filter_psnr(folders: Sequence[Path], min_psnr: float | None) -> tuple[list[Path], list[SceneExport]]:
    """Folders whose fit psnr is at least min_psnr, and the others as low-psnr SceneExports."""
    if min_psnr is None:
        return list(folders), []
    keep, low = [], []
    for folder in folders:
        psnr = read_fit(folder).psnr
        if psnr is not None and psnr >= min_psnr:
            keep.append(folder)
        else:
            why = "no fit psnr recorded" if psnr is None else f"fit psnr {psnr:.2f} is below"
            low.append(SceneExport(folder.name, "low-psnr", error=f"{why} --min-psnr {min_psnr}"))
    return keep, low


def export_fits(fits_dir: str | Path, out: str, cfg: ExportConfig, run: RunConfig = IN_PROCESS) -> ExportResult:
    """Export every done fit under `fits_dir` (passing `cfg.min_psnr`) to `out` in `cfg.format`."""
    if cfg.format not in FORMATS:
        raise ConfigError(f"unknown export format {cfg.format!r} (choose from {', '.join(FORMATS)})")
    done, not_done = find_fits(fits_dir, cfg.scenes)
    done, low = filter_psnr(done, cfg.min_psnr)
    skipped = [SceneExport(s, "not-done") for s in not_done] + low
    if cfg.format != "zarr":
        return ExportResult(out, tuple(skipped) + export_points(done, Path(out), cfg, run))
    loc = Location(out, cfg.write.storage_options)
    work = functools.partial(export_scene, str(fits_dir), out, cfg.write)
    results = run_scene_jobs(loc, [p.name for p in done], work, cfg, run)
    root = finish_root(loc, cfg.dataset, cfg.dry_run or run.dry_run)
    return ExportResult(out, tuple(skipped) + tuple(results), root)


def export_scene(fits_dir: str, out: str, write: WriteConfig, scene_id: str) -> dict[str, Any]:
    """Runner work: one fit folder -> one scene group of the store."""
    loc = Location(out, write.storage_options)
    grid, attrs = load_fit(Path(fits_dir) / scene_id)
    write_scene(loc, scene_id, grid_arrays(grid, write, **attrs), write)
    return {"n_voxels": grid.n_voxels, "metrics": attrs["metrics"]}


def run_scene_jobs(loc: Location, scene_ids: Sequence[str], work: Callable[[str], Mapping[str, Any]],
                   cfg: ExportConfig, run: RunConfig = IN_PROCESS) -> list[SceneExport]:
    """Run `work(scene_id)` on the per-scene runner for each scene not yet complete in the store `loc` (markers
    beside it); a failing scene is recorded and never stops the others. Results sorted by scene id."""
    for scene_id in scene_ids:
        loc.scene_key(scene_id)  # refuses unusable ids early
    dry = cfg.dry_run or run.dry_run
    new_store = loc.local_path if loc.is_local and not dry and not loc.local_path.exists() else None
    with removed_on_error(new_store):  # a crash leaves no new store behind
        if not dry:
            from perfdata.store.writer import ensure_root

            ensure_root(loc, cfg.dataset)
        run = RunConfig(run.executor, run.shard, run.force or cfg.force, run.retry_failed, dry)
        job = StageJob(Markers.for_store(loc.url, "export"), functools.partial(_cleaned, loc, work),
                       functools.partial(is_complete, loc))
        outcomes = run_stage(job, list(scene_ids), run)
    results = sorted((scene_export(o) for o in outcomes), key=lambda r: r.scene_id)
    if new_store is not None and not any(r.status == "written" for r in results):
        remove_path(new_store)  # every scene failed (a full disk...): no empty store left behind
    return results


def finish_root(loc: Location, dataset: str, dry_run: bool) -> RootAttrs | None:
    """Refresh the root attrs after the writers (None on a dry run, or when no store was left: see above)."""
    if dry_run or loc.read_json("zarr.json") is None:
        return None
    return refresh_root(loc, dataset)


def _cleaned(loc: Location, work: Callable[[str], Mapping[str, Any]], scene_id: str) -> Mapping[str, Any]:
    """work(scene_id), after removing the temporaries a killed writer of the scene left in a local store."""
    if loc.is_local:
        remove_stale(loc.local_path / loc.scene_key(scene_id).rpartition("/")[0], scene_id)
    return work(scene_id)


def scene_export(outcome: TaskOutcome) -> SceneExport:
    return SceneExport(outcome.item, STATUS[outcome.status], int(outcome.facts.get("n_voxels", 0)),
                       outcome.seconds, outcome.error or "")


def export_points(folders: Sequence[Path], out: Path, cfg: ExportConfig, run: RunConfig = IN_PROCESS
                  ) -> tuple[SceneExport, ...]:
    """One PLY or HDF5 file per fit folder in `out` (runner items; a file already there is kept unless
    `cfg.force`); for h5, then `out/all.h5` with `cfg.h5_points` points of every exported scene."""
    from perfdata.store.points import sample_rows, write_h5_combined

    if folders and not (cfg.dry_run or run.dry_run):
        out.mkdir(parents=True, exist_ok=True)
    fits_dir = folders[0].parent if folders else out
    run = RunConfig(run.executor, run.shard, run.force or cfg.force, run.retry_failed, run.dry_run or cfg.dry_run)
    job = StageJob(Markers.beside(out, "export"), functools.partial(export_point_file, str(fits_dir), str(out),
                                                                   cfg.format),
                   functools.partial(point_file_done, str(out), cfg.format))
    results = tuple(scene_export(o) for o in run_stage(job, [p.name for p in folders], run))
    if cfg.format == "h5" and not run.dry_run:
        samples = []
        for r in results:
            if r.status in ("written", "skipped"):
                grid, attrs = load_fit(fits_dir / r.scene_id)
                rows = sample_rows(grid, cfg.h5_points, cfg.seed, r.scene_id) if grid.n_voxels else None
                samples.append((r.scene_id, attrs.get("class_name"), None if rows is None else grid.take(rows)))
        if samples:
            write_h5_combined(samples, out / "all.h5", cfg.h5_points, cfg.seed)
    return results


def export_point_file(fits_dir: str, out: str, fmt: str, scene_id: str) -> dict[str, Any]:
    """Runner work: one fit folder -> `<out>/<scene_id>.ply` or `.h5`."""
    from perfdata.store.points import write_h5_scene, write_ply

    grid, attrs = load_fit(Path(fits_dir) / scene_id)
    target = Path(out) / f"{scene_id}.{fmt}"
    if fmt == "ply":
        write_ply(grid, target, scene_id)
    else:
        write_h5_scene(grid, target, scene_id, attrs.get("class_name"))
    return {"n_voxels": grid.n_voxels, "metrics": attrs["metrics"]}


def point_file_done(out: str, fmt: str, scene_id: str) -> bool:
    return (Path(out) / f"{scene_id}.{fmt}").is_file()
