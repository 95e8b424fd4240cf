"""2D loaders: shards through webdataset (local and over HTTP), scene selection, and their bad-input errors."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
import torch
from perfdata.downstream import loaders as L

from perfdata.errors import ChecksumError, ConfigError, InputError


def test_shard_batches_shapes_classes_and_seeded_order(shard_dir: Path) -> None:
    data = L.ShardData.open(shard_dir, verify=True)
    assert data.classes == ("box", "sphere", "torus")
    assert data.n_samples == {"train": 54, "val": 18} and len(data.scenes["val"]) == 3
    cfg = L.ShardLoaderConfig("train", batch_size=16, size=24, shuffle_buffer=32, seed=3, with_labels=True)
    batches = list(L.shard_pipeline(data, cfg, epoch=0))
    assert [len(b["y"]) for b in batches] == [16, 16, 16, 6]
    b = batches[0]
    assert b["x"].shape == (16, 3, 24, 24) and b["x"].dtype == torch.float32 and b["n_skipped"] == 0
    assert 0.0 <= float(b["x"].min()) and float(b["x"].max()) <= 1.0
    assert b["seg"].shape == (16, 24, 24) and set(b["seg"].unique().tolist()) <= {0, 1, 2, 5, 255}
    for key, scene, y in zip(b["key"], b["scene"], b["y"].tolist(), strict=True):
        assert key.split("_")[1] == data.classes[y] and key.startswith(scene)  # keys are obj_<shape>_<seed>_<view>
    keys = lambda epoch: [k for bb in L.shard_pipeline(data, cfg, epoch) for k in bb["key"]]  # noqa: E731
    assert keys(0) == [k for bb in batches for k in bb["key"]] and keys(1) != keys(0)
    assert sorted(keys(1)) == sorted(keys(0))


def test_scene_globs_select_samples(shard_dir: Path) -> None:
    data = L.ShardData.open(shard_dir)
    cfg = L.ShardLoaderConfig("train", batch_size=100, size=16, shuffle_buffer=0, scenes=("obj_box_*",))
    (batch,) = list(L.shard_pipeline(data, cfg))
    assert set(batch["scene"]) == set(data.split_scenes("train", ["obj_box_*"])) and len(batch["y"]) == 18
    assert {data.classes[y] for y in batch["y"].tolist()} == {"box"}
    with pytest.raises(ConfigError, match="--scenes obj_cat_\\* matches no scene"):
        data.split_scenes("train", ["obj_cat_*"])


def test_workers_read_disjoint_shards(shard_dir: Path) -> None:
    data = L.ShardData.open(shard_dir)
    cfg = L.ShardLoaderConfig("train", batch_size=4, size=16, shuffle_buffer=0)
    keys = [k for b in L.worker_loader(L.shard_pipeline(data, cfg), 2, 0) for k in b["key"]]
    assert len(keys) == 54 and len(set(keys)) == 54


def test_shards_over_http(shard_dir: Path) -> None:
    from fsspec.implementations.http import HTTPFileSystem

    from perfdata.download import serve_directory

    HTTPFileSystem.clear_instance_cache()

    server, url = serve_directory(shard_dir)
    with server:
        data = L.ShardData.open(url)
        cfg = L.ShardLoaderConfig("val", batch_size=32, size=16, shuffle_buffer=0)
        remote = list(L.shard_pipeline(data, cfg))
    local = list(L.shard_pipeline(L.ShardData.open(shard_dir), cfg))
    assert [b["key"] for b in remote] == [b["key"] for b in local]
    assert torch.equal(remote[0]["x"], local[0]["x"])
    # no fsspec HTTP filesystem (an aiohttp session on an event-loop thread) is left behind: forked DataLoader
    # workers inherited it without the thread, and its finalizer stalled them (half the HTTP throughput)
    assert not HTTPFileSystem._cache


def test_shard_gone_from_server_names_its_url(shard_dir: Path, tmp_path: Path) -> None:
    from perfdata.download import serve_directory

    served = tmp_path / "served"
    shutil.copytree(shard_dir, served)
    server, url = serve_directory(served)
    with server:
        data = L.ShardData.open(url)
        shard(served, "val-000000.tar").unlink()  # removed after the index was read
        cfg = L.ShardLoaderConfig("val", batch_size=32, size=16, shuffle_buffer=0)
        with pytest.raises(OSError, match=r"val-000000\.tar: HTTP Error 404"):
            list(L.shard_pipeline(data, cfg))


def shard(root: Path, name: str) -> Path:
    """The path of shard `name` (e.g. "train-000000.tar") as index.json lists it (shard sets live in folders)."""
    index = json.loads((root / "index.json").read_text())
    return root / next(s["name"] for s in index["shards"] if s["name"].endswith(name))


def test_shard_folder_errors(shard_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="index.json"):
        L.ShardData.open(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(shard_dir, broken, symlinks=False)
    shard(broken, "val-000000.tar").unlink()
    with pytest.raises(InputError, match="val-000000.tar"):
        L.ShardData.open(broken)
    shard(broken, "train-000000.tar").write_bytes(shard(shard_dir, "train-000000.tar").read_bytes() + bytes(512))
    shutil.copy(shard(shard_dir, "val-000000.tar"), shard(broken, "val-000000.tar"))
    with pytest.raises(ChecksumError, match="train-000000.tar: is .* bytes, index.json says"):
        L.ShardData.open(broken)
    index = json.loads((shard_dir / "index.json").read_text())
    shutil.copy(shard(shard_dir, "train-000000.tar"), shard(broken, "train-000000.tar"))
    with open(shard(broken, "train-000000.tar"), "r+b") as fh:  # same size, one byte changed
        fh.seek(700)
        byte = fh.read(1)
        fh.seek(700)
        fh.write(bytes([byte[0] ^ 1]))
    assert shard(broken, "train-000000.tar").stat().st_size == index["shards"][0]["bytes"]
    L.ShardData.open(broken)  # sizes agree: only --verify reads the bytes
    with pytest.raises(ChecksumError, match="train-000000.tar: sha256 differs from index.json"):
        L.ShardData.open(broken, verify=True)


def rewrite_shard(src: Path, dst: Path, drop: str, key_index: int = 0) -> str:
    """Copy a shard without member `drop` of its key_index-th sample; returns that sample's key."""
    with tarfile.open(src) as tin:
        members = [(m, tin.extractfile(m).read()) for m in tin.getmembers()]
    key = sorted({m.name.split(".")[0] for m, _ in members})[key_index]
    with tarfile.open(dst, "w") as tout:
        for m, data in members:
            if m.name != f"{key}.{drop}":
                tout.addfile(m, io.BytesIO(data))
    return key


