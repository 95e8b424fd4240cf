"""2D loaders: views from WebDataset shards written by `perfdata pack` (3D grids live in `grids.py`).

    data = ShardData.open("shards/")                  # or "http://host/shards": reads and checks index.json
    pipe = shard_pipeline(data, ShardLoaderConfig(split="train", size=64, seed=0), epoch=0)
    for batch in pipe:                                # a webdataset pipeline (a torch IterableDataset)
        batch["x"]          # (B, 3, S, S) float32 in [0, 1]
        batch["y"]          # (B,) int64 class ids (index into data.classes)
        batch["seg"]        # (B, S, S) int64, 255 = ignore (only with with_labels=True)
        batch["key"], batch["scene"]   # [B] sample keys and scene ids
        batch["n_skipped"]  # bad samples skipped since the previous batch (skip_bad=True; else 0)

Stages: shard list (permuted by (seed, epoch)) -> `split_by_node` (torch.distributed rank) -> `split_by_worker`
(DataLoader worker) -> tar members grouped into samples -> scene selection (`--scenes`) -> shuffle buffer ->
decode + resize -> background augmentation (train only, `bgaug.py`) -> left-right mirror (train, `hflip`) ->
re-colouring (train, `colour_aug`, recolour.py) -> batches. Every process and worker reads a
disjoint set of shards, so with N processes x K workers a split needs at least N shards (and gains from N * K).
A sample lacking a member, with an undecodable PNG, or whose json class_name disagrees with index.json's classes is
an InputError naming shard and key, or (skip_bad) a logged, counted skip.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import random
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from perfdata.downstream.scenes import select_scene_ids

from perfdata.errors import ChecksumError, ConfigError, InputError
from perfdata.shardcheck import (
    ShardEntry,
    http_size,
    is_http,
    open_shard_set,
    open_url,
    shard_samples,
    url_samples,
)
from perfdata.shards import INDEX_NAME, read_index

log = logging.getLogger(__name__)

IGNORE_2D = 255


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
    """Seed of the shard order, the shuffle buffer and the augmentation (combined with the epoch)."""
    with_labels: bool = False
    """Also decode label.png into "seg" (a sample without one is an error)."""
    bg_aug: float = 0.0
    """Probability of pasting a view's object onto another scene's background (see bgaug.py); 0 = off."""
    bg_per_scene: int = 8
    """Background renders kept per scene for the augmentation (the first ones of each scene)."""
    scenes: tuple[str, ...] = ()
    """Scene ids or globs to keep (empty: every scene of the split)."""
    skip_bad: bool = False
    """Skip (log and count) samples with a missing or undecodable member instead of raising."""
    hflip: bool = False
    """Mirror each view left-right with probability 1/2 (seeded like the augmentation; label maps too)."""
    colour_aug: float = 0.0
    """Probability of re-colouring a view (recolour.py: channels permuted, gains and shifts about grey)."""


def is_url(root: str | Path) -> bool:
    return "://" in str(root) and not str(root).startswith("file://")


@dataclass(frozen=True)
class ShardData:
    """A shard folder (local path or URL) whose index.json has been read and whose shards have been checked."""

    root: str
    classes: tuple[str, ...]
    shards: dict[str, tuple[str, ...]]
    """split -> shard file names in index order."""
    n_samples: dict[str, int]
    scenes: dict[str, tuple[str, ...]]
    """split -> scene ids (from index.json's "scenes"; empty when the index does not record them)."""
    entries: tuple[ShardEntry, ...] = ()
    """Local shard sets: the shards as index.json lists them (what the streaming checks compare against)."""

    @classmethod
    def open(cls, root: str | Path, verify: bool = False) -> ShardData:
        """Read index.json; check the shard set (local: perfdata.shardcheck.open_shard_set -- every shard of the
        set, present, of its size, with `verify` its sha256; URL: sizes over HTTP)."""
        root = str(root).rstrip("/")
        entries: list[ShardEntry] = []
        if is_url(root):
            index = read_remote_index(root)
            check_remote_set(root, index)
        else:
            index, entries = open_shard_set(root, verify)
        shards: dict[str, list[str]] = {}
        for entry in index["shards"]:
            shards.setdefault(str(entry["split"]), []).append(str(entry["name"]))
        if not index["classes"]:
            raise InputError(f"{root}/{INDEX_NAME}", "shard index has no classes; cls2d needs scenes with a class")
        scenes = {str(k): tuple(v) for k, v in dict(index.get("scenes") or {}).items()}
        return cls(root, tuple(index["classes"]), {k: tuple(v) for k, v in shards.items()},
                   {str(k): int(v) for k, v in index["n_samples"].items()}, scenes, tuple(entries))

    def urls(self, split: str) -> list[str]:
        if self.entries:
            return [str(e.path) for e in self.entries if e.split == split]
        return [f"{self.root}/{name}" for name in self.shards.get(split, ())]

    def sample_stage(self) -> Any:
        """Raw tar members -> samples: for local sets perfdata.shardcheck.shard_samples (counts and hashes each
        shard as it streams), for URLs perfdata.shardcheck.url_samples."""
        return shard_samples(self.entries) if self.entries else url_samples

    def split_scenes(self, split: str, patterns: Iterable[str] = ()) -> list[str]:
        """Scene ids of a split that match `patterns` (all without patterns)."""
        return select_scene_ids(self.scenes.get(split, ()), tuple(patterns), f"{self.root} ({split})")


def read_remote_index(url: str) -> dict[str, Any]:
    """index.json of a shard folder behind a URL (http(s) by urllib, other schemes by fsspec), checked like a
    local one; errors name the URL."""
    import fsspec

    where = f"{url}/{INDEX_NAME}"
    try:
        if is_http(where):
            with open_url(where) as fh:
                data = fh.read()
        else:
            with fsspec.open(where, "rb") as fh:
                data = fh.read()
    except (OSError, ValueError) as exc:
        raise InputError(where, f"cannot read shard index ({type(exc).__name__}: {exc})") from None
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / INDEX_NAME).write_bytes(data)
        try:
            return read_index(tmp)
        except InputError as exc:
            raise InputError(where, exc.problem) from None


