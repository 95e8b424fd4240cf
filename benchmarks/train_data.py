"""The dataset of benchmarks/train.py, built by perfdata's own pipeline and cached:
synth -> fit -> export -> label -> render -> pack.

Objects (CO3D-like): N_CLASSES shape classes x PER_CLASS scenes; whole scenes are held out (the split of
`perfdata.devices.split_scene_ids(ids, VAL_FRACTION, SEED)`, the one pack and the 3D trainers use). The ground's
colour correlates with the class in the train scenes (each class has its own tint, as CO3D categories share
capture environments) and is drawn at random in the held-out ones, so a classifier that reads the background
fails on val: the dataset where PeRFception found background augmentation necessary.
Rooms (ScanNet-like): N_ROOMS labelled rooms for seg3d. Every stage skips work already done, so a second call
only checks the cache.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CLASSES = ("sphere", "box", "cylinder", "cone", "torus")
TINTS = ((0.80, 0.25, 0.20), (0.20, 0.65, 0.25), (0.20, 0.35, 0.85), (0.85, 0.75, 0.15), (0.70, 0.25, 0.75))
VAL_FRACTION, SEED = 0.25, 0


@dataclass(frozen=True)
class DataSpec:
    per_class: int = 24
    """Object scenes per class (18 train / 6 held out on average): with 8, a CNN trained from scratch saw ~6
    objects per class and matched held-out scenes by colour, not shape. 40 (a v7 cache, 2026-12-04) did not
    help: cls2d 0.849 single-view / 0.79 on source images against 0.848 / 0.82 on this cache, the same
    settings, at 1.8x the epoch time."""
    n_rooms: int = 32
    """Labelled rooms for seg3d (24 train / 8 held out): with 6 training rooms the U-Net fitted them (train mIoU
    0.86) and stayed near 0.5 on unseen rooms; with 12 (cache v5) it reached 0.64 (dense) / 0.69 (sparse)."""
    views: int = 24
    """Source views per scene (on a ring 15 degrees apart: near enough for the render stage to interpolate
    between neighbouring training cameras, PeRFception's novel views; 12 views fall back to an orbit)."""
    size: int = 32
    """Source image side."""
    render_views: int = 16
    fit_steps: int = 300
    """Plenoxel steps per scene (~25 dB held-out PSNR on these 32 px objects; 30 steps gave ~15 dB blurs)."""
    fit_reso: tuple[int, ...] = (32, 64)
    """Coarse-to-fine grid resolutions (an object spans ~20 voxels of the final 64^3 grid)."""
    fit_rays: int = 1024
    label_fill: float = 16.0
    """Voxel sizes within which a voxel no labelled view saw (an object's interior) takes the nearest labelled
    voxel's label (the label stage's fill_voxels; its default 2 leaves the interior of a 20-voxel object
    unlabelled, so the render stage's background image kept it as a grey ghost of the object and cls3d's
    foreground was a hollow shell)."""


def object_ids(spec: DataSpec) -> list[str]:
    return [f"obj_{c}_{k:02d}" for c in CLASSES for k in range(spec.per_class)]


def synth_objects(root: Path, spec: DataSpec) -> list[str]:
    from perfdata.devices import split_scene_ids
    from perfdata.synthetic import ObjectSceneConfig, make_object_scene, write_scene

    ids = object_ids(spec)
    val = set(split_scene_ids(ids, VAL_FRACTION, SEED)["val"])
    rng = np.random.default_rng(SEED)
    for sid in ids:
        cls, k = CLASSES.index(sid.split("_")[1]), int(sid.split("_")[2])
        tint = TINTS[int(rng.integers(len(TINTS)))] if sid in val else TINTS[cls]
        if not (root / sid / "transforms.json").is_file():
            cfg = ObjectSceneConfig(ground_tint=tint)
            write_scene(make_object_scene(7000 + 100 * cls + k, spec.views, spec.size, CLASSES[cls], cfg, sid), root / sid)
    return ids


def synth_rooms(root: Path, spec: DataSpec) -> list[str]:
    from perfdata.synthetic import make_room_scene, write_scene

    ids = [f"room_{k:02d}" for k in range(spec.n_rooms)]
    for k, sid in enumerate(ids):
        if not (root / sid / "transforms.json").is_file():
            write_scene(make_room_scene(9000 + k, spec.views, spec.size, scene_id=sid), root / sid)
    return ids


def built(cache: Path, spec: DataSpec) -> dict[str, object]:
    return {"store": cache / "dataset.zarr", "shards": cache / "shards", "sources": cache / "src" / "objects",
            "objects": object_ids(spec), "rooms": [f"room_{k:02d}" for k in range(spec.n_rooms)]}


FIT_EXECUTOR = {"kind": "dask", "workers": 2, "threads_per_worker": 1}
"""Where build() fits the scenes: a dask LocalCluster of one single-threaded worker per core of the 2-core
machine (the fits are independent; one process fitted 152 scenes in 979 s). The caller must run under
`if __name__ == "__main__":` (a LocalCluster starts its workers by spawning)."""


def build(cache: Path, spec: DataSpec = DataSpec(), fit_shard: tuple[int, int] | None = None,
          executor: dict | None = None) -> dict[str, object]:
    """Build (or reuse) everything under `cache`; returns paths and the seconds each stage took (build.json,
    written when the shards are packed; a finished cache is reused as it is). Fits run on `executor`
    (ExecutorConfig fields; FIT_EXECUTOR by default). With `fit_shard` (i, n) only synthesise and fit the i-th
    of n parts of the scenes, in this process (parallel builders)."""
    import json

    from perfdata.pipelines.export import ExportConfig, export_fits
    from perfdata.pipelines.fit import fit_scenes
    from perfdata.pipelines.fitconfig import FitConfig
    from perfdata.pipelines.labels import LabelConfig, label_scenes
    from perfdata.pipelines.pack import PackConfig, pack_renders
    from perfdata.pipelines.render import RenderConfig, render_store

    from perfdata.executor import ExecutorConfig
    from perfdata.runner import FINAL_FAILURES, RunConfig

    executor = FIT_EXECUTOR if executor is None else executor

    if fit_shard is None and (cache / "shards" / "index.json").is_file() and (cache / "build.json").is_file():
        return {**built(cache, spec), "seconds": json.loads((cache / "build.json").read_text()), "cached": True}
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    src_obj, src_room = cache / "src" / "objects", cache / "src" / "rooms"
    objs, rooms = synth_objects(src_obj, spec), synth_rooms(src_room, spec)
    seconds["synth"] = time.perf_counter() - t
    fit_cfg = FitConfig(steps=spec.fit_steps, resolution=spec.fit_reso, batch_rays=spec.fit_rays, holdout_every=6,
                        eval_max_views=1, seed=SEED, device="cpu")
    t = time.perf_counter()
    run = RunConfig(shard=fit_shard) if fit_shard is not None else RunConfig(executor=ExecutorConfig(**executor))
    failed = [o for src in (src_obj, src_room)
              for o in fit_scenes("synthetic", src, None, cache / "fits", fit_cfg, run)
              if o.status in FINAL_FAILURES]
    if failed:
        raise RuntimeError(f"fits failed: {[(o.scene_id, o.error) for o in failed]}")
    seconds["fit"] = time.perf_counter() - t
    if fit_shard is not None:
        return {"seconds": seconds}
    t = time.perf_counter()
    store_path = cache / "dataset.zarr"
    export_fits(cache / "fits", str(store_path), ExportConfig(dataset="bench-train"))
    for ids, src in ((objs, src_obj), (rooms, src_room)):
        label_scenes(str(store_path), ids, LabelConfig(fill_voxels=spec.label_fill), reader="synthetic", data=str(src))
    seconds["export+label"] = time.perf_counter() - t
    t = time.perf_counter()
    render_store(str(store_path), cache / "renders",
                 RenderConfig(scenes=tuple(objs), n_views=spec.render_views, size=spec.size, seed=SEED,
                              contact_views=2, device="cpu"))
    seconds["render"] = time.perf_counter() - t
    t = time.perf_counter()
    if not (cache / "shards" / "index.json").is_file():
        pack_renders(cache / "renders", cache / "shards", PackConfig(maxcount=64, val_fraction=VAL_FRACTION, seed=SEED))
    seconds["pack"] = time.perf_counter() - t
    (cache / "build.json").write_text(json.dumps(seconds))
    return {**built(cache, spec), "seconds": seconds, "cached": False}


if __name__ == "__main__":
    import json
    import sys

    import torch

    shard = tuple(int(v) for v in sys.argv[2].split("/")) if len(sys.argv) > 2 else None
    torch.set_num_threads(1 if shard else 2)
    out = build(Path(sys.argv[1]), fit_shard=shard)  # type: ignore[arg-type]
    print(json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in out.items() if k != "objects"}))
