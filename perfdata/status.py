"""What `perfdata status PATH` reports for any stage's output: fits, a dataset store, renders, a shard set.

Per stage that wrote into (or beside) PATH, one `StageStatus`: each item's record from its markers
(`perfdata.markers`: done / failed / running / pending, attempts, seconds, device, error, psnr), with
- the items planned but never started (pending), so the work a killed run left is visible;
- for a store, the store's own truth: a scene group complete in the store is done for `export` even without a
  marker (an import, an older perfdata), and its fit psnr comes from the scene attrs;
- for a shard set, the splits of index.json (done) when pack left no markers;
- for a folder of fits or renders written without run records, the item folders and their markers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from perfdata.errors import InputError
from perfdata.markers import RUNS, ItemRecord, Markers, is_zarr, stages_with_markers

STATES = ("done", "failed", "running", "pending")


@dataclass(frozen=True)
class StageStatus:
    """The items of one stage's output."""

    stage: str
    output: str
    records: tuple[ItemRecord, ...]

    def count(self, state: str) -> int:
        return sum(r.state == state for r in self.records)

    def summary(self) -> str:
        running = self.count("running")
        pending = self.count("pending") + running
        return (f"{self.count('done')} done, {self.count('failed')} failed, {pending} pending"
                + (f" ({running} running)" if running else ""))


def output_status(path: str | Path) -> list[StageStatus]:
    """The status of every stage that wrote PATH (module docstring); an InputError when there is none."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "not found")
    stages = {m.stage: m for m in stages_with_markers(path)}
    found = []
    if is_zarr(path):
        found += _store_status(path, stages)
    elif (path / "index.json").is_file() and "pack" not in stages:
        found.append(_index_status(path))
    for stage, markers in stages.items():
        if not any(s.stage == stage for s in found):
            found.append(StageStatus(stage, str(path), tuple(_with_psnr(markers, markers.read(i))
                                                             for i in markers.items())))
    if not found and path.is_dir():
        found.append(_folder_status(path))
    if not found:
        raise InputError(path, "no stage output here (fits, store, renders or shards)")
    return found


def _with_psnr(markers: Markers, rec: ItemRecord) -> ItemRecord:
    """A done fit or render without psnr in its marker (older outputs): psnr from fit.json / cameras.json."""
    if rec.state != "done" or rec.psnr is not None:
        return rec
    from perfdata.records.fit import FIT_NAME, read_fit
    from perfdata.records.render import read_render

    folder = markers.item_root / rec.item
    try:
        psnr = read_fit(folder).psnr if (folder / FIT_NAME).is_file() else read_render(folder).psnr
    except InputError as exc:
        return replace(rec, error=str(exc))
    return rec if psnr is None else replace(rec, facts={**rec.facts, "psnr": psnr})


def _store_status(path: Path, stages: dict[str, Markers]) -> list[StageStatus]:
    """export: every planned or marked scene, done when complete in the store; label as marked."""
    from perfdata.store import open_store

    store = open_store(str(path))
    complete = set(store.scene_ids)
    markers = stages.get("export") or Markers.beside(path, "export")
    items = list(dict.fromkeys([*markers.items(), *store.scene_ids]))
    records = []
    for item in items:
        rec = markers.read(item)
        if item in complete:
            psnr = store.scene_attrs(item).metrics.get("psnr")
            facts = rec.facts if psnr is None else {**rec.facts, "psnr": psnr}
            rec = replace(rec, state="done", facts=facts)
        elif rec.state == "done":  # marked, but the scene is gone from the store (rewritten, deleted)
            rec = replace(rec, state="pending", error="marked done but not complete in the store")
        records.append(rec)
    return [StageStatus("export", str(path), tuple(records))]


def _index_status(path: Path) -> StageStatus:
    from perfdata.shards import read_index

    index = read_index(path)
    splits = sorted({s["split"] for s in index["shards"]} | set(index.get("n_samples", {})))
    return StageStatus("pack", str(path), tuple(
        ItemRecord(split, "done", "pack", facts={"n_samples": index["n_samples"].get(split, 0)})
        for split in splits))


def _folder_status(path: Path) -> StageStatus:
    """A folder of item folders written without run records: fits (fit.json) or renders (cameras.json)."""
    subdirs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith((".", "_")) and p.name != RUNS]
    stage = "render" if any((p / "cameras.json").is_file() for p in subdirs) else "fit"
    markers = Markers.in_folder(path, stage)
    return StageStatus(stage, str(path), tuple(_with_psnr(markers, markers.read(p.name)) for p in sorted(subdirs)))
