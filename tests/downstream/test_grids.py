"""3D loaders: per-cell features of every feature set, dense and sparse on the same cells, labels, and errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from downstream_data import ROOM_NAMES, SH_C0, object_grid, write_store
from perfdata.downstream import grids as G

from perfdata.devices import split_scene_ids
from perfdata.errors import ConfigError, InputError
from perfdata.grid import SparseGrid
from perfdata.store import open_store


def tiny_store(tmp_path: Path) -> Path:
    # 4^3 source grid -> 2^3 cells; cell (0,0,0) gets voxels labelled 1, 1, 2 (majority 1); cell (1,1,1) gets -1
    coords = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [3, 3, 3]], np.int32)
    sh = np.zeros((4, 27), np.float32)
    sh[:, 0] = (0.8 - 0.5) / SH_C0  # red DC 0.8
    grid = SparseGrid(coords, np.array([1, 2, 3, 4], np.float32), sh, (4, 4, 4), np.eye(4),
                      labels=np.array([1, 1, 2, -1], np.int16))
    return write_store(tmp_path / "tiny.zarr", [("a", grid, None, {"label_names": ["x", "y", "z"]})])


def test_features_per_set_and_dense_equals_sparse(tmp_path: Path) -> None:
    store = open_store(str(tiny_store(tmp_path)))
    channels = {"coords": 1, "density": 2, "sh": 28, "sh+density": 29}
    for features, n in channels.items():
        dense = G.StoreGridDataset(store, ["a"], 2, "seg", n_classes=3, features=features)[0]
        sparse = G.StoreGridDataset(store, ["a"], 2, "seg", n_classes=3, features=features, sparse=True)[0]
        assert dense["x"].shape == (n, 2, 2, 2) and sparse["feats"].shape == (2, n)
        assert sparse["coords"].tolist() == [[0, 0, 0], [1, 1, 1]]
        for (x, y, z), f in zip(sparse["coords"].tolist(), sparse["feats"], strict=True):
            assert torch.allclose(dense["x"][:, x, y, z], f)
        assert float(dense["x"][:, 0, 1, 0].abs().sum()) == 0.0  # empty cell: zero
        assert sparse["y"].tolist() == [1, -1] and dense["y"][0, 0, 0] == 1 and (dense["y"].flatten()[1:] == -1).all()
    x = G.StoreGridDataset(store, ["a"], 2, "seg", n_classes=3, features="sh+density")[0]["x"]
    assert float(x[0, 0, 0, 0]) == pytest.approx(3 / 8) and float(x[0, 1, 1, 1]) == pytest.approx(1 / 8)
    assert float(x[1, 0, 0, 0]) == pytest.approx(np.log1p(2.0), rel=1e-3)
    assert float(x[2, 0, 0, 0]) * SH_C0 + 0.5 == pytest.approx(0.8, abs=5e-3)  # dequantised 8-bit SH


def test_store_dataset_items(object_store: Path, room_store: Path) -> None:
    store = open_store(str(object_store))
    ds = G.StoreGridDataset(store, store.scene_ids[:3], 16, "cls", store.root.classes, features="density")
    item = ds[0]
    assert item["x"].shape == (2, 16, 16, 16) and store.root.classes[int(item["y"])] == store.scene_ids[0].split("_")[0]
    batch = G.collate_dense([ds[0], ds[1], ds[2]])
    assert batch["x"].shape == (3, 2, 16, 16, 16) and batch["y"].shape == (3,)
    sp = G.StoreGridDataset(store, store.scene_ids[:2], 16, "cls", store.root.classes, sparse=True)
    sb = G.collate_sparse([sp[0], sp[1]], 16)
    assert sb["coords"].shape[1] == 4 and set(sb["coords"][:, 0].tolist()) == {0, 1} and sb["y"].shape == (2,)
    assert len(sb["feats"]) == len(sb["coords"]) == len(sp[0]["coords"]) + len(sp[1]["coords"])
    rooms = open_store(str(room_store))
    assert G.store_seg_classes(rooms, rooms.scene_ids) == tuple(ROOM_NAMES)
    seg = G.StoreGridDataset(rooms, rooms.scene_ids[:1], 16, "seg", n_classes=3)[0]["y"]
    assert seg.shape == (16, 16, 16) and set(seg.unique().tolist()) == {-1, 0, 1, 2}
    split = split_scene_ids(rooms.scene_ids, 0.25, seed=0)
    assert len(split["val"]) == 2 and split == split_scene_ids(list(reversed(rooms.scene_ids)), 0.25, seed=0)


def test_store_errors(object_store: Path, tmp_path: Path) -> None:
    store = open_store(str(object_store))
    with pytest.raises(InputError, match=r"objects.zarr/scenes/box_0: scene has no 'labels' array"):
        G.store_seg_classes(store, store.scene_ids)
    odd = write_store(tmp_path / "odd.zarr", [("a", object_grid("box", 0), "box", {})])
    with pytest.raises(InputError, match=r"odd.zarr/scenes/a: class_name 'box' is not one of"):
        G.StoreGridDataset(open_store(str(odd)), ["a"], 8, "cls", ("sphere",), preload=True)
    with pytest.raises(ConfigError, match="--features must be one of"):
        G.StoreGridDataset(open_store(str(odd)), ["a"], 8, "cls", ("box",), features="rgb")
    shutil.rmtree(odd / "scenes" / "a" / "sh")  # a store without SH
    no_sh = open_store(str(odd))
    assert G.StoreGridDataset(no_sh, ["a"], 8, "cls", ("box",), features="density")[0]["x"].shape == (2, 8, 8, 8)
    with pytest.raises(InputError, match=r"odd.zarr/scenes/a: array 'sh' is missing; this task needs SH"):
        G.StoreGridDataset(no_sh, ["a"], 8, "cls", ("box",), features="sh")[0]


def test_foreground_only_keeps_the_object_in_its_own_cube(tmp_path: Path) -> None:
    store = open_store(str(tiny_store(tmp_path)))
    ds = G.StoreGridDataset(store, ["a"], 2, "seg", n_classes=3, features="coords", sparse=True, foreground_only=True)
    sample = ds[0]  # voxels labelled 1, 1, 2 at (0,0,0), (1,0,0), (0,1,0) fill their 2^3 bounding cube's cells
    assert sample["coords"].tolist() == [[0, 0, 0], [0, 1, 0], [1, 0, 0]] and sample["y"].tolist() == [1, 2, 1]
    assert torch.allclose(sample["feats"][:, 0], torch.ones(3))


def test_foreground_only_drops_empty_voxels(tmp_path: Path) -> None:
    coords = np.array([[0, 0, 0], [1, 0, 0], [3, 3, 3]], np.int32)  # the far voxel is labelled 1 but empty
    grid = SparseGrid(coords, np.array([2.0, 3.0, -1.0], np.float32), np.zeros((3, 27), np.float32), (4, 4, 4),
                      np.eye(4), labels=np.array([1, 1, 1], np.int16))
    store = open_store(str(write_store(tmp_path / "e.zarr", [("a", grid, "box", {"label_names": ["bg", "o"]})])))
    sample = G.StoreGridDataset(store, ["a"], 2, "cls", ("box",), features="coords", sparse=True,
                                foreground_only=True)[0]
    assert sample["coords"].tolist() == [[0, 0, 0], [1, 0, 0]]  # framed into the 2-voxel box of the two


def test_cells_finer_than_voxels_stay_solid(tmp_path: Path) -> None:
    # a solid 4^3 block (labels 1, one voxel 2) in an 8^3 grid, framed into its own cube and read at 16^3 cells:
    # each voxel fills the 4^3 cells whose centres it holds, so all 16^3 cells are occupied (not a lattice of 4^3)
    coords = np.argwhere(np.ones((4, 4, 4), bool)).astype(np.int32) + 2
    labels = np.ones(len(coords), np.int16)
    labels[0] = 2  # voxel (2, 2, 2): the corner cells [0, 4)^3
    grid = SparseGrid(coords, np.full(len(coords), 5.0, np.float32), np.zeros((len(coords), 27), np.float32),
                      (8, 8, 8), np.eye(4), labels=labels)
    store = open_store(str(write_store(tmp_path / "block.zarr", [("a", grid, "box", {"label_names": ["bg", "o", "p"]})])))
    sparse = G.StoreGridDataset(store, ["a"], 16, "seg", n_classes=3, features="density", sparse=True,
                                foreground_only=True)[0]
    assert len(sparse["coords"]) == 16**3 and torch.allclose(sparse["feats"][:, 0], torch.ones(16**3))
    dense = G.StoreGridDataset(store, ["a"], 16, "seg", n_classes=3, features="density", foreground_only=True)[0]
    assert bool((dense["x"][0] == 1.0).all()) and float(dense["x"][1].min()) == pytest.approx(np.log1p(5.0), rel=1e-3)
    assert (dense["y"][:4, :4, :4] == 2).all() and int((dense["y"] == 2).sum()) == 64
    full = G.StoreGridDataset(store, ["a"], 16, "seg", n_classes=3, features="coords")[0]["x"][0]
    assert int((full > 0).sum()) == 8**3 and bool((full[4:12, 4:12, 4:12] == 1).all())  # 8^3 -> 16^3: 2^3 per voxel
    coarse = G.StoreGridDataset(store, ["a"], 4, "seg", n_classes=3, features="coords")[0]["x"][0]
    assert coarse[1:3, 1:3, 1:3].flatten().tolist() == [1.0] * 8  # 8^3 -> 4^3: 2^3 voxels per cell, all present
