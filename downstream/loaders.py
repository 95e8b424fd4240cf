"""Loaders for downstream training: 2D views from WebDataset shards, 3D dense grids from the dataset store.

2D (shards written by `perfdata pack`; `index.json` gives the class list and the shards of each split)::

    data = ShardData.open("shards/")                        # reads and checks index.json
    pipe = shard_pipeline(data, ShardLoaderConfig(split="train", size=64, seed=0), epoch=0)
    for batch in pipe:                                      # a webdataset pipeline (a torch IterableDataset)
        batch["x"]    # (B, 3, S, S) float32 in [0, 1]
        batch["y"]    # (B,) int64 class ids (index into data.classes)
        batch["seg"]  # (B, S, S) int64, 255 = ignore (only with with_labels=True)

3D (a store written by `perfdata export`)::

    ds = StoreGridDataset(store, ids, reso=32, task="cls", classes=store.root.classes)
    item = ds[0]   # {"x": (5, D, D, D) float32, "y": () int64}; task "seg": "y" is (D, D, D) int64, -1 = ignore
    batch = collate_items([ds[0], ds[1]])                   # {"x": (B, 5, D, D, D), "y": (B,) or (B, D, D, D)}

Grid features (GRID_CHANNELS): occupancy fraction, log(1 + relu(density)), and the SH DC colour (R, G, B) =
c0 * Y0 + 0.5, zero in empty cells. Dense labels take the majority label of the stored voxels in each cell;
cells with no labelled voxel are -1 (ignored by the loss and the metrics).
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from perfdata.errors import ConfigError, InputError
from perfdata.grid import SparseGrid
from perfdata.shardcheck import ShardEntry, open_shard_set, shard_samples
from perfdata.store.reader import Store, densify

IGNORE_2D = 255
IGNORE_3D = -1
SH_C0 = 0.28209479177387814  # Y_0^0
GRID_CHANNELS = ("occupancy", "log_density", "dc_r", "dc_g", "dc_b")


# ----------------------------------------------------------------------------------------------- 2D: shards


@dataclass(frozen=True)
class ShardLoaderConfig:
    """How views are read from shards."""

    split: str = "train"
    """Which shards: those index.json lists under this split."""
    batch_size: int = 32
    """Samples per batch (the last batch of an epoch may be smaller)."""
    size: int | None = None
    """Resize images (bilinear, antialiased) and label maps (nearest) to size x size; None keeps them."""
    shuffle_buffer: int = 256
    """Samples held for shuffling (0: stream order; use 0 for evaluation)."""
    seed: int = 0
    """Seed of the shard order and the shuffle buffer (combined with the epoch)."""
    with_labels: bool = False
    """Also decode label.png into "seg" (a sample without one is an error)."""


@dataclass(frozen=True)
class ShardData:
    """A shard folder whose index.json has been read (and, optionally, whose shards have been verified)."""

    root: Path
    classes: tuple[str, ...]
    shards: dict[str, tuple[str, ...]]
    """split -> shard file names in index order."""
    n_samples: dict[str, int]
    entries: tuple[ShardEntry, ...] = ()
    """The shards as index.json lists them (what the streaming checks compare against)."""

    @classmethod
    def open(cls, root: str | Path, verify: bool = False) -> ShardData:
        """Read index.json and check every shard is of its set, present and of the listed size (with `verify`,
        also its sha256); see perfdata.shardcheck."""
        root = Path(root)
        index, entries = open_shard_set(root, verify)
        shards: dict[str, list[str]] = {}
        for entry in entries:
            shards.setdefault(entry.split, []).append(entry.name)
        if not index["classes"]:
            raise InputError(root / "index.json", "shard index has no classes; cls2d needs scenes with a class")
        return cls(root, tuple(index["classes"]), {k: tuple(v) for k, v in shards.items()},
                   {str(k): int(v) for k, v in index["n_samples"].items()}, tuple(entries))

    def urls(self, split: str) -> list[str]:
        return [str(self.root / name) for name in self.shards.get(split, ())]


def decode_png(data: bytes, where: str) -> np.ndarray:
    """PNG bytes -> uint8 array (H, W) or (H, W, C); an undecodable member is an InputError naming it."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im)
    except Exception as exc:  # PIL raises many types for bad data
        raise InputError(where, f"cannot decode PNG ({type(exc).__name__}: {exc})") from None


