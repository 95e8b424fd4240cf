"""Downstream trainers: `train(cfg) -> TrainResult` for cls2d (views from shards), cls3d and seg3d (per-cell
features of a store's scenes, on a dense 3D CNN / U-Net or a sparse spconv one).

Seeded (model init, shard order, shuffle buffers, augmentation, batch order and the store's scene split all come
from cfg.seed), AdamW with a per-epoch cosine learning-rate schedule; each epoch ends with an evaluation on the
val split (shards: the `val` shards; store: `perfdata.devices.split_scene_ids`) and a checkpoint, so `resume`
continues a killed run and ends where an uninterrupted one would. Runs data-parallel when started by torchrun or
`launch` (distributed.py). Rank 0 writes into OUT (each file atomically; names are stable, for reports to link):

    metrics.json        format_version, task, config, seed, classes, metric, per-epoch train loss / train metric /
                        val metric / lr / seconds, final val metrics (confusion, per-class IoU for seg3d, source-image
                        top-1 with --eval-images), sizes, world size, device, wall seconds, versions, pictures
    model.safetensors   the weights (no pickle); metadata: task, arch, backbone, features, classes, in_channels, widths
    checkpoint.pt       the resumable training state (checkpoint.py)
    curve.png           training curves (matplotlib): loss; train / val metric (and source-image top-1)
    confusion.png       the final val confusion matrix
    misclassified.png   cls2d: a grid of misclassified val views, each titled true -> predicted
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from perfdata.downstream import checkpoint as C
from perfdata.downstream import distributed as D
from perfdata.downstream.grids import FEATURE_SETS
from perfdata.downstream.metrics import confusion_accuracy, confusion_matrix, mean_iou
from perfdata.downstream.models2d import mirror_average
from perfdata.downstream.tasks import (
    TaskData,
    check_sample_count,
    class_weights,
    prepare_shards,
    prepare_store,
)
from torch import nn

from perfdata.devices import resolve_device
from perfdata.errors import ConfigError, FitError, InputError

log = logging.getLogger(__name__)

TASKS = ("cls2d", "cls3d", "seg3d")
BACKBONES = ("dense", "sparse")
METRICS_FORMAT_VERSION = 1
RESUME_FREE = ("resume", "workers", "device", "eval_images", "verify", "preload", "eval_mirror")
"""Config fields that may differ between a run and its --resume."""


@dataclass(frozen=True)
class TrainConfig:
    """One downstream training run."""

    task: str
    """"cls2d" (views from shards), "cls3d" or "seg3d" (grids from a store)."""
    data: str
    """Shard folder or URL with index.json (cls2d) or store path / fsspec URL (cls3d, seg3d)."""
    out: str
    """Output folder (see the module doc)."""
    epochs: int = 10
    batch_size: int = 16
    """Samples (views or scenes) per step and process."""
    lr: float = 3e-3
    """AdamW learning rate at the start (cosine decay to 1 % over the epochs)."""
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "auto"
    """"auto" (cuda when available), "cpu" or "cuda"."""
    size: int = 32
    """cls2d: images are resized to size x size."""
    reso: int = 32
    """cls3d / seg3d: grid resolution D (dense seg3d: divisible by 2 ** (len(widths) - 1))."""
    val_fraction: float = 0.25
    """cls3d / seg3d: fraction of the chosen scenes held out for val."""
    widths: tuple[int, ...] = (16, 32, 64)
    """Channels per stage of the model."""
    shuffle_buffer: int = 256
    """cls2d: samples in the shuffle buffer."""
    verify: bool = False
    """cls2d: check every shard's sha256 against index.json before training."""
    preload: bool = True
    """cls3d / seg3d: read every scene once up front (else from the store at every step)."""
    bg_aug: float = 0.0
    """cls2d: probability of background augmentation (bgaug.py)."""
    hflip: bool = True
    """cls2d: mirror training views left-right with probability 1/2 (a mirrored object keeps its class)."""
    eval_mirror: bool = True
    """cls2d, with hflip: score val views and --eval-images on the mean of the class probabilities of each image
    and its left-right mirror (the single-view val top-1 is kept in metrics.json as val_top1_single_view)."""
    features: str = "sh+density"
    """cls3d / seg3d: per-cell inputs, one of grids.FEATURE_SETS."""
    backbone: str = "dense"
    """cls3d / seg3d: "dense" (3D CNN / U-Net) or "sparse" (spconv)."""
    foreground_only: bool = False
    """cls3d: only the object's voxels (labels not a background class), framed into their bounding cube."""
    class_balance: float = 0.5
    """cls3d / seg3d: cross-entropy weights (median count / class count) ** this over the training targets
    (0: unweighted; 0.5 lifts a class 100x rarer 10x, so small furniture is not traded for walls)."""
    augment_3d: bool = True
    """cls3d / seg3d: each training grid under a seeded symmetry that keeps z up (a mirror and quarter turns
    about z, SH rotated along; augment3d.py)."""
    colour_aug: float = 0.0
    """Probability of re-colouring a training input (recolour.py: RGB channels permuted, gains and shifts about
    grey): cls2d views; cls3d / seg3d grids with SH features (exact on the SH). For classes whose colour is
    arbitrary."""
    workers: int = 0
    """DataLoader worker processes per training process."""
    scenes: tuple[str, ...] = ()
    """Scene ids or globs to train and evaluate on (empty: all)."""
    eval_images: str = ""
    """cls2d: READER:PATH of the source captures; the held-out scenes' source images are scored too."""
    val_data: str = ""
    """cls2d: a separate shard folder whose val split is used (classes must match)."""
    skip_bad: bool = False
    """cls2d: skip (count and log) bad samples instead of stopping."""
    resume: bool = False
    """Continue from OUT/checkpoint.pt when it exists."""

    @property
    def mirrors_eval(self) -> bool:
        """Whether evaluation averages each view with its mirror (eval_mirror, and hflip says a mirror keeps the
        class)."""
        return self.eval_mirror and self.hflip

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "widths": list(self.widths), "scenes": list(self.scenes)}

    def check(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.epochs < 1 or self.batch_size < 1 or not self.widths or self.workers < 0:
            raise ConfigError("epochs and batch size must be positive, workers >= 0 and widths non-empty")
        if self.features not in FEATURE_SETS or self.backbone not in BACKBONES:
            raise ConfigError(f"--features must be one of {', '.join(FEATURE_SETS)} and --backbone one of "
                              f"{', '.join(BACKBONES)}")
        if not 0.0 <= self.class_balance <= 1.0:
            raise ConfigError(f"class_balance is a power in [0, 1], got {self.class_balance}")
        if not 0.0 <= self.bg_aug <= 1.0:
            raise ConfigError(f"--bg-aug is a probability in [0, 1], got {self.bg_aug}")
        if not 0.0 <= self.colour_aug <= 1.0:
            raise ConfigError(f"--colour-aug is a probability in [0, 1], got {self.colour_aug}")
        if self.eval_images:
            from perfdata.downstream.outputs import parse_reader_path

            parse_reader_path(self.eval_images)


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    train_loss: float
    """Mean loss over the epoch's steps (all processes)."""
    train_metric: float
    """Accuracy (cls) or mIoU (seg) of the epoch's training predictions (model in train mode)."""
    val_metric: float
    """Accuracy (cls) or mIoU (seg) on the val split after the epoch (nan without a val split)."""
    seconds: float
    lr: float = math.nan
    n_samples: int = 0
    """Training samples seen (all processes)."""
    n_skipped: int = 0
    n_empty_batches: int = 0
    """Training batches skipped because every target in them was ignore (seg3d cells labelled -1)."""


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    task: str
    classes: tuple[str, ...]
    metric: str
    epochs: tuple[EpochStats, ...]
    val_confusion: list[list[int]]
    """(C, C) val confusion matrix after the last epoch (rows truth); empty without a val split."""
    n_train: int
    n_val: int
    n_params: int
    device: str
    wall_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)
    """seg3d: val_per_class_iou, val_accuracy; --eval-images: source_top1 and source_confusion; resumed_at."""

    @property
    def final(self) -> EpochStats:
        return self.epochs[-1]


