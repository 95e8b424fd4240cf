"""2D loader throughput: samples/s with 2 DataLoader workers reading WebDataset shards, the same images as loose
PNG files, and pure PNG decode of the same bytes held in memory (the floor of any loader's cost); and the same
shards over HTTP on loopback against disk. Prints one JSON object.

The images are synthetic object views (analytic renders, --size px) written as render folders and packed by
`perfdata pack`, cached under --cache. Each loader decodes the rgb PNG and the class of every sample into
(3, H, W) float tensors, batches of 32; every figure is the best of --repeats passes (warm page cache for all).

    flock /work/locks/bench.lock .venv/bin/python benchmarks/loaders.py [--cache DIR] [--size 128]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

BATCH, WORKERS = 32, 2


def build(cache: Path, n_scenes: int, n_views: int, size: int) -> tuple[Path, Path]:
    """Render folders (rgb.png per view, cameras.json, DONE) and their shards; reused when present."""
    from perfdata.pipelines.pack import PackConfig, pack_renders

    from perfdata.images import write_png
    from perfdata.synthetic import SHAPE_CLASSES, make_object_scene

    renders, shards = cache / "renders", cache / "shards"
    for i in range(n_scenes):
        shape = SHAPE_CLASSES[i % 5]
        sid = f"obj_{shape}_{i:03d}"
        if (renders / sid / "DONE").is_file():
            continue
        scene = make_object_scene(500 + i, n_views, size, shape, scene_id=sid)
        (renders / sid).mkdir(parents=True, exist_ok=True)
        views = []
        for v, frame in enumerate(scene.frames):
            write_png(renders / sid / f"{v:05d}.rgb.png", (np.clip(frame.image, 0, 1) * 255 + 0.5).astype(np.uint8))
            views.append({"name": f"{v:05d}", "K": frame.K.tolist(), "c2w": frame.c2w.tolist(), "width": size,
                          "height": size})
        meta = {"format_version": 1, "scene_id": sid, "class_name": shape, "views": views, "members": ["rgb.png"],
                "world_from_grid": np.eye(4).tolist()}
        (renders / sid / "cameras.json").write_text(json.dumps(meta))
        (renders / sid / "DONE").write_text("")
    if not (shards / "index.json").is_file():
        pack_renders(renders, shards, PackConfig(maxcount=64, val_fraction=0.0, seed=0))
    return renders, shards


class LooseFiles(torch.utils.data.Dataset):
    """The views as loose files: item = (rgb PNG decoded from its own file, class id from cameras.json)."""

    def __init__(self, renders: Path) -> None:
        metas = [json.loads(p.read_text()) for p in sorted(renders.glob("*/cameras.json"))]
        classes = sorted({m["class_name"] for m in metas})
        self.items = [(renders / m["scene_id"] / f"{v['name']}.rgb.png", classes.index(m["class_name"]))
                      for m in metas for v in m["views"]]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from perfdata.downstream.loaders import decode_png, image_tensor

        path, y = self.items[i]
        return image_tensor(decode_png(path.read_bytes(), str(path)), None), y


class InMemory(torch.utils.data.Dataset):
    """The same PNG bytes, read once into memory: item = decode only (the floor)."""

    def __init__(self, files: LooseFiles) -> None:
        self.items = [(p.read_bytes(), y) for p, y in files.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from perfdata.downstream.loaders import decode_png, image_tensor

        data, y = self.items[i]
        return image_tensor(decode_png(data, "memory"), None), y


def rate(make_batches: Any, repeats: int) -> tuple[float, int]:
    """(best samples/s over `repeats` full passes, samples per pass)."""
    best, n = 0.0, 0
    for _ in range(repeats):
        t, n = time.perf_counter(), 0
        for batch in make_batches():
            n += len(batch["y"]) if isinstance(batch, dict) else len(batch[1])
        best = max(best, n / (time.perf_counter() - t))
    return best, n


def shard_batches(root: str) -> Any:
    from perfdata.downstream import loaders as L

    data = L.ShardData.open(root)
    cfg = L.ShardLoaderConfig("train", batch_size=BATCH, size=None, shuffle_buffer=0)
    return lambda: L.worker_loader(L.shard_pipeline(data, cfg), WORKERS, 0)


def dataset_batches(ds: torch.utils.data.Dataset) -> Any:
    return lambda: torch.utils.data.DataLoader(ds, batch_size=BATCH, num_workers=WORKERS)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from perfdata.download import serve_directory

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path("/tmp/perfdata-bench-loaders"))
    ap.add_argument("--scenes", type=int, default=20)
    ap.add_argument("--views", type=int, default=24)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cache = args.cache / f"s{args.scenes}_v{args.views}_px{args.size}"
    renders, shards = build(cache, args.scenes, args.views, args.size)
    files = LooseFiles(renders)
    res: dict[str, Any] = {"workers": WORKERS, "batch": BATCH, "size": args.size, "samples": len(files)}
    res["shards_disk"], n_shards = rate(shard_batches(str(shards)), args.repeats)
    res["loose_png"], n_loose = rate(dataset_batches(files), args.repeats)
    res["pure_decode"], n_mem = rate(dataset_batches(InMemory(files)), args.repeats)
    server, url = serve_directory(shards)
    with server:
        res["shards_http"], n_http = rate(shard_batches(url), args.repeats)
    assert n_shards == n_loose == n_mem == n_http == len(files), "every loader must see every sample"
    res.update({
        "shards_vs_loose": res["shards_disk"] / res["loose_png"],
        "shards_vs_pure_decode": res["shards_disk"] / res["pure_decode"],
        "http_vs_disk": res["shards_http"] / res["shards_disk"],
        "targets": {"shards_vs_loose": 1.5, "shards_vs_pure_decode": 0.85},
        "unit": "samples/s (best of repeats)", "shard_bytes": sum(p.stat().st_size for p in shards.rglob("*.tar")),
        "n_shards": len(list(shards.rglob("*.tar"))),
    })
    print(json.dumps(res, indent=1, sort_keys=True))
    return res


if __name__ == "__main__":
    main()
