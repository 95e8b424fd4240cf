"""Per-item progress markers of a stage's output folder, and what `perfdata status DIR` reports.

A stage writes one folder per item (scene) under its output folder. The item is
- done:    `<item>/DONE` exists (written last, after everything else was renamed into place);
- failed:  `<item>/FAILED.json` exists ({"error": ...}), or a JSON file in the folder says "status": "failed";
- pending: anything else: planned in `plan.json` but not started, or interrupted part-way.
`plan.json` (written when a run starts) lists the items the run means to produce, so items not yet started are
reported too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from perfdata.atomic import write_json, write_text
from perfdata.errors import InputError

DONE = "DONE"
FAILED = "FAILED.json"
PLAN = "plan.json"
STATUS_FORMAT_VERSION = 1


@dataclass(frozen=True)
class ItemStatus:
    item: str
    state: Literal["done", "failed", "pending"]
    error: str | None = None


def is_done(item_dir: str | Path) -> bool:
    return (Path(item_dir) / DONE).is_file()


def mark_done(item_dir: str | Path) -> None:
    """Write the done marker (last step of an item); clears an earlier failure record."""
    item_dir = Path(item_dir)
    (item_dir / FAILED).unlink(missing_ok=True)
    write_text(item_dir / DONE, "")


def mark_failed(item_dir: str | Path, error: str) -> None:
    """Record a failure (the folder holds no done marker afterwards)."""
    item_dir = Path(item_dir)
    item_dir.mkdir(parents=True, exist_ok=True)
    (item_dir / DONE).unlink(missing_ok=True)
    write_json(item_dir / FAILED, {"status": "failed", "error": error})


def write_plan(out_dir: str | Path, stage: str, items: Iterable[str]) -> None:
    """Record the items a run of `stage` means to produce (merged with an earlier plan of the same folder)."""
    out_dir = Path(out_dir)
    path = out_dir / PLAN
    items = list(items)
    if path.is_file():
        old = read_plan(out_dir)
        items = old + [i for i in items if i not in set(old)]
    write_json(path, {"format_version": STATUS_FORMAT_VERSION, "stage": stage, "items": items})


def read_plan(out_dir: str | Path) -> list[str]:
    path = Path(out_dir) / PLAN
    if not path.is_file():
        return []
    try:
        return [str(i) for i in json.loads(path.read_text())["items"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(path, f"not a valid plan file ({exc})") from None


def item_status(item_dir: Path) -> ItemStatus:
    if (item_dir / DONE).is_file():
        return ItemStatus(item_dir.name, "done")
    for path in [item_dir / FAILED, *sorted(item_dir.glob("*.json"))] if item_dir.is_dir() else []:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("status") == "failed":
            return ItemStatus(item_dir.name, "failed", str(record.get("error", "unknown error")))
    return ItemStatus(item_dir.name, "pending")


def scan(out_dir: str | Path) -> list[ItemStatus]:
    """Status of every planned item and every item folder under a stage's output folder, sorted by item."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise InputError(out_dir, "not a folder")
    names = set(read_plan(out_dir))
    names |= {p.name for p in out_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}
    return [item_status(out_dir / name) for name in sorted(names)]