def test_missing_member_error_or_counted_skip(shard_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(shard_dir, bad)
    key = rewrite_shard(shard(shard_dir, "val-000000.tar"), shard(bad, "val-000000.tar"), "rgb.png", key_index=3)
    index = json.loads((bad / "index.json").read_text())
    for entry in index["shards"]:  # the index now matches the rewritten shard's size and digest
        path = bad / entry["name"]
        entry["bytes"] = path.stat().st_size
        entry["sha256"] = __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    (bad / "index.json").write_text(json.dumps(index))
    data = L.ShardData.open(bad)
    cfg = L.ShardLoaderConfig("val", batch_size=5, size=16, shuffle_buffer=0)
    with pytest.raises(InputError, match=rf"val-000000.tar:{key}: sample lacks member 'rgb.png'"):
        list(L.shard_pipeline(data, cfg))
    import dataclasses

    batches = list(L.shard_pipeline(data, dataclasses.replace(cfg, skip_bad=True)))
    assert sum(b["n_skipped"] for b in batches) == 1 and sum(len(b["y"]) for b in batches) == 17
    assert key not in [k for b in batches for k in b["key"]]


def test_class_name_must_match_the_index(shard_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(shard_dir, bad)
    index = json.loads((bad / "index.json").read_text())
    index["classes"] = ["sphere", "box", "torus"]  # ids now point at other names than the samples' json says
    (bad / "index.json").write_text(json.dumps(index))
    cfg = L.ShardLoaderConfig("val", batch_size=5, size=16, shuffle_buffer=0)
    with pytest.raises(InputError, match="json class_name '(box|sphere)' differs from index.json's class"):
        list(L.shard_pipeline(L.ShardData.open(bad), cfg))


def test_hflip_mirrors_about_half_the_views_seeded(shard_dir: Path) -> None:
    data = L.ShardData.open(shard_dir)
    plain = L.ShardLoaderConfig("train", batch_size=100, size=16, shuffle_buffer=0, with_labels=True)
    flip = L.ShardLoaderConfig("train", batch_size=100, size=16, shuffle_buffer=0, with_labels=True, hflip=True)
    (a,) = list(L.shard_pipeline(data, plain))
    (b,) = list(L.shard_pipeline(data, flip))
    assert b["key"] == a["key"] and torch.equal(b["y"], a["y"])
    mirrored = [torch.equal(bx, ax.flip(-1)) and torch.equal(bs, as_.flip(-1)) and not torch.equal(bx, ax)
                for ax, bx, as_, bs in zip(a["x"], b["x"], a["seg"], b["seg"], strict=True)]
    same = [torch.equal(bx, ax) for ax, bx in zip(a["x"], b["x"], strict=True)]
    assert all(m or s for m, s in zip(mirrored, same, strict=True)) and 15 < sum(mirrored) < 39  # 54 views
    (again,) = list(L.shard_pipeline(data, flip))
    assert torch.equal(again["x"], b["x"])
    (other,) = list(L.shard_pipeline(data, flip, epoch=1))
    assert not torch.equal(other["x"], b["x"])


def test_colour_aug_recolours_the_asked_share_of_views_seeded(shard_dir: Path) -> None:
    import numpy as np
    from perfdata.downstream.recolour import colour_transform, recolour_image

    data = L.ShardData.open(shard_dir)
    plain = L.ShardLoaderConfig("train", batch_size=100, size=16, shuffle_buffer=0)
    col = L.ShardLoaderConfig("train", batch_size=100, size=16, shuffle_buffer=0, colour_aug=0.25)
    (a,) = list(L.shard_pipeline(data, plain))
    (b,) = list(L.shard_pipeline(data, col))
    assert b["key"] == a["key"] and torch.equal(b["y"], a["y"])
    changed = [not torch.equal(ax, bx) for ax, bx in zip(a["x"], b["x"], strict=True)]
    assert 4 < sum(changed) < 26  # 54 views, p = 1/4
    (again,) = list(L.shard_pipeline(data, col))
    assert torch.equal(again["x"], b["x"])
    # by hand: a permutation with gains about grey, then a shift, clamped
    m, shift = colour_transform(np.random.default_rng(0))
    x = torch.rand(3, 4, 5)
    want = torch.stack([0.5 + m[i].max() * (x[int(m[i].argmax())] - 0.5) + shift[i] for i in range(3)]).clamp(0, 1)
    assert torch.allclose(recolour_image(x, m, shift), want.float(), atol=1e-6)