def decode_view(sample: dict[str, Any], size: int | None, with_labels: bool) -> dict[str, Any]:
    """One raw webdataset sample -> {"x": (3, S, S) float32, "y": int, ["seg": (S, S) int64], "key": str}."""
    where = f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"
    for member in ("rgb.png", "cls") + (("label.png",) if with_labels else ()):
        if member not in sample:
            raise InputError(where, f"sample lacks member {member!r}")
    rgb = decode_png(sample["rgb.png"], f"{where}.rgb.png")
    rgb = np.repeat(rgb[..., None], 3, axis=-1) if rgb.ndim == 2 else rgb[..., :3]
    x = torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(2, 0, 1)
    if size is not None and tuple(x.shape[1:]) != (size, size):
        x = F.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    try:
        y = int(sample["cls"].decode().strip())
    except (UnicodeDecodeError, ValueError):
        raise InputError(f"{where}.cls", f"class id {sample['cls'][:20]!r} is not an integer") from None
    out: dict[str, Any] = {"x": x.contiguous(), "y": y, "key": sample["__key__"]}
    if with_labels:
        lab = torch.from_numpy(decode_png(sample["label.png"], f"{where}.label.png").astype(np.int64))
        if size is not None and tuple(lab.shape) != (size, size):
            lab = F.interpolate(lab[None, None].float(), size=(size, size), mode="nearest")[0, 0].long()
        out["seg"] = lab
    return out