def check_remote_set(root: str, index: dict[str, Any]) -> None:
    """A shard set behind a URL: relative shard paths inside the folder, each reachable with the size index.json
    records."""
    from pathlib import PurePosixPath

    import fsspec

    for entry in index["shards"]:
        name = PurePosixPath(str(entry["name"]))
        if not name.parts or name.is_absolute() or ".." in name.parts or "\\" in str(name):
            raise InputError(f"{root}/{INDEX_NAME}", f"shard name {str(name)!r} leaves the shard folder")
    size_of = http_size if is_http(root) else fsspec.core.url_to_fs(root)[0].size
    for entry in index["shards"]:
        url = f"{root}/{entry['name']}"
        try:
            size = size_of(url)
        except (OSError, ValueError) as exc:
            raise InputError(url, f"shard listed in index.json cannot be reached ({type(exc).__name__})") from None
        if size is not None and int(size) != int(entry["bytes"]):
            raise ChecksumError(url, f"size {size} differs from index.json's {entry['bytes']}")


# ------------------------------------------------------------------------------------------------ decoding


def decode_png(data: bytes, where: str) -> np.ndarray:
    """PNG bytes -> uint8 array (H, W) or (H, W, C); an undecodable member is an InputError naming it."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im)
    except Exception as exc:  # PIL raises many types for bad data
        raise InputError(where, f"cannot decode PNG ({type(exc).__name__}: {exc})") from None


def image_tensor(rgb: np.ndarray, size: int | None) -> torch.Tensor:
    """uint8 (H, W) or (H, W, C) -> (3, S, S) float32 in [0, 1], resized (bilinear, antialiased) when size."""
    rgb = np.repeat(rgb[..., None], 3, axis=-1) if rgb.ndim == 2 else rgb[..., :3]
    x = torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(2, 0, 1)
    if size is not None and tuple(x.shape[1:]) != (size, size):
        x = F.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    return x.contiguous()


def sample_meta(sample: dict[str, Any], where: str) -> dict[str, Any]:
    """The parsed `json` member of a raw sample (an InputError when absent or not JSON)."""
    if "json" not in sample:
        raise InputError(where, "sample lacks member 'json'")
    try:
        meta = json.loads(sample["json"])
    except (UnicodeDecodeError, ValueError):
        raise InputError(f"{where}.json", "member is not JSON") from None
    if not isinstance(meta, dict):
        raise InputError(f"{where}.json", "member is not a JSON object")
    return meta


def where_of(sample: dict[str, Any]) -> str:
    return f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"


def decode_view(sample: dict[str, Any], cfg: ShardLoaderConfig, classes: tuple[str, ...]) -> dict[str, Any]:
    """One raw sample -> {"x": (3, S, S), "y": int, "key", "scene", ["seg": (S, S) int64], ["mask": (S, S)
    float32 in [0, 1]], ["bg": (3, S, S)]}; mask and bg are decoded when background augmentation is on."""
    where = where_of(sample)
    need = ("rgb.png", "cls") + (("label.png",) if cfg.with_labels else ()) + (("mask.png",) if cfg.bg_aug else ())
    for member in need:
        if member not in sample:
            raise InputError(where, f"sample lacks member {member!r}")
    try:
        y = int(sample["cls"].decode().strip())
    except (UnicodeDecodeError, ValueError):
        raise InputError(f"{where}.cls", f"class id {sample['cls'][:20]!r} is not an integer") from None
    if not 0 <= y < len(classes):
        raise InputError(f"{where}.cls", f"class id {y} is outside index.json's {len(classes)} classes")
    meta = sample_meta(sample, where) if ("json" in sample or cfg.bg_aug or cfg.scenes) else {}
    name = meta.get("class_name")
    if name is not None and name != classes[y]:
        raise InputError(where, f"json class_name {name!r} differs from index.json's class {y} {classes[y]!r}")
    out: dict[str, Any] = {"x": image_tensor(decode_png(sample["rgb.png"], f"{where}.rgb.png"), cfg.size), "y": y,
                           "key": sample["__key__"], "scene": str(meta.get("scene_id", ""))}
    if cfg.with_labels:
        lab = torch.from_numpy(decode_png(sample["label.png"], f"{where}.label.png").astype(np.int64))
        if cfg.size is not None and tuple(lab.shape) != (cfg.size, cfg.size):
            lab = F.interpolate(lab[None, None].float(), size=(cfg.size, cfg.size), mode="nearest")[0, 0].long()
        out["seg"] = lab
    if cfg.bg_aug:
        mask = decode_png(sample["mask.png"], f"{where}.mask.png")
        out["mask"] = image_tensor(mask if mask.ndim == 2 else mask[..., 0], cfg.size)[0]
    return out


def decode_stage(src: Iterable[dict[str, Any]], cfg: ShardLoaderConfig,
                 classes: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """Decoded views; with skip_bad, a bad sample is logged and its count rides on the next item ("skipped"),
    with a bare {"skipped": n} at the end when the last samples were bad."""
    pending = 0
    for raw in src:
        try:
            item = decode_view(raw, cfg, classes)
        except InputError as exc:
            if not cfg.skip_bad:
                raise
            log.warning("skipping bad sample: %s", exc)
            pending += 1
            continue
        item["skipped"], pending = pending, 0
        yield item
    if pending:
        yield {"skipped": pending}


def collate_views(samples: list[dict[str, Any]], n_skipped: int = 0) -> dict[str, Any]:
    """Decoded views -> {"x": (B, 3, S, S), "y": (B,) int64, ["seg": (B, S, S)], "key", "scene", "n_skipped"};
    B may be 0 (a batch that only reports skipped samples)."""
    if not samples:
        return {"x": torch.zeros(0), "y": torch.zeros(0, dtype=torch.int64), "key": [], "scene": [],
                "n_skipped": n_skipped}
    out: dict[str, Any] = {
        "x": torch.stack([s["x"] for s in samples]),
        "y": torch.tensor([s["y"] for s in samples], dtype=torch.int64),
        "key": [s["key"] for s in samples], "scene": [s["scene"] for s in samples], "n_skipped": n_skipped,
    }
    if "seg" in samples[0]:
        out["seg"] = torch.stack([s["seg"] for s in samples])
    return out


def batch_stage(src: Iterable[dict[str, Any]], batch_size: int) -> Iterator[dict[str, Any]]:
    """Batches of `batch_size` decoded views (the last one partial) carrying the skipped counts."""
    items: list[dict[str, Any]] = []
    skipped = 0
    for item in src:
        skipped += int(item.get("skipped", 0))
        if "x" not in item:
            continue
        items.append(item)
        if len(items) == batch_size:
            yield collate_views(items, skipped)
            items, skipped = [], 0
    if items or skipped:
        yield collate_views(items, skipped)


# ------------------------------------------------------------------------------------------------ pipeline


def epoch_urls(urls: list[str], seed: int, epoch: int, shuffle: bool) -> list[str]:
    """The shard order of an epoch: permuted by (seed, epoch) when shuffling (the same on every process)."""
    urls = list(urls)
    if shuffle:
        random.Random(seed * 100003 + epoch).shuffle(urls)
    return urls


def _scene_of(sample: dict[str, Any]) -> str:
    return str(sample_meta(sample, where_of(sample)).get("scene_id", ""))


def shard_pipeline(data: ShardData, cfg: ShardLoaderConfig, epoch: int = 0, backgrounds: Any = None) -> Any:
    """A webdataset pipeline of batches (see module doc) over `cfg.split`'s shards.

    With shuffle_buffer > 0 the shard order is permuted and samples go through a shuffle buffer, both seeded by
    (seed, epoch), so an epoch's order is reproducible. `backgrounds` (a bgaug.BackgroundBank) is needed when
    cfg.bg_aug > 0.
    """
    import webdataset as wds
    from perfdata.downstream import bgaug

    urls = data.urls(cfg.split)
    if not urls:
        raise InputError(f"{data.root}/{INDEX_NAME}", f"no shards of split {cfg.split!r}")
    if cfg.batch_size < 1:
        raise ConfigError(f"batch size must be positive, got {cfg.batch_size}")
    if not 0.0 <= cfg.bg_aug <= 1.0:
        raise ConfigError(f"--bg-aug is a probability in [0, 1], got {cfg.bg_aug}")
    if cfg.bg_aug and backgrounds is None:
        raise ConfigError("background augmentation needs the split's background bank")
    shuffle = cfg.shuffle_buffer > 0
    stages: list[Any] = [wds.SimpleShardList(epoch_urls(urls, cfg.seed, epoch, shuffle)), wds.split_by_node,
                         wds.split_by_worker, data.sample_stage()]
    if cfg.scenes:
        keep = frozenset(data.split_scenes(cfg.split, cfg.scenes))
        stages.append(wds.select(lambda s: _scene_of(s) in keep))
    if shuffle:
        stages.append(wds.shuffle(cfg.shuffle_buffer, initial=cfg.shuffle_buffer,
                                  rng=random.Random(cfg.seed * 100003 + epoch)))
    stages.append(functools.partial(decode_stage, cfg=cfg, classes=data.classes))
    if cfg.bg_aug:
        stages.append(functools.partial(bgaug.augment_stage, bank=backgrounds, p=cfg.bg_aug, seed=cfg.seed,
                                        epoch=epoch))
    if cfg.hflip:
        stages.append(functools.partial(flip_stage, seed=cfg.seed, epoch=epoch))
    if cfg.colour_aug:
        stages.append(functools.partial(colour_stage, p=cfg.colour_aug, seed=cfg.seed, epoch=epoch))
    stages.append(functools.partial(batch_stage, batch_size=cfg.batch_size))
    return wds.DataPipeline(*stages)


def _seeded_views(src: Iterable[dict[str, Any]], seed: int, epoch: int, stream: int,
                  apply: Callable[[dict[str, Any], np.random.Generator], dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Items with a view ("x") through apply(item, rng), one generator default_rng([seed, epoch, rank, worker,
    stream]) drawn in stream order (apply draws the same amount for every view, so the draws do not depend on
    the content); other items pass as they are."""
    import webdataset as wds

    rank, _, worker, _ = wds.utils.pytorch_worker_info()
    rng = np.random.default_rng([seed, epoch, rank, worker, stream])
    for item in src:
        yield apply(item, rng) if "x" in item else item


