"""Progress markers of a stage's items: the one helper every stage's runner writes and every reader checks.

A stage writing one folder per item (fit, render) keeps an item's markers in that folder; a stage writing into
a dataset store (export, label) or a shard set (pack: one item per split) keeps them in a hidden run folder
beside its output (a zarr store lists every folder inside it, so nothing foreign goes in there)::

    <item_root>/<item>/DONE           JSON record of the finished item (`ItemRecord`), written last, after the
                                      item's output is in place; an empty DONE (older outputs) is a done item
    <item_root>/<item>/FAILED.json    the record of the last failure: error, traceback, attempts, seconds, host
    <item_root>/<item>/RUNNING.json   written when an attempt starts; a killed run leaves it behind (pending)
    <run_dir>/plan.json               the items the runs of this stage meant to produce (merged across runs)
    <run_dir>/run.json                the run manifest: every item's record, rebuilt from the markers
    <run_dir>/locks/<item>.lock       an flock held by the one process working on the item

Folder stages: `item_root` is the output folder and `run_dir` is `<out>/.perfdata/<stage>`. Store stages:
`run_dir` is `<parent>/.<store name>.perfdata/<stage>` and `item_root` is `<run_dir>/items`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from perfdata.atomic import write_json
from perfdata.errors import FormatVersionError, InputError, PerfdataError
from perfdata.names import check_scene_id

DONE = "DONE"
FAILED = "FAILED.json"
RUNNING = "RUNNING.json"
PLAN = "plan.json"
MANIFEST = "run.json"
RUNS = ".perfdata"
MARKER_FORMAT_VERSION = 1

State = Literal["done", "failed", "running", "pending"]


class ItemBusy(PerfdataError):
    """Another process holds the item's lock (a second run on the same output)."""

    exit_code = 1


@dataclass(frozen=True)
class ItemRecord:
    """What the markers say about one item."""

    item: str
    state: State = "pending"
    stage: str = ""
    attempts: int = 0
    """Attempts started, over every run (a killed attempt counts)."""
    seconds: float | None = None
    """Wall seconds of the last attempt."""
    device: str | None = None
    host: str | None = None
    pid: int | None = None
    error: str | None = None
    traceback: str | None = None
    finished: str | None = None
    """UTC time the last attempt ended (ISO 8601)."""
    facts: dict[str, Any] = field(default_factory=dict)
    """What the stage reported: metrics (psnr, ...), n_voxels, n_views, shards ..."""

    @property
    def psnr(self) -> float | None:
        value = (self.facts.get("metrics") or {}).get("psnr", self.facts.get("psnr"))
        return None if value is None else float(value)

    def to_json(self) -> dict[str, Any]:
        return {"format_version": MARKER_FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, doc: Any, path: Path) -> ItemRecord:
        if not isinstance(doc, dict):
            raise InputError(path, "marker is not a JSON object")
        if doc.get("format_version", MARKER_FORMAT_VERSION) != MARKER_FORMAT_VERSION:
            raise FormatVersionError(path, doc.get("format_version"), MARKER_FORMAT_VERSION)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in doc.items() if k in known})


