"""Codec choice by measurement, chunk sizing and the fsspec (remote) write path."""

from __future__ import annotations

import numpy as np
import pytest

from perfdata.store import WriteConfig, grid_arrays, open_store, refresh_root, write_scene
from perfdata.store import writer as writer_mod
from perfdata.store.codecs import (
    BY_NAME,
    candidates_for,
    choose_codec,
    compare_codecs,
    estimate_bytes,
    measure,
)
from perfdata.store.location import Location
from perfdata.store.quant import choose_density_dtype, quantise_sh


def test_smooth_uint8_columns_choose_delta_and_estimates_match_zarr(make_grid):
    sh = quantise_sh(make_grid(64).sorted().sh).q
    choice = choose_codec(sh, 2 << 20)
    assert choice.name == "columns-delta-zstd"
    for cand in candidates_for(sh):
        exact = measure(sh, cand, 2 << 20)["bytes_per_row"] * len(sh)
        assert abs(estimate_bytes(sh, cand, 2 << 20) - exact) < 0.02 * exact + 2000
    assert "delta" not in choose_codec(sh, 2 << 20, portable=True).name
    table = {r["codec"]: r["bytes_per_row"] for r in compare_codecs(sh, 2 << 20)}
    assert table["columns-delta-zstd"] < 0.8 * table["rows-zstd"]


def test_chunks_hold_about_chunk_bytes():
    c = BY_NAME["columns-delta-zstd"]
    assert c.chunks((10_000_000, 27), 1, 2 << 20) == (2 << 20, 1)
    assert BY_NAME["rows-zstd"].chunks((10_000_000, 27), 1, 2 << 20) == (77824, 27)  # 2 MiB / 27 B, up to 4096s
    assert BY_NAME["rows-zstd"].chunks((100, 3), 2, 2 << 20) == (100, 3)
    assert BY_NAME["rows-zstd"].chunks((0, 3), 2, 2 << 20) == (1, 3)


def test_float_arrays_never_delta_and_density_dtype_rules():
    assert all(c.filter != "delta" for c in candidates_for(np.zeros(10, np.float16)))
    assert choose_density_dtype(np.array([1.0, 2.0])) == np.float16
    assert choose_density_dtype(np.array([1.0, 7e4])) == np.float32
    assert choose_density_dtype(np.array([1.0, np.nan])) == np.float32
    q = quantise_sh(np.array([[0.0, 1.0], [1.0, 1.0], [0.5, 1.0]], np.float32), bits=2)
    np.testing.assert_array_equal(q.q, [[0, 0], [3, 0], [2, 0]])  # 0.5 -> 1.5 rounds to 2; constant channel -> 0
    np.testing.assert_allclose(q.decode()[:, 1], 1.0)


def test_remote_store_marks_scenes_complete_last(make_grid, monkeypatch):
    url = "memory://perfdata-test-remote/s.zarr"
    loc = Location(url)
    assert not loc.is_local
    write_scene(loc, "a", grid_arrays(make_grid(24), WriteConfig()), WriteConfig())
    original = writer_mod.choose_codec
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("connection lost")
        return original(*args, **kwargs)

    monkeypatch.setattr(writer_mod, "choose_codec", broken)
    with pytest.raises(RuntimeError):
        write_scene(loc, "b", grid_arrays(make_grid(24, seed=1), WriteConfig()), WriteConfig())
    assert not writer_mod.is_complete(loc, "b") and writer_mod.read_scene_attrs(loc, "b") is not None
    assert refresh_root(loc, "remote").scenes == ("a",)
    store = open_store(url)
    assert store.read_scene("a").n_voxels == make_grid(24).n_voxels
    loc.fs.rm("/perfdata-test-remote", recursive=True)