def collate_views(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Decoded views -> {"x": (B, 3, S, S), "y": (B,) int64, ["seg": (B, S, S) int64], "key": [B]}."""
    out: dict[str, Any] = {
        "x": torch.stack([s["x"] for s in samples]),
        "y": torch.tensor([s["y"] for s in samples], dtype=torch.int64),
        "key": [s["key"] for s in samples],
    }
    if "seg" in samples[0]:
        out["seg"] = torch.stack([s["seg"] for s in samples])
    return out


def shard_pipeline(data: ShardData, cfg: ShardLoaderConfig, epoch: int = 0) -> Any:
    """A webdataset pipeline of batches (see module doc) over `cfg.split`'s shards.

    With shuffle_buffer > 0 the shard order is permuted and samples go through a shuffle buffer, both seeded by
    (seed, epoch), so an epoch's order is reproducible. Errors propagate (no sample is silently skipped).
    """
    import webdataset as wds

    urls = data.urls(cfg.split)
    if not urls:
        raise InputError(data.root / "index.json", f"no shards of split {cfg.split!r}")
    if cfg.batch_size < 1:
        raise ConfigError(f"batch size must be positive, got {cfg.batch_size}")
    rng = random.Random(cfg.seed * 100003 + epoch)
    stages: list[Any] = []
    if cfg.shuffle_buffer > 0:
        rng.shuffle(urls)
    stages += [wds.SimpleShardList(urls), shard_samples(data.entries)]  # counts and hashes each shard
    if cfg.shuffle_buffer > 0:
        stages.append(wds.shuffle(cfg.shuffle_buffer, initial=cfg.shuffle_buffer, rng=rng))
    stages += [
        wds.map(lambda s: decode_view(s, cfg.size, cfg.with_labels), handler=wds.reraise_exception),
        wds.batched(cfg.batch_size, collation_fn=collate_views, partial=True),
    ]
    return wds.DataPipeline(*stages)


# ------------------------------------------------------------------------------------------------ 3D: store


def grid_features(vol: torch.Tensor, n_sh: int) -> torch.Tensor:
    """(2 + n_sh, D, D, D) store.dense_grid volume -> (5, D, D, D) features (GRID_CHANNELS)."""
    assert vol.ndim == 4 and vol.shape[0] == 2 + n_sh, f"expected (2 + {n_sh}, D, D, D), got {tuple(vol.shape)}"
    occ = vol[0]
    per = n_sh // 3
    dc = vol[[2, 2 + per, 2 + 2 * per]] * SH_C0 + 0.5
    dc = dc * (occ > 0).to(dc.dtype)
    return torch.cat([occ[None], torch.log1p(vol[1].clamp(min=0))[None], dc], dim=0).contiguous()


def cell_index(grid: SparseGrid, reso: int) -> np.ndarray:
    """(n,) int64 flat index of the reso^3 cell holding each voxel's centre (the cells store.densify uses)."""
    src = np.asarray(grid.reso, dtype=np.float64)
    cell = np.floor((grid.coords + 0.5) / src * reso).astype(np.int64).clip(0, reso - 1)
    return (cell[:, 0] * reso + cell[:, 1]) * reso + cell[:, 2]


def dense_labels(grid: SparseGrid, reso: int, n_classes: int) -> torch.Tensor:
    """(D, D, D) int64 majority voxel label per cell; -1 where no voxel with a label in [0, n_classes) falls."""
    if grid.labels is None:
        raise InputError(None, "scene has no labels array")
    labels = grid.labels.astype(np.int64)
    keep = (labels >= 0) & (labels < n_classes)
    flat = torch.from_numpy(cell_index(grid, reso)[keep] * n_classes + labels[keep])
    votes = torch.zeros(reso**3 * n_classes).index_add_(0, flat, torch.ones(len(flat))).view(reso**3, n_classes)
    out = votes.argmax(dim=1)
    out[votes.sum(dim=1) == 0] = IGNORE_3D
    return out.view(reso, reso, reso)


class StoreGridDataset(torch.utils.data.Dataset):
    """Scenes of a store as dense grids: item i = {"x": (5, D, D, D) float32, "y": ...} (see module doc).

    task "cls": y is the () int64 index of the scene's class_name in `classes`; task "seg": y is the (D, D, D)
    int64 dense voxel labels (-1 = ignore) of `n_classes` classes. `preload` reads every scene once up front
    (small datasets); otherwise each item is read from the store when asked for.
    """

    def __init__(self, store: Store, scene_ids: Sequence[str], reso: int, task: str,
                 classes: Sequence[str] = (), n_classes: int = 0, preload: bool = False) -> None:
        if task not in ("cls", "seg"):
            raise ConfigError(f"task must be 'cls' or 'seg', got {task!r}")
        if reso < 4:
            raise ConfigError(f"grid resolution must be at least 4, got {reso}")
        self.store, self.ids, self.reso, self.task = store, list(scene_ids), reso, task
        self.classes, self.n_classes = tuple(classes), n_classes
        self._items = [self.load(i) for i in range(len(self.ids))] if preload else None

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self._items[i] if self._items is not None else self.load(i)

    def load(self, i: int) -> dict[str, torch.Tensor]:
        """Read scene i from the store (see class doc for the shapes)."""
        sid = self.ids[i]
        grid = self.store.read_scene(sid)
        x = grid_features(densify(grid, self.reso), grid.sh.shape[1])
        where = f"{self.store.loc.url}/{self.store.loc.scene_key(sid)}"
        if self.task == "cls":
            name = self.store.scene_attrs(sid).class_name
            if name not in self.classes:
                raise InputError(where, f"class_name {name!r} is not one of the store's classes {list(self.classes)}")
            return {"x": x, "y": torch.tensor(self.classes.index(name), dtype=torch.int64)}
        if grid.labels is None:
            raise InputError(where, "scene has no 'labels' array; seg3d needs per-voxel labels")
        return {"x": x, "y": dense_labels(grid, self.reso, self.n_classes)}


def collate_items(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Items of StoreGridDataset -> {"x": (B, 5, D, D, D), "y": (B,) or (B, D, D, D)}."""
    return {"x": torch.stack([it["x"] for it in items]), "y": torch.stack([it["y"] for it in items])}


def store_seg_classes(store: Store, scene_ids: Sequence[str]) -> tuple[str, ...]:
    """Label names of a store's scenes for seg3d: `extra["label_names"]` (all scenes that have them must agree);
    lacking them, "0".."max label". A scene without a labels array is an InputError naming it."""
    names: tuple[str, ...] | None = None
    max_label = -1
    for sid in scene_ids:
        where = f"{store.loc.url}/{store.loc.scene_key(sid)}"
        labels = store.read_array(sid, "labels")  # a corrupt chunk is an error naming it
        if labels is None:
            raise InputError(where, "scene has no 'labels' array; seg3d needs per-voxel labels")
        max_label = max(max_label, int(labels.max(initial=-1)))
        found = store.scene_attrs(sid).extra.get("label_names")
        if found is not None:
            if names is not None and tuple(found) != names:
                raise InputError(where, f"label_names {list(found)} differ from other scenes' {list(names)}")
            names = tuple(str(n) for n in found)
    if names is None:
        if max_label < 0:
            raise InputError(store.loc.url, "no scene has any labelled voxel")
        names = tuple(str(i) for i in range(max_label + 1))
    return names


def iter_batches(ds: StoreGridDataset, batch_size: int, seed: int | None, epoch: int = 0) -> Iterator[dict]:
    """Batches of `ds` (collate_items); shuffled by (seed, epoch) when seed is not None."""
    order = np.arange(len(ds))
    if seed is not None:
        order = np.random.default_rng([seed, epoch]).permutation(len(ds))
    for start in range(0, len(order), batch_size):
        yield collate_items([ds[int(i)] for i in order[start:start + batch_size]])
