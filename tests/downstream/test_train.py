"""Training runs on tiny real inputs: loss falls, metrics beat chance, outputs are written and reload."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch
from perfdata.downstream import loaders as L
from perfdata.downstream.train import TrainConfig, load_model, train

from perfdata.errors import ConfigError, InputError
from perfdata.store import open_store


def check_outputs(out: Path, task: str, n_epochs: int) -> dict:
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == task and metrics["seed"] == 0 and len(metrics["epochs"]) == n_epochs
    assert {"torch", "perfdata", "webdataset", "zarr"} <= set(metrics["versions"])
    png = iio.imread(out / "curve.png")
    assert png.ndim == 3 and png.shape[2] == 3 and (png != 255).any()
    assert not list(out.glob(".*tmp*"))  # atomic writes left nothing behind
    return metrics


def test_cls2d_learns_shapes(shard_dir: Path, tmp_path: Path) -> None:
    cfg = TrainConfig("cls2d", str(shard_dir), str(tmp_path / "out"), epochs=6, batch_size=8, widths=(8, 16, 32),
                      device="cpu")
    res = train(cfg)
    assert res.classes == ("box", "sphere", "torus") and (res.n_train, res.n_val) == (54, 18)
    assert res.final.train_loss < 0.6 * res.epochs[0].train_loss
    assert res.final.train_metric > 0.7  # chance is 1/3
    assert sum(map(sum, res.val_confusion)) == 18
    metrics = check_outputs(tmp_path / "out", "cls2d", 6)
    assert metrics["config"]["batch_size"] == 8 and metrics["metric"] == "accuracy"
    model, meta = load_model(tmp_path / "out")
    data = L.ShardData.open(shard_dir)
    batch = next(iter(L.shard_pipeline(data, L.ShardLoaderConfig("train", 64, 32, shuffle_buffer=0))))
    with torch.no_grad():
        acc = float((model(batch["x"]).argmax(1) == batch["y"]).float().mean())
    assert json.loads(meta["classes"]) == list(res.classes) and acc > 0.6


def test_cls3d_spheres_vs_boxes(object_store: Path, tmp_path: Path) -> None:
    cfg = TrainConfig("cls3d", str(object_store), str(tmp_path / "out"), epochs=8, batch_size=4, reso=16,
                      widths=(8, 16, 32), device="cpu")
    res = train(cfg)
    assert res.classes == ("box", "sphere") and (res.n_train, res.n_val) == (12, 4)
    assert res.final.train_loss < 0.5 * res.epochs[0].train_loss
    assert res.final.train_metric >= 0.9
    check_outputs(tmp_path / "out", "cls3d", 8)
    again = train(dataclasses.replace(cfg, out=str(tmp_path / "again")))
    assert [e.train_loss for e in again.epochs] == pytest.approx([e.train_loss for e in res.epochs], rel=1e-4)


def test_seg3d_rooms(room_store: Path, tmp_path: Path) -> None:
    cfg = TrainConfig("seg3d", str(room_store), str(tmp_path / "out"), epochs=12, batch_size=2, reso=16,
                      widths=(8, 16), lr=1e-2, device="cpu")
    res = train(cfg)
    assert res.classes == ("floor", "sphere", "box") and res.metric == "miou"
    assert res.final.train_loss < 0.4 * res.epochs[0].train_loss
    assert res.final.train_metric > 0.5 and res.extra["val_accuracy"] > 0.7
    metrics = check_outputs(tmp_path / "out", "seg3d", 12)
    assert len(metrics["final"]["val_per_class_iou"]) == 3 and metrics["final"]["val_per_class_iou"][0] > 0.8


def test_bad_inputs(tmp_path: Path, room_store: Path) -> None:
    with pytest.raises(InputError, match="index.json"):
        train(TrainConfig("cls2d", str(tmp_path), str(tmp_path / "o")))
    with pytest.raises(InputError, match="rooms.zarr: store has no class names"):
        train(TrainConfig("cls3d", str(room_store), str(tmp_path / "o")))
    with pytest.raises(InputError, match="not a zarr store"):
        train(TrainConfig("seg3d", str(tmp_path), str(tmp_path / "o")))
    with pytest.raises(ConfigError, match="divisible by 4"):
        train(TrainConfig("seg3d", str(room_store), str(tmp_path / "o"), reso=18))
    with pytest.raises(ConfigError, match="task"):
        train(TrainConfig("seg2d", str(room_store), str(tmp_path / "o")))
    assert not (tmp_path / "o").exists()
    assert open_store(str(room_store)).root.classes == ()
