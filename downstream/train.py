"""Downstream trainers: `train(cfg) -> TrainResult` for cls2d (views from shards), cls3d and seg3d (dense grids
from a store).

Seeded (model init, shard order, shuffle buffers, batch order and the store's scene split all come from
cfg.seed), AdamW, a fixed number of epochs; each epoch ends with an evaluation on the val split (shards: the
`val` shards of index.json; store: `perfdata.devices.split_scene_ids`). Writes, each atomically:

    OUT/metrics.json       format_version, task, config, seed, classes, metric ("accuracy" or "miou"), per-epoch
                           train loss / train metric / val metric / seconds, final val metrics (confusion matrix,
                           per-class IoU for seg3d), sizes, device, wall seconds, versions
    OUT/model.safetensors  the weights (no pickle); metadata: task, arch, classes, in_channels, widths
    OUT/curve.png          left: train loss (blue); right: train metric (green) and val metric (orange) on [0, 1]
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from perfdata.downstream import loaders as L
from perfdata.downstream.metrics import confusion_accuracy, confusion_matrix, mean_iou, per_class_iou
from perfdata.downstream.models2d import ResNetClassifier
from perfdata.downstream.models3d import Grid3dClassifier, UNet3d
from perfdata.downstream.plot import curve_image, write_png
from torch import nn

from perfdata.atomic import atomic_path, write_json
from perfdata.devices import resolve_device, split_scene_ids, versions
from perfdata.errors import ConfigError, FitError, InputError

TASKS = ("cls2d", "cls3d", "seg3d")
METRICS_FORMAT_VERSION = 1


@dataclass(frozen=True)
class TrainConfig:
    """One downstream training run."""

    task: str
    """"cls2d" (views from shards), "cls3d" or "seg3d" (dense grids from a store)."""
    data: str
    """Shard folder with index.json (cls2d) or store path / fsspec URL (cls3d, seg3d)."""
    out: str
    """Output folder: metrics.json, model.safetensors, curve.png."""
    epochs: int = 10
    """Passes over the training split."""
    batch_size: int = 16
    """Samples (views or scenes) per step."""
    lr: float = 3e-3
    """AdamW learning rate (constant)."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    seed: int = 0
    """Seed of everything random in the run."""
    device: str = "auto"
    """"auto" (cuda when available), "cpu" or "cuda"."""
    size: int = 32
    """cls2d: images are resized to size x size."""
    reso: int = 32
    """cls3d / seg3d: dense grid resolution D (seg3d: divisible by 2 ** (len(widths) - 1))."""
    val_fraction: float = 0.25
    """cls3d / seg3d: fraction of the store's scenes held out for val."""
    widths: tuple[int, ...] = (16, 32, 64)
    """Channels per stage of the model."""
    shuffle_buffer: int = 256
    """cls2d: samples in the shuffle buffer."""
    verify: bool = False
    """cls2d: check every shard's sha256 against index.json before training."""
    preload: bool = True
    """cls3d / seg3d: read every scene's grid once up front (else from the store at every step)."""

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "widths": list(self.widths)}


@dataclass(frozen=True)
class EpochStats:
    """Numbers of one epoch."""

    epoch: int
    train_loss: float
    """Mean loss over the epoch's steps."""
    train_metric: float
    """Accuracy (cls) or mIoU (seg) of the epoch's training predictions (model in train mode)."""
    val_metric: float
    """Accuracy (cls) or mIoU (seg) on the val split after the epoch (nan without a val split)."""
    seconds: float


@dataclass(frozen=True)
class TrainResult:
    """What a run measured and wrote."""

    out_dir: Path
    task: str
    classes: tuple[str, ...]
    metric: str
    """"accuracy" or "miou"."""
    epochs: tuple[EpochStats, ...]
    val_confusion: list[list[int]]
    """(C, C) val confusion matrix after the last epoch (rows truth); empty without a val split."""
    n_train: int
    n_val: int
    n_params: int
    device: str
    wall_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)
    """Task-specific results (seg3d: val_per_class_iou, val_accuracy)."""

    @property
    def final(self) -> EpochStats:
        return self.epochs[-1]


@dataclass(frozen=True)
class TaskData:
    """A task's data, ready to iterate: batches are {"x": inputs, "y": targets} (see perfdata.downstream.loaders)."""

    classes: tuple[str, ...]
    in_channels: int
    ignore_index: int | None
    train_batches: Callable[[int], Iterable[dict[str, Any]]]
    """epoch -> that epoch's (shuffled) training batches."""
    val_batches: Callable[[], Iterable[dict[str, Any]]] | None
    n_train: int
    n_val: int
    splits: dict[str, Any] = field(default_factory=dict)


