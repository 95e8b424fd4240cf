"""Write / read round trips of the zarr dataset store, locally and over HTTP with Range."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from perfdata.errors import FormatVersionError, InputError
from perfdata.store import (
    WriteConfig,
    dataset_stats,
    densify,
    grid_arrays,
    open_store,
    refresh_root,
    write_scene,
)
from perfdata.store import writer as writer_mod
from perfdata.store.location import Location


def write_store(path: Path, grids: dict, cfg: WriteConfig = WriteConfig(), **attrs) -> Location:
    loc = Location(str(path))
    for scene_id, grid in grids.items():
        write_scene(loc, scene_id, grid_arrays(grid, cfg, **attrs), cfg)
    refresh_root(loc, "test")
    return loc


def stored_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_round_trip_is_sorted_and_within_quantisation(tmp_path, make_grid):
    grid = make_grid(64, labels=True, logits=4)
    write_store(tmp_path / "s.zarr", {"a": grid}, class_name="ball", metrics={"psnr": 31.5})
    store = open_store(str(tmp_path / "s.zarr"))
    assert store.scene_ids == ("a",) and store.root.classes == ("ball",) and store.root.n_scenes == 1
    back, ref = store.read_scene("a"), grid.sorted()
    np.testing.assert_array_equal(back.coords, ref.coords)
    assert np.all(np.diff(back.linear_index()) > 0)
    scale = np.asarray(store.array("a", "sh").attrs["sh_scale"])
    assert np.all(np.abs(back.sh - ref.sh) <= scale / 2 + 1e-6)
    assert np.all(np.abs(back.density - ref.density) <= np.abs(ref.density) * 2**-11 + 1e-7)
    np.testing.assert_array_equal(back.labels, ref.labels)
    assert np.abs(back.logits - ref.logits).max() < 2e-3
    np.testing.assert_allclose(back.world_from_grid, grid.world_from_grid)
    attrs = store.scene_attrs("a")
    assert attrs.complete and attrs.metrics == {"psnr": 31.5} and attrs.n_voxels == grid.n_voxels
    assert attrs.quantisation["density_dtype"] == "float16" and attrs.quantisation["sh_max_abs_err"] < 0.01
    t = store.read_tensors("a")
    assert t["sh"].shape == (grid.n_voxels, 27) and t["labels"].dtype.is_floating_point is False


def test_smooth_field_compresses_under_20_bytes_per_voxel(tmp_path, make_grid):
    grid = make_grid(96)
    write_store(tmp_path / "s.zarr", {"a": grid})
    per_voxel = stored_bytes(tmp_path / "s.zarr" / "scenes" / "a") / grid.n_voxels
    assert per_voxel < 20.0, per_voxel
    attrs = open_store(str(tmp_path / "s.zarr")).scene_attrs("a")
    assert set(attrs.codecs) == {"coords", "density", "sh"}


def test_density_falls_back_to_float32_when_float16_overflows(tmp_path, make_grid):
    grid = make_grid(32)
    grid.density[0] = 1e6
    write_store(tmp_path / "s.zarr", {"a": grid})
    store = open_store(str(tmp_path / "s.zarr"))
    assert store.array("a", "density").dtype == np.float32
    assert store.read_scene("a").density.max() == pytest.approx(1e6)


def test_failed_write_leaves_no_scene_and_no_temp(tmp_path, make_grid, monkeypatch):
    loc = write_store(tmp_path / "s.zarr", {"a": make_grid(32)})
    calls = []

    def broken(data, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return original(data, *args, **kwargs)

    original = writer_mod.choose_codec
    monkeypatch.setattr(writer_mod, "choose_codec", broken)
    with pytest.raises(RuntimeError):
        write_scene(loc, "b", grid_arrays(make_grid(32, seed=1), WriteConfig()), WriteConfig())
    assert sorted(p.name for p in (tmp_path / "s.zarr" / "scenes").iterdir()) == ["a", "zarr.json"]
    assert refresh_root(loc).scenes == ("a",)


def test_newer_format_version_is_refused(tmp_path, make_grid):
    write_store(tmp_path / "s.zarr", {"a": make_grid(16)})
    meta_path = tmp_path / "s.zarr" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"]["perfdata"]["format_version"] = 99
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(FormatVersionError, match="99"):
        open_store(str(tmp_path / "s.zarr"))
    with pytest.raises(InputError, match="no zarr.json"):
        open_store(str(tmp_path / "nothing.zarr"))


def test_dense_grid_averages_into_coarser_cells(make_grid):
    reso = 8
    coords = np.stack(np.meshgrid(*[np.arange(reso)] * 3, indexing="ij"), -1).reshape(-1, 3).astype(np.int32)
    grid = make_grid(16)
    from perfdata.grid import SparseGrid

    full = SparseGrid(coords=coords, density=coords[:, 0].astype(np.float32), sh=np.ones((len(coords), 27), np.float32),
                      reso=(reso,) * 3, world_from_grid=np.eye(4))
    vol = densify(full, 4)
    assert tuple(vol.shape) == (29, 4, 4, 4)
    assert float(vol[0].min()) == 1.0  # every cell fully occupied
    np.testing.assert_allclose(vol[1, :, 0, 0].numpy(), [0.5, 2.5, 4.5, 6.5])  # mean of x = 2i, 2i+1
    half = densify(full.take(full.coords[:, 2] % 2 == 0), 4)
    np.testing.assert_allclose(half[0].numpy(), 0.5)
    assert densify(grid, 16)[0].sum() == pytest.approx(grid.n_voxels)


def test_dataset_stats_match_numpy(tmp_path, make_grid):
    grids = {"a": make_grid(32, seed=0), "b": make_grid(40, seed=1)}
    write_store(tmp_path / "s.zarr", grids)
    store = open_store(str(tmp_path / "s.zarr"))
    stats = dataset_stats(store)
    backs = [store.read_scene(s) for s in store.scene_ids]
    assert stats["n_voxels"] == sum(g.n_voxels for g in grids.values())
    np.testing.assert_allclose(stats["sh_mean"], np.concatenate([b.sh for b in backs]).mean(0), atol=1e-5)
    assert stats["density_mean"] == pytest.approx(np.concatenate([b.density for b in backs]).mean(), rel=1e-5)


def test_read_over_http_with_range_server(tmp_path, make_grid):
    from perfdata.download.mirror import serve_directory

    grids = {"a": make_grid(48, seed=0), "b": make_grid(48, seed=1)}
    write_store(tmp_path / "s.zarr", grids)
    server, base = serve_directory(tmp_path)
    with server:
        store = open_store(f"{base}/s.zarr")
        assert store.scene_ids == ("a", "b")
        before = server.bytes_sent
        back = store.read_scene("b")
        fetched = server.bytes_sent - before
    local = open_store(str(tmp_path / "s.zarr")).read_scene("b")
    np.testing.assert_array_equal(back.coords, local.coords)
    np.testing.assert_array_equal(back.sh, local.sh)
    scene_b = stored_bytes(tmp_path / "s.zarr" / "scenes" / "b")
    # one scene's bytes (a few hundred more when fsspec re-reads a metadata document), not both scenes'
    assert 0.8 * scene_b < fetched < 1.1 * scene_b


def test_bad_scene_id_is_refused(tmp_path, make_grid):
    with pytest.raises(InputError, match="refusing to use it as a name"):
        write_store(tmp_path / "s.zarr", {"../x": make_grid(16)})
    assert zarr is not None
