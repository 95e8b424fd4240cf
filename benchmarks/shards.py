"""The cost of the shard checks readers make (perfdata.shardcheck); prints one JSON object.

Packs `--samples` views (real PNGs of `--size` px, with the members `perfdata pack` writes) into an atomic shard
set, then streams every sample three ways, interleaved, median of `--repeats`: webdataset's own
`tarfile_to_samples` (the reference), perfdata's checked stream (index.json stat of every shard at open, sample
count, size and sha256 of each shard as it streams), and the same with `verify` (every shard hashed up front).
Also the full training pipeline (decode + resize + batch) with the checks, for scale.

    .venv/bin/python benchmarks/shards.py [--samples 2000] [--size 64] [--maxcount 200] [--repeats 5]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import webdataset as wds
from perfdata.downstream.loaders import ShardData, ShardLoaderConfig, shard_pipeline
from PIL import Image

from perfdata.shardcheck import open_shard_set, shard_samples
from perfdata.shards import ShardSet


def png(rng: np.random.Generator, size: int) -> bytes:
    """A smooth random image (compresses like a render, unlike noise)."""
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize((size, size), Image.BILINEAR).save(buf, format="PNG")
    return buf.getvalue()


def write_shards(out: Path, n: int, size: int, maxcount: int) -> int:
    rng = np.random.default_rng(0)
    with ShardSet(out) as shard_set:
        with shard_set.writer("train", maxcount) as writer:
            for i in range(n):
                meta = {"scene_id": f"s{i // 50}", "view": f"{i % 50:05d}", "class_id": i % 3}
                writer.write(f"s{i // 50}_{i % 50:05d}", {"rgb.png": png(rng, size), "mask.png": png(rng, size),
                                                         "cls": str(i % 3).encode(), "json": json.dumps(meta).encode()})
        shard_set.commit(["a", "b", "c"])
    return sum(p.stat().st_size for p in out.rglob("*.tar"))


def count(pipeline: Any) -> int:
    return sum(1 for _ in pipeline)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--maxcount", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "shards"
        n_bytes = write_shards(out, args.samples, args.size, args.maxcount)
        _, entries = open_shard_set(out)
        urls = [str(e.path) for e in entries]
        runs = {
            "webdataset": lambda: count(wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples())),
            "checked": lambda: count(wds.DataPipeline(wds.SimpleShardList(urls),
                                                      shard_samples(open_shard_set(out)[1]))),
            "checked_verify": lambda: count(wds.DataPipeline(wds.SimpleShardList(urls),
                                                             shard_samples(open_shard_set(out, verify=True)[1]))),
            "pipeline_checked": lambda: count(shard_pipeline(ShardData.open(out), ShardLoaderConfig(
                "train", batch_size=32, size=args.size, shuffle_buffer=0))),
        }
        times: dict[str, list[float]] = {k: [] for k in runs}
        for i in range(args.repeats + 1):
            for key, run in runs.items():
                t0 = time.perf_counter()
                n = run()
                if i:  # the first round warms the page cache
                    times[key].append(time.perf_counter() - t0)
                assert n == (args.samples if key != "pipeline_checked" else -(-args.samples // 32)), (key, n)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({
        "benchmark": "shards", "samples": args.samples, "shards": len(urls), "bytes": n_bytes, "size": args.size,
        **{f"stream_seconds_{k}": round(v, 4) for k, v in med.items()},
        "samples_per_s_webdataset": round(args.samples / med["webdataset"]),
        "samples_per_s_checked": round(args.samples / med["checked"]),
        "samples_per_s_pipeline_checked": round(args.samples / med["pipeline_checked"]),
        "checked_time_ratio_vs_webdataset": round(med["checked"] / med["webdataset"], 3),
        "verify_time_ratio_vs_webdataset": round(med["checked_verify"] / med["webdataset"], 3),
        "check_share_of_pipeline": round((med["checked"] - med["webdataset"]) / med["pipeline_checked"], 4),
    }, indent=1))


if __name__ == "__main__":
    main()
