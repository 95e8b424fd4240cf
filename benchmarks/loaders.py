"""2D loader throughput: samples/s with 2 DataLoader workers reading WebDataset shards, the same images as loose
PNG files, and pure PNG decode of the same bytes held in memory (the floor of any loader's cost); the same
shards and loose files over HTTP on loopback (an object store's access pattern), and both from disk with a cold
page cache. Prints one JSON object.

The images are synthetic object views (analytic renders, --size px) written as render folders and packed by
`perfdata pack`, cached under --cache. Each loader decodes the rgb PNG and the class of every sample into
(3, H, W) float tensors, batches of 32; every figure is the best of --repeats passes. The plain disk figures
read through a warm page cache; the `_cold` ones evict the files from it (posix_fadvise DONTNEED) before every
pass, as a dataset larger than memory is read. Loose files over HTTP use one kept-alive connection per worker.

    flock /work/locks/bench.lock .venv/bin/python benchmarks/loaders.py [--cache DIR] [--size 128]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import time
import urllib.parse
from collections.abc import Iterator
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


class LooseHTTP(torch.utils.data.Dataset):
    """The loose files fetched one GET each from `url` (the render folders served over HTTP/1.1), on one
    kept-alive connection per worker process."""

    def __init__(self, files: LooseFiles, renders: Path, url: str) -> None:
        self.items = [(str(p.relative_to(renders)), y) for p, y in files.items]
        self.url, self.conn, self.pid = urllib.parse.urlsplit(url), None, -1

    def __len__(self) -> int:
        return len(self.items)

    def get(self, rel: str) -> bytes:
        if self.conn is None or self.pid != os.getpid():
            self.conn, self.pid = http.client.HTTPConnection(self.url.hostname, self.url.port), os.getpid()
        self.conn.request("GET", f"/{urllib.parse.quote(rel)}")
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise OSError(f"GET {rel}: HTTP {resp.status}")
        return data

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from perfdata.downstream.loaders import decode_png, image_tensor

        rel, y = self.items[i]
        return image_tensor(decode_png(self.get(rel), rel), None), y


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


def evict(paths: list[Path]) -> None:
    """Drop the files' pages from the page cache (the next read comes from the disk)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def rate(make_batches: Any, repeats: int, cold: list[Path] | None = None) -> tuple[float, int]:
    """(best samples/s over `repeats` full passes, samples per pass); `cold` files are evicted from the page
    cache before every pass."""
    best, n = 0.0, 0
    for _ in range(repeats):
        if cold:
            evict(cold)
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


def _serve(root: Path, conn: Any) -> None:
    from perfdata.download import serve_directory

    server, url = serve_directory(root)
    conn.send(url)
    conn.recv()  # until the parent says stop
    server.shutdown()
    server.server_close()


@contextlib.contextmanager
def served(root: Path) -> Iterator[str]:
    """`root` over HTTP on loopback from a separate process (as a remote store would be: the loader's process
    does not also serve); yields the base URL."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(root, child), daemon=True)
    proc.start()
    try:
        yield parent.recv()
    finally:
        parent.send("stop")
        proc.join(10)


def main(argv: list[str] | None = None) -> dict[str, Any]:

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
    tars = sorted(shards.rglob("*.tar"))
    res["shards_disk_cold"], n_cold = rate(shard_batches(str(shards)), args.repeats, cold=tars)
    res["loose_png_cold"], n_loose_cold = rate(dataset_batches(files), args.repeats, cold=[p for p, _ in files.items])
    with served(shards) as url:
        res["shards_http"], n_http = rate(shard_batches(url), args.repeats)
    with served(renders) as url:
        res["loose_http"], n_loose_http = rate(dataset_batches(LooseHTTP(files, renders, url)), args.repeats)
    counts = {n_shards, n_loose, n_mem, n_cold, n_loose_cold, n_http, n_loose_http}
    assert counts == {len(files)}, f"every loader must see every sample: {counts} vs {len(files)}"
    res.update({
        "shards_vs_loose": res["shards_disk"] / res["loose_png"],
        "shards_vs_pure_decode": res["shards_disk"] / res["pure_decode"],
        "loose_vs_pure_decode": res["loose_png"] / res["pure_decode"],
        "shards_vs_loose_cold": res["shards_disk_cold"] / res["loose_png_cold"],
        "shards_vs_loose_http": res["shards_http"] / res["loose_http"],
        "http_vs_disk": res["shards_http"] / res["shards_disk"],
        "targets": {"shards_vs_loose": 1.5, "shards_vs_pure_decode": 0.85},
        "unit": "samples/s (best of repeats)", "shard_bytes": sum(p.stat().st_size for p in tars),
        "n_shards": len(tars),
    })
    print(json.dumps(res, indent=1, sort_keys=True))
    return res


if __name__ == "__main__":
    main()