def prepare_shards(cfg: TrainConfig) -> TaskData:
    """cls2d data: the train / val shards of cfg.data."""
    data = L.ShardData.open(cfg.data, verify=cfg.verify)
    if not data.shards.get("train"):
        raise InputError(Path(cfg.data) / "index.json", "no train shards")
    train_cfg = L.ShardLoaderConfig("train", cfg.batch_size, cfg.size, cfg.shuffle_buffer, cfg.seed)
    val_cfg = dataclasses.replace(train_cfg, split="val", shuffle_buffer=0)
    has_val = bool(data.shards.get("val"))
    return TaskData(
        classes=data.classes, in_channels=3, ignore_index=None,
        train_batches=lambda epoch: L.shard_pipeline(data, train_cfg, epoch),
        val_batches=(lambda: L.shard_pipeline(data, val_cfg)) if has_val else None,
        n_train=data.n_samples.get("train", 0), n_val=data.n_samples.get("val", 0),
        splits={"shards": {k: list(v) for k, v in data.shards.items()}},
    )


def prepare_store(cfg: TrainConfig) -> TaskData:
    """cls3d / seg3d data: the store's scenes split by (val_fraction, seed) into dense-grid datasets."""
    from perfdata.store import open_store

    store = open_store(cfg.data)
    if not store.scene_ids:
        raise InputError(cfg.data, "store has no complete scenes")
    split = split_scene_ids(store.scene_ids, cfg.val_fraction, cfg.seed)
    if cfg.task == "cls3d":
        classes, task, ignore = store.root.classes, "cls", None
        if not classes:
            raise InputError(cfg.data, "store has no class names (root attrs 'classes' is empty); "
                             "cls3d needs scenes exported with a class_name")
    else:
        factor = 2 ** (len(cfg.widths) - 1)
        if cfg.reso % factor:
            raise ConfigError(f"seg3d needs --reso divisible by {factor}, got {cfg.reso}")
        classes, task, ignore = L.store_seg_classes(store, store.scene_ids), "seg", L.IGNORE_3D
    sets = {k: L.StoreGridDataset(store, v, cfg.reso, task, classes, len(classes), cfg.preload)
            for k, v in split.items()}
    return TaskData(
        classes=tuple(classes), in_channels=len(L.GRID_CHANNELS), ignore_index=ignore,
        train_batches=lambda epoch: L.iter_batches(sets["train"], cfg.batch_size, cfg.seed, epoch),
        val_batches=(lambda: L.iter_batches(sets["val"], cfg.batch_size, None)) if split["val"] else None,
        n_train=len(split["train"]), n_val=len(split["val"]), splits={"scenes": split},
    )


def build_model(task: str, in_channels: int, n_classes: int, widths: tuple[int, ...]) -> nn.Module:
    """The model of a task: ResNetClassifier (cls2d), Grid3dClassifier (cls3d), UNet3d (seg3d)."""
    arch = {"cls2d": ResNetClassifier, "cls3d": Grid3dClassifier, "seg3d": UNet3d}[task]
    return arch(in_channels, n_classes, widths)


def run_epoch(model: nn.Module, batches: Iterable[dict[str, Any]], opt: torch.optim.Optimizer, n_classes: int,
              ignore_index: int | None, device: torch.device) -> tuple[float, torch.Tensor]:
    """One training pass: (mean loss over steps, (C, C) confusion of the training predictions)."""
    model.train()
    losses, conf = [], torch.zeros(n_classes, n_classes, dtype=torch.int64)
    for batch in batches:
        x, y = batch["x"].to(device), batch["y"].to(device)
        logits = model(x)
        loss = F.cross_entropy(logits, y, ignore_index=-100 if ignore_index is None else ignore_index)
        if not torch.isfinite(loss):
            raise FitError(f"training loss became {float(loss)} at step {len(losses)}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        conf += confusion_matrix(logits.argmax(1).cpu(), y.cpu(), n_classes, ignore_index)
    if not losses:
        raise InputError(None, "the training split gave no batches")
    return float(np.mean(losses)), conf


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[dict[str, Any]], n_classes: int, ignore_index: int | None,
             device: torch.device) -> torch.Tensor:
    """(C, C) confusion matrix of the model (eval mode) over `batches`."""
    model.eval()
    conf = torch.zeros(n_classes, n_classes, dtype=torch.int64)
    for batch in batches:
        pred = model(batch["x"].to(device)).argmax(1).cpu()
        conf += confusion_matrix(pred, batch["y"], n_classes, ignore_index)
    return conf


def score(conf: torch.Tensor, task: str) -> float:
    """The task's headline metric from a confusion matrix: mIoU (seg3d) or accuracy."""
    return mean_iou(conf) if task == "seg3d" else confusion_accuracy(conf)