@dataclass(frozen=True)
class TrainHooks:
    """Callbacks for tests and tools: on_step(epoch, step, batch, model) after each optimiser step, on_epoch(stats)
    after each epoch's checkpoint (an exception there stops the run as a crash would)."""

    on_step: Callable[[int, int, dict[str, Any], nn.Module], None] | None = None
    on_epoch: Callable[[EpochStats], None] | None = None


def build_model(task: str, in_channels: int, n_classes: int, widths: tuple[int, ...], backbone: str = "dense") -> nn.Module:
    """ResNetClassifier (cls2d); Grid3dClassifier / UNet3d (dense) or SparseClassifier / SparseUNet (sparse)."""
    from perfdata.downstream.models2d import ResNetClassifier
    from perfdata.downstream.models3d import Grid3dClassifier, UNet3d

    if task == "cls2d":
        return ResNetClassifier(in_channels, n_classes, widths)
    if backbone == "sparse":
        from perfdata.downstream.sparse3d import SparseClassifier, SparseUNet

        return (SparseClassifier if task == "cls3d" else SparseUNet)(in_channels, n_classes, widths)
    return (Grid3dClassifier if task == "cls3d" else UNet3d)(in_channels, n_classes, widths)


def forward(model: nn.Module, batch: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, targets) of a batch: dense {"x", "y"} or sparse {"coords", "feats", "y", ...} (grids.py)."""
    if "coords" in batch:
        from perfdata.downstream.sparse3d import sparse_input

        return model(sparse_input(batch, device)), batch["y"].to(device)
    return model(batch["x"].to(device)), batch["y"].to(device)


def nonempty(batches: Iterable[dict[str, Any]], skipped: list[int]) -> Iterable[dict[str, Any]]:
    """Batches with at least one sample; the skipped-sample counts they carry are added to skipped[0]."""
    for batch in batches:
        skipped[0] += int(batch.get("n_skipped", 0))
        if len(batch["y"]):
            yield batch


def n_targets(batch: dict[str, Any], ignore: int, dist: D.DistInfo, device: torch.device) -> int:
    """Targets of a batch that are not `ignore`, summed over ranks (so every rank takes the same decision)."""
    n = torch.tensor([int((batch["y"] != ignore).sum())], dtype=torch.float64)
    return int(D.all_sum(n, dist, device)[0]) if dist.enabled else int(n[0])


def batch_loss(logits: torch.Tensor, y: torch.Tensor, ignore: int, weight: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy over the non-ignored targets; a finite zero (still part of the graph, so data-parallel
    gradient averaging runs) when this rank's part has none, where cross_entropy's mean would be 0 / 0 = nan."""
    if not bool((y != ignore).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, y, weight=weight, ignore_index=ignore)


