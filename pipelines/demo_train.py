"""The demo's downstream training: cls2d on the shards, cls3d on every stored scene's grid, seg3d on the rooms.

Each task trains into OUT/train/<task>/ (`perfdata.downstream.train`: metrics.json, model.safetensors, curve.png,
confusion.png). A task whose metrics.json records the same settings and every epoch is kept as it is, so a rerun
of the demo skips it; any other state resumes from the task's checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TASKS = ("cls2d", "cls3d", "seg3d")


@dataclass(frozen=True)
class DemoTraining:
    """How the demo trains its downstream models (tiny data: smoke runs of the downstream path)."""

    epochs_2d: int = 6
    """Epochs of the 2D classifier."""
    epochs_3d: int = 8
    """Epochs of the 3D classifier and the 3D segmenter."""
    reso: int = 32
    """Grid resolution the 3D models see."""
    seed: int = 0


def task_configs(out: Path, shards: Path, store: Path, cfg: DemoTraining) -> dict[str, Any]:
    """The TrainConfig of each task: cls2d on the shards (object classes and rooms), cls3d on every scene of the
    store (its class name: the object's shape or room), seg3d on the room scenes only (`room_*`)."""
    from perfdata.downstream.train import TrainConfig

    common = dict(seed=cfg.seed, device="cpu", resume=True)
    return {
        "cls2d": TrainConfig(task="cls2d", data=str(shards), out=str(out / "cls2d"), epochs=cfg.epochs_2d,
                             batch_size=8, size=32, **common),  # type: ignore[arg-type]
        "cls3d": TrainConfig(task="cls3d", data=str(store), out=str(out / "cls3d"), epochs=cfg.epochs_3d,
                             batch_size=4, reso=cfg.reso, widths=(8, 16, 32), val_fraction=0.34,
                             **common),  # type: ignore[arg-type]
        "seg3d": TrainConfig(task="seg3d", data=str(store), out=str(out / "seg3d"), epochs=cfg.epochs_3d,
                             batch_size=2, reso=cfg.reso, widths=(8, 16, 32), lr=5e-3, val_fraction=0.34,
                             scenes=("room_*",), **common),  # type: ignore[arg-type]
    }


def is_trained(cfg: Any) -> bool:
    """Whether cfg.out holds a finished run of exactly these settings (metrics.json with every epoch)."""
    path = Path(cfg.out) / "metrics.json"
    if not path.is_file():
        return False
    try:
        doc = json.loads(path.read_text())
    except ValueError:
        return False
    wanted = json.loads(json.dumps(cfg.to_dict()))
    return doc.get("config") == wanted and len(doc.get("epochs", ())) == cfg.epochs


def train_task(cfg: Any) -> dict[str, Any]:
    """Train one task unless it is done (`is_trained`); the summary the report and notes show."""
    from perfdata.downstream.train import train

    skipped = is_trained(cfg)
    if not skipped:
        train(cfg)
    doc = json.loads((Path(cfg.out) / "metrics.json").read_text())
    return summary(doc, skipped)


def summary(doc: dict[str, Any], skipped: bool = False) -> dict[str, Any]:
    """One row of the report's metrics table from a metrics.json."""
    final = doc.get("final") or {}
    classes = doc.get("classes") or []
    row: dict[str, Any] = {
        "task": doc.get("task"), "metric": doc.get("metric"), "val": final.get("val_metric"),
        "chance": round(1.0 / len(classes), 3) if classes and doc.get("task") != "seg3d" else None,
        "train_loss": final.get("train_loss"), "classes": len(classes), "n_train": doc.get("n_train"),
        "n_val": doc.get("n_val"), "epochs": len(doc.get("epochs") or ()),
        "seconds": round(float(doc.get("wall_seconds") or 0.0), 1), "rerun": "kept" if skipped else "trained",
    }
    if "val_accuracy" in final:
        row["val_accuracy"] = final["val_accuracy"]
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
