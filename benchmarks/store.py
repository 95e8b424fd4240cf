"""Size, speed and fidelity of the zarr dataset store; prints one JSON object.

For each grid (a synthetic ~1M-voxel shell with smooth SH fields, plus every fit folder given with --fits):
bytes per voxel (per array and total) against PeRFception's released layout (39 B/voxel: int64 index + f32
density + 27 uint8 SH, written here as a checkpoint-like file in the same run), export and load throughput
(load also against that reference file), bytes and time to fetch the scene over HTTP (loopback server honouring
Range), the quantisation error of decoded colours and densities, the PSNR of renders from the stored grid
against the unquantised grid (models.plenoxel), the codec comparison table that drives the codec choice, and
the cost of integrity: bytes per voxel and read time with the crc32c codec and perfdata's checked reads
(chunk files stat-ed, a failure named by chunk) against the same store written without checksums and read
with plain zarr, in the same run.

    .venv/bin/python benchmarks/store.py [--voxels 1000000] [--fits DIR ...] [--views 3] [--size 96]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from perfdata.grid import SparseGrid
from perfdata.store import WriteConfig, grid_arrays, open_store, refresh_root, write_scene
from perfdata.store.codecs import compare_codecs
from perfdata.store.location import Location

PERFCEPTION_BYTES_PER_VOXEL = 39


def synthetic_grid(target: int, reso: int = 256, seed: int = 0) -> SparseGrid:
    """A shell around a bumpy sphere holding about `target` voxels, with smooth density and SH fields
    (low-frequency sinusoids, amplitude falling with SH band) plus 1% noise: what a TV-regularised fit gives."""
    rng = np.random.default_rng(seed)
    g = (np.arange(reso) + 0.5) / reso * 2 - 1
    x, y, z = np.meshgrid(g, g, g, indexing="ij", sparse=True)
    r = np.sqrt(x**2 + y**2 + z**2)
    radius = 0.6 + 0.05 * np.sin(4 * np.arctan2(y, x)) * np.cos(3 * z)
    dist = np.abs(r - radius)
    thickness = np.quantile(dist[::4, ::4, ::4], target / reso**3)
    coords = np.argwhere(dist < thickness).astype(np.int32)
    c = (2 * coords + 1) / reso - 1
    freqs = rng.normal(0, 2.5, size=(27, 3))
    amp = np.tile(np.array([1.0] + [0.3] * 3 + [0.1] * 5), 3)
    sh = np.sin(c @ freqs.T + rng.uniform(0, 6, 27)) * amp
    sh = (sh * (1 + rng.normal(0, 0.01, sh.shape))).astype(np.float32)
    shell = np.abs(np.linalg.norm(c, axis=1) - 0.6) / thickness
    density = (80 * np.exp(-4 * shell**2) * (1 + rng.normal(0, 0.01, len(c)))).astype(np.float32)
    return SparseGrid(coords=coords, density=density, sh=sh, reso=(reso,) * 3, world_from_grid=np.eye(4))


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def reference_checkpoint(grid: SparseGrid, path: Path) -> dict[str, float]:
    """PeRFception's layout as torch.save writes it; its size and load time (the reference)."""
    q = np.clip(np.rint((grid.sh - grid.sh.min(0)) / np.maximum(np.ptp(grid.sh, 0) / 255, 1e-12)), 0, 255)
    state = {"model.links_idx": torch.from_numpy(grid.linear_index()),
             "model.density_data": torch.from_numpy(grid.density[:, None].copy()),
             "model.sh_data": torch.from_numpy(q.astype(np.uint8))}
    torch.save({"state_dict": state}, path)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        torch.load(path, map_location="cpu", weights_only=True)
        times.append(time.perf_counter() - t0)
    return {"bytes_per_voxel": path.stat().st_size / grid.n_voxels, "load_s": statistics.median(times)}


def colour_errors(grid: SparseGrid, stored: SparseGrid, seed: int = 0) -> dict[str, float]:
    """Decoded-colour error at random view directions (one per voxel) and density error."""
    from perfdata.models.sh import eval_sh_basis, sh_to_rgb

    ref = grid.sorted()
    dirs = torch.nn.functional.normalize(torch.randn(ref.n_voxels, 3, generator=torch.Generator().manual_seed(seed)), dim=1)
    basis = eval_sh_basis(dirs, 2)
    a = sh_to_rgb(torch.from_numpy(ref.sh), basis)
    b = sh_to_rgb(torch.from_numpy(stored.sh), basis)
    mse = float(((a - b) ** 2).mean())
    return {"colour_max_abs_err": float((a - b).abs().max()), "colour_psnr_db": -10 * np.log10(max(mse, 1e-20)),
            "density_max_rel_err": float((np.abs(stored.density - ref.density) / np.maximum(np.abs(ref.density), 1e-3)).max())}