def run_epoch(model: nn.Module, batches: Iterable[dict[str, Any]], opt: torch.optim.Optimizer, data: TaskData,
              device: torch.device, dist: D.DistInfo, hooks: TrainHooks, epoch: int,
              weight: torch.Tensor | None = None) -> tuple[float, torch.Tensor, int, int, int]:
    """One training pass: (mean loss over steps, (C, C) confusion, samples seen, samples skipped, batches
    skipped), over ranks. A batch whose targets are all ignore (on every rank) is skipped: no forward, no step."""
    model.train()
    n_classes = len(data.classes)
    ignore = -100 if data.ignore_index is None else data.ignore_index
    conf = torch.zeros(n_classes, n_classes, dtype=torch.int64)
    loss_sum, steps, seen, skipped, empty = 0.0, 0, 0, [0], 0
    for batch in D.even_batches(nonempty(batches, skipped), dist, device):
        if n_targets(batch, ignore, dist, device) == 0:
            empty += 1
            continue
        logits, y = forward(model, batch, device)
        loss = batch_loss(logits, y, ignore, weight)
        if not torch.isfinite(loss):
            raise FitError(f"training loss became {float(loss)} at epoch {epoch} step {steps}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum, steps, seen = loss_sum + float(loss.detach()), steps + 1, seen + len(batch["y"])
        conf += confusion_matrix(logits.argmax(1).cpu(), y.cpu(), n_classes, data.ignore_index)
        if hooks.on_step is not None:
            hooks.on_step(epoch, steps - 1, batch, model)
    totals = D.all_sum(torch.tensor([loss_sum, steps, seen, skipped[0]], dtype=torch.float64), dist, device)
    if totals[1] == 0:
        raise InputError(None, "the training split gave no batches" + (
            f" with a labelled target ({empty} all-ignore batches skipped)" if empty else ""))
    if empty:
        log.warning("epoch %d: skipped %d training batch(es) whose targets are all ignore", epoch, empty)
    return float(totals[0] / totals[1]), D.all_sum(conf, dist, device), int(totals[2]), int(totals[3]), empty


@dataclass
class Evaluation:
    """What `evaluate` measured on the val split."""

    conf: torch.Tensor
    """(C, C) confusion over all ranks' val parts (with mirroring: of the mirror-averaged predictions)."""
    wrong: list[tuple[np.ndarray, str]]
    """Up to `collect` misclassified (image (H, W, 3), title) of this rank's part (cls2d only)."""
    conf_single: torch.Tensor | None = None
    """With mirroring: the confusion of the views alone (unmirrored), for reference."""


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[dict[str, Any]], data: TaskData, device: torch.device,
             dist: D.DistInfo, collect: int = 0, mirror: bool = False) -> Evaluation:
    """The val split's confusion (module doc); `mirror` (cls2d) scores each view on the mean of its and its
    mirror image's class probabilities."""
    model = D.unwrap(model)
    model.eval()
    n = len(data.classes)
    conf, single = torch.zeros(n, n, dtype=torch.int64), torch.zeros(n, n, dtype=torch.int64)
    wrong: list[tuple[np.ndarray, str]] = []
    for batch in nonempty(batches, [0]):
        logits, y = forward(model, batch, device)
        if mirror and "x" in batch:
            single += confusion_matrix(logits.argmax(1).cpu(), y.cpu(), n, data.ignore_index)
            logits = mirror_average(model, batch["x"].to(device), logits)
        pred = logits.argmax(1).cpu()
        conf += confusion_matrix(pred, y.cpu(), n, data.ignore_index)
        if collect and "x" in batch and pred.ndim == 1:
            for i in torch.nonzero(pred != y.cpu()).flatten().tolist()[: collect - len(wrong)]:
                title = f"{data.classes[int(y[i])]} -> {data.classes[int(pred[i])]}\n{batch['key'][i][-24:]}"
                wrong.append((batch["x"][i].permute(1, 2, 0).numpy().clip(0, 1), title))
    return Evaluation(D.all_sum(conf, dist, device), wrong, D.all_sum(single, dist, device) if mirror else None)


