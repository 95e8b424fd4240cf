"""Tiny inputs for the downstream tests, built with the project's own writers (a uniquely named module imported
through sys.path, so it never collides with another test folder's helpers)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from perfdata.pipelines.pack import PackConfig, pack_renders

from perfdata.grid import SparseGrid
from perfdata.images import write_png
from perfdata.store.location import Location
from perfdata.store.writer import WriteConfig, grid_arrays, refresh_root, write_scene
from perfdata.synthetic import make_object_scene

SH_C0 = 0.28209479177387814
ROOM_NAMES = ["floor", "sphere", "box"]
"""Label names of the test rooms (room_grid)."""


def write_render_folder(renders: Path, shape: str, seed: int, n_views: int, size: int) -> None:
    """A synthetic object scene written the way pipelines/render.py lays out a render folder."""
    scene = make_object_scene(seed, n_views=n_views, size=size, shape=shape, scene_id=f"obj_{shape}_{seed}")
    folder = renders / scene.scene_id
    folder.mkdir(parents=True)
    views = []
    for i, frame in enumerate(scene.frames):
        name = f"{i:05d}"
        write_png(folder / f"{name}.rgb.png", (np.clip(frame.image, 0, 1) * 255 + 0.5).astype(np.uint8))
        write_png(folder / f"{name}.mask.png", np.where(frame.mask, 255, 0).astype(np.uint8))
        write_png(folder / f"{name}.bg.png", background_only(frame.image, frame.mask))
        write_png(folder / f"{name}.label.png", np.where(frame.labels < 0, 255, frame.labels).astype(np.uint8))
        views.append({"name": name, "K": frame.K.tolist(), "c2w": frame.c2w.tolist(), "width": size, "height": size})
    meta = {"format_version": 1, "scene_id": scene.scene_id, "class_name": shape, "views": views,
            "members": ["rgb.png", "mask.png", "bg.png", "label.png"], "world_from_grid": np.eye(4).tolist()}
    (folder / "cameras.json").write_text(json.dumps(meta))
    (folder / "DONE").write_text("")


def background_only(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3): the image with its foreground replaced by the median background colour (a stand-in for
    the render stage's bg.png, which renders the field without its foreground voxels)."""
    out = np.clip(image, 0, 1).copy()
    out[mask] = np.median(out[~mask], axis=0) if (~mask).any() else 0.5
    return (out * 255 + 0.5).astype(np.uint8)


def make_shards(tmp: Path, shapes: Sequence[str], per_class: int, n_views: int, size: int = 32) -> Path:
    """Render folders of per_class scenes per shape, packed into shards (val_fraction 0.25); the shard folder."""
    renders = tmp / "renders"
    for shape in shapes:
        for k in range(per_class):
            write_render_folder(renders, shape, 100 + k, n_views, size)
    pack_renders(renders, tmp / "shards", PackConfig(maxcount=16, val_fraction=0.25, seed=0))
    return tmp / "shards"


def _sh_constant(rgb: np.ndarray) -> np.ndarray:
    """(n, 3) colours in [0, 1] -> (n, 27) SH with only the DC terms set."""
    sh = np.zeros((len(rgb), 27), np.float32)
    sh[:, [0, 9, 18]] = (rgb - 0.5) / SH_C0
    return sh


def _centres(reso: int) -> np.ndarray:
    g = (np.arange(reso) + 0.5) / reso * 2 - 1
    return np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)


def shape_mask(kind: str, pts: np.ndarray, centre: np.ndarray, half: float) -> np.ndarray:
    """(n,) bool: points inside a sphere of radius `half` or an axis box of half-side `half`."""
    d = pts - centre
    return np.linalg.norm(d, axis=1) <= half if kind == "sphere" else np.abs(d).max(axis=1) <= half