def train(cfg: TrainConfig) -> TrainResult:
    """Train cfg.task's model, evaluate on val after every epoch, write OUT/{metrics.json, model.safetensors,
    curve.png}. Bad data raises InputError naming it; bad options raise ConfigError."""
    if cfg.task not in TASKS:
        raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {cfg.task!r}")
    if cfg.epochs < 1 or cfg.batch_size < 1 or not cfg.widths:
        raise ConfigError("epochs and batch size must be positive and widths non-empty")
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    data = prepare_shards(cfg) if cfg.task == "cls2d" else prepare_store(cfg)
    n_classes = len(data.classes)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.task, data.in_channels, n_classes, cfg.widths).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        stats, conf = [], torch.zeros(0, 0, dtype=torch.int64)
        for epoch in range(cfg.epochs):
            t0 = time.perf_counter()
            loss, train_conf = run_epoch(model, data.train_batches(epoch), opt, n_classes, data.ignore_index, device)
            val = math.nan
            if data.val_batches is not None:
                conf = evaluate(model, data.val_batches(), n_classes, data.ignore_index, device)
                val = score(conf, cfg.task)
            stats.append(EpochStats(epoch, loss, score(train_conf, cfg.task), val, time.perf_counter() - t0))
    extra: dict[str, Any] = {"splits": data.splits}
    if cfg.task == "seg3d" and conf.numel():
        extra["val_per_class_iou"] = [None if math.isnan(v) else v for v in per_class_iou(conf).tolist()]
        extra["val_accuracy"] = confusion_accuracy(conf)
    result = TrainResult(
        out_dir=Path(cfg.out), task=cfg.task, classes=data.classes,
        metric="miou" if cfg.task == "seg3d" else "accuracy", epochs=tuple(stats), val_confusion=conf.tolist(),
        n_train=data.n_train, n_val=data.n_val, n_params=sum(p.numel() for p in model.parameters()),
        device=str(device), wall_seconds=time.perf_counter() - start, extra=extra,
    )
    write_outputs(result, cfg, model, data.in_channels)
    return result


def _finite(v: float) -> float | None:
    return None if math.isnan(v) else v


def write_outputs(result: TrainResult, cfg: TrainConfig, model: nn.Module, in_channels: int) -> None:
    """Write model.safetensors, curve.png and (last) metrics.json into result.out_dir, each atomically."""
    from safetensors.torch import save_file

    out = result.out_dir
    meta = {"task": cfg.task, "arch": type(model).__name__, "classes": json.dumps(list(result.classes)),
            "in_channels": str(in_channels), "widths": json.dumps(list(cfg.widths)), "format_version": "1"}
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(weights, str(tmp), metadata=meta)
    loss = [e.train_loss for e in result.epochs]
    panels = [([(loss, "blue")], (0.0, max(loss))),
              ([([e.train_metric for e in result.epochs], "green"), ([e.val_metric for e in result.epochs], "orange")],
               (0.0, 1.0))]
    write_png(out / "curve.png", curve_image(panels))
    write_json(out / "metrics.json", {
        "format_version": METRICS_FORMAT_VERSION, "task": cfg.task, "config": cfg.to_dict(), "seed": cfg.seed,
        "classes": list(result.classes), "metric": result.metric,
        "epochs": [{"epoch": e.epoch, "train_loss": e.train_loss, "train_metric": _finite(e.train_metric),
                    "val_metric": _finite(e.val_metric), "seconds": e.seconds} for e in result.epochs],
        "final": {"train_loss": result.final.train_loss, "val_metric": _finite(result.final.val_metric),
                  "val_confusion": result.val_confusion, **{k: v for k, v in result.extra.items() if k != "splits"}},
        "n_train": result.n_train, "n_val": result.n_val, "n_params": result.n_params, "device": result.device,
        "wall_seconds": result.wall_seconds, "versions": versions("webdataset", "zarr"), "splits": result.extra.get("splits", {}),
        "curve": "left: train loss (blue); right: train metric (green), val metric (orange), y in [0, 1]",
    })


def load_model(out_dir: str | Path, device: str = "cpu") -> tuple[nn.Module, dict[str, str]]:
    """The trained model (eval mode) and the metadata of OUT/model.safetensors; errors name the file."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(out_dir) / "model.safetensors"
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
        weights = load_file(str(path), device=device)
        classes, widths = json.loads(meta["classes"]), tuple(json.loads(meta["widths"]))
        model = build_model(meta["task"], int(meta["in_channels"]), len(classes), widths)
        model.load_state_dict(weights)
    except (KeyError, ValueError, RuntimeError, OSError) as exc:
        raise InputError(path, f"not a perfdata downstream checkpoint ({type(exc).__name__}: {exc})") from None
    return model.to(device).eval(), meta