def score(conf: torch.Tensor, task: str) -> float:
    return mean_iou(conf) if task == "seg3d" else confusion_accuracy(conf)


def checkpoint_config(cfg: TrainConfig) -> dict[str, Any]:
    return {k: v for k, v in cfg.to_dict().items() if k not in RESUME_FREE}


def restore(cfg: TrainConfig, model: nn.Module, opt: torch.optim.Optimizer, sched: Any) -> tuple[int, list, dict]:
    """(epochs done, history, checkpoint) from OUT/checkpoint.pt into model / opt / sched (RNG states too);
    a checkpoint of another configuration is a ConfigError naming the differing fields."""
    import json

    path = Path(cfg.out) / C.CHECKPOINT_NAME
    state = C.load_checkpoint(path)
    saved, now = json.loads(state["config"]), checkpoint_config(cfg)
    diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if diff:
        raise ConfigError(f"--resume: {path} was written by a run with other settings "
                          f"({', '.join(f'{k}={saved.get(k)!r}' for k in diff)})")
    try:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise InputError(path, f"checkpoint does not fit this model ({type(exc).__name__}: {exc})") from None
    C.set_rng_state(state["rng"])
    return int(state["epoch"]), [EpochStats(**e) for e in json.loads(state["history"])], state


def train(cfg: TrainConfig, hooks: TrainHooks | None = None) -> TrainResult:
    """Train cfg.task's model (data-parallel under torchrun / launch), evaluate on val after every epoch,
    checkpoint, and write OUT (module doc) from rank 0. Bad data raises InputError; bad options ConfigError."""
    cfg.check()
    dist = D.dist_from_env()
    device = D.setup(dist, resolve_device(cfg.device))
    ended = False
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            result = _train(cfg, hooks or TrainHooks(), dist, device)
        ended = True
        return result
    finally:
        D.teardown(dist, synchronize=ended)


