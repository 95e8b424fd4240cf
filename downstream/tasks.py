"""The data of each downstream task, ready to iterate on this process: `prepare_shards` (cls2d) and
`prepare_store` (cls3d, seg3d). Batches are dicts (loaders.py, grids.py); every process of a distributed run
gets its own disjoint part."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from perfdata.downstream import grids as G
from perfdata.downstream import loaders as L
from perfdata.downstream.distributed import DistInfo
from perfdata.downstream.scenes import select_scene_ids

from perfdata.devices import split_scene_ids
from perfdata.errors import ConfigError, InputError

if TYPE_CHECKING:
    from perfdata.downstream.train import TrainConfig


@dataclass(frozen=True)
class TaskData:
    """A task's data on this process."""

    classes: tuple[str, ...]
    in_channels: int
    ignore_index: int | None
    train_batches: Callable[[int], Iterable[dict[str, Any]]]
    """epoch -> this process's (shuffled) training batches of that epoch."""
    val_batches: Callable[[], Iterable[dict[str, Any]]] | None
    """This process's part of the val split (None without a val split)."""
    n_train: int
    n_val: int
    expected_train: int | None = None
    """Training samples one epoch must see (checked when a single process reads every shard unfiltered)."""
    splits: dict[str, Any] = field(default_factory=dict)
    train_root: str = ""
    """Where the training samples come from (named by a sample-count error)."""
    class_counts: torch.Tensor | None = None
    """(C,) int64 training targets per class (store tasks: cells for seg3d, scenes for cls3d); None for shards."""


def _shard_workers(data: L.ShardData, split: str, workers: int, dist: DistInfo) -> int:
    """Workers this process can feed: no more than the shards that split_by_node leaves it."""
    n = len(data.shards.get(split, ()))
    mine = len(range(dist.rank, n, dist.world_size))
    if split == "train" and mine == 0:
        raise ConfigError(f"split {split!r} of {data.root} has {n} shard(s), fewer than the {dist.world_size} "
                          "processes; pack with a smaller --maxcount")
    return min(workers, mine)


def open_val_shards(cfg: TrainConfig, data: L.ShardData) -> L.ShardData:
    """The val shard set: --val-shards (its classes must equal the train set's) or the train folder itself."""
    if not cfg.val_data:
        return data
    val = L.ShardData.open(cfg.val_data, verify=cfg.verify)
    if val.classes != data.classes:
        raise InputError(f"{val.root}/index.json", f"classes {list(val.classes)} differ from the train shards' "
                         f"{list(data.classes)} ({data.root}/index.json)")
    return val


def prepare_shards(cfg: TrainConfig, dist: DistInfo) -> TaskData:
    """cls2d data: the train shards of cfg.data and the val shards (of cfg.val_data, else of cfg.data)."""
    from perfdata.downstream import bgaug

    data = L.ShardData.open(cfg.data, verify=cfg.verify)
    if not data.shards.get("train"):
        raise InputError(f"{data.root}/index.json", "no train shards")
    val_data = open_val_shards(cfg, data)
    scenes = tuple(cfg.scenes)
    train_cfg = L.ShardLoaderConfig("train", cfg.batch_size, cfg.size, cfg.shuffle_buffer, cfg.seed,
                                    bg_aug=cfg.bg_aug, scenes=scenes, skip_bad=cfg.skip_bad, hflip=cfg.hflip,
                                    colour_aug=cfg.colour_aug)
    val_cfg = dataclasses.replace(train_cfg, split="val", shuffle_buffer=0, bg_aug=0.0, hflip=False, colour_aug=0.0)
    bank = None
    if cfg.bg_aug > 0:
        bank = bgaug.load_backgrounds(data, "train", cfg.size, train_cfg.bg_per_scene,
                                      data.split_scenes("train", scenes) if scenes else ())
    n_workers = _shard_workers(data, "train", cfg.workers, dist)
    has_val = bool(val_data.shards.get("val"))
    val_workers = _shard_workers(val_data, "val", cfg.workers, dist) if has_val else 0

    def train_batches(epoch: int) -> Iterable[dict[str, Any]]:
        return L.worker_loader(L.shard_pipeline(data, train_cfg, epoch, bank), n_workers, cfg.seed * 1000 + epoch)

    def val_batches() -> Iterable[dict[str, Any]]:
        if len(range(dist.rank, len(val_data.shards["val"]), dist.world_size)) == 0:
            return []
        return L.worker_loader(L.shard_pipeline(val_data, val_cfg), val_workers, cfg.seed)

    exact = not scenes and not dist.enabled
    return TaskData(
        classes=data.classes, in_channels=3, ignore_index=None, train_batches=train_batches,
        val_batches=val_batches if has_val else None,
        n_train=data.n_samples.get("train", 0), n_val=val_data.n_samples.get("val", 0),
        expected_train=data.n_samples.get("train", 0) if exact else None,
        splits={"shards": {k: list(v) for k, v in data.shards.items()},
                "scenes": {"train": data.split_scenes("train", scenes), "val": val_data.split_scenes("val", scenes)}},
        train_root=data.root,
    )