def flip_stage(src: Iterable[dict[str, Any]], seed: int, epoch: int) -> Iterator[dict[str, Any]]:
    """Views mirrored left-right (x and seg; "flipped" records it) with probability 1/2 (stream 1 of
    _seeded_views)."""

    def flip(item: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        item = dict(item, flipped=bool(rng.random() < 0.5))
        if item["flipped"]:
            item["x"] = item["x"].flip(-1)
            if "seg" in item:
                item["seg"] = item["seg"].flip(-1)
        return item

    return _seeded_views(src, seed, epoch, 1, flip)


def colour_stage(src: Iterable[dict[str, Any]], p: float, seed: int, epoch: int) -> Iterator[dict[str, Any]]:
    """Views re-coloured (recolour.colour_transform; "recoloured" records it) with probability p (stream 2 of
    _seeded_views)."""
    from perfdata.downstream.recolour import colour_transform, recolour_image

    def recolour(item: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        change = bool(rng.random() < p)
        m, shift = colour_transform(rng)  # drawn for every view, so one view's draw does not shift the next's
        item = dict(item, recoloured=change)
        if change:
            item["x"] = recolour_image(item["x"], m, shift)
        return item

    return _seeded_views(src, seed, epoch, 2, recolour)


def worker_loader(pipeline: Any, workers: int, seed: int) -> Iterable[dict[str, Any]]:
    """`pipeline` itself (workers 0) or a DataLoader running it in `workers` processes (batches are made in the
    workers; their outputs interleave in a fixed round-robin order, so the stream stays deterministic)."""
    if workers <= 0:
        return pipeline
    return torch.utils.data.DataLoader(pipeline, batch_size=None, num_workers=workers,
                                       generator=torch.Generator().manual_seed(seed))
