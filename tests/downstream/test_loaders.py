"""Loaders: shards through webdataset, dense grids and labels from a real store, and their errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOM_NAMES
from downstream_data import object_grid, write_store
from perfdata.downstream import loaders as L

from perfdata.devices import split_scene_ids
from perfdata.errors import ChecksumError, InputError
from perfdata.grid import SparseGrid
from perfdata.store import open_store


def test_shard_batches_shapes_classes_and_seeded_order(shard_dir: Path) -> None:
    data = L.ShardData.open(shard_dir, verify=True)
    assert data.classes == ("box", "sphere", "torus")
    assert data.n_samples == {"train": 54, "val": 18}
    cfg = L.ShardLoaderConfig("train", batch_size=16, size=24, shuffle_buffer=32, seed=3, with_labels=True)
    batches = list(L.shard_pipeline(data, cfg, epoch=0))
    assert [len(b["y"]) for b in batches] == [16, 16, 16, 6]
    b = batches[0]
    assert b["x"].shape == (16, 3, 24, 24) and b["x"].dtype == torch.float32
    assert 0.0 <= float(b["x"].min()) and float(b["x"].max()) <= 1.0
    assert b["seg"].shape == (16, 24, 24) and set(b["seg"].unique().tolist()) <= {0, 1, 2, 5, 255}
    for key, y in zip(b["key"], b["y"].tolist(), strict=True):
        assert key.split("_")[1] == data.classes[y]  # keys are obj_<shape>_<seed>_<view>
    keys = lambda epoch: [k for bb in L.shard_pipeline(data, cfg, epoch) for k in bb["key"]]  # noqa: E731
    assert keys(0) == [k for bb in batches for k in bb["key"]] and keys(1) != keys(0)
    assert sorted(keys(1)) == sorted(keys(0))


def test_shard_folder_errors(shard_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="index.json"):
        L.ShardData.open(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(shard_dir, broken)
    path = {Path(s["name"]).name: Path(s["name"]) for s in json.loads((shard_dir / "index.json").read_text())["shards"]}
    (broken / path["val-000000.tar"]).unlink()
    with pytest.raises(InputError, match="val-000000.tar.*missing"):
        L.ShardData.open(broken)
    shutil.copy(shard_dir / path["train-000001.tar"], broken / path["train-000000.tar"])
    shutil.copy(shard_dir / path["val-000000.tar"], broken / path["val-000000.tar"])
    with pytest.raises(ChecksumError, match="train-000000.tar"):
        L.ShardData.open(broken, verify=True)


def test_dense_grid_features_and_majority_labels() -> None:
    # 4^3 source grid -> 2^3 cells; cell (0,0,0) gets voxels labelled 1, 1, 2 (majority 1); cell (1,1,1) gets -1
    coords = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [3, 3, 3]], np.int32)
    sh = np.zeros((4, 27), np.float32)
    sh[:, 0] = (0.8 - 0.5) / L.SH_C0  # red DC 0.8
    grid = SparseGrid(coords, np.array([1, 2, 3, 4], np.float32), sh, (4, 4, 4), np.eye(4),
                      labels=np.array([1, 1, 2, -1], np.int16))
    lab = L.dense_labels(grid, 2, n_classes=3)
    assert lab[0, 0, 0] == 1 and (lab.flatten()[1:] == -1).all()
    from perfdata.store import densify

    x = L.grid_features(densify(grid, 2), 27)
    assert x.shape == (5, 2, 2, 2)
    assert float(x[0, 0, 0, 0]) == pytest.approx(3 / 8) and float(x[0, 1, 1, 1]) == pytest.approx(1 / 8)
    assert float(x[1, 0, 0, 0]) == pytest.approx(np.log1p(2.0))
    assert float(x[2, 0, 0, 0]) == pytest.approx(0.8, abs=1e-5) and float(x[2, 0, 1, 0]) == 0.0  # empty: 0


def test_store_dataset_items(object_store: Path, room_store: Path) -> None:
    store = open_store(str(object_store))
    ds = L.StoreGridDataset(store, store.scene_ids[:3], 16, "cls", store.root.classes)
    item = ds[0]
    assert item["x"].shape == (5, 16, 16, 16) and store.root.classes[int(item["y"])] == store.scene_ids[0].split("_")[0]
    batch = L.collate_items([ds[0], ds[1], ds[2]])
    assert batch["x"].shape == (3, 5, 16, 16, 16) and batch["y"].shape == (3,)
    rooms = open_store(str(room_store))
    assert L.store_seg_classes(rooms, rooms.scene_ids) == tuple(ROOM_NAMES)
    seg = L.StoreGridDataset(rooms, rooms.scene_ids[:1], 16, "seg", n_classes=3)[0]["y"]
    assert seg.shape == (16, 16, 16) and set(seg.unique().tolist()) == {-1, 0, 1, 2}
    split = split_scene_ids(rooms.scene_ids, 0.25, seed=0)
    assert len(split["val"]) == 2 and split == split_scene_ids(list(reversed(rooms.scene_ids)), 0.25, seed=0)


def test_store_without_labels_is_an_error(object_store: Path, tmp_path: Path) -> None:
    store = open_store(str(object_store))
    with pytest.raises(InputError, match=r"objects.zarr/scenes/box_0: scene has no 'labels' array"):
        L.store_seg_classes(store, store.scene_ids)
    odd = write_store(tmp_path / "odd.zarr", [("a", object_grid("box", 0), "box", {})])
    with pytest.raises(InputError, match=r"odd.zarr/scenes/a: class_name 'box' is not one of"):
        L.StoreGridDataset(open_store(str(odd)), ["a"], 8, "cls", ("sphere",), preload=True)
