"""Training runs on tiny real inputs: loss falls, metrics beat chance, outputs are written and reload, a resumed
run equals an uninterrupted one, every feature set and both backbones train."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from downstream_data import ROOM_NAMES, room_grid, write_store
from perfdata.downstream import loaders as L
from perfdata.downstream.train import TrainConfig, TrainHooks, load_model, train

from perfdata.errors import ConfigError, InputError
from perfdata.store import open_store


def check_outputs(out: Path, task: str, n_epochs: int) -> dict:
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == task and metrics["seed"] == 0 and len(metrics["epochs"]) == n_epochs
    assert {"torch", "perfdata", "webdataset", "zarr"} <= set(metrics["versions"])
    for name in metrics["pictures"].values():
        png = iio.imread(out / name)
        assert png.ndim == 3 and png.shape[2] in (3, 4) and (png[..., :3] != 255).any()
    assert not list(out.glob(".*tmp*"))  # atomic writes left nothing behind
    return metrics


def test_cls2d_learns_shapes(shard_dir: Path, tmp_path: Path) -> None:
    cfg = TrainConfig("cls2d", str(shard_dir), str(tmp_path / "out"), epochs=6, batch_size=8, widths=(8, 16, 32),
                      device="cpu")
    res = train(cfg)
    assert res.classes == ("box", "sphere", "torus") and (res.n_train, res.n_val) == (54, 18)
    assert res.final.train_loss < 0.6 * res.epochs[0].train_loss
    assert res.final.train_metric > 0.7  # chance is 1/3
    assert sum(map(sum, res.val_confusion)) == 18 and [e.n_samples for e in res.epochs] == [54] * 6
    metrics = check_outputs(tmp_path / "out", "cls2d", 6)
    assert set(metrics["pictures"]) == {"curve", "confusion", "misclassified"}
    assert metrics["config"]["batch_size"] == 8 and metrics["metric"] == "accuracy"
    assert metrics["epochs"][0]["lr"] > metrics["epochs"][-1]["lr"]  # cosine schedule
    model, meta = load_model(tmp_path / "out")
    data = L.ShardData.open(shard_dir)
    batch = next(iter(L.shard_pipeline(data, L.ShardLoaderConfig("train", 64, 32, shuffle_buffer=0))))
    with torch.no_grad():
        acc = float((model(batch["x"]).argmax(1) == batch["y"]).float().mean())
    assert json.loads(meta["classes"]) == list(res.classes) and acc > 0.6
    # val is scored on the mean of each view's and its mirror's probabilities; the single-view score is kept
    val = next(iter(L.shard_pipeline(data, L.ShardLoaderConfig("val", 64, 32, shuffle_buffer=0))))
    with torch.no_grad():
        logits = model(val["x"])
        mirrored = (logits.softmax(1) + model(val["x"].flip(-1)).softmax(1)).argmax(1)
    assert len(val["y"]) == 18 and res.final.val_metric == pytest.approx(float((mirrored == val["y"]).float().mean()))
    single = float((logits.argmax(1) == val["y"]).float().mean())
    assert metrics["final"]["val_top1_single_view"] == pytest.approx(single)


class Crash(Exception):
    pass


def test_resume_equals_uninterrupted(shard_dir: Path, tmp_path: Path) -> None:
    cfg = TrainConfig("cls2d", str(shard_dir), str(tmp_path / "full"), epochs=3, batch_size=8, widths=(4, 8),
                      device="cpu", size=16, bg_aug=0.5, shuffle_buffer=16)
    full = train(cfg)

    def crash_after_second(stats) -> None:  # noqa: ANN001
        if stats.epoch == 1:
            raise Crash

    part = dataclasses.replace(cfg, out=str(tmp_path / "part"))
    with pytest.raises(Crash):
        train(part, TrainHooks(on_epoch=crash_after_second))
    assert not (tmp_path / "part" / "metrics.json").exists()
    torch.manual_seed(1234)  # the caller's RNG state must not matter
    resumed = train(dataclasses.replace(part, resume=True))
    assert resumed.extra["resumed_at"] == 2 and len(resumed.epochs) == 3
    assert [e.train_loss for e in resumed.epochs] == [e.train_loss for e in full.epochs]
    assert resumed.val_confusion == full.val_confusion
    a, _ = load_model(tmp_path / "full")
    b, _ = load_model(tmp_path / "part")
    for (name, wa), wb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(wa, wb), name
    with pytest.raises(ConfigError, match="--resume: .*checkpoint.pt was written by a run with other settings "
                                          r"\(lr=0.003\)"):
        train(dataclasses.replace(part, resume=True, lr=0.01))


@pytest.mark.parametrize("features", ["coords", "density", "sh", "sh+density"])
def test_cls3d_feature_sets(object_store: Path, tmp_path: Path, features: str) -> None:
    cfg = TrainConfig("cls3d", str(object_store), str(tmp_path / "out"), epochs=6, batch_size=4, reso=16,
                      widths=(8, 16), device="cpu", features=features)
    res = train(cfg)
    assert res.classes == ("box", "sphere") and (res.n_train, res.n_val) == (12, 4)
    assert res.final.train_loss < 0.6 * res.epochs[0].train_loss and res.final.train_metric >= 0.8
    model, meta = load_model(tmp_path / "out")
    assert meta["features"] == features and int(meta["in_channels"]) == {"coords": 1, "density": 2}.get(features, 28 + (features == "sh+density"))


def test_cls3d_sparse_and_determinism(object_store: Path, tmp_path: Path) -> None:
    pytest.importorskip("spconv")
    cfg = TrainConfig("cls3d", str(object_store), str(tmp_path / "out"), epochs=6, batch_size=4, reso=16,
                      widths=(8, 16), device="cpu", backbone="sparse", features="density")
    res = train(cfg)
    assert res.final.train_loss < 0.6 * res.epochs[0].train_loss and res.final.train_metric >= 0.8
    check_outputs(tmp_path / "out", "cls3d", 6)
    again = train(dataclasses.replace(cfg, out=str(tmp_path / "again")))
    assert [e.train_loss for e in again.epochs] == pytest.approx([e.train_loss for e in res.epochs], rel=1e-4)
    model, meta = load_model(tmp_path / "out")
    assert meta["backbone"] == "sparse" and type(model).__name__ == "SparseClassifier"


@pytest.mark.parametrize("backbone", ["dense", "sparse"])
def test_seg3d_rooms(room_store: Path, tmp_path: Path, backbone: str) -> None:
    if backbone == "sparse":
        pytest.importorskip("spconv")
    cfg = TrainConfig("seg3d", str(room_store), str(tmp_path / "out"), epochs=10, batch_size=2, reso=16,
                      widths=(8, 16), lr=1e-2, device="cpu", backbone=backbone)
    res = train(cfg)
    assert res.classes == ("floor", "sphere", "box") and res.metric == "miou"
    assert res.final.train_loss < 0.5 * res.epochs[0].train_loss
    metrics = check_outputs(tmp_path / "out", "seg3d", 10)
    assert res.final.train_metric > 0.5 and metrics["final"]["val_accuracy"] > 0.7
    assert len(metrics["final"]["val_per_class_iou"]) == 3 and metrics["final"]["val_per_class_iou"][0] > 0.8
    weights = metrics["final"]["class_weights"]  # the floor slab outnumbers the objects: weighted down
    assert len(weights) == 3 and weights[0] < 1.0 < max(weights[1:])


def test_class_weights_by_hand() -> None:
    from perfdata.downstream.tasks import class_weights

    # present counts 100, 25, 400: median 100 -> (100 / n) ** 0.5 = (1, 2, 0.5); the absent class gets 1;
    # the mean weight over the 525 targets is (100 + 50 + 200) / 525 = 2 / 3, so all scale by 1.5
    w = class_weights(torch.tensor([100, 25, 0, 400]), 0.5)
    assert w.tolist() == pytest.approx([1.5, 3.0, 1.5, 0.75])
    assert class_weights(torch.tensor([3, 1]), 0.0) is None


def test_bad_inputs(tmp_path: Path, room_store: Path, object_store: Path) -> None:
    with pytest.raises(InputError, match="index.json"):
        train(TrainConfig("cls2d", str(tmp_path), str(tmp_path / "o")))
    with pytest.raises(InputError, match="rooms.zarr: no chosen scene has a class name"):
        train(TrainConfig("cls3d", str(room_store), str(tmp_path / "o")))
    with pytest.raises(InputError, match="not a zarr store"):
        train(TrainConfig("seg3d", str(tmp_path), str(tmp_path / "o")))
    with pytest.raises(ConfigError, match="divisible by 4"):
        train(TrainConfig("seg3d", str(room_store), str(tmp_path / "o"), reso=18))
    with pytest.raises(ConfigError, match="task"):
        train(TrainConfig("seg2d", str(room_store), str(tmp_path / "o")))
    with pytest.raises(ConfigError, match="--scenes sofa_\\* matches no scene"):
        train(TrainConfig("seg3d", str(room_store), str(tmp_path / "o"), scenes=("sofa_*",)))
    assert not (tmp_path / "o").exists()
    assert open_store(str(object_store)).scene_ids


def test_seg3d_skips_all_ignore_batches(tmp_path: Path) -> None:
    # rooms 1 and 3 have every voxel unlabelled: with one room per batch their cross-entropy would be 0 / 0 = nan
    rows = []
    for i in range(4):
        grid = room_grid(i)
        if i % 2:
            grid = dataclasses.replace(grid, labels=np.full(len(grid.coords), -1, np.int16))
        rows.append((f"room_{i}", grid, None, {"label_names": ROOM_NAMES}))
    store = write_store(tmp_path / "rooms.zarr", rows)
    cfg = TrainConfig("seg3d", str(store), str(tmp_path / "out"), epochs=2, batch_size=1, reso=8, widths=(4, 8),
                      device="cpu", val_fraction=0.25)
    res = train(cfg)
    n_empty = sum(int(s[-1]) % 2 for s in res.extra["splits"]["scenes"]["train"])
    assert n_empty >= 1 and [e.n_empty_batches for e in res.epochs] == [n_empty] * 2
    assert all(np.isfinite(e.train_loss) for e in res.epochs) and [e.n_samples for e in res.epochs] == [3 - n_empty] * 2
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["empty_batches"] == 2 * n_empty
    from perfdata.downstream.train import batch_loss

    logits = torch.randn(5, 3, requires_grad=True)
    zero = batch_loss(logits, torch.full((5,), -1), -1, None)
    zero.backward()
    assert float(zero) == 0.0 and float(logits.grad.abs().sum()) == 0.0


def test_repeated_width_deepens_a_stage() -> None:
    from perfdata.downstream.models2d import ResNetClassifier

    model = ResNetClassifier(3, 5, (8, 16, 16, 32))
    assert [b.conv1.stride[0] for b in model.blocks] == [1, 2, 1, 2]  # a new width halves, a repeat keeps
    assert [b.conv1.stride[0] for b in ResNetClassifier(3, 5, (8, 16, 32)).blocks] == [1, 2, 2]
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 5)


def test_mirror_evaluation_follows_hflip(tmp_path: Path) -> None:
    base = TrainConfig("cls2d", str(tmp_path), str(tmp_path / "out"))
    assert base.mirrors_eval and not dataclasses.replace(base, hflip=False).mirrors_eval
    assert not dataclasses.replace(base, eval_mirror=False).mirrors_eval


def test_cls3d_workers_read_a_store_over_http(object_store: Path, tmp_path: Path) -> None:
    # each DataLoader worker reopens the store: the parent's fsspec HTTP filesystem (an aiohttp session on the
    # parent's event-loop thread) failed in forked workers ("Timeout context manager should be used inside a task")
    from perfdata.download import serve_directory

    kw = dict(epochs=2, batch_size=4, reso=16, widths=(4, 8), device="cpu", workers=2, preload=False)
    local = train(TrainConfig("cls3d", str(object_store), str(tmp_path / "local"), **kw))
    server, url = serve_directory(object_store.parent)
    with server:
        remote = train(TrainConfig("cls3d", f"{url}/{object_store.name}", str(tmp_path / "remote"), **kw))
    assert (remote.n_train, remote.n_val) == (local.n_train, local.n_val) == (12, 4)
    assert [e.train_loss for e in remote.epochs] == [e.train_loss for e in local.epochs]
    assert remote.val_confusion == local.val_confusion