def object_grid(kind: str, seed: int, reso: int = 32) -> SparseGrid:
    """A voxelised sphere or box of random size, position and colour (the colour carries no class)."""
    rng = np.random.default_rng(seed)
    pts = _centres(reso)
    half = rng.uniform(0.35, 0.6)
    keep = shape_mask(kind, pts, rng.uniform(-0.2, 0.2, 3), half)
    coords = np.argwhere(keep.reshape(reso, reso, reso)).astype(np.int32)
    n = len(coords)
    rgb = np.clip(rng.uniform(0.2, 0.8, 3) + rng.normal(0, 0.05, (n, 3)), 0, 1)
    density = rng.uniform(20, 60, n).astype(np.float32)
    return SparseGrid(coords, density, _sh_constant(rgb), (reso, reso, reso), np.eye(4))


def room_grid(seed: int, reso: int = 32) -> SparseGrid:
    """A floor slab (label 0), a sphere (1) and a box (2) at random places, with class-tinted noisy colours;
    one voxel in 20 is unlabelled (-1)."""
    rng = np.random.default_rng(seed)
    pts = _centres(reso)
    labels = np.full(len(pts), -2, np.int16)
    labels[pts[:, 2] < -0.75] = 0
    for label, kind in ((1, "sphere"), (2, "box")):
        centre = np.array([*rng.uniform(-0.5, 0.5, 2), rng.uniform(-0.3, 0.3)])
        inside = shape_mask(kind, pts, centre, rng.uniform(0.2, 0.35)) & (labels == -2)
        labels[inside] = label
    keep = labels >= 0
    coords = np.argwhere(keep.reshape(reso, reso, reso)).astype(np.int32)
    lab = labels[keep]
    tint = np.array([[0.3, 0.3, 0.3], [0.7, 0.4, 0.3], [0.3, 0.5, 0.7]])
    rgb = np.clip(tint[lab] + rng.normal(0, 0.12, (len(lab), 3)), 0, 1)
    lab = np.where(rng.random(len(lab)) < 0.05, -1, lab).astype(np.int16)
    density = rng.uniform(20, 60, len(lab)).astype(np.float32)
    return SparseGrid(coords, density, _sh_constant(rgb), (reso, reso, reso), np.eye(4), labels=lab)


def write_store(path: Path, scenes: Sequence[tuple[str, SparseGrid, str | None, dict]]) -> Path:
    """Write (scene_id, grid, class_name, extra attrs) rows into a real zarr store at `path`."""
    loc, cfg = Location(str(path), {}), WriteConfig()
    for sid, grid, class_name, extra in scenes:
        write_scene(loc, sid, grid_arrays(grid, cfg, class_name=class_name, extra=extra), cfg)
    refresh_root(loc, "test")
    return path


def ddp_worker(shards: str, out: str) -> int:
    """One process of a 2-process gloo run (started by distributed.launch): one epoch of cls2d, recording the
    sample keys of every step (a list per step) and the weights (parameters; batch-norm statistics stay per
    rank until DDP broadcasts rank 0's at the next forward) after the first one into `out`."""
    import os

    import torch
    from perfdata.downstream.distributed import unwrap
    from perfdata.downstream.train import TrainConfig, TrainHooks, train

    rank = int(os.environ["RANK"])
    keys: list[list[str]] = []

    def on_step(epoch: int, step: int, batch: dict, model: torch.nn.Module) -> None:
        keys.append(list(batch["key"]))
        if step == 0:
            params = {k: v.detach().clone() for k, v in unwrap(model).named_parameters()}
            torch.save(params, f"{out}/w{rank}.pt")

    cfg = TrainConfig("cls2d", shards, f"{out}/train", epochs=1, batch_size=4, widths=(4, 8), device="cpu", size=16,
                      shuffle_buffer=0)
    train(cfg, TrainHooks(on_step=on_step))
    Path(f"{out}/keys{rank}.json").write_text(json.dumps(keys))
    return rank


def teardown_worker(out: str) -> int:
    """One process of a 2-process group that joins and leaves it; rank 0 is slow to leave (as when it alone
    writes a run's outputs). Each rank records when it has left into `out`."""
    import time

    import torch
    from perfdata.downstream import distributed as D

    info = D.dist_from_env()
    D.setup(info, torch.device("cpu"))
    if info.rank == 0:
        time.sleep(1.0)
        Path(f"{out}/slow_done").write_text(str(time.time()))
    D.teardown(info)
    Path(f"{out}/left{info.rank}").write_text(str(time.time()))
    return info.rank
