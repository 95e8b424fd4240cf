"""The pack stage: render folders (`perfdata.records.render`) -> WebDataset shards + index.json.

Samples are keyed `<scene_id>_<view>` (dots and slashes replaced by '_'); members, in this order: `rgb.png`,
`depth.png`, `depth.npy`, `mask.png`, `bg.png`, `label.png` (those the render wrote), `cls` (class id as
decimal text, where the scene has a class) and `json` (scene id, view, class name and id, K, c2w in the metric
world frame, width, height, world_from_grid). Scenes, never views, are split into train / val: the sorted scene
ids are permuted by `seed` and the first round(val_fraction * n) go to val (at least one when val_fraction > 0
and there are two or more scenes). Class ids index `classes`: the sorted class names of every packed scene.
Within a split, scenes are read in sorted order and views in cameras.json order, and the samples pass a seeded
shuffle buffer of `mix_bytes` (1 GiB; `--mix-mb`) on their way into the shards, so each shard mixes many scenes and
classes (a split smaller than the buffer is written in a uniform random order; 0 keeps scene order). A rerun
gives byte-identical shards (see `perfdata.shards`).

Each split is one item of the per-scene runner (`perfdata.runner`; markers in `<out>/.perfdata/pack/`), so
splits are written in parallel on any executor, a failing split never stops the other, and a rerun keeps a
split done with the same scenes and options. The splits write into the staging folder of one atomic shard set
(`perfdata.shards.ShardSet`); when every split is done, the set is renamed to `set-<digest>/` (kept splits'
shards linked in from the current set) and index.json switches to it last, so a killed or failed run leaves
the previous set whole.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from perfdata.devices import split_scene_ids
from perfdata.errors import ConfigError, InputError
from perfdata.markers import Markers
from perfdata.records.render import (
    SceneRender,
    class_index,
    iter_scene_samples,
    list_render_scenes,
    read_render,
)
from perfdata.runner import RunConfig, StageJob, TaskOutcome, run_stage
from perfdata.shards import INDEX_NAME, PackConfig, ShardInfo, ShardSet, ShardWriter, read_index

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackResult:
    """What pack wrote (or, on a dry run, would write)."""

    out_dir: Path
    index_path: Path | None
    shards: tuple[ShardInfo, ...]
    n_samples: dict[str, int]
    scenes: dict[str, tuple[str, ...]]
    classes: tuple[str, ...]
    incomplete: tuple[str, ...] = field(default_factory=tuple)
    """Scene folders without a done marker (left out)."""
    low_psnr: tuple[tuple[str, str], ...] = ()
    """(scene id, reason) of scenes left out by --min-psnr."""
    outcomes: tuple[TaskOutcome, ...] = ()
    """One per split."""


@dataclass(frozen=True)
class SplitPlan:
    """What one split's shards hold; its done marker records it, so a rerun knows whether it still holds."""

    split: str
    scenes: tuple[str, ...]
    classes: tuple[str, ...]
    maxcount: int
    maxsize: int
    mix_bytes: int = 0
    seed: int = 0

    def key(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def choose_scenes(renders_dir: Path, cfg: PackConfig) -> tuple[dict[str, SceneRender], list[str],
                                                                list[tuple[str, str]]]:
    """Complete render folders passing --min-psnr: (metas by scene id, incomplete ids, (id, reason) left out)."""
    scene_ids, incomplete = list_render_scenes(renders_dir)
    if incomplete:
        log.warning("%d scene folder(s) without a done marker left out: %s", len(incomplete), ", ".join(incomplete))
    metas = {sid: read_render(renders_dir / sid) for sid in scene_ids}
    low = []
    if cfg.min_psnr is not None:
        for sid, meta in list(metas.items()):
            if meta.psnr is None or meta.psnr < cfg.min_psnr:
                why = "no fit psnr recorded" if meta.psnr is None else f"fit psnr {meta.psnr:.2f} is below"
                low.append((sid, f"{why} --min-psnr {cfg.min_psnr}"))
                del metas[sid]
    if not metas:
        raise InputError(renders_dir, "no completed render folders (with cameras.json and DONE) to pack")
    return metas, incomplete, low


def pack_renders(renders_dir: str | Path, out_dir: str | Path, cfg: PackConfig,
                 run: RunConfig = RunConfig()) -> PackResult:
    """Pack every complete scene of `renders_dir` into `<split>-NNNNNN.tar` shards and index.json in `out_dir`."""
    renders_dir, out_dir = Path(renders_dir), Path(out_dir)
    if cfg.split_by != "scene":
        raise ConfigError(f"--split-by {cfg.split_by!r}: only 'scene' is supported (views never straddle splits)")
    split_scene_ids([], cfg.val_fraction, cfg.seed)  # checks the fraction before any reading
    metas, incomplete, low = choose_scenes(renders_dir, cfg)
    classes = tuple(sorted({m.class_name for m in metas.values() if m.class_name is not None}))
    splits = split_scene_ids(list(metas), cfg.val_fraction, cfg.seed)
    scenes = {k: tuple(v) for k, v in splits.items()}
    if cfg.dry_run or run.dry_run:
        counts = {k: sum(len(metas[s].views) for s in v) for k, v in splits.items()}
        return PackResult(out_dir, None, (), counts, scenes, classes, tuple(incomplete), tuple(low))
    plans = {name: SplitPlan(name, ids, classes, cfg.maxcount, cfg.maxsize, cfg.mix_bytes, cfg.seed)
             for name, ids in scenes.items()}
    markers = Markers.beside(out_dir, "pack")
    index: Path | None = None
    shards: tuple[ShardInfo, ...] = ()
    with ShardSet(out_dir) as shard_set:  # the splits write into its staging; index.json switches last
        job = StageJob(markers, functools.partial(pack_split, str(renders_dir), str(shard_set.staging), plans),
                       functools.partial(split_is_done, markers, str(out_dir), plans))
        outcomes = run_stage(job, list(plans), run)
        if all(o.status in ("done", "skipped") for o in outcomes):
            index, shards = commit_splits(shard_set, outcomes, cfg, classes, scenes)
    n_samples = {k: sum(s.samples for s in shards if s.split == k) for k in splits}
    return PackResult(out_dir, index, shards, n_samples, scenes, classes, tuple(incomplete), tuple(low),
                      tuple(outcomes))


def commit_splits(shard_set: ShardSet, outcomes: list[TaskOutcome], cfg: PackConfig, classes: tuple[str, ...],
                  scenes: dict[str, tuple[str, ...]]) -> tuple[Path, tuple[ShardInfo, ...]]:
    """Switch index.json to a set of every split's shards: written now (in the staging folder) or kept from the
    current set (linked in). Nothing new: the current index stays as it is."""
    current = read_index(shard_set.out_dir) if (shard_set.out_dir / INDEX_NAME).is_file() else None
    if current is not None and all(o.status == "skipped" for o in outcomes):
        return shard_set.out_dir / INDEX_NAME, tuple(ShardInfo(**s) for s in current["shards"])
    kept = {s["name"].rsplit("/", 1)[-1]: ShardInfo(**s) for s in (current or {}).get("shards", ())}
    staged = []
    for o in outcomes:
        for s in o.facts.get("shards", ()):
            info = ShardInfo(**s)
            staged.append(shard_set.adopt(kept[info.name]) if o.status == "skipped" else info)
    path, listed = shard_set.commit(list(classes), staged, seed=cfg.seed, val_fraction=cfg.val_fraction,
                                    split_by=cfg.split_by, scenes={k: list(v) for k, v in scenes.items()})
    return path, tuple(listed)


def split_is_done(markers: Markers, out_dir: str, plans: dict[str, SplitPlan], split: str) -> bool:
    """Done earlier with the same scenes, classes and shard sizes, and every shard it wrote still listed, the
    same, by the current index.json (so in the current shard set)."""
    rec = markers.read(split)
    if rec.state != "done" or rec.facts.get("plan") != plans[split].key():
        return False
    try:
        listed = {s["name"].rsplit("/", 1)[-1]: s for s in read_index(out_dir)["shards"]}
    except InputError:
        return False
    return all(listed.get(s["name"], {}).get("sha256") == s["sha256"] for s in rec.facts.get("shards", ()))


def pack_split(renders_dir: str, staging: str, plans: dict[str, SplitPlan], split: str) -> dict[str, Any]:
    """Write one split's shards into the run's staging folder (a failure removes them); facts: the plan and
    the shards written (names relative to the set)."""
    plan = plans[split]
    root = Path(renders_dir)
    with ShardWriter(staging, split, plan.maxcount, plan.maxsize, plan.mix_bytes, plan.seed) as writer:
        for sid in plan.scenes:
            meta = read_render(root / sid)
            cid = class_index(plan.classes, meta.class_name)
            for key, members in iter_scene_samples(root / sid, meta, cid):
                writer.write(key, members)
    return {"plan": plan.key(), "shards": [asdict(s) for s in writer.shards],
            "n_samples": sum(s.samples for s in writer.shards)}


__all__ = ["INDEX_NAME", "PackConfig", "PackResult", "pack_renders"]