def render_psnr(grid: SparseGrid, stored: SparseGrid, n_views: int, size: int) -> dict[str, Any]:
    """PSNR of renders of the stored grid against renders of the unquantised grid, orbit cameras."""
    from perfdata.models.plenoxel import PlenoxelGrid, render_camera

    from perfdata import camera

    T = np.asarray(grid.world_from_grid)
    scale = float(np.cbrt(abs(np.linalg.det(T[:3, :3]))))
    centre = T[:3, 3]
    K = camera.intrinsics_from_fov(np.radians(45.0), size, size)
    ref, quant = PlenoxelGrid.from_sparse(grid), PlenoxelGrid.from_sparse(stored)
    psnrs, seconds = [], []
    for i in range(n_views):
        ang = 2 * np.pi * i / n_views
        eye = centre + scale * 2.6 * np.array([np.cos(ang), np.sin(ang), 0.5])
        c2w = camera.look_at(eye, centre, up=T[:3, 2] / scale)
        t0 = time.perf_counter()
        a = render_camera(ref, K, c2w, size, size)["rgb"]
        seconds.append(time.perf_counter() - t0)
        b = render_camera(quant, K, c2w, size, size)["rgb"]
        mse = float(((a - b) ** 2).mean())
        psnrs.append(-10 * np.log10(max(mse, 1e-20)))
    return {"render_psnr_stored_vs_unquantised_db": [round(p, 2) for p in psnrs], "views": n_views, "size": size,
            "render_seconds_per_view": round(statistics.median(seconds), 2)}


def http_fetch(store_path: Path, scene_id: str) -> dict[str, float]:
    """Bytes the server sends (and seconds) to open the store and read one scene over loopback HTTP."""
    from perfdata.download.mirror import serve_directory

    server, base = serve_directory(store_path.parent)
    with server:
        t0 = time.perf_counter()
        store = open_store(f"{base}/{store_path.name}")
        opened = server.bytes_sent
        grid = store.read_scene(scene_id)
        seconds = time.perf_counter() - t0
        return {"http_open_bytes": opened, "http_scene_bytes": server.bytes_sent - opened,
                "http_requests": len(server.requests), "http_seconds": round(seconds, 3),
                "http_voxels": grid.n_voxels}


def checksum_cost(name: str, grid: SparseGrid, work: Path, repeats: int = 7) -> dict[str, Any]:
    """The cost of integrity for one scene: stored bytes per voxel with and without the crc32c codec, and median
    seconds to read every per-voxel array three ways, interleaved so machine noise hits all alike: plain zarr
    on the store without checksums (the reference), plain zarr with them (the codec's cost), and perfdata's
    checked read (crc32c + chunk files stat-ed + failures named by chunk, what render and the loaders use)."""
    import zarr

    from perfdata.store.schema import PER_VOXEL

    paths = {}
    for checksum in (True, False):
        paths[checksum] = work / f"checksum_{checksum}.zarr"
        loc, cfg = Location(str(paths[checksum])), WriteConfig(checksum=checksum)
        write_scene(loc, name, grid_arrays(grid, cfg), cfg)
        refresh_root(loc, "bench")

    def plain(path: Path) -> None:
        group = zarr.open_group(str(path / "scenes" / name), mode="r")
        _ = [group[a][...] for a in PER_VOXEL if a in group]

    readers = {"no_checksum_zarr": lambda: plain(paths[False]), "checksum_zarr": lambda: plain(paths[True]),
               "checksum_perfdata": lambda: open_store(str(paths[True])).read_arrays(name)}
    times: dict[str, list[float]] = {k: [] for k in readers}
    for i in range(repeats + 1):
        for key, read in readers.items():
            t0 = time.perf_counter()
            read()
            if i:  # the first round warms the page cache
                times[key].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    with_cs, without = (dir_bytes(paths[c] / "scenes" / name) / grid.n_voxels for c in (True, False))
    return {
        "checksum_bytes_per_voxel": round(with_cs, 4), "no_checksum_bytes_per_voxel": round(without, 4),
        "checksum_overhead_bytes_per_voxel": round(with_cs - without, 4),
        **{f"read_seconds_{k}": round(v, 4) for k, v in med.items()},
        "checksum_read_time_ratio": round(med["checksum_zarr"] / med["no_checksum_zarr"], 3),
        "checked_read_time_ratio": round(med["checksum_perfdata"] / med["no_checksum_zarr"], 3),
    }


