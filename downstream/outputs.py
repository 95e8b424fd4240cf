"""What a training run writes (names in train.py's module doc) and the source-image evaluation of cls2d
(`--eval-images READER:PATH`: PeRFception's "trained on renders, tested on the real images")."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from perfdata.downstream import plot
from perfdata.downstream.loaders import image_tensor
from perfdata.downstream.metrics import confusion_accuracy, confusion_matrix, per_class_iou
from perfdata.downstream.models2d import mirror_average
from torch import nn

from perfdata.atomic import atomic_path, write_json
from perfdata.devices import versions
from perfdata.errors import ConfigError, InputError

if TYPE_CHECKING:
    from perfdata.downstream.tasks import TaskData
    from perfdata.downstream.train import TrainConfig, TrainResult

PICTURES = {"curve": "curve.png", "confusion": "confusion.png", "misclassified": "misclassified.png"}


def parse_reader_path(spec: str) -> tuple[str, str]:
    """"READER:PATH" -> (reader, path); the reader must be a known one."""
    from perfdata.readers import READERS

    reader, sep, path = spec.partition(":")
    if not sep or not path or reader not in READERS:
        raise ConfigError(f"--eval-images takes READER:PATH with READER one of {', '.join(sorted(READERS))}, "
                          f"got {spec!r}")
    return reader, path


def source_batches(reader: str, path: str, scene_ids: Sequence[str], classes: Sequence[str], size: int,
                   batch_size: int) -> Iterator[dict[str, Any]]:
    """Every frame of the named scenes of a capture as {"x": (B, 3, S, S), "y": (B,)}; a scene whose class is
    not one of `classes` is an InputError naming it."""
    from perfdata.readers import load_scenes

    xs: list[torch.Tensor] = []
    ys: list[int] = []
    for scene in load_scenes(reader, path, list(scene_ids)):
        if scene.class_name not in classes:
            raise InputError(f"{path}/{scene.scene_id}", f"class {scene.class_name!r} is not one of {list(classes)}")
        for frame in scene.frames:
            img = (np.clip(frame.load_image(), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
            xs.append(image_tensor(img, size))
            ys.append(list(classes).index(scene.class_name))
            if len(xs) == batch_size:
                yield {"x": torch.stack(xs), "y": torch.tensor(ys)}
                xs, ys = [], []
    if xs:
        yield {"x": torch.stack(xs), "y": torch.tensor(ys)}


def check_source_scenes(cfg: TrainConfig, data: TaskData) -> list[str]:
    """The held-out scene ids, each of which the --eval-images capture must hold (checked before training)."""
    from perfdata.readers import list_scenes

    reader, path = parse_reader_path(cfg.eval_images)
    scene_ids = data.splits.get("scenes", {}).get("val", [])
    if not scene_ids:
        raise InputError(cfg.data, "--eval-images needs the held-out scene ids (index.json 'scenes'), found none")
    missing = sorted(set(scene_ids) - set(list_scenes(reader, path)))
    if missing:
        raise InputError(path, f"--eval-images: no source capture of held-out scene(s) {', '.join(missing[:5])}")
    return list(scene_ids)


@torch.no_grad()
def source_image_scores(model: nn.Module, cfg: TrainConfig, data: TaskData, device: torch.device) -> dict[str, Any]:
    """Top-1 of the (unwrapped) model on the source images of the held-out (val) scenes."""
    reader, path = parse_reader_path(cfg.eval_images)
    scene_ids = check_source_scenes(cfg, data)
    model.eval()
    n = len(data.classes)
    conf = torch.zeros(n, n, dtype=torch.int64)
    single = torch.zeros(n, n, dtype=torch.int64)
    for batch in source_batches(reader, path, scene_ids, data.classes, cfg.size, max(cfg.batch_size, 32)):
        x = batch["x"].to(device)
        logits = model(x)
        single += confusion_matrix(logits.argmax(1).cpu(), batch["y"], n)
        if cfg.mirrors_eval:
            logits = mirror_average(model, x, logits)
        conf += confusion_matrix(logits.argmax(1).cpu(), batch["y"], n)
    return {"source_top1": confusion_accuracy(conf), "source_confusion": conf.tolist(),
            "source_top1_single_view": confusion_accuracy(single),
            "source_images": f"{reader}:{path}", "source_scenes": list(scene_ids)}


def _finite(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def write_weights(out: Any, cfg: TrainConfig, model: nn.Module, classes: Sequence[str], in_channels: int) -> None:
    from safetensors.torch import save_file

    meta = {"task": cfg.task, "arch": type(model).__name__, "backbone": cfg.backbone, "features": cfg.features,
            "classes": json.dumps(list(classes)), "in_channels": str(in_channels),
            "widths": json.dumps(list(cfg.widths)), "format_version": "1"}
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(weights, str(tmp), metadata=meta)


def write_pictures(result: TrainResult, wrong: list[tuple[np.ndarray, str]]) -> dict[str, str]:
    """curve.png, confusion.png (with a val split) and misclassified.png (cls2d); returns name -> file."""
    out, ep = result.out_dir, result.epochs
    extra = {}
    if "source_top1" in result.extra:
        extra["source-image top-1 (final)"] = [math.nan] * (len(ep) - 1) + [result.extra["source_top1"]]
    plot.write_curves(out / PICTURES["curve"], [e.train_loss for e in ep], [e.train_metric for e in ep],
                      [e.val_metric for e in ep], result.metric, extra)
    written = {"curve": PICTURES["curve"]}
    if result.val_confusion:
        plot.write_confusion(out / PICTURES["confusion"], np.asarray(result.val_confusion), result.classes)
        written["confusion"] = PICTURES["confusion"]
    if result.task == "cls2d" and result.val_confusion:
        plot.write_sample_grid(out / PICTURES["misclassified"], [w[0] for w in wrong], [w[1] for w in wrong],
                               title=f"misclassified val views (first {len(wrong)}; true -> predicted)")
        written["misclassified"] = PICTURES["misclassified"]
    return written


def write_outputs(result: TrainResult, cfg: TrainConfig, model: nn.Module, in_channels: int,
                  wrong: list[tuple[np.ndarray, str]]) -> None:
    """Weights, pictures and (last) metrics.json into result.out_dir, each atomically."""
    write_weights(result.out_dir, cfg, model, result.classes, in_channels)
    pictures = write_pictures(result, wrong)
    final: dict[str, Any] = {"train_loss": result.final.train_loss, "val_metric": _finite(result.final.val_metric),
                             "val_confusion": result.val_confusion}
    if cfg.task == "seg3d" and result.val_confusion:
        conf = torch.tensor(result.val_confusion)
        final["val_per_class_iou"] = [_finite(v) for v in per_class_iou(conf).tolist()]
        final["val_accuracy"] = confusion_accuracy(conf)
    final.update({k: v for k, v in result.extra.items() if k.startswith("source_") or k in ("class_weights", "val_top1_single_view")})
    write_json(result.out_dir / "metrics.json", {
        "format_version": 1, "task": cfg.task, "config": cfg.to_dict(), "seed": cfg.seed,
        "classes": list(result.classes), "metric": result.metric,
        "epochs": [{"epoch": e.epoch, "train_loss": e.train_loss, "train_metric": _finite(e.train_metric),
                    "val_metric": _finite(e.val_metric), "lr": e.lr, "seconds": e.seconds, "n_samples": e.n_samples,
                    "n_skipped": e.n_skipped, "n_empty_batches": e.n_empty_batches} for e in result.epochs],
        "final": final, "n_train": result.n_train, "n_val": result.n_val, "n_params": result.n_params,
        "skipped_samples": sum(e.n_skipped for e in result.epochs),
        "empty_batches": sum(e.n_empty_batches for e in result.epochs), "world_size": result.extra.get("world_size", 1),
        "resumed_at_epoch": result.extra.get("resumed_at"), "device": result.device,
        "wall_seconds": result.wall_seconds, "versions": versions("webdataset", "zarr"),
        "splits": result.extra.get("splits", {}), "pictures": pictures,
    })