def _loader(ds: torch.utils.data.Dataset, cfg: TrainConfig, collate: Callable, sampler: Any) -> Any:
    return torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size, sampler=sampler, collate_fn=collate,
                                       num_workers=cfg.workers)


def store_task_classes(cfg: TrainConfig, store: Any, ids: list[str]) -> tuple[tuple[str, ...], str, int | None]:
    """(classes, dataset task, ignore index) of cls3d / seg3d on the chosen scenes."""
    if cfg.task == "cls3d":
        classes = tuple(sorted({store.scene_attrs(s).class_name for s in ids} - {None}))
        if not classes:
            raise InputError(cfg.data, "no chosen scene has a class name; cls3d needs scenes exported with a class_name")
        return classes, "cls", None
    factor = 2 ** (len(cfg.widths) - 1)
    if cfg.backbone == "dense" and cfg.reso % factor:
        raise ConfigError(f"seg3d needs --reso divisible by {factor}, got {cfg.reso}")
    return G.store_seg_classes(store, ids), "seg", G.IGNORE_3D


def prepare_store(cfg: TrainConfig, dist: DistInfo) -> TaskData:
    """cls3d / seg3d data: the store's chosen scenes split by (val_fraction, seed) into grid datasets."""
    from functools import partial

    from perfdata.store import open_store

    store = open_store(cfg.data)
    if not store.scene_ids:
        raise InputError(cfg.data, "store has no complete scenes")
    ids = select_scene_ids(store.scene_ids, cfg.scenes, cfg.data)
    split = split_scene_ids(ids, cfg.val_fraction, cfg.seed)
    classes, task, ignore = store_task_classes(cfg, store, ids)
    sparse = cfg.backbone == "sparse"
    sets = {k: G.StoreGridDataset(store, v, cfg.reso, task, classes, len(classes), cfg.preload, cfg.features, sparse,
                                  cfg.foreground_only)
            for k, v in split.items()}
    collate = partial(G.collate_sparse, reso=cfg.reso) if sparse else G.collate_dense
    first = sets["train"][0] if len(sets["train"]) else None
    if first is None:
        raise InputError(cfg.data, "no training scenes (every chosen scene went to val)")
    in_channels = int((first["feats"] if sparse else first["x"]).shape[-1 if sparse else 0])
    train_set: Any = sets["train"]
    if cfg.augment_3d:
        from perfdata.downstream.augment3d import AugmentedGrids

        n_sh = in_channels - 1 - ("density" in G.feature_arrays(cfg.features)) if "sh" in cfg.features else 0
        train_set = AugmentedGrids(train_set, cfg.seed, cfg.reso, n_sh, cfg.colour_aug)
    sampler = torch.utils.data.distributed.DistributedSampler(
        train_set, num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=cfg.seed,
        drop_last=dist.enabled)

    def train_batches(epoch: int) -> Iterable[dict[str, Any]]:
        sampler.set_epoch(epoch)
        if cfg.augment_3d:
            train_set.set_epoch(epoch)
        return _loader(train_set, cfg, collate, sampler)

    counts = target_counts(sets["train"], len(classes))
    val_ids = list(range(dist.rank, len(sets["val"]), dist.world_size))
    val_set = torch.utils.data.Subset(sets["val"], val_ids)
    return TaskData(
        classes=tuple(classes), in_channels=in_channels, ignore_index=ignore, train_batches=train_batches,
        val_batches=(lambda: _loader(val_set, cfg, collate, None)) if split["val"] else None,
        n_train=len(split["train"]), n_val=len(split["val"]), splits={"scenes": split}, class_counts=counts,
    )


def target_counts(ds: torch.utils.data.Dataset, n_classes: int) -> torch.Tensor:
    """(C,) int64 targets per class over a grid dataset (cells for segmentation, items for classification);
    targets outside [0, C) (ignore) are left out. Every process counts the whole split, so all agree."""
    counts = torch.zeros(n_classes, dtype=torch.int64)
    for i in range(len(ds)):
        y = ds[i]["y"].reshape(-1)
        counts += torch.bincount(y[(y >= 0) & (y < n_classes)], minlength=n_classes)
    return counts


def class_weights(counts: torch.Tensor, power: float) -> torch.Tensor | None:
    """(C,) float32 loss weights (n_median / n_c) ** power for classes with targets (1 for absent ones),
    scaled so the mean weight over the training targets is 1; None when power is 0."""
    if power == 0 or counts is None:
        return None
    n = counts.double()
    present = n > 0
    if not bool(present.any()):
        return None
    w = torch.ones_like(n)
    w[present] = (n[present].median() / n[present]) ** power
    w = w / ((w * n).sum() / n.sum())
    return w.float()


def check_sample_count(data: TaskData, seen: int, n_skipped: int) -> None:
    """An epoch that read every train shard unfiltered on one process must see index.json's sample count."""
    if data.expected_train is not None and seen + n_skipped != data.expected_train:
        raise InputError(f"{data.train_root}/index.json", f"lists {data.expected_train} train samples, "
                         f"but the shards held {seen + n_skipped}")