def measure_grid(name: str, grid: SparseGrid, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Every figure for one grid (see the module doc)."""
    store_path = work / "bench.zarr"
    loc, cfg = Location(str(store_path)), WriteConfig()
    t0 = time.perf_counter()
    scene = grid_arrays(grid, cfg)
    attrs = write_scene(loc, name, scene, cfg)
    export_s = time.perf_counter() - t0
    refresh_root(loc, "bench")
    scene_dir = store_path / "scenes" / name
    per_array = {a: round(dir_bytes(scene_dir / a) / grid.n_voxels, 3) for a in scene.arrays}
    total = dir_bytes(scene_dir) / grid.n_voxels
    loads = []
    for _ in range(3):
        t0 = time.perf_counter()
        stored = open_store(str(store_path)).read_scene(name)
        loads.append(time.perf_counter() - t0)
    ref = reference_checkpoint(grid, work / f"{name}.ckpt")
    out: dict[str, Any] = {
        "n_voxels": grid.n_voxels, "reso": list(grid.reso), "bytes_per_voxel": round(total, 3),
        "bytes_per_voxel_by_array": per_array, "perfception_bytes_per_voxel": PERFCEPTION_BYTES_PER_VOXEL,
        "perfception_ckpt_bytes_per_voxel_measured": round(ref["bytes_per_voxel"], 3),
        "size_ratio_vs_perfception": round(total / PERFCEPTION_BYTES_PER_VOXEL, 3), "codecs": attrs.codecs,
        "quantisation": attrs.quantisation, "export_seconds": round(export_s, 3),
        "export_voxels_per_s": round(grid.n_voxels / export_s), "load_seconds": round(statistics.median(loads), 3),
        "load_voxels_per_s": round(grid.n_voxels / statistics.median(loads)),
        "reference_ckpt_load_seconds": round(ref["load_s"], 3),
        "load_time_ratio_vs_ckpt": round(statistics.median(loads) / ref["load_s"], 2),
        **colour_errors(grid, stored), **http_fetch(store_path, name),
    }
    out["http_scene_bytes_vs_stored"] = round(out["http_scene_bytes"] / dir_bytes(scene_dir), 3)
    out["integrity"] = checksum_cost(name, grid, work)
    if args.views:
        out.update(render_psnr(grid.sorted(), stored, args.views, args.size))
    if args.codec_table:
        out["codec_table"] = {a: compare_codecs(d, cfg.chunk_bytes) for a, d in scene.arrays.items()}
        out["chunk_table_sh"] = [
            {k: r[k] for k in ("codec", "chunk_bytes", "bytes_per_row", "write_s", "read_s")}
            for cb in (1 << 20, 4 << 20, 16 << 20)
            for r in compare_codecs(scene.arrays["sh"], cb) if r["codec"].startswith("columns-delta")
        ]
    return out


def fit_grids(fits: list[str]) -> list[tuple[str, SparseGrid]]:
    """(scene id, grid) of every done fit folder under the given folders."""
    from perfdata.pipelines.export import find_fits

    found = []
    for root in fits:
        done, _ = find_fits(root)
        found += [(f"fit_{p.name}", SparseGrid.load(p / "grid.npz")) for p in done]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voxels", type=int, default=1_000_000, help="Voxels of the synthetic grid (0: none).")
    parser.add_argument("--fits", nargs="*", default=[], help="Fit output folders (DIR/<scene>/grid.npz, DONE).")
    parser.add_argument("--views", type=int, default=3, help="Render views per grid for the PSNR (0: none).")
    parser.add_argument("--size", type=int, default=96, help="Render width = height.")
    parser.add_argument("--no-codec-table", dest="codec_table", action="store_false")
    args = parser.parse_args()
    torch.set_num_threads(2)
    grids = ([("synthetic_shell", synthetic_grid(args.voxels))] if args.voxels else []) + fit_grids(args.fits)
    results = {}
    for name, grid in grids:
        with tempfile.TemporaryDirectory() as tmp:
            results[name] = measure_grid(name, grid, Path(tmp), args)
    print(json.dumps({"benchmark": "store", "target_bytes_per_voxel": 20, "grids": results}, indent=1))


if __name__ == "__main__":
    main()