def _train(cfg: TrainConfig, hooks: TrainHooks, dist: D.DistInfo, device: torch.device) -> TrainResult:
    import json

    from perfdata.downstream.outputs import check_source_scenes, source_image_scores, write_outputs

    start = time.perf_counter()
    data = prepare_shards(cfg, dist) if cfg.task == "cls2d" else prepare_store(cfg, dist)
    if cfg.eval_images:
        check_source_scenes(cfg, data)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.task, data.in_channels, len(data.classes), cfg.widths, cfg.backbone).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs, eta_min=cfg.lr * 0.01)
    done, stats, conf, resumed_at = 0, [], torch.zeros(0, 0, dtype=torch.int64), None
    if cfg.resume and (Path(cfg.out) / C.CHECKPOINT_NAME).is_file():
        done, stats, state = restore(cfg, model, opt, sched)
        conf, resumed_at = state.get("val_confusion", conf), done
    net = D.wrap_model(model, dist, device)
    weight = class_weights(data.class_counts, cfg.class_balance)
    weight = None if weight is None else weight.to(device)
    wrong: list[tuple[np.ndarray, str]] = []
    collect = 32 if cfg.task == "cls2d" and dist.is_main else 0
    mirror = cfg.task == "cls2d" and cfg.mirrors_eval
    ev: Evaluation | None = None
    for epoch in range(done, cfg.epochs):
        t0, lr = time.perf_counter(), opt.param_groups[0]["lr"]
        loss, train_conf, seen, skipped, empty = run_epoch(net, data.train_batches(epoch), opt, data, device, dist,
                                                           hooks, epoch, weight)
        check_sample_count(data, seen, skipped)
        sched.step()
        val = math.nan
        if data.val_batches is not None:
            ev = evaluate(net, data.val_batches(), data, device, dist, collect if epoch == cfg.epochs - 1 else 0,
                          mirror)
            conf, wrong, val = ev.conf, ev.wrong, score(ev.conf, cfg.task)
        stats.append(EpochStats(epoch, loss, score(train_conf, cfg.task), val, time.perf_counter() - t0, lr, seen, skipped,
                                empty))
        if dist.is_main:
            C.save_checkpoint(Path(cfg.out) / C.CHECKPOINT_NAME, {
                "config": json.dumps(checkpoint_config(cfg)), "epoch": epoch + 1, "model": model.state_dict(),
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": C.rng_state(),
                "history": json.dumps([dataclasses.asdict(s) for s in stats]), "val_confusion": conf})
        if hooks.on_epoch is not None:
            hooks.on_epoch(stats[-1])
    if collect and not wrong and data.val_batches is not None and done == cfg.epochs:
        ev = evaluate(net, data.val_batches(), data, device, dist, collect, mirror)
        conf, wrong = ev.conf, ev.wrong
    extra: dict[str, Any] = {"splits": data.splits, "world_size": dist.world_size, "resumed_at": resumed_at}
    if ev is not None and ev.conf_single is not None:
        extra["val_top1_single_view"] = confusion_accuracy(ev.conf_single)
    if weight is not None:
        extra["class_weights"] = [round(float(w), 4) for w in weight.cpu()]
    if cfg.eval_images and dist.is_main:
        extra.update(source_image_scores(model, cfg, data, device))
    result = TrainResult(
        out_dir=Path(cfg.out), task=cfg.task, classes=data.classes, metric="miou" if cfg.task == "seg3d" else "accuracy",
        epochs=tuple(stats), val_confusion=conf.tolist(), n_train=data.n_train, n_val=data.n_val,
        n_params=sum(p.numel() for p in model.parameters()), device=str(device),
        wall_seconds=time.perf_counter() - start, extra=extra)
    if dist.is_main:
        write_outputs(result, cfg, model, data.in_channels, wrong)
    return result


def load_model(out_dir: str | Path, device: str = "cpu") -> tuple[nn.Module, dict[str, str]]:
    """The trained model (eval mode) and the metadata of OUT/model.safetensors; errors name the file."""
    import json

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
        model = build_model(meta["task"], int(meta["in_channels"]), len(classes), widths, meta.get("backbone", "dense"))
        model.load_state_dict(weights)
    except (KeyError, ValueError, RuntimeError, OSError) as exc:
        raise InputError(path, f"not a perfdata downstream checkpoint ({type(exc).__name__}: {exc})") from None
    return model.to(device).eval(), meta