def check_item_name(item: str) -> str:
    """An item (scene id, split) is used as a file name: the one safe-name rule (`perfdata.names`). Returns it;
    raises UnsafePathError otherwise."""
    return check_scene_id(item)


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class Markers:
    """The markers of one stage's items (layout in the module docstring). Picklable: only paths."""

    stage: str
    run_dir: Path
    item_root: Path

    @classmethod
    def in_folder(cls, out: str | Path, stage: str) -> Markers:
        """A stage writing `<out>/<item>/` folders (fit, render)."""
        out = Path(out)
        return cls(stage, out / RUNS / stage, out)

    @classmethod
    def beside(cls, output: str | Path, stage: str) -> Markers:
        """A stage whose items are not folders of its output (a store's scenes, a shard set's splits)."""
        output = Path(output)
        run_dir = runs_dir(output) / stage
        return cls(stage, run_dir, run_dir / "items")

    @classmethod
    def for_store(cls, url: str, stage: str) -> Markers:
        """A store stage's markers: beside a local store; for a remote one (fsspec URL), in
        `~/.cache/perfdata/runs/<hash of the URL>/` of the machine that runs the driver and its workers."""
        if "://" not in url or url.startswith("file://"):
            return cls.beside(Path(url.removeprefix("file://")), stage)
        import hashlib

        key = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]
        return cls.beside(Path.home() / ".cache" / "perfdata" / "runs" / key / "store.zarr", stage)

    def item_dir(self, item: str) -> Path:
        return self.item_root / check_item_name(item)

    def read(self, item: str) -> ItemRecord:
        """The item's record: done (DONE), failed (FAILED.json), running (RUNNING.json and its lock held),
        pending (nothing, or RUNNING.json of an attempt that was killed)."""
        folder = self.item_dir(item)
        if (folder / DONE).is_file():
            return self._load(folder / DONE, item, "done")
        if (folder / FAILED).is_file():
            return self._load(folder / FAILED, item, "failed")
        if (folder / RUNNING).is_file():
            rec = self._load(folder / RUNNING, item, "pending")
            return replace(rec, state="running" if self.is_locked(item) else "pending")
        return ItemRecord(item, "pending", self.stage)

    def _load(self, path: Path, item: str, state: State) -> ItemRecord:
        try:
            text = path.read_text()
        except OSError:  # removed while we looked: an attempt is finishing
            return ItemRecord(item, "pending", self.stage)
        if not text.strip():
            return ItemRecord(item, state, self.stage)
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise InputError(path, f"marker is not valid JSON ({exc})") from None
        return replace(ItemRecord.from_json(doc, path), item=item, state=state, stage=self.stage)

    def is_done(self, item: str) -> bool:
        return (self.item_dir(item) / DONE).is_file()

    def start(self, item: str) -> ItemRecord:
        """Record that an attempt starts here (attempts counts every start, killed ones included)."""
        before = self.read(item)
        rec = ItemRecord(item, "running", self.stage, attempts=before.attempts + 1, host=socket.gethostname(),
                         pid=os.getpid(), finished=None)
        write_json(self.item_dir(item) / RUNNING, rec.to_json())
        return rec

    def finish(self, rec: ItemRecord) -> None:
        """The done marker, last: its record replaces any failure record."""
        folder = self.item_dir(rec.item)
        write_json(folder / DONE, replace(rec, state="done", finished=now_iso()).to_json())
        (folder / FAILED).unlink(missing_ok=True)
        (folder / RUNNING).unlink(missing_ok=True)

    def fail(self, rec: ItemRecord) -> None:
        """The failure record (the item has no done marker afterwards)."""
        folder = self.item_dir(rec.item)
        (folder / DONE).unlink(missing_ok=True)
        write_json(folder / FAILED, replace(rec, state="failed", finished=now_iso()).to_json())
        (folder / RUNNING).unlink(missing_ok=True)

    def clear(self, item: str) -> None:
        """Forget an item's markers (its output is being replaced)."""
        for name in (DONE, FAILED, RUNNING):
            (self.item_dir(item) / name).unlink(missing_ok=True)

    @contextlib.contextmanager
    def lock(self, item: str) -> Iterator[None]:
        """Hold the item's lock for a block; ItemBusy when another process (or thread) holds it."""
        fd = self._open_lock(item)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self.read(item)
                who = f" (pid {holder.pid} on {holder.host})" if holder.pid else ""
                raise ItemBusy(f"{self.stage} {item}: another run is writing it{who}; not touched") from None
            yield
        finally:
            os.close(fd)

    def is_locked(self, item: str) -> bool:
        path = self.run_dir / "locks" / f"{check_item_name(item)}.lock"
        if not path.is_file():
            return False
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def _open_lock(self, item: str) -> int:
        path = self.run_dir / "locks" / f"{check_item_name(item)}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)

    @contextlib.contextmanager
    def run_lock(self) -> Iterator[None]:
        """A short blocking lock for plan and manifest updates by concurrent runs."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.run_dir / "run.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def add_to_plan(self, items: Iterable[str]) -> list[str]:
        """Merge items into plan.json (kept in first-planned order); returns the whole plan."""
        items = [check_item_name(i) for i in items]
        self.item_root.mkdir(parents=True, exist_ok=True)
        with self.run_lock():
            plan = list(dict.fromkeys([*self.planned(), *items]))
            write_json(self.run_dir / PLAN, {"format_version": MARKER_FORMAT_VERSION, "stage": self.stage,
                                             "items": plan})
        return plan

    def planned(self) -> list[str]:
        path = self.run_dir / PLAN
        if not path.is_file():
            return []
        try:
            doc = json.loads(path.read_text())
            return [str(i) for i in doc["items"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(path, f"not a valid plan file ({exc})") from None

    def items(self) -> list[str]:
        """Planned items, then every other item folder (sorted)."""
        found = []
        if self.item_root.is_dir():
            found = sorted(p.name for p in self.item_root.iterdir() if p.is_dir() and not p.name.startswith("."))
        plan = self.planned()
        return plan + [i for i in found if i not in set(plan)]

    def write_manifest(self, records: Iterable[ItemRecord] | None = None) -> Path:
        """Rebuild run.json from the markers (or the records given)."""
        recs = list(records) if records is not None else [self.read(i) for i in self.items()]
        counts = {s: sum(r.state == s for r in recs) for s in ("done", "failed", "running", "pending")}
        doc = {"format_version": MARKER_FORMAT_VERSION, "stage": self.stage, "updated": now_iso(),
               "counts": counts, "items": [{k: v for k, v in r.to_json().items() if k != "format_version"}
                                           for r in recs]}
        with self.run_lock():
            write_json(self.run_dir / MANIFEST, doc)
        return self.run_dir / MANIFEST


def runs_dir(output: str | Path) -> Path:
    """Where the run records of an output kept beside it live: `<parent>/.<name>.perfdata` for a store,
    `<out>/.perfdata` for a folder that is not a zarr store."""
    output = Path(output)
    if is_zarr(output):
        return output.parent / f".{output.name}{RUNS}"
    return output / RUNS


def is_zarr(path: Path) -> bool:
    return (path / "zarr.json").is_file() or path.suffix == ".zarr"


def stages_with_markers(output: str | Path) -> list[Markers]:
    """Every stage that left run records for `output`: folder stages (items are `<output>/<item>/`) and
    stages whose items are kept in the run folder (`<run_dir>/items/`)."""
    output = Path(output)
    found = []
    for runs in dict.fromkeys([output / RUNS, runs_dir(output)]):
        if not runs.is_dir():
            continue
        for stage_dir in sorted(p for p in runs.iterdir() if p.is_dir()):
            kept_beside = (stage_dir / "items").is_dir() or runs != output / RUNS
            found.append(Markers(stage_dir.name, stage_dir, stage_dir / "items" if kept_beside else output))
    return found
